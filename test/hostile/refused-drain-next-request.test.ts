/**
 * A refused request's body is drained (send-problem.ts), and while it is, a client error on its socket
 * closes the connection rather than answering twice. That mark must end with the body: when the rest
 * of the body and a next request node cannot parse arrive in one packet, node completes the first
 * request and reports the second's error before the first's 'end'; that request is owed its 400
 * (found by review: the connection was destroyed, and no answer went out).
 */
import { connect } from 'node:net';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { generateAgentToken } from '../../src/identity/agent-token.js';
import { startProxy, type ProxyFixture } from '../helpers/start-proxy.js';
import { startUpstream, type Upstream } from '../helpers/start-upstream.js';

const agent = generateAgentToken();
let upstream: Upstream;
let proxy: ProxyFixture;

beforeAll(async () => {
  upstream = await startUpstream((_req, res) => {
    res.end('{}');
  });
  proxy = await startProxy(
    {
      services: { api: { upstream: upstream.url, credential: { secret: 'env:K', inject: { header: 'x-key' } }, routes: [{ method: 'POST', path: '/v1/*', scope: 'api' }] } },
      agents: { bot: { tokens: [agent.hash], credentials: [{ service: 'api', max_scope: ['*'] }] } },
    },
    { env: { K: 'plainkey0123456789abcdef' } },
  );
});
afterAll(async () => {
  await proxy?.close();
  await upstream?.close();
});

const BAD = 'GET /api/v1/x HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Bad: a\x01b\r\n\r\n';

function exchange(first: string, second: string | null): Promise<string> {
  const { port } = new URL(proxy.url);
  return new Promise((resolve) => {
    const socket = connect(Number(port), '127.0.0.1');
    let text = '';
    let sentSecond = second === null;
    socket.on('connect', () => socket.write(first));
    socket.on('data', (chunk: Buffer) => {
      text += chunk.toString('latin1');
      if (!sentSecond && text.includes('\r\n\r\n') && text.includes('"status":401')) {
        sentSecond = true;
        socket.write(second as string);
      }
    });
    socket.on('error', () => undefined);
    socket.on('close', () => resolve(text));
    setTimeout(() => socket.destroy(), 3000).unref();
  });
}

describe('a malformed request right behind a drained refusal', () => {
  it('a malformed request on a fresh connection is answered 400', async () => {
    expect(await exchange(BAD, null)).toMatch(/^HTTP\/1\.1 400/);
  });

  it('the same malformed request after a drained refusal is answered 400 too', async () => {
    const text = await exchange('POST /api/v1/x HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 10\r\n\r\nabc', `defghij${BAD}`);
    expect(text).toMatch(/^HTTP\/1\.1 401/);
    expect(text.match(/HTTP\/1\.1 \d+/g)).toEqual(['HTTP/1.1 401', 'HTTP/1.1 400']);
  });
});
