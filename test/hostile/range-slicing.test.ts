/**
 * Slicing a reflected credential with Range (invariant 1; found by review). An upstream that reflects
 * the request (an echo endpoint, a debug page) and honours Range, as static and object-store servers
 * do, would hand an agent any window of its own reflection: a window inside the injected key holds
 * neither the key's start nor its end, so no whole form of it is there to find, and a few windows
 * rebuild the key. Airlock therefore never forwards the agent's Range or If-Range: the upstream answers
 * with the whole representation (RFC 9110 14.2: a server may ignore Range), which is scanned whole.
 */
import type { IncomingMessage, ServerResponse } from 'node:http';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { generateAgentToken } from '../../src/identity/agent-token.js';
import { findLeaks } from '../helpers/assert-no-leak.js';
import { canary } from '../helpers/canary.js';
import { startProxy, type ProxyFixture } from '../helpers/start-proxy.js';
import { hostileWatch } from './support/hostile-watch.js';
import { startUpstream, type RecordedRequest, type Upstream } from '../helpers/start-upstream.js';

/** Reflects the request's headers as JSON and serves byte ranges of that reflection (single ranges). */
function reflectingRangeServer(req: IncomingMessage, res: ServerResponse): void {
  const body = Buffer.from(JSON.stringify({ method: req.method, headers: req.headers }));
  const range = /^bytes=(\d+)-(\d+)$/.exec(String(req.headers.range ?? ''));
  if (range === null) {
    res.writeHead(200, { 'content-type': 'application/json', 'accept-ranges': 'bytes', 'content-length': body.length });
    res.end(body);
    return;
  }
  const start = Number(range[1]);
  const end = Math.min(Number(range[2]), body.length - 1);
  res.writeHead(206, { 'content-type': 'application/json', 'content-range': `bytes ${start}-${end}/${body.length}`, 'content-length': end - start + 1 });
  res.end(body.subarray(start, end + 1));
}

describe('Range cannot slice a reflected credential', () => {
  const watch = hostileWatch();
  const key = canary('range-slice');
  const agent = generateAgentToken();
  const seen: RecordedRequest[] = [];
  let upstream: Upstream;
  let proxy: ProxyFixture;

  beforeAll(async () => {
    upstream = await startUpstream((req, res, recorded) => {
      seen.push(recorded);
      reflectingRangeServer(req, res);
    });
    proxy = await startProxy(
      {
        services: {
          echo: {
            upstream: upstream.url,
            credential: { secret: 'env:ECHO_KEY', inject: 'bearer' },
            routes: [{ method: 'GET', path: '/*', scope: 'read' }],
          },
        },
        agents: { bot: { tokens: [agent.hash], credentials: [{ service: 'echo', max_scope: ['read'] }] } },
      },
      { env: { ECHO_KEY: key } },
    );
    watch.start();
  });

  afterAll(async () => {
    await proxy.close();
    await upstream.close();
  });

  it('the upstream never sees Range or If-Range; the agent gets the whole reflection, the key masked', async () => {
    const get = (range: string, probe: number) =>
      fetch(`${proxy.url}/echo/reflect`, { headers: { authorization: `Bearer ${agent.token}`, range, 'if-range': '"etag-1"', 'x-probe': String(probe) } });
    // Ranges written at a fixed width (as the attack does), so every reflection has the same length and
    // the key the same offset: where the agent sees the marker of its first, whole answer.
    const width = (n: number) => String(n).padStart(5, '0');
    const firstResponse = await get(`bytes=${width(0)}-${width(99999)}`, 0);
    const first = await firstResponse.text();
    expect(firstResponse.status, first).toBe(200);
    const at = first.indexOf('Bearer [REDACTED]') + 'Bearer '.length;
    expect(at).toBeGreaterThan('Bearer '.length);
    const windows = [`bytes=${width(at + 3)}-${width(at + 20)}`, `bytes=${width(at + 1)}-${width(at + key.length - 2)}`];
    const bodies: string[] = [first];
    for (const [index, range] of windows.entries()) {
      const response = await get(range, index + 1);
      const text = await response.text();
      bodies.push(text);
      expect(response.status, text).toBe(200);
      expect(response.headers.get('content-range')).toBeNull();
      expect(text).toContain('"authorization":"Bearer [REDACTED]"');
    }
    // The upstream was asked each time, and never with a range.
    const probes = seen.filter((r) => r.header('x-probe').length > 0);
    expect(probes.map((r) => r.header('x-probe')[0])).toEqual(['0', '1', '2']);
    for (const probe of probes) {
      expect(probe.header('range')).toEqual([]);
      expect(probe.header('if-range')).toEqual([]);
      expect(probe.header('authorization')).toEqual([`Bearer ${key}`]);
    }
    // No window of the key, not even the short interior one, reached the agent.
    const fragments = [key, key.slice(3, 21), key.slice(1, -1)];
    expect(findLeaks(fragments, bodies.map((text, i) => ({ name: `response ${i}`, text })))).toEqual([]);
    expect(findLeaks([key], [{ name: 'logs', text: proxy.logLines.join('\n') }, { name: 'audit', text: proxy.auditText() }])).toEqual([]);
  });

  it('the proxy stayed healthy (no unhandled rejection or uncaught exception, event loop responsive)', () => {
    watch.assertHealthy();
  });
});
