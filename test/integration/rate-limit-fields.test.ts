/**
 * The RateLimit and RateLimit-Policy fields of draft-ietf-httpapi-ratelimit-headers (the structured-field
 * form: `RateLimit-Policy: "<name>";q=<quota>;w=<window s>`, `RateLimit: "<name>";r=<left>;t=<s>`) on
 * Airlock's own 429 rate_limited answers: a grant's `rate` (its token bucket and its `concurrency`),
 * and limits.session_mint_rate. Found missing: the 429 said when to retry (Retry-After) but not what the
 * policy was. They go on Airlock's refusals only: an allowed response is the upstream's, and its own
 * RateLimit fields (and OpenAI's x-ratelimit-*) reach the agent exactly as sent, with nothing of
 * Airlock's added or merged (README, Rate limits). The same fields come from the Redis-shared bucket.
 */
import type { IncomingMessage, ServerResponse } from 'node:http';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { generateAgentToken } from '../../src/identity/agent-token.js';
import { assertNoLeak, proxySurfaces, responsesSurface } from '../helpers/assert-no-leak.js';
import { canary } from '../helpers/canary.js';
import { eventually } from '../helpers/operator.js';
import { sendRequest, type Problem, type SentResponse } from '../helpers/send-request.js';
import { startProxy, type ProxyFixture } from '../helpers/start-proxy.js';
import { okHandler, startUpstream, type Upstream } from '../helpers/start-upstream.js';
import { redisAvailable, startRedisServer, type RedisServer } from '../support/redis-server.js';

/** What an upstream that implements the draft itself (and OpenAI's own headers) sends on /v1/own. */
const UPSTREAM_POLICY = '"default";q=100;w=60';
const UPSTREAM_LIMIT = '"default";r=99;t=50';

/** /v1/slow is held until released; /v1/own answers with the upstream's own rate-limit headers. */
function limitUpstream(): { handler: (req: IncomingMessage, res: ServerResponse) => void; releaseAll(): void; held: ServerResponse[] } {
  const held: ServerResponse[] = [];
  return {
    held,
    handler(req, res) {
      const path = (req.url ?? '').split('?')[0];
      if (path === '/v1/slow') {
        held.push(res);
        return;
      }
      if (path === '/v1/own') {
        const body = '{"own":true}';
        res.writeHead(200, {
          'content-type': 'application/json',
          'content-length': Buffer.byteLength(body),
          'ratelimit-policy': UPSTREAM_POLICY,
          ratelimit: UPSTREAM_LIMIT,
          'x-ratelimit-limit-requests': '5000',
          'x-ratelimit-remaining-requests': '4999',
          'x-ratelimit-reset-requests': '12ms',
        });
        res.end(body);
        return;
      }
      okHandler(req, res);
    },
    releaseAll() {
      for (const res of held.splice(0)) {
        if (res.writableEnded || res.destroyed) continue;
        res.writeHead(200, { 'content-type': 'application/json' });
        res.end('{"slow":true}');
      }
    },
  };
}

function expectRateLimited(response: SentResponse): number {
  expect(response.status, response.text).toBe(429);
  expect(response.json<Problem>().code).toBe('rate_limited');
  const retryAfter = response.headers['retry-after'];
  expect(retryAfter).toMatch(/^\d+$/);
  return Number(retryAfter);
}

/** The bucket's refusal: its policy, and RateLimit with nothing left until the Retry-After (the same moment). */
function expectBucketFields(response: SentResponse, policy: string, name: string): void {
  const retryAfter = expectRateLimited(response);
  expect(response.headers['ratelimit-policy']).toBe(policy);
  expect(response.headers['ratelimit']).toBe(`"${name}";r=0;t=${retryAfter}`);
}

describe('RateLimit fields on rate_limited answers (memory state)', () => {
  const key = canary('ratelimit-fields');
  const steady = generateAgentToken();
  const bursty = generateAgentToken();
  const quick = generateAgentToken();
  const parallel = generateAgentToken();
  const owner = generateAgentToken();
  const minter = generateAgentToken();
  const unlimited = generateAgentToken();
  const upstreamHandler = limitUpstream();
  const seen: SentResponse[] = [];
  let upstream: Upstream;
  let proxy: ProxyFixture;

  beforeAll(async () => {
    upstream = await startUpstream(upstreamHandler.handler);
    const grant = (rate?: Record<string, unknown>): Record<string, unknown> => ({ service: 'llm', max_scope: ['*'], ...(rate === undefined ? {} : { rate }) });
    proxy = await startProxy(
      {
        anomalies: { enabled: false },
        limits: { session_mint_rate: { requests: 1, per: '1h' } },
        services: {
          llm: {
            upstream: upstream.url,
            credential: { secret: 'env:LLM_KEY', inject: 'bearer' },
            routes: [
              { method: 'GET', path: '/v1/ping', scope: 'ping:read' },
              { method: 'GET', path: '/v1/own', scope: 'ping:read' },
              { method: 'GET', path: '/v1/slow', scope: 'ping:read' },
            ],
          },
        },
        agents: {
          steady: { tokens: [steady.hash], credentials: [grant({ requests: 2, per: '1m' })] },
          bursty: { tokens: [bursty.hash], credentials: [grant({ requests: 2, per: '1s', burst: 3 })] },
          quick: { tokens: [quick.hash], credentials: [grant({ requests: 1, per: '500ms' })] },
          parallel: { tokens: [parallel.hash], credentials: [grant({ requests: 1000, per: 1, concurrency: 1 })] },
          owner: { tokens: [owner.hash], credentials: [grant({ requests: 1000, per: 1 })] },
          minter: { tokens: [minter.hash], credentials: [{ ...grant(), max_ttl: 600 }] },
          unlimited: { tokens: [unlimited.hash], credentials: [grant()] },
        },
      },
      { env: { LLM_KEY: key } },
    );
  });

  afterAll(async () => {
    upstreamHandler.releaseAll();
    await proxy?.close();
    await upstream?.close();
  });

  async function call(token: string, path: string, init: { method?: string; body?: string } = {}): Promise<SentResponse> {
    const response = await sendRequest(`${proxy.url}${path}`, {
      method: init.method ?? 'GET',
      headers: { authorization: `Bearer ${token}`, ...(init.body === undefined ? {} : { 'content-type': 'application/json' }) },
      ...(init.body === undefined ? {} : { body: init.body }),
      timeoutMs: 15_000,
    });
    seen.push(response);
    return response;
  }

  it('a grant of 2 per minute: the 429 carries RateLimit-Policy "llm";q=2;w=60 and RateLimit r=0 with t equal to Retry-After', async () => {
    for (let i = 0; i < 2; i++) expect((await call(steady.token, '/llm/v1/ping')).status).toBe(200);
    const refused = await call(steady.token, '/llm/v1/ping');
    expectBucketFields(refused, '"llm";q=2;w=60', 'llm');
    // One token per 30 s: the next is at most 30 s away.
    const t = Number(/;t=(\d+)$/.exec(String(refused.headers['ratelimit']))?.[1]);
    expect(t).toBeGreaterThanOrEqual(29);
    expect(t).toBeLessThanOrEqual(30);
  });

  it('a `burst` other than `requests` is said as the vendor parameter airlock-burst', async () => {
    const responses = await Promise.all(Array.from({ length: 6 }, () => call(bursty.token, '/llm/v1/ping')));
    const refused = responses.filter((r) => r.status !== 200);
    expect(refused.length).toBeGreaterThan(0);
    for (const response of refused) expectBucketFields(response, '"llm";q=2;w=1;airlock-burst=3', 'llm');
  });

  it('a period under a second is said in whole seconds (w is an Integer): 1 per 500 ms is q=2;w=1, one at a time (airlock-burst=1)', async () => {
    let refused: SentResponse | undefined;
    for (let i = 0; i < 20 && refused === undefined; i++) {
      const response = await call(quick.token, '/llm/v1/ping');
      if (response.status === 429) refused = response;
    }
    expect(refused, 'a 429 within 20 quick requests').toBeDefined();
    expectBucketFields(refused as SentResponse, '"llm";q=2;w=1;airlock-burst=1', 'llm');
  });

  it('concurrency: the policy lists both limits, and RateLimit names the concurrency one, r=0 and no t', async () => {
    const first = call(parallel.token, '/llm/v1/slow');
    await eventually('the first request held at the upstream', () => upstreamHandler.held.length === 1);
    const refused = await call(parallel.token, '/llm/v1/ping');
    expect(expectRateLimited(refused)).toBe(1);
    expect(refused.headers['ratelimit-policy']).toBe('"llm";q=1000;w=1, "llm/concurrency";q=1;qu="concurrent-requests"');
    expect(refused.headers['ratelimit']).toBe('"llm/concurrency";r=0');
    upstreamHandler.releaseAll();
    expect((await first).status).toBe(200);
  });

  it('session mints over limits.session_mint_rate: "session_mint_rate";q=1;w=3600', async () => {
    const body = JSON.stringify({ scopes: { llm: ['ping:read'] }, ttl_seconds: 60, justification: 'ratelimit fields test' });
    const minted = await call(minter.token, '/_airlock/sessions', { method: 'POST', body });
    expect(minted.status, minted.text).toBe(201);
    const refused = await call(minter.token, '/_airlock/sessions', { method: 'POST', body });
    expectBucketFields(refused, '"session_mint_rate";q=1;w=3600', 'session_mint_rate');
  });

  it("allowed responses carry no RateLimit of Airlock's; the upstream's own RateLimit fields and x-ratelimit-* reach the agent exactly as sent", async () => {
    const own = await call(owner.token, '/llm/v1/own');
    expect(own.status, own.text).toBe(200);
    expect(own.headers['ratelimit-policy']).toBe(UPSTREAM_POLICY);
    expect(own.headers['ratelimit']).toBe(UPSTREAM_LIMIT);
    expect(own.headers['x-ratelimit-remaining-requests']).toBe('4999');
    expect(own.headers['x-ratelimit-limit-requests']).toBe('5000');
    const plain = await call(owner.token, '/llm/v1/ping');
    expect(plain.status).toBe(200);
    expect(plain.headers['ratelimit-policy']).toBeUndefined();
    expect(plain.headers['ratelimit']).toBeUndefined();
    // A grant without `rate` is never refused for it, and its answers carry no fields either.
    const free = await call(unlimited.token, '/llm/v1/ping');
    expect(free.status).toBe(200);
    expect(free.headers['ratelimit']).toBeUndefined();
  });

  it('no canary reaches agents, logs or audit', () => {
    assertNoLeak([key, steady.token, bursty.token, quick.token, parallel.token, owner.token, minter.token, unlimited.token], [responsesSurface(seen), ...proxySurfaces(proxy)]);
  });
});

describe.skipIf(!redisAvailable())('RateLimit fields on rate_limited answers (Redis state)', () => {
  const key = canary('ratelimit-fields-redis');
  const steady = generateAgentToken();
  const seen: SentResponse[] = [];
  let redis: RedisServer;
  let upstream: Upstream;
  let proxy: ProxyFixture;

  beforeAll(async () => {
    redis = await startRedisServer();
    upstream = await startUpstream();
    proxy = await startProxy(
      {
        state: { type: 'redis', url: redis.url },
        anomalies: { enabled: false },
        services: { llm: { upstream: upstream.url, credential: { secret: 'env:LLM_KEY', inject: 'bearer' }, routes: [{ method: 'GET', path: '/v1/ping', scope: 'ping:read' }] } },
        agents: { steady: { tokens: [steady.hash], credentials: [{ service: 'llm', max_scope: ['*'], rate: { requests: 2, per: '1m', burst: 2 } }] } },
      },
      { env: { LLM_KEY: key } },
    );
  });

  afterAll(async () => {
    await proxy?.close();
    await upstream?.close();
    await redis?.close();
  });

  it('the shared bucket refuses with the same fields', async () => {
    const call = async (): Promise<SentResponse> => {
      const response = await sendRequest(`${proxy.url}/llm/v1/ping`, { headers: { authorization: `Bearer ${steady.token}` } });
      seen.push(response);
      return response;
    };
    for (let i = 0; i < 2; i++) {
      const allowed = await call();
      expect(allowed.status, allowed.text).toBe(200);
      expect(allowed.headers['ratelimit']).toBeUndefined();
    }
    expectBucketFields(await call(), '"llm";q=2;w=60', 'llm');
  });

  it('no canary reaches agents, logs or audit', () => {
    assertNoLeak([key, steady.token], [responsesSurface(seen), ...proxySurfaces(proxy)]);
  });
});
