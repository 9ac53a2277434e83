/**
 * The audit record: one JSON line per request, allowed or denied (DESIGN.md section 5). Fields are
 * written in a fixed order from an allowlist; nothing from a request's headers, query or body is
 * copied in, and `credential` is the reference, never the value.
 */
import type { ErrorCode } from '../errors.js';

export interface AuditRecord {
  time: string;
  /** The OpenTelemetry trace this request belongs to (W3C trace id), when one is known. */
  trace_id: string | null;
  request_id: string;
  agent: string | null;
  /** The task session the call was made under. */
  session: string | null;
  justification: string | null;
  task_id: string | null;
  service: string | null;
  method: string | null;
  /** Canonical path as the agent sent it (prefix included), no query; null when unparseable. */
  path: string | null;
  /** Route template, e.g. "/v1/models/:model". */
  route: string | null;
  scope: string | null;
  decision: 'allow' | 'deny';
  /** Null when the upstream answered; else the code of the error the agent got. */
  code: ErrorCode | null;
  /** Status the agent got; null when it went away before any response. */
  status: number | null;
  upstream_status: number | null;
  /** Body bytes sent to the agent (after redaction and decoding). */
  response_bytes: number;
  duration_ms: number;
  credential: string | null;
  /** The credential's version used for the answer (e.g. the Vault KV version). */
  generation: string | null;
  /** When an upstream refused the first credential and a rotated one was used: the first one's version. */
  rotated_from: string | null;
  redactions: number;
  /** The approval the call was made under, who gave it and why. */
  approval: string | null;
  approver: string | null;
  approval_reason: string | null;
  /** For admin API changes: who made them (the admin token's name) and why. */
  actor: string | null;
  reason: string | null;
  client: string | null;
  /** True when the response was cut short (upstream failure mid-body or the agent went away). */
  incomplete: boolean;
}

/**
 * The record's canonical JSON (fixed field order), chained to the previous record by `prev`; the
 * audit log appends `hash` (audit-chain.ts).
 */
export function serializeAuditRecord(record: AuditRecord, prev: string): string {
  return JSON.stringify({
    time: record.time,
    trace_id: record.trace_id,
    request_id: record.request_id,
    agent: record.agent,
    session: record.session,
    justification: record.justification,
    task_id: record.task_id,
    service: record.service,
    method: record.method,
    path: record.path,
    route: record.route,
    scope: record.scope,
    decision: record.decision,
    code: record.code,
    status: record.status,
    upstream_status: record.upstream_status,
    response_bytes: record.response_bytes,
    duration_ms: record.duration_ms,
    credential: record.credential,
    generation: record.generation,
    rotated_from: record.rotated_from,
    redactions: record.redactions,
    approval: record.approval,
    approver: record.approver,
    approval_reason: record.approval_reason,
    actor: record.actor,
    reason: record.reason,
    client: record.client,
    incomplete: record.incomplete,
    prev,
  });
}
