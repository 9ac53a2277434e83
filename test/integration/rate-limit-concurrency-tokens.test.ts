/**
 * A request refused because the agent already has `rate.concurrency` requests in flight is not sent
 * upstream, so it costs no token of the grant's bucket, as a request the bucket itself refuses costs
 * none. Found by review: the bucket was taken from before the concurrency gate was asked, so an agent
 * that retried while its slots were busy spent its rate on refusals, and once a slot was free it was
 * refused again for the rate (`requests: 2, per: 1m`: one request reached the upstream in the minute).
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

describe('rate.concurrency refusals and the token bucket', () => {
  const key = canary('rate-concurrency-tokens');
  const bot = generateAgentToken();
  const held: ServerResponse[] = [];
  const seen: SentResponse[] = [];
  let upstream: Upstream;
  let proxy: ProxyFixture;

  function handler(req: IncomingMessage, res: ServerResponse): void {
    if ((req.url ?? '').startsWith('/v1/slow')) held.push(res);
    else okHandler(req, res);
  }

  function releaseAll(): void {
    for (const res of held.splice(0)) if (!res.writableEnded && !res.destroyed) res.end('{"slow":true}');
  }

  beforeAll(async () => {
    upstream = await startUpstream(handler);
    proxy = await startProxy(
      {
        anomalies: { enabled: false },
        services: {
          llm: {
            upstream: upstream.url,
            credential: { secret: 'env:LLM_KEY', inject: 'bearer' },
            routes: [
              { method: 'GET', path: '/v1/ping', scope: 'ping:read' },
              { method: 'GET', path: '/v1/slow', scope: 'slow:read' },
            ],
          },
        },
        agents: { bot: { tokens: [bot.hash], credentials: [{ service: 'llm', max_scope: ['*'], rate: { requests: 2, per: '1m', concurrency: 1 } }] } },
      },
      { env: { LLM_KEY: key } },
    );
  });

  afterAll(async () => {
    releaseAll();
    if (proxy !== undefined) assertNoLeak([key, bot.token], [responsesSurface(seen), ...proxySurfaces(proxy)]);
    await proxy?.close();
    await upstream?.close();
  });

  async function call(path: string): Promise<SentResponse> {
    const response = await sendRequest(`${proxy.url}/llm${path}`, { headers: { authorization: `Bearer ${bot.token}` }, timeoutMs: 15_000 });
    seen.push(response);
    return response;
  }

  it('two requests per minute, one in flight at a time: refusals while the slot is busy leave the second token for after', async () => {
    const first = call('/v1/slow');
    await eventually('the first request held at the upstream', () => held.length === 1);
    for (let i = 0; i < 3; i++) {
      const busy = await call('/v1/ping');
      expect(busy.status, busy.text).toBe(429);
      expect(busy.json<Problem>().detail).toContain('in flight');
    }
    releaseAll();
    expect((await first).status).toBe(200);

    const second = await call('/v1/ping');
    expect(second.status, `the second of two requests a minute: ${second.text}`).toBe(200);
    const third = await call('/v1/ping');
    expect(third.status).toBe(429);
    expect(third.json<Problem>().detail).toContain('2 per 60 s');
    expect(upstream.requests).toHaveLength(2);
  });
});
