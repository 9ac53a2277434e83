/**
 * Admin callers present a bearer token whose SHA-256 is listed under admin.tokens (the same `airlock
 * token` pairs as agents, kept in a separate list; config validation refuses a hash in both). The
 * token's name, if it has one, is who approvals and revocations are recorded as.
 */
import { AirlockError } from '../errors.js';
import { hashAgentToken } from '../identity/agent-token.js';

/** hash -> identity ("alice", or "admin-token-2" for an unnamed entry). */
export type AdminDirectory = ReadonlyMap<string, string>;

export function adminDirectory(tokens: ReadonlyArray<string | { readonly name: string; readonly hash: string }>): AdminDirectory {
  return new Map(tokens.map((entry, index) => (typeof entry === 'string' ? [entry, `admin-token-${index + 1}`] : [entry.hash, entry.name])));
}

/**
 * `rawHeaders`, not node's parsed headers: node keeps the first of two Authorization fields and drops
 * the second, so a request carrying two would be judged on one. Authorization is not a list field
 * (RFC 9110 11.6.2, 5.3): two of them are refused rather than one picked, as the agent listener refuses
 * two different credentials (token-carriers.ts).
 */
export function authenticateAdmin(rawHeaders: readonly string[], directory: AdminDirectory): string {
  let authorization = '';
  let count = 0;
  for (let i = 0; i < rawHeaders.length; i += 2) {
    if ((rawHeaders[i] as string).toLowerCase() !== 'authorization') continue;
    authorization = rawHeaders[i + 1] as string;
    count += 1;
  }
  if (count > 1) throw new AirlockError('invalid_request', 'The request carries more than one Authorization header; send exactly one: Authorization: Bearer <admin token>.');
  const match = /^Bearer\s+(\S+)$/i.exec(authorization);
  const identity = match === null ? undefined : directory.get(hashAgentToken(match[1] as string));
  if (identity === undefined) {
    throw new AirlockError('unauthenticated', 'The admin API needs Authorization: Bearer <admin token> whose sha256 is listed under admin.tokens.', {
      headers: { 'www-authenticate': 'Bearer realm="airlock-admin"' },
    });
  }
  return identity;
}

/**
 * What a refused caller presented, for the operator's log line: never the token, only what it was
 * (found by review: a refused admin call left no trace, so a compromised agent trying its token on the
 * admin API went unseen). `agentOf` names the agent a token hash belongs to.
 */
export function presentedToAdmin(rawHeaders: readonly string[], agentOf: (hash: string) => string | undefined): string {
  const values: string[] = [];
  for (let i = 0; i < rawHeaders.length; i += 2) if ((rawHeaders[i] as string).toLowerCase() === 'authorization') values.push(rawHeaders[i + 1] as string);
  if (values.length === 0) return 'no Authorization header';
  if (values.length > 1) return 'more than one Authorization header';
  const match = /^Bearer\s+(\S+)$/i.exec(values[0] as string);
  if (match === null) return 'an Authorization header that is not Bearer <token>';
  const agent = agentOf(hashAgentToken(match[1] as string));
  return agent === undefined ? 'a token not listed under admin.tokens' : `the token of agent ${agent} (an agent token is never an admin token)`;
}
