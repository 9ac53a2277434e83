/**
 * Spans past what can wait for a slow collector (2,048) are dropped and counted in
 * airlock_trace_spans_dropped_total, with one warn line that says why; requests are not affected. Found
 * by the observability walkthrough: the SDK's own bound dropped them with only a line on its global
 * diag logger. The collector here takes each export and never answers.
 */
import { createServer, type IncomingMessage, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { generateAgentToken } from '../../src/identity/agent-token.js';
import { canary } from '../helpers/canary.js';
import { eventually } from '../helpers/operator.js';
import { sendRequest } from '../helpers/send-request.js';
import { startProxy, type ProxyFixture } from '../helpers/start-proxy.js';
import { startUpstream, type Upstream } from '../helpers/start-upstream.js';

describe('a collector that never answers', () => {
  const agent = generateAgentToken();
  const held: ServerResponse[] = [];
  const collector = createServer((_req: IncomingMessage, res: ServerResponse) => void held.push(res));
  let upstream: Upstream;
  let proxy: ProxyFixture;

  beforeAll(async () => {
    await new Promise<void>((resolve) => collector.listen(0, '127.0.0.1', resolve));
    upstream = await startUpstream();
    proxy = await startProxy(
      {
        telemetry: { otlp: { endpoint: `http://127.0.0.1:${(collector.address() as AddressInfo).port}` } },
        services: { api: { upstream: upstream.url, credential: { secret: 'env:QUEUE_KEY' }, routes: [{ method: 'GET', path: '/v1/*', scope: 'read' }] } },
        agents: { bot: { tokens: [agent.hash], credentials: [{ service: 'api', max_scope: ['read'] }] } },
      },
      { env: { QUEUE_KEY: canary('trace-queue') } },
    );
  });

  afterAll(async () => {
    await proxy?.close();
    await upstream?.close();
    for (const res of held) res.destroy();
    collector.closeAllConnections();
    await new Promise<void>((resolve) => collector.close(() => resolve()));
  });

  async function dropped(): Promise<number> {
    const metric = await proxy.airlock.metrics.registry.getSingleMetric('airlock_trace_spans_dropped_total')?.get();
    return metric?.values[0]?.value ?? 0;
  }

  it('drops what is past 2,048 waiting spans, counts it, says why once, and answers every request', async () => {
    // Two spans a request (SERVER and CLIENT): 1,600 requests end 3,200 spans, far past what can wait
    // while the first exports hang (up to 5 s each).
    for (let batch = 0; batch < 40; batch++) {
      const answers = await Promise.all(Array.from({ length: 40 }, (_, i) => sendRequest(`${proxy.url}/api/v1/x-${batch}-${i}`, { headers: { authorization: `Bearer ${agent.token}` } })));
      for (const answer of answers) expect(answer.status).toBe(200);
    }
    const count = await eventually('spans dropped and counted', async () => ((await dropped()) > 0 ? dropped() : undefined), 5_000, 50);
    expect(count).toBeGreaterThan(0);
    const warnings = (): Array<Record<string, unknown>> => proxy.logRecords().filter((l) => l['level'] === 'warn' && String(l['msg']).startsWith('spans are dropped: 2,048 were already waiting for the OTLP collector'));
    // Log lines share a write every 2 ms: the line can follow the counter (a loaded CI run read none).
    await eventually('the warn line', () => warnings().length > 0);
    const warned = warnings();
    expect(warned).toHaveLength(1);
    expect(warned[0]?.['cause']).toBe('ExportQueueFull');
  }, 60_000);
});
