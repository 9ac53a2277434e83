/**
 * A local process that fills the admin listener with idle sockets, and sockets stuck half-way through
 * their headers, does not lock operators out of the admin API (the kill switch included): past the
 * bound of 1,024 sockets the oldest idle socket is closed to make room, while a request being
 * answered (here a console's audit stream) keeps its socket. Before, node closed every newcomer past
 * the bound, the operator's too, for as long as the flood held its sockets.
 */
import { connect, type Socket } from 'node:net';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { generateAgentToken } from '../../src/identity/agent-token.js';
import { assertNoLeak } from '../helpers/assert-no-leak.js';
import { canary } from '../helpers/canary.js';
import { adminClient, eventually, freePort, sleep, type AdminClient } from '../helpers/operator.js';
import { sendRequest } from '../helpers/send-request.js';
import { startProxy, type ProxyFixture } from '../helpers/start-proxy.js';
import { startUpstream, type Upstream } from '../helpers/start-upstream.js';
import { hostileWatch } from './support/hostile-watch.js';

const BOUND = 1024;
const FLOOD = BOUND + 76;

describe('an admin listener flooded with idle sockets', () => {
  const watch = hostileWatch();
  const key = canary('admin-flood');
  const operator = generateAgentToken();
  const bot = generateAgentToken();
  let upstream: Upstream;
  let proxy: ProxyFixture;
  let admin: AdminClient;
  let adminPort: number;
  const flood: Array<{ socket: Socket; closed: boolean }> = [];
  let stream: Socket | undefined;
  let streamText = '';

  beforeAll(async () => {
    upstream = await startUpstream();
    adminPort = await freePort();
    proxy = await startProxy(
      {
        admin: { listen: `127.0.0.1:${adminPort}`, tokens: [{ name: 'operator', hash: operator.hash }] },
        services: { api: { upstream: upstream.url, credential: { secret: 'env:FLOOD_KEY' }, routes: [{ method: 'GET', path: '/v1/*', scope: 'api:read' }] } },
        agents: { bot: { tokens: [bot.hash], credentials: [{ service: 'api', max_scope: ['*'] }] } },
      },
      { env: { FLOOD_KEY: key } },
    );
    admin = adminClient(() => proxy.airlock.adminUrl as string, operator.token);
    watch.start();
  });

  afterAll(async () => {
    for (const entry of flood) entry.socket.destroy();
    stream?.destroy();
    assertNoLeak([key, operator.token, bot.token], [
      { name: 'admin answers', text: `${admin.seen.join('\n')}\n${streamText}` },
      { name: 'logs', text: proxy.logLines.join('') },
      { name: 'audit', text: proxy.auditText() },
    ]);
    await proxy?.close();
    await upstream?.close();
  });

  function open(): Promise<Socket> {
    const socket = connect(adminPort, '127.0.0.1');
    socket.on('error', () => undefined);
    return new Promise((resolve, reject) => socket.once('connect', () => resolve(socket)).once('error', reject));
  }

  it('keeps the console\'s stream, closes the oldest idle sockets, and answers the operator', async () => {
    // The operator's console, first: its audit stream is a request being answered.
    stream = await open();
    stream.on('data', (chunk: Buffer) => void (streamText += chunk.toString('latin1')));
    stream.write(`GET /v1/audit/stream HTTP/1.1\r\nHost: 127.0.0.1:${adminPort}\r\nAuthorization: Bearer ${operator.token}\r\n\r\n`);
    await eventually('the stream to open', () => streamText.startsWith('HTTP/1.1 200'), 5_000);

    // The flood: every other socket stops half-way through its headers, the rest send nothing.
    for (let i = 0; i < FLOOD; i += 1) {
      const socket = await open();
      const entry = { socket, closed: false };
      socket.once('close', () => void (entry.closed = true));
      if (i % 2 === 0) socket.write(`GET /v1/health HTTP/1.1\r\nHost: 127.0.0.1:${adminPort}\r\n`);
      flood.push(entry);
    }
    // The listener holds at most BOUND sockets: the stream and the newest of the flood.
    await eventually('the listener to make room', () => flood.filter((e) => e.closed).length >= FLOOD + 1 - BOUND, 10_000);
    const closed = flood.map((e, i) => (e.closed ? i : -1)).filter((i) => i >= 0);
    expect(closed).toEqual([...Array(FLOOD + 1 - BOUND).keys()]);

    // The operator gets in, past the flood, over a new connection.
    const health = await admin.call('GET', '/v1/health');
    expect(health.status).toBe(200);
    // The flood's oldest socket made room for it; the stream was not touched.
    await eventually('one more flood socket to make room', () => flood[FLOOD + 1 - BOUND]?.closed === true, 5_000);
    expect(stream.destroyed).toBe(false);

    // And the stream still carries the audit feed.
    const answer = await sendRequest(`${proxy.url}/api/v1/items`, { headers: { authorization: `Bearer ${bot.token}` } });
    expect(answer.status).toBe(200);
    await eventually('the agent request on the stream', () => streamText.includes('"path":"/api/v1/items"'), 5_000);
  });

  it('a request without a token holds no slot: it is answered 401 at once, and its socket is idle again', async () => {
    // The oldest flood socket left finishes a request with a wrong token.
    const oldest = flood.findIndex((e) => !e.closed);
    const live = flood[oldest]!;
    let text = '';
    live.socket.on('data', (chunk: Buffer) => void (text += chunk.toString('latin1')));
    live.socket.write(oldest % 2 === 0 ? 'Authorization: Bearer not-a-token\r\n\r\n' : `GET /v1/agents HTTP/1.1\r\nHost: 127.0.0.1:${adminPort}\r\n\r\n`);
    await eventually('the 401', () => text.includes('\r\n\r\n'), 5_000);
    expect(text.startsWith('HTTP/1.1 401')).toBe(true);
    expect(text).toMatch(/\r\ncontent-type: application\/problem\+json/i);
    // Back to the bound (the operator's first connection has gone), then the operator calls again:
    // the answered socket, idle again and still the oldest, is the one that makes room.
    const filler = await open();
    flood.push({ socket: filler, closed: false });
    await sleep(200);
    expect(live.closed).toBe(false);
    const health = await admin.call('GET', '/v1/health');
    expect(health.status).toBe(200);
    await eventually('the answered socket to make room', () => live.closed, 5_000);
    expect(flood[oldest + 1]?.closed).toBe(false);
  });

  it('a socket that asks for /metrics (no token) over and over and never reads holds no slot', async () => {
    for (const entry of flood) entry.socket.destroy();
    await sleep(300);
    // Pipelined scrapes it never reads: node's writes to it back up, and its answers stay unfinished.
    const greedy = await open();
    let greedyClosed = false;
    greedy.once('close', () => void (greedyClosed = true));
    greedy.pause();
    const scrape = `GET /metrics HTTP/1.1\r\nHost: 127.0.0.1:${adminPort}\r\n\r\n`;
    for (let i = 0; i < 8; i += 1) greedy.write(scrape.repeat(500));
    await sleep(1_500);
    const filler: Socket[] = [];
    try {
      // The stream, the greedy socket and BOUND - 2 idle ones: the listener is full.
      for (let i = 0; i < BOUND - 2; i += 1) filler.push(await open());
      await sleep(200);
      expect(greedyClosed).toBe(false);
      // The operator gets in: the greedy socket, oldest and answering no admin call, makes room.
      const health = await admin.call('GET', '/v1/health');
      expect(health.status).toBe(200);
      // Read what reached it, to hear the close (a paused socket does not notice its peer's).
      greedy.resume();
      await eventually('the greedy socket to make room', () => greedyClosed, 5_000);
    } finally {
      greedy.destroy();
      for (const socket of filler) socket.destroy();
    }
  });

  it('when every socket is answering a request, the newcomer is closed, as node would, and no call is cut', async () => {
    for (const entry of flood) entry.socket.destroy();
    // BOUND - 1 admin calls whose bodies are still arriving (the stream is the other socket).
    const calls: Array<{ socket: Socket; text: string; closed: boolean }> = [];
    for (let i = 0; i < BOUND - 1; i += 1) {
      const socket = await open();
      const call = { socket, text: '', closed: false };
      socket.on('data', (chunk: Buffer) => void (call.text += chunk.toString('latin1')));
      socket.once('close', () => void (call.closed = true));
      socket.write(`POST /v1/revocations HTTP/1.1\r\nHost: 127.0.0.1:${adminPort}\r\nAuthorization: Bearer ${operator.token}\r\nContent-Type: application/json\r\nContent-Length: 200\r\n\r\n{`);
      calls.push(call);
    }
    try {
      // Until node has read a call's headers its socket is idle, and a newcomer would take its place.
      await sleep(1_000);
      await expect(admin.call('GET', '/v1/health')).rejects.toThrow();
      expect(calls.filter((c) => c.closed || c.text !== '')).toEqual([]);
      expect(stream?.destroyed).toBe(false);
    } finally {
      for (const call of calls) call.socket.destroy();
    }
  });

  it('an admin call pipelined behind another on one socket keeps it too', async () => {
    await sleep(300);
    const piped = await open();
    let text = '';
    let closed = false;
    piped.on('data', (chunk: Buffer) => void (text += chunk.toString('latin1')));
    piped.once('close', () => void (closed = true));
    const head = `Host: 127.0.0.1:${adminPort}\r\nAuthorization: Bearer ${operator.token}\r\n\r\n`;
    piped.write(`GET /v1/agents HTTP/1.1\r\n${head}GET /v1/audit/stream HTTP/1.1\r\n${head}`);
    await eventually('both answers to start', () => (text.match(/HTTP\/1\.1 200/g) ?? []).length === 2, 5_000);
    const idle: Socket[] = [];
    try {
      for (let i = 0; i < FLOOD; i += 1) idle.push(await open());
      await sleep(500);
      expect(closed, "the pipelined audit stream was closed to make room").toBe(false);
    } finally {
      piped.destroy();
      for (const socket of idle) socket.destroy();
    }
  });

  it('the process stayed healthy throughout', () => {
    watch.assertHealthy();
  });
});
