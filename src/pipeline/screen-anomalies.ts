/**
 * Stage 5c: the anomaly detector's request rules (new_route, new_scope, new_client_address, rate_spike,
 * off_hours) on an allowed request, before it is forwarded. An event is answered at once
 * (respond-to-anomaly.ts: log, audit, metric, webhook), and a rule whose action is `suspend` revokes the
 * agent and refuses this very request: the first call from a stolen session's new address, or to a
 * route the agent never used, does not reach its upstream (found by review: these rules ran once the
 * request was answered, so the request that tripped one went through).
 */
import { AirlockError, OPERATOR_FINDS_WHY, OperatorReason } from '../errors.js';
import type { AuditRecord } from '../observability/audit-record.js';
import type { Principal } from './authenticate-agent.js';
import { checkPrincipalRevocations, INVALID_TOKEN } from './check-revocations.js';
import type { ProxyRuntime } from './proxy-runtime.js';

/** `record` has the client, service, route and scope of the request as far as they are known. */
export function screenAnomalies(runtime: ProxyRuntime, principal: Principal, record: AuditRecord): void {
  if (!runtime.anomalies.enabled) return;
  const events = runtime.anomalies.screen({
    at: runtime.nowMs(),
    agent: principal.agent.name,
    service: record.service,
    route: record.route,
    scope: record.scope,
    session: principal.session?.id ?? null,
    client: record.client,
    requestId: record.request_id,
    traceId: record.trace_id,
  });
  let suspending = null;
  for (const event of events) {
    runtime.respondToAnomaly(event);
    if (event.action === 'suspend') suspending = event;
  }
  if (suspending !== null) {
    // The revocation is applied in memory as it is recorded (governance-state.ts), so the usual check
    // refuses with the usual answer. Were it not there (its write refused at once), this request is
    // refused all the same: a suspension raised is never let through.
    checkPrincipalRevocations(runtime.state, principal);
    const name = principal.agent.name;
    throw new AirlockError('unauthenticated', `Agent ${name} was revoked; its tokens and sessions are refused until an operator restores it: ask one to. ${OPERATOR_FINDS_WHY}`, {
      headers: INVALID_TOKEN,
      cause: new OperatorReason(`Agent ${name} was suspended (by anomaly-detector: anomaly ${suspending.rule}: ${suspending.summary})`),
    });
  }
}
