/**
 * The bench's paced load (benchmarks/parts/run-paced.ts): its figures stand for the "unloaded" goals of
 * issue 9, so what it counts is checked here against a real server on loopback.
 */
import { createServer, type Server } from 'node:http';
import { createServer as createNetServer } from 'node:net';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { runPaced } from '../../benchmarks/parts/run-paced.js';

describe('runPaced', () => {
  let server: Server;
  let base: string;
  const seen: string[] = [];

  beforeAll(async () => {
    server = createServer((req, res) => {
      seen.push(`${req.method} ${req.url} ${req.headers['authorization'] ?? ''}`);
      if (req.url === '/fail') return void res.writeHead(503, { 'content-length': 4 }).end('down');
      if (req.url === '/chunked') {
        res.writeHead(200);
        res.write('a');
        return void res.end('b');
      }
      const delay = req.url === '/slow' ? 6 : 0;
      setTimeout(() => res.writeHead(200, { 'content-type': 'application/json', 'content-length': 11 }).end('{"ok":true}'), delay);
    });
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
    const address = server.address();
    base = `http://127.0.0.1:${typeof address === 'object' && address !== null ? address.port : 0}`;
  });

  afterAll(() => new Promise<void>((resolve) => server.close(() => resolve())));

  it('sends the requests one at a time on its schedule, with the headers given, and times each', async () => {
    seen.length = 0;
    const started = performance.now();
    const result = await runPaced({ url: `${base}/ok?x=1`, requests: 40, intervalMs: 3, headers: { authorization: 'Bearer paced' } });
    const elapsed = performance.now() - started;
    expect(result).toMatchObject({ requests: 40, errors: 0 });
    expect(seen).toEqual(Array.from({ length: 40 }, () => 'GET /ok?x=1 Bearer paced'));
    // 39 intervals of 3 ms: the schedule, not the server, sets the pace. Less 1 ms: node's timers run
    // against libuv's loop time, cached when the loop iteration began, so a timer may fire a fraction of
    // a millisecond before performance.now() says its delay has passed (a run measured 116.99 ms).
    const schedule = 39 * 3 - 1;
    expect(elapsed).toBeGreaterThanOrEqual(schedule);
    // 40 requests in no less than those 39 intervals.
    expect(result.rps).toBeLessThanOrEqual(40 / (schedule / 1000));
    expect(result.p50Ms).toBeGreaterThan(0);
    expect(result.p99Ms).toBeGreaterThanOrEqual(result.p50Ms);
    expect(result.late).toBeLessThan(40);
  });

  it('counts answers outside 2xx-3xx as errors', async () => {
    const result = await runPaced({ url: `${base}/fail`, requests: 5, intervalMs: 1 });
    expect(result.errors).toBe(5);
  });

  it('counts an answer whose status line it cannot read as an error', async () => {
    // A status line node would never write, from a raw server: one answer per request it reads.
    const raw = createNetServer((socket) => socket.on('data', () => socket.write('HTTP/1.1 2x0 Odd\r\ncontent-length: 2\r\n\r\nok')));
    await new Promise<void>((resolve) => raw.listen(0, '127.0.0.1', resolve));
    try {
      const address = raw.address();
      const result = await runPaced({ url: `http://127.0.0.1:${typeof address === 'object' && address !== null ? address.port : 0}/garbled`, requests: 3, intervalMs: 1 });
      expect(result.errors).toBe(3);
    } finally {
      await new Promise<void>((resolve) => raw.close(() => resolve()));
    }
  });

  it('counts a request as late when the answer before it came after its slot', async () => {
    const result = await runPaced({ url: `${base}/slow`, requests: 10, intervalMs: 1 });
    expect(result.late).toBe(9);
    expect(result.p50Ms).toBeGreaterThanOrEqual(5);
  });

  it('refuses an answer without content-length rather than guess where it ends', async () => {
    await expect(runPaced({ url: `${base}/chunked`, requests: 2, intervalMs: 1 })).rejects.toThrow(/content-length only/);
  });
});
