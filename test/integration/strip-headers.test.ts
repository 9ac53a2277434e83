/**
 * services.<name>.strip_headers and strip_query: credentials of another kind that an agent may send
 * along (a session Cookie, an X-Auth-Token, ?api_key=) are removed before forwarding, like the places
 * the service's own credential goes, in every spelling an upstream might read as the same name.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { generateAgentToken } from '../../src/identity/agent-token.js';
import { assertNoLeak } from '../helpers/assert-no-leak.js';
import { canary, plainCanary } from '../helpers/canary.js';
import { sendRequest, type SentResponse } from '../helpers/send-request.js';
import { startProxy, type ProxyFixture } from '../helpers/start-proxy.js';
import { echoHandler, startUpstream, type Upstream } from '../helpers/start-upstream.js';

describe('strip_headers and strip_query', () => {
  const agent = generateAgentToken();
  const key = canary('strip-injected');
  // What the agent sends along: canaries of no key shape, so the response scan would not mask them and
  // a copy that reached the (echoing) upstream would show in the answer.
  const cookie = plainCanary('strip-cookie');
  const authToken = plainCanary('strip-x-auth-token');
  const queryKey = plainCanary('strip-query-key');
  let upstream: Upstream;
  let proxy: ProxyFixture;
  const answers: SentResponse[] = [];

  beforeAll(async () => {
    upstream = await startUpstream(echoHandler);
    proxy = await startProxy(
      {
        services: {
          api: {
            upstream: upstream.url,
            credential: { secret: 'env:STRIP_KEY' },
            strip_headers: ['Cookie', 'X-Auth-Token'],
            strip_query: ['api_key'],
            routes: [{ method: 'GET', path: '/v1/*', scope: 'api:read' }],
          },
          plain: { upstream: upstream.url, credential: { secret: 'env:STRIP_KEY' }, routes: [{ method: 'GET', path: '/v1/*', scope: 'api:read' }] },
        },
        agents: { bot: { tokens: [agent.hash], credentials: [{ service: 'api', max_scope: ['*'] }, { service: 'plain', max_scope: ['*'] }] } },
      },
      { env: { STRIP_KEY: key } },
    );
  });

  afterAll(async () => {
    await proxy?.close();
    await upstream?.close();
  });

  async function get(target: string, headers: Record<string, string | string[]>): Promise<SentResponse> {
    const answer = await sendRequest(`${proxy.url}${target}`, { headers: { authorization: `Bearer ${agent.token}`, ...headers } });
    answers.push(answer);
    return answer;
  }

  it('removes every copy and spelling of the listed headers and query keys, and forwards the rest', async () => {
    const before = upstream.requests.length;
    const answer = await get(`/api/v1/items?api_key=${queryKey}&a=1&API_KEY[]=${queryKey}&api_key[0]=${queryKey}&b=2`, {
      cookie: `session=${cookie}`,
      'x-auth-token': [authToken, authToken],
      x_auth_token: authToken,
      'x-trace-note': 'kept',
    });
    expect(answer.status, answer.text).toBe(200);
    expect(upstream.requests.length).toBe(before + 1);
    const seen = upstream.requests[before]!;
    expect(seen.target).toBe('/v1/items?a=1&b=2');
    expect(seen.header('cookie')).toEqual([]);
    expect(seen.header('x-auth-token')).toEqual([]);
    expect(seen.rawHeaders.filter((_, i) => i % 2 === 0).map((n) => n.toLowerCase().replaceAll('_', '-'))).not.toContain('x-auth-token');
    expect(seen.header('x-trace-note')).toEqual(['kept']);
    expect(seen.header('authorization')).toEqual([`Bearer ${key}`]);
  });

  // The README's promise: a query key percent-encoded, or behind ";" (which some frameworks split on).
  it.each([
    ['percent-encoded (api%5Fkey)', `/api/v1/items?api%5Fkey=${queryKey}&a=1`, '/v1/items?a=1'],
    ['percent-encoded, other case (API%5fKEY)', `/api/v1/items?a=1&API%5fKEY=${queryKey}`, '/v1/items?a=1'],
    ['after a ";" separator', `/api/v1/items?a=1;api_key=${queryKey}`, '/v1/items?a=1'],
    ['after ";", then more pairs', `/api/v1/items?a=1;api_key=${queryKey}&b=2`, '/v1/items?a=1&b=2'],
  ])('removes a strip_query key %s', async (_how, target, forwarded) => {
    const before = upstream.requests.length;
    const answer = await get(target, {});
    expect(answer.status, answer.text).toBe(200);
    expect(upstream.requests.length).toBe(before + 1);
    const seen = upstream.requests[before]!;
    expect(seen.target).not.toContain(queryKey);
    expect(seen.target).toBe(forwarded);
  });

  it('a service without the lists forwards those headers and keys as before (nothing is stripped by default)', async () => {
    const before = upstream.requests.length;
    const answer = await get('/plain/v1/items?api_key=visible-by-default&a=1', { cookie: 'session=visible-by-default' });
    expect(answer.status, answer.text).toBe(200);
    const seen = upstream.requests[before]!;
    expect(seen.target).toBe('/v1/items?api_key=visible-by-default&a=1');
    expect(seen.header('cookie')).toEqual(['session=visible-by-default']);
  });

  it('leaves no trace of the injected key or the stripped values in answers, logs or audit', async () => {
    await proxy.waitForAudit(2);
    assertNoLeak([key, cookie, authToken, queryKey], [
      { name: 'answers', text: answers.map((a) => a.text).join('\n') },
      { name: 'log', text: proxy.logLines.join('') },
      { name: 'audit', text: proxy.auditText() },
    ]);
  });
});
