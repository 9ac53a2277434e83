/**
 * airlock_upstream_duration_seconds counts from when the request is handed to the upstream, after any
 * wait for a connection under max_connections: that wait is Airlock's (it is in the request duration),
 * and a dashboard that read it as upstream latency blamed the upstream for Airlock's queue (left from the
 * observability walkthrough). Two requests at once to a service with one connection, each answered after
 * 500 ms: the second waits ~500 ms, so the upstream total is ~1 s and the request total ~1.5 s.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { generateAgentToken } from '../../src/identity/agent-token.js';
import { canary } from '../helpers/canary.js';
import { sendRequest } from '../helpers/send-request.js';
import { startProxy, type ProxyFixture } from '../helpers/start-proxy.js';
import { startUpstream, type Upstream } from '../helpers/start-upstream.js';

describe('the upstream duration of a request that waited for a connection', () => {
  const agent = generateAgentToken();
  let upstream: Upstream;
  let proxy: ProxyFixture;

  beforeAll(async () => {
    upstream = await startUpstream((_req, res) => {
      setTimeout(() => {
        res.writeHead(200, { 'content-type': 'application/json' });
        res.end('{"ok":true}');
      }, 500);
    });
    proxy = await startProxy(
      {
        services: { slow: { upstream: upstream.url, max_connections: 1, credential: { secret: 'env:SLOW_KEY' }, routes: [{ method: 'GET', path: '/v1/*', scope: 'read' }] } },
        agents: { bot: { tokens: [agent.hash], credentials: [{ service: 'slow', max_scope: ['read'] }] } },
      },
      { env: { SLOW_KEY: canary('upstream-duration') } },
    );
  });

  afterAll(async () => {
    await proxy?.close();
    await upstream?.close();
  });

  async function sum(name: string): Promise<number> {
    const metric = await proxy.airlock.metrics.registry.getSingleMetric(name)?.get();
    return (metric?.values ?? []).filter((v) => (v as { metricName?: string }).metricName === `${name}_sum` && v.labels['service'] === 'slow').reduce((total, v) => total + v.value, 0);
  }

  it('leaves the wait out of the upstream duration, and keeps it in the request duration', async () => {
    const answers = await Promise.all([1, 2].map((i) => sendRequest(`${proxy.url}/slow/v1/x${i}`, { headers: { authorization: `Bearer ${agent.token}` } })));
    for (const answer of answers) expect(answer.status).toBe(200);
    const upstreamSeconds = await sum('airlock_upstream_duration_seconds');
    const requestSeconds = await sum('airlock_request_duration_seconds');
    expect(upstreamSeconds).toBeGreaterThan(0.95);
    expect(upstreamSeconds).toBeLessThan(1.3);
    expect(requestSeconds).toBeGreaterThan(1.4);
  });
});
