/**
 * The agent's own session endpoints, under /_airlock/ on the agent listeners, authenticated like any
 * call (an agent token, a session token, or a workload JWT):
 *
 *   POST   /_airlock/sessions           mint a task session (narrower than the caller's grants/session)
 *   GET    /_airlock/sessions/current   what the presented session allows, and until when
 *   DELETE /_airlock/sessions/current   end the presented session (and those narrowed from it)
 */
import type { IncomingMessage, ServerResponse } from 'node:http';
import { AirlockError } from '../errors.js';
import { sendContinue } from '../ingress/expect-continue.js';
import { holdsAgentToken, JWT_IN_TEXT } from '../identity/agent-token.js';
import { mintSession, parseSessionRequest } from '../identity/mint-session.js';
import type { ConcurrencyGate } from '../policy/rate-limiter.js';
import type { SecretIndex } from '../redaction/secret-catalog.js';
import { SecretDetector } from '../redaction/secret-detector.js';
import type { SessionRecord } from '../state/governance-records.js';
import type { GovernanceState } from '../state/governance-state.js';
import type { Principal } from './authenticate-agent.js';
import { carriesManagedSecret } from './guard-request-secrets.js';
import { REQUEST_ID_HEADER } from '../upstream/relay-headers.js';

export const SESSIONS_PATH = '/_airlock/sessions';
const CURRENT_PATH = '/_airlock/sessions/current';
const MAX_BODY = 64 * 1024;

export function isSessionsPath(path: string): boolean {
  return path === SESSIONS_PATH || path === CURRENT_PATH;
}

/**
 * The body, refused when it carries a managed credential's value (as a proxied body is, request-body.ts):
 * a justification is echoed in the answer and kept in the state file and the audit log. Checked on the
 * parsed body written out again, which keeps every encoding of the value and undoes JSON escapes such
 * as \u0066 that would spell it out (as admin-api.ts checks an admin's reason).
 */
async function readJson(req: IncomingMessage, secrets: SecretIndex): Promise<unknown> {
  const chunks: Buffer[] = [];
  let size = 0;
  for await (const chunk of req) {
    size += (chunk as Buffer).length;
    if (size > MAX_BODY) throw new AirlockError('payload_too_large', `Session requests are limited to ${MAX_BODY} bytes.`);
    chunks.push(chunk as Buffer);
  }
  let body: unknown;
  try {
    body = JSON.parse(Buffer.concat(chunks).toString('utf8')) as unknown;
  } catch {
    throw new AirlockError('invalid_request', 'The session request body is not JSON.');
  }
  const text = JSON.stringify(body) ?? '';
  const spelled = SecretDetector.findInBytes(secrets, Buffer.from(text, 'utf8'));
  if (spelled !== null) throw carriesManagedSecret(spelled);
  // In any common encoding, and a workload JWT too: the scopes an agent names (within a pattern such as
  // files:*), its justification and task id are kept in the state file and the audit log, where only a
  // managed value would be scrubbed (found by review: the hex of a token, named as a scope, was kept).
  if (holdsAgentToken(text)) throw new AirlockError('invalid_request', 'The session request carries an Airlock agent or session token (or its hex, base64 or percent-escaped form); the justification and scopes are kept in the state file and the audit log, so they must not hold one. Send the token only as the API key.');
  if (text.search(JWT_IN_TEXT) !== -1) throw new AirlockError('invalid_request', 'The session request carries a signed JWT; the justification and scopes are kept in the state file and the audit log, so they must not hold one. Send the JWT only as the API key.');
  return body;
}

function describe(session: SessionRecord): Record<string, unknown> {
  return {
    session_id: session.id,
    agent: session.agent,
    parent: session.parent,
    scopes: session.scopes,
    justification: session.justification,
    task_id: session.taskId,
    created_at: new Date(session.createdAt).toISOString(),
    expires_at: new Date(session.expiresAt).toISOString(),
  };
}

function sendJson(res: ServerResponse, status: number, body: unknown, requestId: string): void {
  const text = body === null ? '' : JSON.stringify(body);
  res.writeHead(status, { 'content-type': 'application/json; charset=utf-8', 'content-length': Buffer.byteLength(text), 'cache-control': 'no-store', [REQUEST_ID_HEADER]: requestId });
  res.end(text);
}

export interface SessionOutcome {
  readonly status: number;
  readonly route: string;
  readonly session: SessionRecord | null;
}

/**
 * `recheck`: the caller's revocations and session, checked again once the body has arrived (it may take
 * up to limits.request_timeout), so a session is never minted from a principal revoked meanwhile.
 * `maxLive`: limits.max_sessions_per_agent. Found by review: minting was unbounded (it comes before any
 * rate limit), and each session is kept in memory, in the state file or Redis, until it expires.
 * `minting`: the mints under way, by agent. A session counts once kept, after an await, so concurrent
 * mints all passed the check before any was kept and the cap was exceeded by their number (found by
 * review): each mint takes a place, synchronously with the check, until it is kept or fails. The cap is
 * exact within one replica only: replicas sharing Redis each count their own mints under way, and see
 * another's sessions only once they arrive through Redis, so N replicas minting for one agent at the
 * same moment may keep up to N times the cap (still a bound on what is kept).
 */
export async function serveSessions(
  req: IncomingMessage,
  res: ServerResponse,
  path: string,
  principal: Principal,
  state: GovernanceState,
  secrets: SecretIndex,
  requestId: string,
  now: number,
  maxLive: number,
  minting: ConcurrencyGate,
  checkMintRate: () => void | Promise<void>,
  recheck: () => void,
): Promise<SessionOutcome> {
  if (path === SESSIONS_PATH) {
    if (req.method !== 'POST') throw new AirlockError('method_not_allowed', `${SESSIONS_PATH} answers POST.`, { headers: { allow: 'POST' } });
    // Before the body is read, and before a client waiting on Expect: 100-continue is told to send it
    // (found by review): a refused mint costs nothing more.
    const admitted = checkMintRate();
    if (admitted instanceof Promise) await admitted;
    sendContinue(res);
    const request = parseSessionRequest(await readJson(req, secrets));
    recheck();
    const live = state.sessions().filter((s) => s.agent === principal.agent.name).length;
    // Places left once the live sessions are counted; null when the mints under way take them all.
    const release = minting.enter(principal.agent.name, maxLive - live);
    if (release === null) {
      throw new AirlockError('rate_limited', `Agent ${principal.agent.name} already holds ${maxLive} live sessions (limits.max_sessions_per_agent); end one (DELETE ${CURRENT_PATH}) or let it expire, then retry.`, { headers: { 'retry-after': '60' } });
    }
    try {
      const minted = mintSession(principal.agent, principal.session, request, now, principal.credential, principal.credentialEndsAt);
      // Released only once this resolves: a kept session is applied before record() resolves
      // (governance-state.ts), so from then on state.sessions() counts it instead.
      await state.record({ type: 'session.created', session: minted.record });
      // Kept, but not taken: minted at the moment its agent was restored (within the clocks' skew between
      // replicas), it counts as minted before the restore and is void everywhere. A 201 would hand out a
      // token that never works (found by review).
      if (state.session(minted.record.id) === null) {
        throw new AirlockError('state_unavailable', `The session was not kept: agent ${principal.agent.name} was restored at the same moment. Mint it again.`, { headers: { 'retry-after': '1' } });
      }
      sendJson(res, 201, { session_token: minted.token, ...describe(minted.record) }, requestId);
      return { status: 201, route: SESSIONS_PATH, session: minted.record };
    } finally {
      release();
    }
  }
  sendContinue(res);
  const session = principal.session;
  if (session === null) throw new AirlockError('invalid_request', `${CURRENT_PATH} is about the session you call with; send a session token (als_...).`);
  if (req.method === 'GET') {
    sendJson(res, 200, describe(session), requestId);
    return { status: 200, route: CURRENT_PATH, session };
  }
  if (req.method === 'DELETE') {
    await state.record({ type: 'session.ended', id: session.id, reason: 'ended by the agent', at: now });
    sendJson(res, 204, null, requestId);
    return { status: 204, route: CURRENT_PATH, session };
  }
  throw new AirlockError('method_not_allowed', `${CURRENT_PATH} answers GET and DELETE.`, { headers: { allow: 'GET, DELETE' } });
}

