/**
 * An agent that stops reading a response it asked for (found by review): Airlock stops reading the
 * upstream in turn (backpressure), and undici's body timeout does not run while a response is paused,
 * so two such agents held a service's two upstream connections for ever and a third agent's request,
 * queued behind them, was never answered. Now an agent that reads nothing for the service's
 * timeouts.body while its socket is full has its response cut (audited incomplete, request_timeout),
 * which frees the upstream connection for the requests queued behind it.
 */
import { connect, type Socket } from 'node:net';
import type { IncomingMessage, ServerResponse } from 'node:http';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { generateAgentToken } from '../../src/identity/agent-token.js';
import { assertNoLeak, proxySurfaces, responsesSurface } from '../helpers/assert-no-leak.js';
import { canary } from '../helpers/canary.js';
import { eventually } from '../helpers/operator.js';
import { sendRequest, type SentResponse } from '../helpers/send-request.js';
import { startProxy, type ProxyFixture } from '../helpers/start-proxy.js';
import { startUpstream, type Upstream } from '../helpers/start-upstream.js';

/** /v1/endless writes 16 KiB chunks for as long as it is read; anything else answers "ok". */
function endless(req: IncomingMessage, res: ServerResponse): void {
  if (req.url !== '/v1/endless') {
    res.writeHead(200, { 'content-type': 'text/plain', 'content-length': 2 });
    res.end('ok');
    return;
  }
  res.writeHead(200, { 'content-type': 'application/octet-stream' });
  const chunk = Buffer.alloc(16 * 1024, 'a');
  const pump = (): void => {
    while (!res.destroyed && res.write(chunk));
    if (!res.destroyed) res.once('drain', pump);
  };
  pump();
}

describe('agents that stop reading their responses', () => {
  const key = canary('stalled');
  const agent = generateAgentToken();
  const seen: SentResponse[] = [];
  const sockets: Socket[] = [];
  let upstream: Upstream;
  let proxy: ProxyFixture;

  beforeAll(async () => {
    upstream = await startUpstream(endless);
    proxy = await startProxy(
      {
        services: {
          raw: {
            upstream: upstream.url,
            max_connections: 2,
            timeouts: { connect: 2, headers: 2, body: 1 },
            credential: { secret: 'env:STALLED_KEY', inject: 'bearer' },
            routes: [{ method: 'GET', path: '/v1/*', scope: 'api' }],
          },
        },
        agents: { bot: { tokens: [agent.hash], credentials: [{ service: 'raw', max_scope: ['*'] }] } },
      },
      { env: { STALLED_KEY: key } },
    );
  });

  afterAll(async () => {
    for (const socket of sockets) socket.destroy();
    assertNoLeak([key, agent.token], [
      responsesSurface(seen),
      ...proxySurfaces(proxy),
    ]);
    await proxy?.close();
    await upstream?.close();
  });

  /** Asks for the endless body on a raw socket, reads the first bytes, then reads nothing more. */
  function stall(): Promise<Socket> {
    const { port } = new URL(proxy.url);
    const socket = connect(Number(port), '127.0.0.1');
    sockets.push(socket);
    socket.on('error', () => undefined);
    socket.write(`GET /raw/v1/endless HTTP/1.1\r\nhost: 127.0.0.1\r\nauthorization: Bearer ${agent.token}\r\n\r\n`);
    return new Promise((resolve) => socket.once('data', () => resolve(socket.pause())));
  }

  it('are cut after timeouts.body, and the request queued behind them is answered', async () => {
    await Promise.all([stall(), stall()]);
    // Both upstream connections are taken by the stalled responses; this one waits for one of them.
    const queued = await sendRequest(`${proxy.url}/raw/v1/small`, { headers: { authorization: `Bearer ${agent.token}` }, timeoutMs: 10_000 });
    seen.push(queued);
    expect(queued.status, queued.text).toBe(200);
    expect(queued.text).toBe('ok');
    const records = await eventually('the audit records of the cut responses', () => {
      const cut = proxy.auditRecords().filter((r) => r.path === '/raw/v1/endless');
      return cut.length === 2 ? cut : undefined;
    });
    for (const record of records) expect(record).toMatchObject({ status: 200, incomplete: true, code: 'request_timeout' });
  });
});
