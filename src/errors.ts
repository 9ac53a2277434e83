/**
 * The closed set of errors Airlock can answer with, mapped to HTTP in this one place.
 *
 * Bodies follow RFC 9457 (problem details). The `error` extension member repeats the code and detail in
 * the shape provider SDKs parse (`error.message`, `error.code`), so openai, anthropic and stripe raise
 * their usual exceptions instead of handing the agent a 403 body as if it were data.
 */

/**
 * `policy`: a refusal by a policy stage (isPolicyRefusal). `final`: a 5xx that asking again will not
 * change until an operator acts (retryHelps).
 */
const CATALOG = {
  approval_pending: { status: 202, title: 'Waiting for human approval', policy: true },
  invalid_request: { status: 400, title: 'Invalid request' },
  unauthenticated: { status: 401, title: 'Not authenticated', policy: true },
  route_not_allowed: { status: 403, title: 'Route not allowed', policy: true },
  scope_denied: { status: 403, title: 'Scope not granted', policy: true },
  session_required: { status: 403, title: 'Task session required', policy: true },
  approval_denied: { status: 403, title: 'Approval denied', policy: true },
  approval_timeout: { status: 403, title: 'Approval timed out', policy: true },
  unknown_service: { status: 404, title: 'Unknown service', policy: true },
  not_found: { status: 404, title: 'Not found', policy: true },
  method_not_allowed: { status: 405, title: 'Method not allowed', policy: true },
  request_timeout: { status: 408, title: 'Request timeout' },
  payload_too_large: { status: 413, title: 'Payload too large' },
  rate_limited: { status: 429, title: 'Rate limited', policy: true },
  headers_too_large: { status: 431, title: 'Request header fields too large' },
  internal_error: { status: 500, title: 'Internal error' },
  upstream_unreachable: { status: 502, title: 'Upstream unreachable' },
  unscannable_response: { status: 502, title: 'Unscannable upstream response', final: true },
  credential_unavailable: { status: 503, title: 'Credential unavailable' },
  audit_unavailable: { status: 503, title: 'Audit log unavailable' },
  service_suspended: { status: 503, title: 'Service suspended', policy: true, final: true },
  credential_revoked: { status: 503, title: 'Credential revoked', policy: true, final: true },
  locked_down: { status: 503, title: 'Airlock is locked down', policy: true, final: true },
  state_unavailable: { status: 503, title: 'Shared state unavailable', policy: true },
  upstream_busy: { status: 503, title: 'Upstream connections busy' },
  shutting_down: { status: 503, title: 'Airlock is stopping' },
  upstream_timeout: { status: 504, title: 'Upstream timeout' },
} as const satisfies Record<string, { status: number; title: string; policy?: true; final?: true }>;

export type ErrorCode = keyof typeof CATALOG;

export const ERROR_CODES = Object.freeze(Object.keys(CATALOG)) as readonly ErrorCode[];

export function statusOf(code: ErrorCode): number {
  return CATALOG[code].status;
}

export function titleOf(code: ErrorCode): string {
  return CATALOG[code].title;
}

/**
 * Whether asking again may help. The openai and anthropic SDKs retry every 5xx unless the answer says
 * `x-should-retry: false` (found by an SDK walkthrough: a lockdown's 503 was sent three times, each
 * audited); a lockdown, a suspended service, a revoked credential and a response that cannot be scanned
 * answer the same until an operator acts.
 */
export function retryHelps(code: ErrorCode): boolean {
  return !('final' in CATALOG[code]);
}

/**
 * Whether the code is a policy stage refusing the request (authentication, route, scope, session,
 * approval, rate limit, revocation, lockdown, or a governance check that could not run): the audit record's
 * `decision` is then `deny`, wherever in the lifecycle it came. The others are failures of a request
 * the policy let through (the credential's store, the upstream, the audit log, the request's own framing).
 */
export function isPolicyRefusal(code: ErrorCode): boolean {
  return 'policy' in CATALOG[code];
}

/** RFC 9457 3.1.1: a type URI that is not meant to be dereferenced; tag URIs (RFC 4151) say so by construction. */
export function problemType(code: ErrorCode): string {
  return `tag:airlock.dev,2026:problem:${code}`;
}

/**
 * An error that may reach an agent. `detail` is written by our code, says what to do next, and never
 * contains a secret or an upstream's words; `cause` is for logs only and is never serialized to agents.
 */
export class AirlockError extends Error {
  readonly code: ErrorCode;
  readonly detail: string;
  /** Extra response headers, e.g. `Allow` on 405 or `Retry-After` on 429. */
  readonly headers: Readonly<Record<string, string>>;
  /** The credential reference the refusal is about, for the audit record (never a value). */
  readonly credentialRef: string | null;
  /** RFC 9457 extension members beyond the standard ones, e.g. approval_id (never a secret). */
  readonly extensions: Readonly<Record<string, string>>;
  /**
   * Sent as one SSE `error` event rather than a JSON document: the answer to a streaming call that is
   * 2xx but no stream (202 approval_pending), which a provider SDK would otherwise read as a stream that
   * ended with no event (send-problem.ts).
   */
  readonly eventStream: boolean;
  /**
   * The refusal is evidence of probing whatever its code: a request target that servers read in
   * different ways (path confusion), refused by canonicalize-target.ts or match-route.ts. The anomaly
   * rule denial_burst counts it against the agent whose valid credential the request carried (found by
   * review: such 400s were never counted, and an agent probing with `..` or `%2e%2e` went unseen).
   */
  readonly probing: boolean;

  constructor(
    code: ErrorCode,
    detail: string,
    options: { cause?: unknown; headers?: Record<string, string>; credentialRef?: string; extensions?: Record<string, string>; eventStream?: boolean; probing?: boolean } = {},
  ) {
    super(`${code}: ${detail}`, options.cause === undefined ? undefined : { cause: options.cause });
    this.name = 'AirlockError';
    this.code = code;
    this.detail = detail;
    this.headers = Object.freeze({ ...(options.headers ?? {}) });
    this.credentialRef = options.credentialRef ?? null;
    this.extensions = Object.freeze({ ...(options.extensions ?? {}) });
    this.eventStream = options.eventStream ?? false;
    this.probing = options.probing ?? false;
  }

  get status(): number {
    return statusOf(this.code);
  }
}

export interface ProblemBody {
  [extension: string]: unknown;
  type: string;
  title: string;
  status: number;
  detail: string;
  code: ErrorCode;
  request_id: string;
  /** The detail again, where SDKs that read a top-level `message` look (@anthropic-ai/sdk's APIError). */
  message: string;
  error: { type: 'airlock_error'; code: ErrorCode; message: string };
}

export function problemBody(error: AirlockError, requestId: string): ProblemBody {
  return {
    ...error.extensions,
    type: problemType(error.code),
    title: titleOf(error.code),
    status: error.status,
    detail: error.detail,
    code: error.code,
    request_id: requestId,
    // Found by an SDK walkthrough: without it the Anthropic SDK made the whole body, JSON and all, its
    // error's message ("403 {\"type\":…}"); with it, "403 Agent … lacks scope …", as openai's reads.
    message: error.detail,
    error: { type: 'airlock_error', code: error.code, message: error.detail },
  };
}

/**
 * What the operator is told about a refusal and its caller is not: who revoked an agent and why, which
 * file a store is and which of its entries is damaged, where Vault is. The agent suspected of a prompt
 * injection must not read the incident's reason, nor an agent learn data_dir's path or the names of
 * other secrets (found by a fresh-user walkthrough). It rides as an AirlockError's `cause`, which no
 * agent is sent: run-pipeline.ts refuse makes it the audit record's `reason`, and the request's log
 * line carries it as `err`. The agent's detail says what happened and where the operator looks.
 */
export class OperatorReason extends Error {
  override readonly name: string = 'OperatorReason';
  /** A sign of compromise rather than a fault (an agent holding a real key): its log line is a warning. */
  readonly alert: boolean;

  constructor(message: string, options: { alert?: boolean; cause?: unknown } = {}) {
    super(message, options.cause === undefined ? undefined : { cause: options.cause });
    this.alert = options.alert ?? false;
  }
}

/** The fixed pointer an agent's detail ends with when the why is the operator's (OperatorReason). */
export const OPERATOR_FINDS_WHY = 'An operator finds why in the audit record and the proxy log under this request id.';

/**
 * The first OperatorReason in an error's cause chain, or null: a refusal re-said by the credential cache
 * (stale past max_staleness) or after a reload (await-approval.ts) keeps the reason of the one it wraps.
 */
export function operatorReason(error: unknown): string | null {
  return firstOperatorReason(error)?.message ?? null;
}

/** Whether the first OperatorReason in an error's cause chain marks a sign of compromise (`alert`). */
export function operatorAlert(error: unknown): boolean {
  return firstOperatorReason(error)?.alert ?? false;
}

function firstOperatorReason(error: unknown): OperatorReason | null {
  let current: unknown = error;
  // A few links: a cause chain is a handful deep here, and a cycle must not spin.
  for (let depth = 0; depth < 8 && current instanceof Error; depth++) {
    if (current instanceof OperatorReason) return current;
    current = current.cause;
  }
  return null;
}

/** Anything that is not an AirlockError is a bug: agents see a fixed message, logs keep the cause. */
export function asAirlockError(error: unknown): AirlockError {
  if (error instanceof AirlockError) return error;
  return new AirlockError('internal_error', 'Airlock hit an unexpected error and refused the request. See the proxy log for this request id.', { cause: error });
}
