/**
 * holdsAgentToken: an agent or session token in text an admin asks Airlock to keep (a reason, a
 * target), as it is or encoded (found by review: the base64 of a token was accepted in a reason and kept
 * in the state file and the audit log). The token is not known (only its hash), so its shape is found.
 */
import { randomBytes } from 'node:crypto';
import { describe, expect, it } from 'vitest';
import { generateAgentToken, holdsAgentToken, maskAgentTokens } from '../../src/identity/agent-token.js';

const token = generateAgentToken().token;
const session = `als_${randomBytes(32).toString('base64url')}`;

describe('holdsAgentToken', () => {
  it.each([
    ['raw', (t: string) => `compromised: ${t}`],
    ['percent-escaped whole', (t: string) => `see ${[...Buffer.from(t)].map((b) => `%${b.toString(16).padStart(2, '0')}`).join('')} ok`],
    ['percent-escaped in part, beside a stray %', (t: string) => `100% sure: ${t.slice(0, 10)}%${t.charCodeAt(10).toString(16)}${t.slice(11)}`],
    ['base64', (t: string) => `b64 ${Buffer.from(t).toString('base64')} end`],
    ['base64 after other bytes (another alignment)', (t: string) => Buffer.from(`x${t}`).toString('base64')],
    ['base64 after two other bytes', (t: string) => Buffer.from(`xy${t}`).toString('base64')],
    ['base64url inside a longer run', (t: string) => `id=${Buffer.from(`prefix:${t}:suffix`).toString('base64url')}`],
    ['hex', (t: string) => `hex ${Buffer.from(t).toString('hex')}`],
    ['hex, odd start', (t: string) => `a${Buffer.from(t).toString('hex').toUpperCase()}`],
    ['percent-escaped in part, beside an escape that is not UTF-8', (t: string) => `%C3 ${t.slice(0, 10)}%${t.charCodeAt(10).toString(16)}${t.slice(11)}%zz`],
  ])('finds a token %s', (_name, encode) => {
    expect(holdsAgentToken(encode(token))).toBe(true);
    expect(holdsAgentToken(encode(session))).toBe(true);
  });

  it('finds nothing in ordinary reasons, ids, hashes and random encoded bytes', () => {
    const texts = [
      'rotating after the incident of 2026-11-28, ticket SEC-1234',
      'ses_0123456789abcdef agent support-bot',
      `sha256:${randomBytes(32).toString('hex')}`,
      randomBytes(300).toString('base64'),
      randomBytes(300).toString('hex'),
      '100% done, 50%off, %zz',
      'alk_short',
    ];
    for (const text of texts) expect(holdsAgentToken(text), text).toBe(false);
  });
});

describe('maskAgentTokens', () => {
  it('masks agent and session tokens and signed JWTs in a text kept or shown, and leaves the rest', () => {
    const agent = generateAgentToken().token;
    const jwt = `eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJ3b3JrZXIifQ.${randomBytes(32).toString('base64url')}`;
    const masked = maskAgentTokens(`/v1/models/${jwt}/x?t=${agent}`);
    expect(masked).toBe('/v1/models/eyJ[REDACTED]/x?t=alk_[REDACTED]');
    for (const text of ['/v1/models', '/v1/eyJ-not-a-jwt', '/api/small']) expect(maskAgentTokens(text)).toBe(text);
  });
});

// Found by review: decodeURIComponent threw on an escape that is not UTF-8, and the admin API's reasons
// and a session's justification holding one were answered 500.
it('does not throw on escapes that are not UTF-8, and finds no token in them', () => {
  for (const text of ['ticket %zz %C3', '%C3', '100%', '%E2%82', 'a%C3%28b']) expect(holdsAgentToken(text)).toBe(false);
});
