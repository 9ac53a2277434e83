/**
 * Task sessions: just-in-time, task-scoped, short-lived credentials (zero standing privileges).
 *
 * An agent asks with its own token (or with a session token, to narrow it further: attenuation) for
 * {scopes: {service: [scope...]}, ttl_seconds, justification, task_id?}. The answer is an als_ token
 * whose scopes are a subset of the agent's grants (and of the parent session's), whose TTL is at most
 * the smallest max_ttl of the grants involved (and the parent's remaining life). Anything more is
 * refused with the reason. The justification and task id go into every audit record of the session.
 */
import { randomBytes } from 'node:crypto';
import { AirlockError } from '../errors.js';
import type { AgentPolicy } from '../policy/compile-policy.js';
import { HIDDEN_CHARACTERS } from '../policy/hidden-characters.js';
import { compileScopeGrant, grantingEntry, type ScopeGrant } from '../policy/scope-grant.js';
import type { SessionMinter, SessionRecord } from '../state/governance-records.js';
import { generateSessionToken } from './agent-token.js';

export interface SessionRequest {
  readonly scopes: Readonly<Record<string, readonly string[]>>;
  readonly ttlSeconds: number | null;
  readonly justification: string;
  readonly taskId: string | null;
}

const MAX_JUSTIFICATION = 1000;
/** A session's id: "ses_" and 16 base64url characters (12 random bytes); the admin API refuses others. */
export const SESSION_ID = /^ses_[A-Za-z0-9_-]{16}$/;
const TASK_ID = /^[A-Za-z0-9_.:/#-]{1,200}$/;
const SCOPE_PATTERN = /^[A-Za-z0-9_.:*-]+$/;

function bad(detail: string): AirlockError {
  return new AirlockError('invalid_request', detail);
}

export function parseSessionRequest(body: unknown): SessionRequest {
  if (body === null || typeof body !== 'object' || Array.isArray(body)) throw bad('Send a JSON object: {"scopes": {"service": ["scope"]}, "ttl_seconds": 600, "justification": "why", "task_id": "optional"}.');
  const input = body as Record<string, unknown>;
  for (const key of Object.keys(input)) {
    if (!['scopes', 'ttl_seconds', 'justification', 'task_id'].includes(key)) throw bad(`Unknown field "${key}"; the fields are scopes, ttl_seconds, justification, task_id.`);
  }
  const scopes = input['scopes'];
  if (scopes === null || typeof scopes !== 'object' || Array.isArray(scopes) || Object.keys(scopes).length === 0) {
    throw bad('"scopes" must map at least one service to a list of scopes, e.g. {"openai": ["chat:write"]}.');
  }
  // No prototype: a service named "__proto__" (an own key of JSON.parse's result) must be a key like
  // any other, refused below as a service with no grant, not a change of the object's prototype that
  // left a session of no scopes and no expiry.
  const parsedScopes = Object.create(null) as Record<string, string[]>;
  for (const [service, list] of Object.entries(scopes as Record<string, unknown>)) {
    if (!Array.isArray(list) || list.length === 0 || !list.every((s) => typeof s === 'string' && SCOPE_PATTERN.test(s))) {
      throw bad(`"scopes.${service}" must be a non-empty list of scope names.`);
    }
    parsedScopes[service] = [...new Set(list as string[])];
  }
  const ttl = input['ttl_seconds'];
  if (ttl !== undefined && (typeof ttl !== 'number' || !Number.isInteger(ttl) || ttl <= 0)) throw bad('"ttl_seconds" must be a positive whole number of seconds.');
  const justification = input['justification'];
  if (typeof justification !== 'string' || justification.trim() === '') throw bad('"justification" is required: say what the task is, for the audit trail.');
  if (justification.length > MAX_JUSTIFICATION) throw bad(`"justification" is limited to ${MAX_JUSTIFICATION} characters.`);
  // An approver reads it in a terminal (airlock approvals list), the console and chat (the approval
  // webhook): an escape sequence or a bidi override there would show them what the agent chose, a
  // fake "approved" line or reordered words (found by review). Such characters have no place in it.
  // U+2028 and U+2029 are line breaks, shown as one space like the others.
  const hidden = justification.replace(/[\u2028\u2029]/g, '\n').search(HIDDEN_CHARACTERS);
  if (hidden !== -1) {
    throw bad(`"justification" holds U+${(justification.codePointAt(hidden) ?? 0).toString(16).toUpperCase().padStart(4, '0')} at character ${hidden + 1}, a control, zero-width, invisible or bidirectional-formatting character that can change what an approver sees; send plain text (line breaks and tabs are fine).`);
  }
  const taskId = input['task_id'];
  if (taskId !== undefined && (typeof taskId !== 'string' || !TASK_ID.test(taskId))) throw bad('"task_id" is up to 200 characters of letters, digits and _ . : / # -.');
  return { scopes: parsedScopes, ttlSeconds: typeof ttl === 'number' ? ttl : null, justification: justification.trim(), taskId: typeof taskId === 'string' ? taskId : null };
}

/** Whether a requested scope entry (exact or "prefix:*" / "*") lies within a grant. */
export function scopeWithin(grant: ScopeGrant, requested: string): boolean {
  if (grant.all) return true;
  if (requested === '*') return false;
  if (requested.endsWith('*')) {
    const prefix = requested.slice(0, -1);
    return grant.prefixes.some((p) => prefix.startsWith(p));
  }
  return grantingEntry(grant, requested) !== null;
}

const compiledSessionScopes = new WeakMap<SessionRecord, Map<string, ScopeGrant>>();

/** The session's scopes for a service, compiled once per session record. */
export function sessionScopes(session: SessionRecord, service: string): ScopeGrant | null {
  let byService = compiledSessionScopes.get(session);
  if (byService === undefined) {
    byService = new Map(Object.entries(session.scopes).map(([name, list]) => [name, compileScopeGrant(list)]));
    compiledSessionScopes.set(session, byService);
  }
  return byService.get(service) ?? null;
}

export interface MintedSession {
  readonly token: string;
  readonly record: SessionRecord;
}

/**
 * `minter`: the credential the caller presented (Principal.credential), kept in the record so the
 * session ends when that credential is taken away (authenticate-agent.ts sessionStanding). A child's is
 * its parent session.
 */
export function mintSession(agent: AgentPolicy, parent: SessionRecord | null, request: SessionRequest, now: number, minter?: SessionMinter, minterEndsAt?: number): MintedSession {
  let maxTtl = Infinity;
  for (const [service, scopes] of Object.entries(request.scopes)) {
    const grant = agent.grants.get(service);
    if (grant === undefined) throw new AirlockError('scope_denied', `Agent ${agent.name} has no grant for service ${service}, so a session cannot include it.`);
    const parentScopes = parent === null ? null : sessionScopes(parent, service);
    if (parent !== null && parentScopes === null) throw new AirlockError('scope_denied', `The parent session has no scopes on ${service}; a child session can only narrow its parent.`);
    for (const scope of scopes) {
      if (!scopeWithin(grant.scopes, scope)) throw new AirlockError('scope_denied', `Scope ${scope} on ${service} is not within agent ${agent.name}'s grant (${grant.scopes.written.join(', ')}).`);
      if (parentScopes !== null && !scopeWithin(parentScopes, scope)) throw new AirlockError('scope_denied', `Scope ${scope} on ${service} is not within the parent session's scopes (${parentScopes.written.join(', ')}).`);
    }
    maxTtl = Math.min(maxTtl, grant.config.max_ttl);
  }
  // parseSessionRequest asks for a service; this keeps a session from ever being minted without one
  // (it would have no scopes and no end).
  if (!Number.isFinite(maxTtl)) throw bad('"scopes" must map at least one service to a list of scopes, e.g. {"openai": ["chat:write"]}.');
  const parentLeft = parent === null ? Infinity : Math.floor((parent.expiresAt - now) / 1000);
  // A session minted with a workload JWT ends when the JWT would no longer be accepted (found by review:
  // a JWT with seconds left minted a session of the grant's full max_ttl).
  const minterLeft = minterEndsAt === undefined ? Infinity : Math.floor((minterEndsAt - now) / 1000);
  const allowed = Math.min(maxTtl, parentLeft, minterLeft);
  const ttl = request.ttlSeconds ?? allowed;
  if (ttl > maxTtl) throw new AirlockError('scope_denied', `ttl_seconds ${ttl} exceeds the grants' max_ttl of ${maxTtl} seconds.`);
  if (ttl > parentLeft) throw new AirlockError('scope_denied', `ttl_seconds ${ttl} outlives the parent session, which ends in ${parentLeft} seconds.`);
  if (ttl > minterLeft) throw new AirlockError('scope_denied', `ttl_seconds ${ttl} outlives the workload JWT it is minted with, which is accepted for ${Math.max(0, minterLeft)} more seconds; mint it with a fresher JWT or ask for less.`);
  if (ttl <= 0) throw new AirlockError('scope_denied', parent === null ? 'The workload JWT this session would be minted with has no time left.' : 'The parent session has no time left.');
  const token = generateSessionToken();
  const record: SessionRecord = {
    // SESSION_ID describes this.
    id: `ses_${randomBytes(12).toString('base64url')}`,
    tokenHash: token.hash,
    agent: agent.name,
    parent: parent?.id ?? null,
    scopes: request.scopes,
    justification: request.justification,
    taskId: request.taskId,
    createdAt: now,
    expiresAt: now + ttl * 1000,
    ...(parent !== null ? { mintedBy: { kind: 'session', session: parent.id } } : minter === undefined ? {} : { mintedBy: minter }),
  };
  return { token: token.token, record };
}
