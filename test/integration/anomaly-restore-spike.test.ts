/**
 * An agent suspended by a baseline rule (rate_spike, volume_spike with `action: suspend`) and restored by
 * an admin is let back in: the spike the admin judged is not held against it again. Found by review: the
 * restore cleared the rule's cooldown but not the window that held the spike, so the restored agent's
 * very next request saw the same spike and was suspended again, for as long as the window (60 s, 300 s
 * for volume) still held it.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { generateAgentToken } from '../../src/identity/agent-token.js';
import { assertNoLeak, proxySurfaces, responsesSurface } from '../helpers/assert-no-leak.js';
import { canary } from '../helpers/canary.js';
import { adminClient, type AdminClient } from '../helpers/operator.js';
import { sendRequest, type SentResponse } from '../helpers/send-request.js';
import { startProxy, type ProxyFixture } from '../helpers/start-proxy.js';
import { startUpstream, type Upstream } from '../helpers/start-upstream.js';

describe('rate_spike with action suspend, then a restore', () => {
  const key = canary('anomaly-restore-spike');
  const bot = generateAgentToken();
  const alice = generateAgentToken();
  const seen: SentResponse[] = [];
  let upstream: Upstream;
  let proxy: ProxyFixture;
  let admin: AdminClient;

  beforeAll(async () => {
    upstream = await startUpstream();
    proxy = await startProxy(
      {
        admin: { listen: '127.0.0.1:0', tokens: [{ name: 'alice', hash: alice.hash }] },
        anomalies: {
          warmup: { requests: 3, seconds: '1ms' },
          cooldown: 600,
          rate_spike: { factor: 5, window: 600, min_requests: 10, action: 'suspend' },
          denial_burst: { action: 'alert' },
        },
        services: {
          echo: {
            upstream: upstream.url,
            credential: { secret: 'env:SPIKE_KEY', inject: 'bearer' },
            routes: [{ method: 'GET', path: '/v1/ping', scope: 'ping:read' }],
          },
        },
        agents: { bot: { tokens: [bot.hash], credentials: [{ service: 'echo', max_scope: ['*'] }] } },
      },
      { env: { SPIKE_KEY: key } },
    );
    admin = adminClient(() => proxy.airlock.adminUrl as string, alice.token);
  });

  afterAll(async () => {
    if (proxy !== undefined) assertNoLeak([key, bot.token, alice.token], [responsesSurface(seen), ...proxySurfaces(proxy)]);
    await proxy?.close();
    await upstream?.close();
  });

  async function call(): Promise<number> {
    const response = await sendRequest(`${proxy.url}/echo/v1/ping`, { headers: { authorization: `Bearer ${bot.token}` } });
    seen.push(response);
    return response.status;
  }

  it('a spike suspends the agent; once restored, its next request passes and raises nothing', async () => {
    let suspendedAfter = 0;
    for (let i = 1; i <= 30 && suspendedAfter === 0; i++) if ((await call()) === 401) suspendedAfter = i;
    expect(suspendedAfter, 'the spike suspended the agent').toBeGreaterThan(0);
    const forwardedBefore = upstream.requests.length;

    expect((await admin.call('POST', '/v1/agents/bot/restore', { reason: 'checked: a batch job, expected' })).status).toBe(200);
    expect(await call(), 'restored, the agent works').toBe(200);
    expect(await call()).toBe(200);
    expect(upstream.requests.length).toBe(forwardedBefore + 2);
    const rules = (await admin.call('GET', '/v1/anomalies')).json<{ anomalies: Array<{ rule: string }> }>().anomalies.map((event) => event.rule);
    expect(rules).toEqual(['rate_spike']);
  });

  it('a new spike after the restore suspends it again', async () => {
    let suspended = false;
    for (let i = 0; i < 30 && !suspended; i++) suspended = (await call()) === 401;
    expect(suspended).toBe(true);
    expect((await admin.call('POST', '/v1/agents/bot/restore', { reason: 'test done' })).status).toBe(200);
  });
});
