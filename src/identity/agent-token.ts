/**
 * Agent tokens: `alk_` + 43 base64url characters (32 random bytes). Config stores only `sha256:` + hex of
 * the whole token, so a leaked config file grants nothing.
 */
import { createHash, randomBytes } from 'node:crypto';
import { decodeEscape, PERCENT_ESCAPE } from '../ingress/percent-escapes.js';

export const AGENT_TOKEN_PATTERN = /^alk_[A-Za-z0-9_-]{43}$/;
/** Task session tokens (identity/sessions): same shape, their own prefix. */
export const SESSION_TOKEN_PATTERN = /^als_[A-Za-z0-9_-]{43}$/;
/**
 * An agent or session token anywhere in a text (a query string, a custom header, a justification, an
 * admin's reason): never forwarded or kept there. Without word boundaries: a token glued to other
 * characters (key_alk_..., alk_...-) is still a token, and refusing a word that merely holds the shape
 * (journals_ + 43 such characters) is the cheaper mistake.
 */
export const TOKEN_IN_TEXT = /al[ks]_[A-Za-z0-9_-]{43}/;
/**
 * A token and the whole base64url run it is part of: "alk_alk_<43>" must not leave the token's tail.
 * (TOKEN_IN_TEXT finds the shape; global, for replace.)
 */
const TOKEN_RUNS = /(al[ks]_)[A-Za-z0-9_-]{43,}/g;

/**
 * A signed compact JWS inside a text (a workload JWT an agent put in its path, query or a header), at
 * least as long as a real one's three parts; global, for replace and match.
 */
export const JWT_IN_TEXT = /eyJ[A-Za-z0-9_-]{4,}\.[A-Za-z0-9_-]{4,}\.[A-Za-z0-9_-]{16,}/g;

/**
 * The text with every agent or session token, and every signed JWT, masked, prefix kept so a reader
 * sees what it was: for text that is kept or shown (a recorded path, an approval's preview). A JWT
 * agent's own token in its path reached the audit record and the log line (found by review). A test
 * for "alk_"/"als_"/"eyJ" first: most text has none, and skips the regex ("al" alone is in many paths,
 * /api/small among them).
 */
export function maskAgentTokens(text: string): string {
  let masked = (text.includes('alk_') || text.includes('als_')) && TOKEN_IN_TEXT.test(text) ? text.replace(TOKEN_RUNS, '$1[REDACTED]') : text;
  if (masked.includes('eyJ')) masked = masked.replace(JWT_IN_TEXT, 'eyJ[REDACTED]');
  return masked;
}

/**
 * Whether text holds an agent or session token as it is or in a common encoding: percent-escaped,
 * base64 or base64url (at any alignment), hex. For text an admin asks Airlock to keep (a reason, a
 * target): the token is not known here (only its hash is), so its shape is looked for in what each run
 * of encoded characters decodes to (found by review: the base64 of a token was kept in a reason).
 */
export function holdsAgentToken(text: string): boolean {
  if (TOKEN_IN_TEXT.test(text)) return true;
  // Each escape as its byte, read as Latin-1: a token is ASCII, so its escaped characters come back
  // whole, and an escape that is not UTF-8 (`%C3` alone) cannot throw (found by review:
  // decodeURIComponent threw on it, and a reason or a session's justification holding one got a 500).
  if (text.includes('%') && TOKEN_IN_TEXT.test(text.replace(PERCENT_ESCAPE, decodeEscape))) return true;
  // 47 characters of token are 63 characters of base64 (the first and last may share a group).
  for (const run of text.match(/[A-Za-z0-9+/_-]{62,}/g) ?? []) {
    for (let shift = 0; shift < 4; shift++) if (TOKEN_IN_TEXT.test(Buffer.from(run.slice(shift), 'base64').toString('latin1'))) return true;
  }
  for (const run of text.match(/[0-9A-Fa-f]{94,}/g) ?? []) {
    for (let shift = 0; shift < 2; shift++) if (TOKEN_IN_TEXT.test(Buffer.from(run.slice(shift), 'hex').toString('latin1'))) return true;
  }
  return false;
}

/** A compact JWS (RFC 7515 7.1): three base64url parts, the header starting {" (eyJ). */
export const JWT_PATTERN = /^eyJ[A-Za-z0-9_-]*\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]*$/;

export interface AgentTokenPair {
  token: string;
  hash: string;
}

export function generateAgentToken(): AgentTokenPair {
  const token = `alk_${randomBytes(32).toString('base64url')}`;
  return { token, hash: hashAgentToken(token) };
}

export function generateSessionToken(): AgentTokenPair {
  const token = `als_${randomBytes(32).toString('base64url')}`;
  return { token, hash: hashAgentToken(token) };
}

export function hashAgentToken(token: string): string {
  return `sha256:${createHash('sha256').update(token, 'utf8').digest('hex')}`;
}

/** An Airlock credential of any kind: agent token, session token, or a JWT. */
export function looksLikeAgentToken(value: string): boolean {
  return value.startsWith('alk_') || value.startsWith('als_') || JWT_PATTERN.test(value);
}
