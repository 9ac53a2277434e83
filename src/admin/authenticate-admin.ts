/**
 * Admin callers present a bearer token whose SHA-256 is listed under admin.tokens (the same `airlock
 * token` pairs as agents, kept in a separate list; config validation refuses a hash in both). The
 * token's name, if it has one, is who approvals and revocations are recorded as.
 */
import type { IncomingHttpHeaders } from 'node:http';
import { AirlockError } from '../errors.js';
import { hashAgentToken } from '../identity/agent-token.js';

/** hash -> identity ("alice", or "admin-token-2" for an unnamed entry). */
export type AdminDirectory = ReadonlyMap<string, string>;

export function adminDirectory(tokens: ReadonlyArray<string | { readonly name: string; readonly hash: string }>): AdminDirectory {
  return new Map(tokens.map((entry, index) => (typeof entry === 'string' ? [entry, `admin-token-${index + 1}`] : [entry.hash, entry.name])));
}

export function authenticateAdmin(headers: IncomingHttpHeaders, directory: AdminDirectory): string {
  const authorization = headers.authorization ?? '';
  const match = /^Bearer\s+(\S+)$/i.exec(authorization);
  const identity = match === null ? undefined : directory.get(hashAgentToken(match[1] as string));
  if (identity === undefined) {
    throw new AirlockError('unauthenticated', 'The admin API needs Authorization: Bearer <admin token> whose sha256 is listed under admin.tokens.', {
      headers: { 'www-authenticate': 'Bearer realm="airlock-admin"' },
    });
  }
  return identity;
}
