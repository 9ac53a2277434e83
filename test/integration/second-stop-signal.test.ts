/**
 * A second SIGTERM while `airlock serve` drains (a supervisor that gives up waiting, an operator who
 * presses Ctrl-C twice): the requests still in flight are cut now, and each still gets its audit
 * record (incomplete), with airlock:stop last, and the process exits 0. Found by an ops walkthrough:
 * node's default action killed the process, and a stream already sent upstream with the credential had
 * no audit record at all; a request still waiting for its upstream got no answer (now 503 shutting_down).
 */
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { generateAgentToken } from '../../src/identity/agent-token.js';
import type { AuditRecord } from '../../src/observability/audit-record.js';
import { assertNoLeak } from '../helpers/assert-no-leak.js';
import { canary } from '../helpers/canary.js';
import { eventually, freePort, writeConfigFile } from '../helpers/operator.js';
import { spawnServe, type SpawnedServe } from '../helpers/spawn-serve.js';
import { tempDir } from '../helpers/start-proxy.js';
import { startUpstream, type Upstream } from '../helpers/start-upstream.js';

describe('a second SIGTERM while draining', () => {
  const key = canary('second-stop');
  const agent = generateAgentToken();
  let upstream: Upstream;
  let airlock: SpawnedServe;
  let dir: string;
  let port: number;

  beforeAll(async () => {
    upstream = await startUpstream((req, res) => {
      // Never answered: a request still waiting for its upstream when the cut comes.
      if (req.url?.includes('never') === true) return;
      // A stream of 20 s, far past the first signal's 30 s drain's patience for this test.
      res.writeHead(200, { 'content-type': 'text/event-stream' });
      const ticking = setInterval(() => res.write('data: tick\n\n'), 100);
      const end = setTimeout(() => res.end(), 20_000);
      res.on('close', () => {
        clearInterval(ticking);
        clearTimeout(end);
      });
    });
    dir = tempDir('airlock-second-stop-');
    port = await freePort();
    const config = writeConfigFile(dir, {
      listen: `127.0.0.1:${port}`,
      data_dir: './data',
      shutdown_timeout: 30,
      services: { llm: { upstream: upstream.url, credential: { secret: 'env:STOP_KEY' }, routes: [{ method: 'GET', path: '/v1/*', scope: 'read' }] } },
      agents: { bot: { tokens: [agent.hash], credentials: [{ service: 'llm', max_scope: ['read'] }] } },
    });
    airlock = spawnServe(config, { STOP_KEY: key });
    await eventually('Airlock listening', () => airlock.err().includes('Stop with Ctrl-C.'), 15_000, 50);
  });

  afterAll(async () => {
    if (airlock.isRunning()) airlock.child.kill('SIGKILL');
    await upstream?.close();
  });

  it('cuts the stream at once, audits it, writes airlock:stop and exits 0', async () => {
    const controller = new AbortController();
    const response = await fetch(`http://127.0.0.1:${port}/llm/v1/stream`, { headers: { authorization: `Bearer ${agent.token}` }, signal: controller.signal });
    expect(response.status).toBe(200);
    const reading = (async () => {
      let text = '';
      try {
        for await (const chunk of response.body as unknown as AsyncIterable<Uint8Array>) text += Buffer.from(chunk).toString('utf8');
      } catch {
        // Cut: expected.
      }
      return text;
    })();
    const waiting = fetch(`http://127.0.0.1:${port}/llm/v1/never`, { headers: { authorization: `Bearer ${agent.token}` } }).then(async (r) => ({ status: r.status, headers: { 'x-should-retry': r.headers.has('x-should-retry') ? [r.headers.get('x-should-retry')] : [] }, body: await r.text() }));
    await eventually('the upstream holding both', () => upstream.requests.length === 2, 5_000, 20);
    airlock.child.kill('SIGTERM');
    await eventually('the drain begun', () => airlock.err().includes('SIGTERM received: finishing in-flight requests (up to 30 s)'), 5_000, 20);
    const secondAt = Date.now();
    airlock.child.kill('SIGTERM');
    const exit = await airlock.exited;
    expect(exit.code, airlock.err()).toBe(0);
    expect(exit.at - secondAt).toBeLessThan(5_000);
    expect(airlock.err()).toContain('SIGTERM received again: cutting the requests still in flight now');
    expect(await reading).toContain('data: tick');
    // The request still waiting for its upstream is answered, not dropped (found by the same walkthrough).
    const answered = await waiting;
    expect(answered.status).toBe(503);
    expect(JSON.parse(answered.body)).toMatchObject({ code: 'shutting_down', detail: expect.stringContaining('It had been sent upstream, so it may have taken effect there') });
    // Not resent by the openai and anthropic SDKs' retry (found by an ops walkthrough).
    expect(answered.headers['x-should-retry']).toEqual(['false']);
    const records = readFileSync(join(dir, 'data', 'audit.jsonl'), 'utf8')
      .split('\n')
      .filter((l) => l !== '')
      .map((l) => JSON.parse(l) as AuditRecord);
    const stream = records.find((r) => r.path === '/llm/v1/stream');
    expect(stream).toMatchObject({ agent: 'bot', status: 200, upstream_status: 200, incomplete: true, reason: 'cut: Airlock was stopping, and the request was still running at the end of shutdown_timeout (or a second stop signal came).' });
    expect(records.find((r) => r.path === '/llm/v1/never')).toMatchObject({ code: 'shutting_down', status: 503, upstream_status: null });
    expect(records.at(-1)).toMatchObject({ route: 'airlock:stop', actor: 'airlock' });
    assertNoLeak([key, agent.token], [
      { name: 'stderr', text: airlock.err() },
      { name: 'stdout', text: airlock.out() },
      { name: 'audit', text: JSON.stringify(records) },
    ]);
  });
});
