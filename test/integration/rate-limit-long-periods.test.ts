/**
 * Rates over long periods. `per` is bounded (366 days, as a task session's max_ttl): a longer one gave a
 * Retry-After that is not delay-seconds (RFC 9110 10.2.3): `per: 1e21` answered `Retry-After: 1e+21`, and
 * `per: 1e308` (a refill of 0 per ms) `Retry-After: Infinity`. And with shared state, a bucket that takes
 * long to fill (a large burst refilled slowly) keeps working: the Redis script's key expiry (the time to
 * fill the bucket) was passed to PEXPIRE as 1e+17 or more, which Redis refuses, so every request of that
 * grant, the first included, was refused with 503 (found by review).
 */
import { tmpdir } from 'node:os';
import { Redis } from 'ioredis';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { formatProblem } from '../../src/config/config-problem.js';
import { buildConfig } from '../../src/config/load-config.js';
import { generateAgentToken } from '../../src/identity/agent-token.js';
import { assertNoLeak, proxySurfaces, responsesSurface } from '../helpers/assert-no-leak.js';
import { canary } from '../helpers/canary.js';
import { sendRequest, type SentResponse } from '../helpers/send-request.js';
import { startProxy, type ProxyFixture } from '../helpers/start-proxy.js';
import { startUpstream, type Upstream } from '../helpers/start-upstream.js';
import { redisAvailable, startRedisServer, type RedisServer } from '../support/redis-server.js';

const bot = generateAgentToken();

function grantConfig(upstream: string, rate: Record<string, unknown>, extra: Record<string, unknown> = {}): Record<string, unknown> {
  return {
    anomalies: { enabled: false },
    services: { llm: { upstream, credential: { secret: 'env:LLM_KEY', inject: 'bearer' }, routes: [{ method: 'GET', path: '/v1/ping', scope: 'ping:read' }] } },
    agents: { bot: { tokens: [bot.hash], credentials: [{ service: 'llm', max_scope: ['*'], rate }] } },
    ...extra,
  };
}

describe('rate.per: bounded, so Retry-After stays whole seconds', () => {
  it('a period over 366 days is refused, naming the field; 366 days is taken', () => {
    for (const per of ['400d', 1e21, 1e308]) {
      const built = buildConfig(grantConfig('http://127.0.0.1:9', { requests: 1, per }), { baseDir: tmpdir() });
      expect(built.config, `per: ${per}`).toBeNull();
      const text = built.problems.map((p) => formatProblem(p, null)).join('\n');
      expect(text).toContain('rate.per');
      expect(text).toContain('366d');
    }
    expect(buildConfig(grantConfig('http://127.0.0.1:9', { requests: 1, per: '366d' }), { baseDir: tmpdir() }).problems).toEqual([]);
    const mint = buildConfig({ limits: { session_mint_rate: { requests: 1, per: '400d' } } }, { baseDir: tmpdir() });
    expect(mint.config).toBeNull();
  });
});

const available = redisAvailable();

describe.skipIf(!available)('a slowly filled bucket in Redis', () => {
  const key = canary('rate-long-period');
  const seen: SentResponse[] = [];
  let redis: RedisServer;
  let upstream: Upstream;
  let proxy: ProxyFixture;

  beforeAll(async () => {
    redis = await startRedisServer();
    upstream = await startUpstream();
    // A year to refill a token, a billion at once: filling the bucket from empty takes 3e19 ms.
    proxy = await startProxy(grantConfig(upstream.url, { requests: 1, per: '366d', burst: 1_000_000_000 }, { state: { type: 'redis', url: redis.url } }), { env: { LLM_KEY: key } });
  });

  afterAll(async () => {
    if (proxy !== undefined) assertNoLeak([key, bot.token], [responsesSurface(seen), ...proxySurfaces(proxy)]);
    await proxy?.close();
    await upstream?.close();
    await redis?.close();
  });

  it('requests pass, and the bucket key expires (with a bounded TTL)', async () => {
    for (let i = 0; i < 3; i++) {
      const response = await sendRequest(`${proxy.url}/llm/v1/ping`, { headers: { authorization: `Bearer ${bot.token}` } });
      seen.push(response);
      expect(response.status, response.text).toBe(200);
    }
    expect(upstream.requests).toHaveLength(3);
    const client = new Redis(redis.url);
    try {
      const keys = await client.keys('airlock:rate:*');
      expect(keys).toHaveLength(1);
      const ttl = await client.pttl(keys[0] as string);
      expect(ttl).toBeGreaterThan(0);
      expect(ttl).toBeLessThanOrEqual(1e15);
    } finally {
      client.disconnect();
    }
  });
});
