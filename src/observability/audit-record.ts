/**
 * The audit record: one JSON line per request, allowed or denied (DESIGN.md section 5). Fields are
 * written in a fixed order from an allowlist; nothing from a request's headers, query or body is
 * copied in, and `credential` is the reference, never the value.
 */
import type { ErrorCode } from '../errors.js';
import { jsonBoolean, jsonNumber, jsonString } from './json-text.js';

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
  /**
   * On the record of a session's mint alone: the scopes it was given, space-separated `service/scope`
   * (RFC 6749's scope list, the service named), when it ends, and the session it was narrowed from.
   */
  session_scopes: string | null;
  session_expires_at: string | null;
  session_parent: string | null;
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
  /** Why: an admin change's reason, an anomaly's evidence, or why a JWT was refused (its caller is not told). */
  reason: string | null;
  client: string | null;
  /** True when the response was cut short (upstream failure mid-body or the agent went away). */
  incomplete: boolean;
}

/**
 * The record's canonical JSON (fixed field order, JSON.stringify's text for each value; json-text.ts),
 * chained to the previous record by `prev`; the audit log appends `hash` (audit-chain.ts).
 */
export function serializeAuditRecord(record: AuditRecord, prev: string): string {
  const r = record;
  return (
    `{"time":${jsonString(r.time)},"trace_id":${jsonString(r.trace_id)},"request_id":${jsonString(r.request_id)},"agent":${jsonString(r.agent)}` +
    `,"session":${jsonString(r.session)},"justification":${jsonString(r.justification)},"task_id":${jsonString(r.task_id)}` +
    `,"session_scopes":${jsonString(r.session_scopes)},"session_expires_at":${jsonString(r.session_expires_at)},"session_parent":${jsonString(r.session_parent)}` +
    `,"service":${jsonString(r.service)}` +
    `,"method":${jsonString(r.method)},"path":${jsonString(r.path)},"route":${jsonString(r.route)},"scope":${jsonString(r.scope)}` +
    `,"decision":${jsonString(r.decision)},"code":${jsonString(r.code)},"status":${jsonNumber(r.status)},"upstream_status":${jsonNumber(r.upstream_status)}` +
    `,"response_bytes":${jsonNumber(r.response_bytes)},"duration_ms":${jsonNumber(r.duration_ms)},"credential":${jsonString(r.credential)}` +
    `,"generation":${jsonString(r.generation)},"rotated_from":${jsonString(r.rotated_from)},"redactions":${jsonNumber(r.redactions)}` +
    `,"approval":${jsonString(r.approval)},"approver":${jsonString(r.approver)},"approval_reason":${jsonString(r.approval_reason)}` +
    `,"actor":${jsonString(r.actor)},"reason":${jsonString(r.reason)},"client":${jsonString(r.client)},"incomplete":${jsonBoolean(r.incomplete)},"prev":${jsonString(prev)}}`
  );
}

type FieldKind = 'string' | 'string|null' | 'number' | 'number|null' | 'boolean';

/** What each field holds (AuditRecord above), to name the field a refused record went wrong in. */
const FIELD_KINDS: Readonly<Record<keyof AuditRecord, FieldKind>> = {
  time: 'string',
  trace_id: 'string|null',
  request_id: 'string',
  agent: 'string|null',
  session: 'string|null',
  justification: 'string|null',
  task_id: 'string|null',
  session_scopes: 'string|null',
  session_expires_at: 'string|null',
  session_parent: 'string|null',
  service: 'string|null',
  method: 'string|null',
  path: 'string|null',
  route: 'string|null',
  scope: 'string|null',
  decision: 'string',
  code: 'string|null',
  status: 'number|null',
  upstream_status: 'number|null',
  response_bytes: 'number',
  duration_ms: 'number',
  credential: 'string|null',
  generation: 'string|null',
  rotated_from: 'string|null',
  redactions: 'number',
  approval: 'string|null',
  approver: 'string|null',
  approval_reason: 'string|null',
  actor: 'string|null',
  reason: 'string|null',
  client: 'string|null',
  incomplete: 'boolean',
};

/**
 * The first field whose value is not of its type, as "<field> is a <type>; <kind> belongs there", or
 * null. Asked only once serializeAuditRecord has refused a record (json-text.ts throws without knowing
 * the field, and checking every type up front would cost every request). Names the type, never the
 * value: a value in the wrong field may be anything.
 */
export function auditRecordFault(record: AuditRecord): string | null {
  for (const [field, kind] of Object.entries(FIELD_KINDS) as Array<[string, FieldKind]>) {
    const value = (record as unknown as Record<string, unknown>)[field];
    const type = value === null ? 'null' : typeof value;
    if (!kind.split('|').includes(type)) return `${field} is ${type === 'null' || type === 'undefined' ? type : `a ${type}`}; ${kind.replace('|', ' or ')} belongs there`;
  }
  return null;
}
