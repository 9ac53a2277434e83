/**
 * The audit record: one JSON line per request, allowed or denied (DESIGN.md section 5). Fields are
 * written in a fixed order from an allowlist; nothing from a request's headers, query or body is
 * copied in, and `credential` is the reference, never the value.
 */
import type { ErrorCode } from '../errors.js';

export interface AuditRecord {
  time: string;
  request_id: string;
  agent: string | null;
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
  duration_ms: number;
  credential: string | null;
  /** The credential's version used for the answer (e.g. the Vault KV version). */
  generation: string | null;
  /** When an upstream refused the first credential and a rotated one was used: the first one's version. */
  rotated_from: string | null;
  redactions: number;
  client: string | null;
  /** True when the response was cut short (upstream failure mid-body or the agent went away). */
  incomplete: boolean;
}

export function serializeAuditRecord(record: AuditRecord): string {
  return JSON.stringify({
    time: record.time,
    request_id: record.request_id,
    agent: record.agent,
    service: record.service,
    method: record.method,
    path: record.path,
    route: record.route,
    scope: record.scope,
    decision: record.decision,
    code: record.code,
    status: record.status,
    upstream_status: record.upstream_status,
    duration_ms: record.duration_ms,
    credential: record.credential,
    generation: record.generation,
    rotated_from: record.rotated_from,
    redactions: record.redactions,
    client: record.client,
    incomplete: record.incomplete,
  });
}
