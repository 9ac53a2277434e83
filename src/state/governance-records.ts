/**
 * What governance keeps: task sessions, revocations, approvals, and the events that change them. State
 * is the result of applying events in order, so the same events give the same state on every replica
 * (the embedded backend replays them from a file at start; the Redis backend also fans them out).
 * Records never hold a secret: session tokens are kept as hashes, approvals hold a hash of the request
 * they approve and, for the approver, a preview of its query and body masked before it was cut.
 */

export interface SessionRecord {
  readonly id: string;
  /** sha256: of the als_ token. */
  readonly tokenHash: string;
  readonly agent: string;
  /** The session it was narrowed from, or null for one minted with the agent's own token. */
  readonly parent: string | null;
  /** Service name -> scopes (exact names or patterns, each within the agent's grant). */
  readonly scopes: Readonly<Record<string, readonly string[]>>;
  readonly justification: string;
  readonly taskId: string | null;
  readonly createdAt: number;
  readonly expiresAt: number;
  /**
   * The credential that minted it, so that taking that credential away (a leaked token rotated out of
   * the config, a JWT issuer or subject no longer accepted) ends the session too (found by review:
   * sessions outlived the token that minted them, across restarts). Hashes and names only, never a
   * token. Optional: sessions minted before this field existed have none, and keep working until they
   * expire (authenticate-agent.ts).
   */
  readonly mintedBy?: SessionMinter;
}

/** What authenticated the caller that minted a session. */
export type SessionMinter =
  /** An agent token: sha256: of the alk_ token, as the config lists it. */
  | { readonly kind: 'token'; readonly tokenHash: string }
  /**
   * A workload JWT: its issuer and subject (not the JWT), the digest of the agent's JWT rules it was
   * accepted under (AgentPolicy.jwtRules; absent in sessions minted before it was recorded), and the
   * thumbprint of the listed key that verified it (absent: the JWKS did, or an earlier version minted it).
   */
  | { readonly kind: 'jwt'; readonly issuer: string; readonly subject: string | null; readonly rules?: string; readonly key?: string }
  /** A session token (attenuation): the parent session's id. */
  | { readonly kind: 'session'; readonly session: string };

export type RevocationKind = 'agent' | 'session' | 'credential' | 'service' | 'all';
/** Every kind, for checking what arrives from outside (the admin API, the CLI, shared state). */
export const REVOCATION_KINDS: ReadonlySet<string> = new Set<RevocationKind>(['agent', 'session', 'credential', 'service', 'all']);

export interface Revocation {
  readonly kind: RevocationKind;
  /** Agent name, session id, credential reference, service name, or "*" for all. */
  readonly target: string;
  readonly reason: string;
  readonly by: string;
  readonly at: number;
}

export type ApprovalStatus = 'pending' | 'approved' | 'denied' | 'expired' | 'consumed';

export interface ApprovalRecord {
  readonly id: string;
  readonly agent: string;
  readonly service: string;
  readonly route: string;
  readonly scope: string;
  readonly method: string;
  /** Canonical path, without the query. */
  readonly path: string;
  /** sha256 over agent, method, canonical path, query and body: what the approval is good for. */
  readonly binding: string;
  readonly session: string | null;
  readonly justification: string | null;
  readonly taskId: string | null;
  readonly mode: 'hold' | 'async';
  readonly createdAt: number;
  readonly expiresAt: number;
  readonly status: ApprovalStatus;
  readonly decidedBy: string | null;
  readonly reason: string | null;
  readonly decidedAt: number | null;
  /**
   * What the approver is shown of the query and body (policy/preview-request.ts); null when
   * approvals.preview_bytes is 0. Absent in records written by earlier versions: read as null.
   */
  readonly preview?: ApprovalPreview | null;
}

/**
 * The request's query and body as an approver sees them: managed secrets, key shapes and Airlock tokens
 * masked in the whole text first, then cut (a cut never leaves the front of a secret unmasked).
 */
export interface ApprovalPreview {
  readonly query: string | null;
  readonly contentType: string | null;
  /**
   * The headers of approvals.bind_headers the request carries (whose account it acts on), name in lower
   * case as sent to value, masked and cut like the content type; several of one name joined by ", ".
   * Absent from records made before it was shown.
   */
  readonly headers: Readonly<Record<string, string>>;
  /** The body's whole size, shown or not. */
  readonly bodyBytes: number;
  /** Text only when the body is text (by content type, or valid UTF-8 when none is given); else null. */
  readonly body: string | null;
  /** The body text was cut at approvals.preview_bytes. */
  readonly truncated: boolean;
}

export type GovernanceEvent =
  | { readonly type: 'session.created'; readonly session: SessionRecord }
  | { readonly type: 'session.ended'; readonly id: string; readonly reason: string; readonly at: number }
  | { readonly type: 'revocation.added'; readonly revocation: Revocation }
  | { readonly type: 'revocation.lifted'; readonly kind: RevocationKind; readonly target: string; readonly by: string; readonly at: number }
  | { readonly type: 'approval.created'; readonly approval: ApprovalRecord }
  | { readonly type: 'approval.decided'; readonly id: string; readonly decision: 'approved' | 'denied'; readonly by: string; readonly reason: string; readonly at: number }
  | { readonly type: 'approval.consumed'; readonly id: string; readonly at: number }
  /** `by` and `reason` when a revocation withdrew it (kept, so a replica loading the store can say why). */
  | { readonly type: 'approval.expired'; readonly id: string; readonly at: number; readonly by?: string; readonly reason?: string };
