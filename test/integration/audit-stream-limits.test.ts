/**
 * The admin audit stream (GET /v1/audit/stream) keeps the proxy's memory bounded and its access current:
 * a reader that stops reading is ended once it falls a backlog behind (it then gets what was queued and
 * the end of the stream, and no record written afterwards), only so many streams are open at once (429
 * beyond), and a stream whose admin token a config reload removed ends at the reload. A stream of a token
 * the reload kept goes on.
 */
import { connect, type Socket } from 'node:net';
import { Agent, request } from 'undici';
import { afterEach, describe, expect, it } from 'vitest';
import { buildConfig } from '../../src/config/load-config.js';
import { formatProblem } from '../../src/config/config-problem.js';
import type { AirlockConfig } from '../../src/config/types.js';
import { generateAgentToken } from '../../src/identity/agent-token.js';
import { assertNoLeak } from '../helpers/assert-no-leak.js';
import { canary } from '../helpers/canary.js';
import { openStream, type LiveStream } from '../helpers/open-stream.js';
import { eventually } from '../helpers/operator.js';
import { sendRequest } from '../helpers/send-request.js';
import { startProxy, type ProxyFixture } from '../helpers/start-proxy.js';
import { startUpstream, type Upstream } from '../helpers/start-upstream.js';

const agent = generateAgentToken();
const alice = generateAgentToken();
const bob = generateAgentToken();

function configFor(upstream: Upstream, adminTokens: ReadonlyArray<{ name: string; hash: string }>): Record<string, unknown> {
  return {
    admin: { listen: '127.0.0.1:0', tokens: adminTokens },
    // Room for long paths, so that a few hundred records are megabytes of feed.
    limits: { max_header_bytes: 256 * 1024 },
    services: { echo: { upstream: upstream.url, credential: { secret: 'env:STREAM_KEY', inject: 'bearer' }, routes: [{ method: 'GET', path: '/v1/*', scope: 'read' }] } },
    agents: { 'stream-bot': { tokens: [agent.hash], credentials: [{ service: 'echo', max_scope: ['read'] }] } },
    anomalies: { enabled: false },
  };
}

function reloadConfig(proxy: ProxyFixture, input: Record<string, unknown>): AirlockConfig {
  const built = buildConfig({ listen: '127.0.0.1:0', data_dir: proxy.dataDir, ...input }, { baseDir: proxy.dataDir });
  if (built.config === null) throw new Error(`test config is invalid:\n${built.problems.map((p) => formatProblem(p, null)).join('\n')}`);
  return built.config;
}

function streamEnds(proxy: ProxyFixture): Array<Record<string, unknown>> {
  return proxy.logRecords().filter((l) => String(l['msg']).startsWith('audit stream ended'));
}

/** A raw connection that asks for the feed and then reads nothing until `resume`. */
async function stalledReader(adminUrl: string, token: string): Promise<{ socket: Socket; resume(): Promise<string> }> {
  const url = new URL(adminUrl);
  const socket = connect(Number(url.port), url.hostname);
  await new Promise<void>((resolve, reject) => socket.once('connect', resolve).once('error', reject));
  socket.pause();
  socket.write(`GET /v1/audit/stream HTTP/1.1\r\nHost: ${url.host}\r\nAuthorization: Bearer ${token}\r\n\r\n`);
  return {
    socket,
    resume() {
      const chunks: Buffer[] = [];
      // Until the chunked body's last-chunk (the connection itself may stay open, keep-alive) or the close.
      const done = new Promise<string>((resolve) => {
        const text = (): string => Buffer.concat(chunks).toString('latin1');
        socket.on('data', (chunk: Buffer) => {
          chunks.push(chunk);
          if (chunk.subarray(-5).toString('latin1') === '0\r\n\r\n' && text().endsWith('\r\n0\r\n\r\n')) resolve(text());
        });
        socket.once('close', () => resolve(text()));
      });
      socket.resume();
      return done;
    },
  };
}

describe('the admin audit stream under a reader that stops reading', () => {
  let upstream: Upstream;
  let proxy: ProxyFixture;
  const key = canary('stream-key');
  const streams: LiveStream[] = [];

  afterEach(async () => {
    for (const stream of streams.splice(0)) stream.close();
    await proxy?.close();
    await upstream?.close();
  });

  it('ends the stream once the backlog passes the cap; records written afterwards are not queued for it', async () => {
    upstream = await startUpstream();
    proxy = await startProxy(configFor(upstream, [{ name: 'alice', hash: alice.hash }]), { env: { STREAM_KEY: key } });
    const adminUrl = proxy.airlock.adminUrl as string;
    const reader = await stalledReader(adminUrl, alice.token);
    // The stream is open once its subscription exists: the next record reaches it (or its backlog).
    const dispatcher = new Agent({ connections: 8 });
    const longPath = `/echo/v1/${'p'.repeat(100 * 1024)}`;
    let sent = 0;
    try {
      // Each record carries the 100 KiB path: some tens fill the kernel's socket buffers and then the cap.
      // Bounded, so that a stream that is never ended fails the test rather than hanging it.
      const worker = async (): Promise<void> => {
        while (streamEnds(proxy).length === 0 && sent < 400) {
          sent += 1;
          const response = await request(`${proxy.url}${longPath}?n=${sent}`, { dispatcher, headers: { authorization: `Bearer ${agent.token}` } });
          await response.body.dump();
        }
      };
      await Promise.all(Array.from({ length: 8 }, worker));
      expect(streamEnds(proxy), `no stream was ended after ${sent} records`).toHaveLength(1);
      expect(streamEnds(proxy)[0]?.['actor']).toBe('alice');
      // A record written now is not queued for the ended stream.
      const marker = `after-end-${Date.now()}`;
      const late = await sendRequest(`${proxy.url}/echo/v1/${marker}`, { headers: { authorization: `Bearer ${agent.token}` } });
      expect(late.status).toBe(200);
      await eventually('the late record written', () => proxy.auditText().includes(marker));
      const received = await reader.resume();
      expect(received.startsWith('HTTP/1.1 200')).toBe(true);
      // The chunked body ends with its last-chunk: the server ended the stream, the reader did not cut it.
      expect(received.endsWith('\r\n0\r\n\r\n')).toBe(true);
      expect(received).not.toContain(marker);
      assertNoLeak([key, agent.token, alice.token], [
        { name: 'the feed', text: received },
        { name: 'logs', text: proxy.logLines.join('') },
      ]);
    } finally {
      reader.socket.destroy();
      await dispatcher.close();
    }
    // The bound on `sent` is what fails a stream that is never ended: unended, each record is slower to write.
  }, 60_000);

  it('refuses a stream beyond the limit of open streams with 429, and accepts one again when a stream closes', async () => {
    upstream = await startUpstream();
    proxy = await startProxy(configFor(upstream, [{ name: 'alice', hash: alice.hash }]), { env: { STREAM_KEY: key } });
    const url = `${proxy.airlock.adminUrl as string}/v1/audit/stream`;
    for (let i = 0; i < 32; i++) streams.push(openStream(url, alice.token));
    expect(await Promise.all(streams.map((s) => s.status))).toEqual(Array.from({ length: 32 }, () => 200));
    const refused = await sendRequest(url, { headers: { authorization: `Bearer ${alice.token}` } });
    expect(refused.status).toBe(429);
    expect(refused.json()['code']).toBe('rate_limited');
    streams[0]?.close();
    const again = await eventually('a stream accepted again', async () => {
      const next = openStream(url, alice.token);
      streams.push(next);
      return (await next.status) === 200 ? next : undefined;
    });
    expect(again.isEnded()).toBe(false);
  });
});

describe('the admin audit stream across a config reload', () => {
  let upstream: Upstream;
  let proxy: ProxyFixture;
  const key = canary('reload-stream-key');
  const streams: LiveStream[] = [];

  afterEach(async () => {
    for (const stream of streams.splice(0)) stream.close();
    await proxy?.close();
    await upstream?.close();
  });

  it('ends the stream of an admin token the reload removed, and keeps the stream of one it kept', async () => {
    upstream = await startUpstream();
    const both = [
      { name: 'alice', hash: alice.hash },
      { name: 'bob', hash: bob.hash },
    ];
    proxy = await startProxy(configFor(upstream, both), { env: { STREAM_KEY: key } });
    const url = `${proxy.airlock.adminUrl as string}/v1/audit/stream`;
    const removed = openStream(url, alice.token);
    const kept = openStream(url, bob.token);
    streams.push(removed, kept);
    expect(await removed.status).toBe(200);
    expect(await kept.status).toBe(200);
    const first = await sendRequest(`${proxy.url}/echo/v1/before-reload`, { headers: { authorization: `Bearer ${agent.token}` } });
    expect(first.status).toBe(200);
    await eventually('both streams see the record', () => removed.text().includes('before-reload') && kept.text().includes('before-reload'));

    expect(await proxy.airlock.reload(reloadConfig(proxy, configFor(upstream, [{ name: 'bob', hash: bob.hash }])))).toEqual({ ok: true });
    const ended = await removed.ended;
    expect(ended.complete).toBe(true);
    expect(streamEnds(proxy).map((l) => l['actor'])).toEqual(['alice']);

    const after = await sendRequest(`${proxy.url}/echo/v1/after-reload`, { headers: { authorization: `Bearer ${agent.token}` } });
    expect(after.status).toBe(200);
    await eventually('the kept stream sees the next record', () => kept.text().includes('after-reload'));
    expect(kept.isEnded()).toBe(false);
    expect(removed.text()).not.toContain('after-reload');
    // And the removed token opens no new stream.
    const reopened = await sendRequest(url, { headers: { authorization: `Bearer ${alice.token}` } });
    expect(reopened.status).toBe(401);
    assertNoLeak([key, alice.token, bob.token, agent.token], [
      { name: 'the feeds', text: removed.text() + kept.text() },
      { name: 'logs', text: proxy.logLines.join('') },
    ]);
  });
});
