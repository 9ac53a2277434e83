/**
 * scanForAgentToken and the carrier list (DESIGN.md section 5): where an agent token is looked for,
 * what counts as one, and when the answer is none, malformed or a conflict.
 */
import { describe, expect, it } from 'vitest';
import { AGENT_TOKEN_PATTERN, generateAgentToken, hashAgentToken } from '../../src/identity/agent-token.js';
import { scanForAgentToken, TOKEN_CARRIER_HEADERS, type TokenScan } from '../../src/identity/token-carriers.js';

const a = generateAgentToken().token;
const b = generateAgentToken().token;

function basic(user: string, password: string): string {
  return `Basic ${Buffer.from(`${user}:${password}`, 'utf8').toString('base64')}`;
}

describe('agent tokens', () => {
  it('are alk_ plus 43 base64url characters, hashed as sha256:hex', () => {
    expect(a).toMatch(AGENT_TOKEN_PATTERN);
    expect(a).not.toBe(b);
    expect(hashAgentToken(a)).toMatch(/^sha256:[0-9a-f]{64}$/);
    expect(hashAgentToken(a)).not.toBe(hashAgentToken(b));
  });
});

describe('TOKEN_CARRIER_HEADERS', () => {
  it('is exactly the positions of DESIGN.md section 5, lower case', () => {
    expect([...TOKEN_CARRIER_HEADERS].sort()).toEqual(['api-key', 'authorization', 'proxy-authorization', 'x-airlock-token', 'x-api-key', 'x-goog-api-key']);
  });
});

describe('scanForAgentToken', () => {
  const token = (value: string): TokenScan => ({ kind: 'token', token: value, type: value.startsWith('als_') ? 'session' : 'agent' });

  it.each<{ name: string; headers: () => string[]; expected: () => TokenScan }>([
    // Every carrier position.
    { name: 'Authorization: Bearer', headers: () => ['Authorization', `Bearer ${a}`], expected: () => token(a) },
    { name: 'Authorization: bearer (scheme in lower case)', headers: () => ['authorization', `bearer ${a}`], expected: () => token(a) },
    { name: 'Authorization: BEARER', headers: () => ['AUTHORIZATION', `BEARER ${a}`], expected: () => token(a) },
    { name: 'Authorization: token', headers: () => ['Authorization', `token ${a}`], expected: () => token(a) },
    { name: 'Authorization: Basic, token as user', headers: () => ['Authorization', basic(a, '')], expected: () => token(a) },
    { name: 'Authorization: Basic, token as user, no colon', headers: () => ['Authorization', `Basic ${Buffer.from(a).toString('base64')}`], expected: () => token(a) },
    { name: 'Authorization: Basic, token as password', headers: () => ['Authorization', basic('user', a)], expected: () => token(a) },
    { name: 'Authorization: Basic, token as password, empty user', headers: () => ['Authorization', basic('', a)], expected: () => token(a) },
    { name: 'Authorization: bare token, no scheme', headers: () => ['Authorization', a], expected: () => token(a) },
    { name: 'Authorization: extra spaces around the token', headers: () => ['Authorization', `Bearer   ${a}  `], expected: () => token(a) },
    { name: 'x-api-key', headers: () => ['x-api-key', a], expected: () => token(a) },
    { name: 'X-API-KEY (name case-insensitive)', headers: () => ['X-API-KEY', a], expected: () => token(a) },
    { name: 'x-api-key with surrounding spaces', headers: () => ['x-api-key', ` ${a} `], expected: () => token(a) },
    { name: 'api-key', headers: () => ['api-key', a], expected: () => token(a) },
    { name: 'x-goog-api-key', headers: () => ['x-goog-api-key', a], expected: () => token(a) },
    { name: 'Proxy-Authorization: Bearer', headers: () => ['Proxy-Authorization', `Bearer ${a}`], expected: () => token(a) },
    { name: 'Proxy-Authorization: Basic', headers: () => ['Proxy-Authorization', basic(a, '')], expected: () => token(a) },
    { name: 'x-airlock-token', headers: () => ['x-airlock-token', a], expected: () => token(a) },
    // Repeats of one token are fine; provider keys in other carriers are not tokens.
    { name: 'the same token in three carriers', headers: () => ['Authorization', `Bearer ${a}`, 'x-api-key', a, 'x-airlock-token', a], expected: () => token(a) },
    { name: 'the same token in two Authorization lines', headers: () => ['Authorization', `Bearer ${a}`, 'authorization', `token ${a}`], expected: () => token(a) },
    { name: 'the token next to a provider key', headers: () => ['Authorization', 'Bearer sk-proj-123', 'x-api-key', a], expected: () => token(a) },
    { name: 'the token after unrelated headers', headers: () => ['Host', 'x', 'Content-Type', 'application/json', 'api-key', a], expected: () => token(a) },
    // Nothing to find.
    { name: 'no headers', headers: () => [], expected: () => ({ kind: 'none' }) },
    { name: 'only unrelated headers', headers: () => ['Host', 'x', 'User-Agent', 'sdk'], expected: () => ({ kind: 'none' }) },
    { name: 'a provider key in Authorization', headers: () => ['Authorization', 'Bearer sk-proj-123'], expected: () => ({ kind: 'none' }) },
    { name: 'a provider key in x-api-key', headers: () => ['x-api-key', 'sk-ant-123'], expected: () => ({ kind: 'none' }) },
    { name: 'a token in a header that is not a carrier', headers: () => ['x-auth-token', a, 'Cookie', `key=${a}`], expected: () => ({ kind: 'none' }) },
    { name: 'a token under an unknown Authorization scheme', headers: () => ['Authorization', `Digest ${a}`], expected: () => ({ kind: 'none' }) },
    { name: 'a Basic pair without a token', headers: () => ['Authorization', basic('user', 'sk-123')], expected: () => ({ kind: 'none' }) },
    { name: 'an empty Authorization', headers: () => ['Authorization', ''], expected: () => ({ kind: 'none' }) },
    // Something that starts like a token but is not one.
    { name: 'a truncated token', headers: () => ['Authorization', `Bearer ${a.slice(0, -1)}`], expected: () => ({ kind: 'malformed', header: 'authorization' }) },
    { name: 'a token one character too long', headers: () => ['x-api-key', `${a}A`], expected: () => ({ kind: 'malformed', header: 'x-api-key' }) },
    { name: 'a bare "alk_"', headers: () => ['x-airlock-token', 'alk_'], expected: () => ({ kind: 'malformed', header: 'x-airlock-token' }) },
    { name: 'a token with a character outside base64url', headers: () => ['api-key', `${a.slice(0, -1)}+`], expected: () => ({ kind: 'malformed', header: 'api-key' }) },
    { name: 'a token with an inner space in Basic', headers: () => ['Authorization', basic(`${a.slice(0, 10)} ${a.slice(10)}`, '')], expected: () => ({ kind: 'malformed', header: 'authorization' }) },
    { name: 'the first malformed carrier is named', headers: () => ['X-Goog-Api-Key', 'alk_short', 'x-api-key', 'alk_x'], expected: () => ({ kind: 'malformed', header: 'x-goog-api-key' }) },
    // Two different tokens are never a choice.
    { name: 'two tokens in two carriers', headers: () => ['Authorization', `Bearer ${a}`, 'x-api-key', b], expected: () => ({ kind: 'conflict' }) },
    { name: 'two tokens in two Authorization lines', headers: () => ['Authorization', `Bearer ${a}`, 'Authorization', `Bearer ${b}`], expected: () => ({ kind: 'conflict' }) },
    { name: 'a token, then the same, then another', headers: () => ['x-api-key', a, 'api-key', a, 'x-airlock-token', b], expected: () => ({ kind: 'conflict' }) },
    { name: 'Basic user and Proxy-Authorization differ', headers: () => ['Authorization', basic(a, ''), 'Proxy-Authorization', `Bearer ${b}`], expected: () => ({ kind: 'conflict' }) },
  ])('$name', ({ headers, expected }) => {
    expect(scanForAgentToken(headers())).toEqual(expected());
  });

  it('does not read the token out of Basic when it is neither the user nor the password', () => {
    expect(scanForAgentToken(['Authorization', basic(`x${a}`, `y${a}`)])).toEqual({ kind: 'none' });
  });
});
