/**
 * An agent or session token in a header that is not an API-key header, hidden by a percent-escape (found
 * by review): `X-Note: alk%5F…` or `Cookie: t=alk%5F…` does not match the token's shape as sent, and was
 * forwarded upstream, while the cookie parsers of Express, Rack and PHP (and any application that
 * decodes a header) hand the upstream the token itself. The managed-key check already read such values
 * decoded (secret-guard-header-escapes.test.ts); the misplaced-token check now does too.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { generateAgentToken, generateSessionToken } from '../../src/identity/agent-token.js';
import { assertNoLeak } from '../helpers/assert-no-leak.js';
import { sendRequest, type Problem, type SentResponse } from '../helpers/send-request.js';
import { startProxy, type ProxyFixture } from '../helpers/start-proxy.js';
import { startUpstream, type Upstream } from '../helpers/start-upstream.js';

/** The token with its "_" (the fourth character) escaped, in the given hex case. */
function underscoreEscaped(token: string, hex = '5F'): string {
  return `${token.slice(0, 3)}%${hex}${token.slice(4)}`;
}

/** The token with its first character escaped. */
function firstEscaped(token: string): string {
  return `%${token.charCodeAt(0).toString(16).toUpperCase()}${token.slice(1)}`;
}

describe('an agent token in a header, one character escaped', () => {
  const agent = generateAgentToken();
  const session = generateSessionToken().token;
  const seen: SentResponse[] = [];
  let upstream: Upstream;
  let proxy: ProxyFixture;

  beforeAll(async () => {
    upstream = await startUpstream();
    proxy = await startProxy({
      services: { api: { upstream: upstream.url, credential: { secret: 'env:API_KEY', inject: 'bearer' }, routes: [{ method: 'GET', path: '/v1/*', scope: 'read' }] } },
      agents: { bot: { tokens: [agent.hash], credentials: [{ service: 'api', max_scope: ['*'] }] } },
      anomalies: { enabled: false },
    }, { env: { API_KEY: 'sk-not-under-test-0123456789abcdef' } });
  });

  afterAll(async () => {
    await proxy?.close();
    await upstream?.close();
  });

  it.each([
    ['a custom header, "_" escaped', () => ({ 'x-note': underscoreEscaped(agent.token) })],
    ['a custom header, "_" escaped in lower-case hex', () => ({ 'x-note': underscoreEscaped(agent.token, '5f') })],
    ['a custom header, first character escaped', () => ({ 'x-note': firstEscaped(agent.token) })],
    ['a cookie, "_" escaped', () => ({ cookie: `t=${underscoreEscaped(agent.token)}` })],
    ['a cookie, a session token with its "_" escaped', () => ({ cookie: `t=${underscoreEscaped(session)}` })],
  ])('in %s: 400 invalid_request, nothing forwarded', async (_name, headers) => {
    const before = upstream.requests.length;
    const response = await sendRequest(`${proxy.url}/api/v1/things`, { headers: { authorization: `Bearer ${agent.token}`, ...headers() } });
    seen.push(response);
    expect(response.status, response.text).toBe(400);
    expect(response.json<Problem>().code).toBe('invalid_request');
    expect(response.json<Problem>().detail).toMatch(/agent or session token appears/);
    expect(upstream.requests.length).toBe(before);
    const requestId = response.headers['x-airlock-request-id'];
    const record = (await proxy.waitForAudit(1)).find((r) => r.request_id === requestId);
    expect(record).toMatchObject({ agent: 'bot', decision: 'deny', code: 'invalid_request', status: 400 });
  });

  it('control: a header with escapes and no token goes through as sent', async () => {
    const response = await sendRequest(`${proxy.url}/api/v1/things`, { headers: { authorization: `Bearer ${agent.token}`, 'x-note': 'alk%5Fshort', cookie: 'name=J%C3%B6rg%20M' } });
    seen.push(response);
    expect(response.status, response.text).toBe(200);
    expect(upstream.requests.at(-1)?.header('x-note')).toEqual(['alk%5Fshort']);
    expect(upstream.requests.at(-1)?.header('cookie')).toEqual(['name=J%C3%B6rg%20M']);
  });

  it('leaves the token in no response, log line or audit record', () => {
    assertNoLeak([agent.token, session], [
      { name: 'responses', text: seen.map((r) => `${JSON.stringify(r.headers)}\n${r.text}`).join('\n') },
      { name: 'log', text: proxy.logLines.join('') },
      { name: 'audit', text: proxy.auditText() },
    ]);
  });
});
