/**
 * A request queued behind a full upstream pool (found by review): undici gives a request waiting for a
 * free connection no deadline, so while every one of a service's max_connections was held (long
 * streams, a slow upstream) the requests behind them waited for ever. Now requests past max_connections
 * wait in Airlock (connection-gate.ts), and one still waiting after timeouts.queue is answered 503
 * upstream_busy, audited, and never sent: not even later, when a connection frees up. Nor does it cost
 * a connection then (found by the next review: left in undici's queue, each was started only to be
 * aborted, which destroyed the connection it was given).
 */
import type { IncomingMessage, ServerResponse } from 'node:http';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { generateAgentToken } from '../../src/identity/agent-token.js';
import { assertNoLeak, proxySurfaces, responsesSurface } from '../helpers/assert-no-leak.js';
import { canary } from '../helpers/canary.js';
import { eventually } from '../helpers/operator.js';
import { sendRequest, type SentResponse } from '../helpers/send-request.js';
import { startProxy, type ProxyFixture } from '../helpers/start-proxy.js';
import { startUpstream, type Upstream } from '../helpers/start-upstream.js';
import { auditRecordOf, expectProblem, hostileWatch } from './support/hostile-watch.js';

describe('a request waiting for a free upstream connection', () => {
  const key = canary('pool-full');
  const agent = generateAgentToken();
  const seen: SentResponse[] = [];
  const held: ServerResponse[] = [];
  const watch = hostileWatch();
  let upstream: Upstream;
  let proxy: ProxyFixture;
  let connections = 0;

  beforeAll(async () => {
    // /v1/held answers only when the test lets it; anything else at once.
    upstream = await startUpstream((req: IncomingMessage, res: ServerResponse) => {
      if (req.url === '/v1/held') {
        res.writeHead(200, { 'content-type': 'text/plain' });
        res.write('started ');
        held.push(res);
        return;
      }
      res.writeHead(200, { 'content-type': 'text/plain', 'content-length': 2 });
      res.end('ok');
    });
    upstream.server.on('connection', () => void connections++);
    proxy = await startProxy(
      {
        services: {
          narrow: {
            upstream: upstream.url,
            max_connections: 1,
            timeouts: { connect: 1, headers: 30, body: 30, queue: 1 },
            credential: { secret: 'env:POOL_KEY', inject: 'bearer' },
            routes: [{ method: 'GET', path: '/v1/*', scope: 'api' }],
          },
        },
        agents: { bot: { tokens: [agent.hash], credentials: [{ service: 'narrow', max_scope: ['*'] }] } },
      },
      { env: { POOL_KEY: key } },
    );
    watch.start();
  });

  afterAll(async () => {
    for (const res of held) res.destroy();
    assertNoLeak([key, agent.token], [
      responsesSurface(seen),
      ...proxySurfaces(proxy),
    ]);
    await proxy?.close();
    await upstream?.close();
  });

  async function call(path: string): Promise<SentResponse> {
    const response = await sendRequest(`${proxy.url}/narrow${path}`, { headers: { authorization: `Bearer ${agent.token}` }, timeoutMs: 20_000 });
    seen.push(response);
    return response;
  }

  it('is answered 503 upstream_busy after timeouts.queue, audited, and never sent, even once a connection is free', async () => {
    const first = call('/v1/held');
    await eventually('the first request to hold the only connection', () => held.length === 1);
    const startedAt = Date.now();
    // Five wait behind it; each gives up at its deadline.
    const expired = await Promise.all(Array.from({ length: 5 }, () => call('/v1/quick')));
    const queued = expired[0] as SentResponse;
    const waited = Date.now() - startedAt;
    expect(expired.map((answer) => answer.status)).toEqual([503, 503, 503, 503, 503]);
    const problem = expectProblem({ status: queued.status, contentType: queued.headers['content-type'] as string | undefined, body: queued.text }, 503, 'upstream_busy');
    expect(problem.detail).toContain('max_connections 1');
    // queue: 1 s; the bound above is loose, for a loaded machine.
    expect(waited).toBeGreaterThanOrEqual(900);
    expect(waited).toBeLessThan(15_000);
    const record = await auditRecordOf(proxy, String(queued.headers['x-airlock-request-id']));
    expect(record).toMatchObject({ service: 'narrow', code: 'upstream_busy', status: 503, upstream_status: null });

    // The connection frees up: the held answer completes, the expired request is not sent after all.
    (held[0] as ServerResponse).end('done');
    const answered = await first;
    expect(answered.status).toBe(200);
    expect(answered.text).toBe('started done');
    const next = await call('/v1/next');
    expect(next.status).toBe(200);
    expect(upstream.requests.map((r) => r.target)).toEqual(['/v1/held', '/v1/next']);
    // The connection the held request had is the one the next one used: the five that gave up cost none.
    expect(connections).toBe(1);
  });

  it('a request that gets a connection in time is unaffected by the deadline', async () => {
    const first = call('/v1/held');
    await eventually('the second held request', () => held.length === 2);
    const queued = call('/v1/quick');
    // Freed well within connect + queue: the queued request goes through.
    setTimeout(() => (held[1] as ServerResponse).end('done'), 300);
    expect((await first).status).toBe(200);
    const answer = await queued;
    expect(answer.status, answer.text).toBe(200);
    expect(answer.text).toBe('ok');
  });

  // Found by review: a reload made a new gate with the new pool, so the upstream saw the old
  // generation's requests and the new one's together, up to twice max_connections.
  it('a reload that keeps the service as it was keeps its gate: the upstream still sees one at a time', async () => {
    const first = call('/v1/held');
    await eventually('the third held request', () => held.length === 3);
    expect(await proxy.airlock.reload(proxy.config)).toEqual({ ok: true });
    const before = upstream.requests.length;
    const queued = call('/v1/after-reload');
    await new Promise((resolve) => setTimeout(resolve, 300));
    expect(upstream.requests.length).toBe(before);
    (held[2] as ServerResponse).end('done');
    expect((await first).status).toBe(200);
    const answer = await queued;
    expect(answer.status, answer.text).toBe(200);
    expect(upstream.requests.at(-1)?.target).toBe('/v1/after-reload');
  });

  it('the proxy stayed healthy (no unhandled rejection or uncaught exception, event loop responsive)', () => {
    watch.assertHealthy();
  });
});
