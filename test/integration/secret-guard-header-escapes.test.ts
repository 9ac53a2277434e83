/**
 * A managed key in a header value, partly percent-encoded (found by review): `Cookie: note=%73k-…` is
 * none of the key's forms (raw, wholly or minimally percent-encoded, …), and was forwarded, while the
 * cookie parsers of Express (cookie), Rack and PHP decode a cookie's escapes and hand the upstream the
 * key itself. The request target was already read decoded (guard-request-secrets.ts); header values
 * holding an escape are now read so too.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { generateAgentToken } from '../../src/identity/agent-token.js';
import { assertNoLeak } from '../helpers/assert-no-leak.js';
import { canary } from '../helpers/canary.js';
import { sendRequest, type Problem, type SentResponse } from '../helpers/send-request.js';
import { startProxy, type ProxyFixture } from '../helpers/start-proxy.js';
import { startUpstream, type Upstream } from '../helpers/start-upstream.js';

describe('a managed key in a header value, one character escaped', () => {
  const key = canary('header-escape');
  const oneEscaped = `%${key.charCodeAt(0).toString(16).toUpperCase()}${key.slice(1)}`;
  const agent = generateAgentToken();
  const seen: SentResponse[] = [];
  let upstream: Upstream;
  let proxy: ProxyFixture;

  beforeAll(async () => {
    upstream = await startUpstream();
    proxy = await startProxy(
      {
        services: { api: { upstream: upstream.url, credential: { secret: 'env:API_KEY', inject: 'bearer' }, routes: [{ method: 'GET', path: '/v1/*', scope: 'read' }] } },
        agents: { bot: { tokens: [agent.hash], credentials: [{ service: 'api', max_scope: ['*'] }] } },
        anomalies: { enabled: false },
      },
      { env: { API_KEY: key } },
    );
  });

  afterAll(async () => {
    await proxy?.close();
    await upstream?.close();
  });

  it.each([
    ['a cookie', () => ({ cookie: `note=${oneEscaped}` })],
    ['a custom header', () => ({ 'x-note': oneEscaped })],
    ['a custom header, lower-case hex', () => ({ 'x-note': oneEscaped.toLowerCase().slice(0, 3) + key.slice(1) })],
  ])('in %s: 400, named, nothing forwarded', async (_name, headers) => {
    const before = upstream.requests.length;
    const response = await sendRequest(`${proxy.url}/api/v1/things`, { headers: { authorization: `Bearer ${agent.token}`, ...headers() } });
    seen.push(response);
    expect(response.status, response.text).toBe(400);
    expect(response.json<Problem>().code).toBe('invalid_request');
    expect(response.json<Problem>().detail).toContain('env:API_KEY');
    expect(upstream.requests.length).toBe(before);
  });

  it('control: a header with escapes and no key goes through as sent', async () => {
    const response = await sendRequest(`${proxy.url}/api/v1/things`, { headers: { authorization: `Bearer ${agent.token}`, cookie: 'name=J%C3%B6rg%20M' } });
    seen.push(response);
    expect(response.status, response.text).toBe(200);
    expect(upstream.requests.at(-1)?.header('cookie')).toEqual(['name=J%C3%B6rg%20M']);
  });

  it('leaves no form of the key in responses, logs or audit', () => {
    assertNoLeak([key], [
      { name: 'responses', text: seen.map((r) => `${JSON.stringify(r.headers)}\n${r.text}`).join('\n') },
      { name: 'log', text: proxy.logLines.join('') },
      { name: 'audit', text: proxy.auditText() },
    ]);
  });
});
