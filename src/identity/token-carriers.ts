/**
 * Where agents put their Airlock token: every position an official SDK puts its API key.
 *
 * Airlock owns these headers on the agent side. All of them are removed before forwarding, whatever
 * they hold, so an agent cannot smuggle its own credential (or its token) upstream through one of them.
 */
import { AGENT_TOKEN_PATTERN, JWT_PATTERN, looksLikeAgentToken, SESSION_TOKEN_PATTERN } from './agent-token.js';

/** Lower-case names of the headers that may carry an agent token. */
export const TOKEN_CARRIER_HEADERS: ReadonlySet<string> = new Set([
  'authorization', // Bearer (openai, stripe), token (octokit), Basic
  'proxy-authorization',
  'x-api-key', // anthropic
  'api-key', // azure openai
  'x-goog-api-key', // google
  'x-airlock-token',
]);

export type TokenKind = 'agent' | 'session' | 'jwt';

export type TokenScan =
  | { kind: 'none' }
  | { kind: 'malformed'; header: string }
  | { kind: 'conflict' }
  | { kind: 'token'; token: string; type: TokenKind };

function tokenKind(value: string, acceptJwt: boolean): TokenKind | null {
  if (AGENT_TOKEN_PATTERN.test(value)) return 'agent';
  if (SESSION_TOKEN_PATTERN.test(value)) return 'session';
  if (acceptJwt && JWT_PATTERN.test(value)) return 'jwt';
  return null;
}

/**
 * Scans raw header pairs (node's `req.rawHeaders`, so duplicates are all seen) for an Airlock
 * credential: an agent token (alk_), a task session token (als_) or a workload JWT. Several copies of
 * the same one are fine; two different ones are a conflict, never a choice.
 */
/** `acceptJwt`: some agent accepts workload JWTs; otherwise a JWT in a carrier is not ours and is ignored. */
export function scanForAgentToken(rawHeaders: readonly string[], acceptJwt = false): TokenScan {
  let found: string | null = null;
  let malformedIn: string | null = null;
  for (let i = 0; i < rawHeaders.length; i += 2) {
    const name = (rawHeaders[i] as string).toLowerCase();
    if (!TOKEN_CARRIER_HEADERS.has(name)) continue;
    const candidate = tokenFromHeader(name, rawHeaders[i + 1] as string);
    if (candidate === null || (!acceptJwt && !candidate.startsWith('al'))) continue;
    if (tokenKind(candidate, acceptJwt) === null) {
      malformedIn ??= name;
      continue;
    }
    if (found !== null && found !== candidate) return { kind: 'conflict' };
    found = candidate;
  }
  if (found !== null) return { kind: 'token', token: found, type: tokenKind(found, acceptJwt) as TokenKind };
  if (malformedIn !== null) return { kind: 'malformed', header: malformedIn };
  return { kind: 'none' };
}

/** The alk_ value a header carries, or null when it carries none (e.g. a provider key). */
function tokenFromHeader(name: string, value: string): string | null {
  const trimmed = value.trim();
  if (name === 'authorization' || name === 'proxy-authorization') {
    const space = trimmed.indexOf(' ');
    if (space === -1) return looksLikeAgentToken(trimmed) ? trimmed : null;
    const scheme = trimmed.slice(0, space).toLowerCase();
    const credentials = trimmed.slice(space + 1).trim();
    if (scheme === 'bearer' || scheme === 'token') return looksLikeAgentToken(credentials) ? credentials : null;
    if (scheme === 'basic') return tokenFromBasic(credentials);
    return null;
  }
  return looksLikeAgentToken(trimmed) ? trimmed : null;
}

/** RFC 7617: base64(user ":" password); the token may be either half. */
function tokenFromBasic(encoded: string): string | null {
  const decoded = Buffer.from(encoded, 'base64').toString('utf8');
  const colon = decoded.indexOf(':');
  const user = colon === -1 ? decoded : decoded.slice(0, colon);
  const password = colon === -1 ? '' : decoded.slice(colon + 1);
  if (looksLikeAgentToken(user)) return user;
  if (looksLikeAgentToken(password)) return password;
  return null;
}
