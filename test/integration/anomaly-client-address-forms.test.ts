/**
 * new_client_address compares where a task session is used from. An agent on one machine reaches a
 * dual-stack listener (`listen: "[::]:7700"`) as ::ffff:10.0.0.7 and a per-service listener bound to an
 * IPv4 address as 10.0.0.7: one address in two spellings, not a session that moved. Found by review:
 * the rule compared the spellings, so using one session through both listeners raised
 * new_client_address, and with `action: suspend` revoked the agent.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { generateAgentToken } from '../../src/identity/agent-token.js';
import { assertNoLeak, proxySurfaces, responsesSurface } from '../helpers/assert-no-leak.js';
import { canary } from '../helpers/canary.js';
import { adminClient, type AdminClient } from '../helpers/operator.js';
import { sendRequest, type SentResponse } from '../helpers/send-request.js';
import { startProxy, type ProxyFixture } from '../helpers/start-proxy.js';
import { echoHandler, startUpstream, type Upstream } from '../helpers/start-upstream.js';

describe('new_client_address and the IPv4-mapped form of an address', () => {
  const key = canary('anomaly-address-forms');
  const bot = generateAgentToken();
  const alice = generateAgentToken();
  const seen: SentResponse[] = [];
  let upstream: Upstream;
  let proxy: ProxyFixture;
  let admin: AdminClient;
  /** The dual-stack agent listener, reached over IPv4. */
  let dualStackUrl: string;

  beforeAll(async () => {
    upstream = await startUpstream(echoHandler);
    proxy = await startProxy(
      {
        listen: '[::]:0',
        admin: { listen: '127.0.0.1:0', tokens: [{ name: 'alice', hash: alice.hash }] },
        anomalies: { new_client_address: { action: 'suspend' } },
        services: {
          echo: {
            upstream: upstream.url,
            listen: '127.0.0.1:0',
            credential: { secret: 'env:FORMS_KEY', inject: 'bearer' },
            routes: [{ method: 'GET', path: '/v1/a', scope: 'a:read' }],
          },
        },
        agents: { bot: { tokens: [bot.hash], credentials: [{ service: 'echo', max_scope: ['a:read'] }] } },
      },
      { env: { FORMS_KEY: key } },
    );
    dualStackUrl = `http://127.0.0.1:${new URL(proxy.url).port}`;
    admin = adminClient(() => proxy.airlock.adminUrl as string, alice.token);
  });

  afterAll(async () => {
    if (proxy !== undefined) assertNoLeak([key, bot.token, alice.token], [responsesSurface(seen), ...proxySurfaces(proxy)]);
    await proxy?.close();
    await upstream?.close();
  });

  async function send(url: string, token: string, init: { method?: string; body?: string } = {}): Promise<SentResponse> {
    const response = await sendRequest(url, {
      localAddress: '127.0.0.1',
      headers: { authorization: `Bearer ${token}`, ...(init.body === undefined ? {} : { 'content-type': 'application/json' }) },
      ...init,
    });
    seen.push(response);
    return response;
  }

  it('one session used through the dual-stack listener and the IPv4 service listener raises nothing', async () => {
    const minted = await send(`${dualStackUrl}/_airlock/sessions`, bot.token, { method: 'POST', body: JSON.stringify({ scopes: { echo: ['a:read'] }, ttl_seconds: 600, justification: 'two listeners' }) });
    expect(minted.status, minted.text).toBe(201);
    const session = minted.json<{ session_token: string }>().session_token;
    expect((await send(`${dualStackUrl}/echo/v1/a`, session)).status).toBe(200);
    const viaService = await send(`${proxy.serviceUrls['echo'] as string}/v1/a`, session);
    expect(viaService.status, viaService.text).toBe(200);
    expect((await send(`${dualStackUrl}/echo/v1/a`, session)).status).toBe(200);
    expect((await admin.call('GET', '/v1/anomalies')).json<{ anomalies: unknown[] }>().anomalies).toEqual([]);
  });
});
