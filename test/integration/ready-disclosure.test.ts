/**
 * /_airlock/ready answers anyone who reaches an agent listener, without a token. Found by review: it
 * named the failing credential references ("failing: env:PROD_STRIPE_LIVE_KEY, ...") and how long Redis
 * had been unreachable. It now says states and counts; the references stay on the admin API.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { generateAgentToken } from '../../src/identity/agent-token.js';
import { assertNoLeak } from '../helpers/assert-no-leak.js';
import { canary } from '../helpers/canary.js';
import { adminClient, eventually } from '../helpers/operator.js';
import { sendRequest } from '../helpers/send-request.js';
import { startProxy, type ProxyFixture } from '../helpers/start-proxy.js';
import { startUpstream, type Upstream } from '../helpers/start-upstream.js';
import { redisAvailable, startRedisServer, type RedisServer } from '../support/redis-server.js';

interface ReadyBody {
  status: string;
  checks: Record<string, string>;
}

describe('/_airlock/ready tells an unauthenticated caller states and counts, not names', () => {
  const presentKey = canary('ready-ok');
  const bot = generateAgentToken();
  const admin = generateAgentToken();
  const proxies: ProxyFixture[] = [];
  const seen: string[] = [];
  let upstream: Upstream;

  beforeAll(async () => {
    upstream = await startUpstream();
  });

  afterAll(async () => {
    try {
      assertNoLeak([presentKey, bot.token, admin.token], [
        { name: 'responses', text: seen.join('\n') },
        { name: 'logs', text: proxies.map((p) => p.logLines.join('')).join('\n') },
        { name: 'audit', text: proxies.map((p) => p.auditText()).join('\n') },
      ]);
    } finally {
      for (const proxy of proxies) await proxy.close();
      await upstream?.close();
    }
  });

  function service(secret: string): Record<string, unknown> {
    return { upstream: upstream.url, credential: { secret, inject: 'bearer' }, routes: [{ method: 'GET', path: '/*', scope: 'x' }] };
  }

  async function started(extra: Record<string, unknown> = {}): Promise<ProxyFixture> {
    const proxy = await startProxy(
      {
        admin: { listen: '127.0.0.1:0', tokens: [{ name: 'alice', hash: admin.hash }] },
        services: {
          fine: service('env:READY_PRESENT_KEY'),
          payments: service('env:PROD_STRIPE_LIVE_KEY'),
          crm: service('file:salesforce-prod-admin'),
        },
        agents: { bot: { tokens: [bot.hash], credentials: [{ service: 'fine', max_scope: ['x'] }] } },
        ...extra,
      },
      { env: { READY_PRESENT_KEY: presentKey } },
    );
    proxies.push(proxy);
    return proxy;
  }

  async function ready(proxy: ProxyFixture): Promise<{ status: number; text: string; body: ReadyBody }> {
    const response = await sendRequest(`${proxy.url}/_airlock/ready`);
    seen.push(response.text);
    return { status: response.status, text: response.text, body: response.json<ReadyBody>() };
  }

  it('two credentials that cannot be read: "failing (2)", no reference named; the admin API names them', async () => {
    const proxy = await started();
    const answer = await eventually('both credentials reported failing', async () => {
      const got = await ready(proxy);
      return got.body.checks['credentials'] === 'ok' ? undefined : got;
    });
    expect(answer.status).toBe(200);
    expect(answer.body).toEqual({ status: 'ready', checks: { audit: 'writable', state: 'embedded', credentials: 'failing (2)' } });
    for (const name of ['PROD_STRIPE_LIVE_KEY', 'salesforce-prod-admin', 'env:', 'file:', 'READY_PRESENT_KEY']) expect(answer.text).not.toContain(name);

    // The operator still finds which, behind an admin token.
    const operator = adminClient(() => proxy.airlock.adminUrl as string, admin.token);
    const listed = await operator.call('GET', '/v1/credentials');
    seen.push(...operator.seen);
    expect(listed.status).toBe(200);
    const failing = listed
      .json<{ credentials: Array<{ ref: string; failing: boolean }> }>()
      .credentials.filter((c) => c.failing)
      .map((c) => c.ref)
      .sort();
    expect(failing).toEqual(['env:PROD_STRIPE_LIVE_KEY', 'file:salesforce-prod-admin']);
  });

  describe.skipIf(!redisAvailable())('with shared state in Redis', () => {
    let redis: RedisServer;
    beforeAll(async () => {
      redis = await startRedisServer();
    });
    afterAll(async () => {
      await redis?.close();
    });

    it('Redis unreachable is a state ("redis unreachable"), without how long it has been down', async () => {
      const proxy = await started({ state: { type: 'redis', url: redis.url, prefix: `ready-disclosure-${Date.now()}:`, stale_after: 1 } });
      expect((await ready(proxy)).body.checks['state']).toBe('redis reachable');
      await redis.kill();
      try {
        const down = await eventually(
          'ready to turn 503',
          async () => {
            const got = await ready(proxy);
            return got.status === 503 ? got : undefined;
          },
          8_000,
          100,
        );
        expect(down.body).toMatchObject({ status: 'not_ready', checks: { state: 'redis unreachable' } });
        expect(down.text).not.toMatch(/\d+ s\b/);
      } finally {
        await redis.start();
      }
    });
  });
});
