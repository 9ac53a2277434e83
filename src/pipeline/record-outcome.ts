/**
 * Every exit of the pipeline ends here: one audit record and one log line per request.
 * `auditRequest` reports whether the record was written so the caller can refuse (fail closed) before
 * anything is sent; `logRequest` then logs what the agent actually got.
 */
import { operatorAlert } from '../errors.js';
import type { AuditRecord } from '../observability/audit-record.js';
import type { RequestTrace } from '../observability/tracing.js';
import type { ProxyRuntime } from './proxy-runtime.js';

export function stampDuration(record: AuditRecord, startedAt: number): void {
  record.duration_ms = Math.round((performance.now() - startedAt) * 1000) / 1000;
}

/** `answered`: the agent already has its answer (the record may share a later write; audit-log.ts). */
export async function auditRequest(runtime: ProxyRuntime, record: AuditRecord, startedAt: number, answered = false): Promise<boolean> {
  stampDuration(record, startedAt);
  try {
    // false: not written, but the operator chose audit.on_failure: log.
    return await runtime.audit.append(record, answered);
  } catch (error) {
    runtime.logger.error({ request_id: record.request_id, trace_id: record.trace_id, err: error }, 'audit record could not be written; under audit.on_failure: refuse this request gets 503 if unanswered, and new requests are refused while writes fail');
    return false;
  }
}

/**
 * The record of a request already answered, then its log line, which says whether the record was
 * written: the request path's form of auditRequest (audit-log.ts appendAnswered), without a promise or
 * a suspended pipeline per request.
 */
export function auditAnswered(runtime: ProxyRuntime, record: AuditRecord, cause: unknown): void {
  runtime.audit.appendAnswered(record, function logAnswered(written, error) {
    if (error !== null) {
      runtime.logger.error({ request_id: record.request_id, trace_id: record.trace_id, err: error }, 'audit record could not be written; under audit.on_failure: refuse new requests are refused while writes fail');
    }
    logRequest(runtime, record, written, cause);
  });
}

/**
 * Metrics and the trace's server span, from the same record the audit log got. `screened`: the anomaly
 * detector's request rules saw the request before it was forwarded (screen-anomalies.ts). `probing`: it
 * was refused as probing, whatever its code (errors.ts AirlockError.probing).
 */
export function observeRequest(runtime: ProxyRuntime, record: AuditRecord, trace: RequestTrace, httpRoute: string | null, screened: boolean, probing = false): void {
  const service = record.service ?? 'none';
  const route = record.route ?? 'none';
  runtime.metrics.countRequest(service, route, record.decision, record.code ?? 'none', record.duration_ms / 1000);
  if (record.redactions > 0 && record.service !== null) runtime.metrics.redactions.inc({ service: record.service }, record.redactions);
  trace.finish(record, httpRoute);
  if (record.agent !== null && runtime.anomalies.enabled && !refusedAsRevoked(runtime, record, record.agent)) observeAnomalies(runtime, record, record.agent, screened, probing);
}

/**
 * A revoked agent's own 401s are what its revocation does, not probing: counted, they raised a
 * denial_burst event every cooldown for as long as it stayed revoked (found by review), and a human's
 * revocation was then shown as if the detector were suspending it again.
 */
function refusedAsRevoked(runtime: ProxyRuntime, record: AuditRecord, agent: string): boolean {
  return record.code === 'unauthenticated' && runtime.state.revocation('agent', agent) !== null;
}

/**
 * Anomaly detection and its response (suspension, alert, webhook) run before the request's record is
 * written and its answer sent: a failure there is logged and must not cost the request its audit record
 * or its answer.
 */
function observeAnomalies(runtime: ProxyRuntime, record: AuditRecord, agent: string, screened: boolean, probing: boolean): void {
  try {
    const events = runtime.anomalies.observe({
      // When the request ended: now (Date.parse of record.time took ~0.3 µs per request).
      at: runtime.nowMs(),
      agent,
      service: record.service,
      route: record.route,
      scope: record.scope,
      session: record.session,
      client: record.client,
      code: record.code,
      responseBytes: record.response_bytes,
      screened,
      probing,
      requestId: record.request_id,
      traceId: record.trace_id,
    });
    for (const event of events) runtime.respondToAnomaly(event);
  } catch (error) {
    runtime.logger.error({ request_id: record.request_id, trace_id: record.trace_id, err: error }, 'anomaly detection failed for this request; it is answered and audited as usual');
  }
}

export function logRequest(runtime: ProxyRuntime, record: AuditRecord, audited: boolean, cause?: unknown): void {
  const level = record.code === 'internal_error' || !audited ? 'error' : (record.status ?? 0) >= 500 || record.incomplete || operatorAlert(cause) ? 'warn' : 'info';
  runtime.requestLog.write(level, record, audited, cause);
}
