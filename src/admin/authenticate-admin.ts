/**
 * Admin callers present a bearer token whose SHA-256 is listed under admin.tokens (the same `airlock
 * token` pairs as agents, kept in a separate list; config validation refuses a hash in both).
 */
import type { IncomingHttpHeaders } from 'node:http';
import { AirlockError } from '../errors.js';
import { hashAgentToken } from '../identity/agent-token.js';

export function authenticateAdmin(headers: IncomingHttpHeaders, tokenHashes: ReadonlySet<string>): void {
  const authorization = headers.authorization ?? '';
  const match = /^Bearer\s+(\S+)$/i.exec(authorization);
  if (match === null || !tokenHashes.has(hashAgentToken(match[1] as string))) {
    throw new AirlockError('unauthenticated', 'The admin API needs Authorization: Bearer <admin token> whose sha256 is listed under admin.tokens.', {
      headers: { 'www-authenticate': 'Bearer realm="airlock-admin"' },
    });
  }
}
