/**
 * A request refused BECAUSE its framing is faulty (HTTP/1.0 with Transfer-Encoding, RFC 9112 6.1: "MUST
 * treat the message as if the framing is faulty ... and close the connection after processing the
 * message"; or a transfer coding other than chunked) must not have its "body" drained by node's reading
 * of that framing and the connection kept: whatever follows node's idea of the body's end is then
 * parsed as the next request (what a front end that reads the framing otherwise sends as body).
 */
import { connect } from 'node:net';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { generateAgentToken } from '../../src/identity/agent-token.js';
import { startProxy, type ProxyFixture } from '../helpers/start-proxy.js';
import { startUpstream, type Upstream } from '../helpers/start-upstream.js';

function exchange(url: string, first: string, rest: string, waitMs = 1500): Promise<string> {
  const { hostname, port } = new URL(url);
  return new Promise((resolve) => {
    const socket = connect(Number(port), hostname);
    let got = '';
    socket.on('connect', () => socket.write(first));
    socket.on('data', (chunk: Buffer) => {
      const had = got.length;
      got += chunk.toString('latin1');
      // the refusal came: now the rest of the "body", holding a second request after node's end of it
      if (had === 0) setTimeout(() => socket.write(rest), 100);
    });
    socket.on('error', () => undefined);
    socket.on('close', () => resolve(got));
    setTimeout(() => { socket.destroy(); resolve(got); }, waitMs);
  });
}

describe('a request refused for faulty framing, its body still arriving', () => {
  const bot = generateAgentToken();
  let upstream: Upstream;
  let proxy: ProxyFixture;
  beforeAll(async () => {
    upstream = await startUpstream();
    proxy = await startProxy({
      services: { svc: { upstream: upstream.url, credential: { secret: 'env:K', inject: 'bearer' }, routes: [{ method: 'POST', path: '/x', scope: 'all' }, { method: 'GET', path: '/smuggled', scope: 'all' }] } },
      agents: { bot: { tokens: [bot.hash], credentials: [{ service: 'svc', max_scope: ['*'] }] } },
    }, { env: { K: 'k-0123456789abcdef' } });
  });
  afterAll(async () => { await proxy?.close(); await upstream?.close(); });

  const smuggled = `GET /svc/smuggled HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer ${bot.token}\r\n\r\n`;

  it.each([
    ['HTTP/1.0 with Transfer-Encoding: chunked', `POST /svc/x HTTP/1.0\r\nHost: 127.0.0.1\r\nConnection: keep-alive\r\nAuthorization: Bearer ${bot.token}\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n`],
    ['Transfer-Encoding: gzip, chunked', `POST /svc/x HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer ${bot.token}\r\nTransfer-Encoding: gzip, chunked\r\n\r\n5\r\nhello\r\n`],
    // Its body whole before the refusal, the hidden request in the same packet.
    ['HTTP/1.0 with Transfer-Encoding, the body complete', `POST /svc/x HTTP/1.0\r\nHost: 127.0.0.1\r\nConnection: keep-alive\r\nAuthorization: Bearer ${bot.token}\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n${`GET /svc/smuggled HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer ${bot.token}\r\n\r\n`}`],
  ])('%s: answered with Connection: close, and nothing after it is read as a request', async (_name, first) => {
    const before = upstream.requests.length;
    const got = await exchange(proxy.url, first, `0\r\n\r\n${smuggled}`);
    expect(got).toMatch(/^HTTP\/1\.[01] 400/);
    expect(got.toLowerCase()).toContain('connection: close');
    expect(got.match(/HTTP\/1\.[01] \d{3}/g)?.length).toBe(1);
    expect(upstream.requests.length).toBe(before);
  });
});
