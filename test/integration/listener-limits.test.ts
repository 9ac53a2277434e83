/**
 * The agent listener's own limits and refusals, with bytes sent exactly as written: too many header
 * fields or header bytes (431, never silent truncation), headers sent too slowly (408 or closed),
 * CONNECT (405), protocol upgrades, and a request framed by both Content-Length and
 * Transfer-Encoding (400, request smuggling). None of them reaches the upstream.
 */
import { connect, type Socket } from 'node:net';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { generateAgentToken } from '../../src/identity/agent-token.js';
import { assertNoLeak } from '../helpers/assert-no-leak.js';
import { canary } from '../helpers/canary.js';
import { parseResponse, rawRequest, type RawResponse } from '../helpers/raw-http.js';
import { startProxy, type ProxyFixture } from '../helpers/start-proxy.js';
import { startUpstream, type Upstream } from '../helpers/start-upstream.js';

const MAX_HEADERS = 20;
const MAX_HEADER_BYTES = 32_768;

describe('listener limits', () => {
  const key = canary('listener');
  const agent = generateAgentToken();
  let upstream: Upstream;
  let proxy: ProxyFixture;
  let upstreamRequestsSeen = 0;
  const responses: string[] = [];
  const refusals: RawResponse[] = [];

  beforeAll(async () => {
    upstream = await startUpstream();
    upstream.server.on('request', () => upstreamRequestsSeen++);
    upstream.server.on('upgrade', (_req, socket) => {
      upstreamRequestsSeen++;
      socket.destroy();
    });
    upstream.server.on('connect', (_req, socket) => {
      upstreamRequestsSeen++;
      socket.destroy();
    });
    proxy = await startProxy(
      {
        limits: { max_headers: MAX_HEADERS, max_header_bytes: MAX_HEADER_BYTES, headers_timeout: 1 },
        services: {
          svc: {
            upstream: upstream.url,
            credential: { secret: 'env:SVC_KEY' },
            routes: [{ method: ['GET', 'POST'], path: '/v1/*', scope: 'api:call' }],
          },
        },
        agents: { bot: { tokens: [agent.hash], credentials: [{ service: 'svc', max_scope: ['*'] }] } },
      },
      { env: { SVC_KEY: key } },
    );
  });

  afterAll(async () => {
    await proxy?.close();
    await upstream?.close();
  });

  /** A GET with Host, Connection, Authorization and `extra` header lines. */
  function requestWith(extra: string[], target = '/svc/v1/x'): string {
    return [`GET ${target} HTTP/1.1`, 'Host: 127.0.0.1', 'Connection: close', `Authorization: Bearer ${agent.token}`, ...extra, '', ''].join('\r\n');
  }

  async function send(request: string | Buffer): Promise<RawResponse> {
    const response = await rawRequest(proxy.url, request);
    responses.push(response.raw);
    if (response.status >= 400) refusals.push(response);
    return response;
  }

  async function notForwarded<T>(act: () => Promise<T>): Promise<T> {
    const before = upstreamRequestsSeen;
    const result = await act();
    // Give a wrongly forwarded request a moment to show up before counting.
    await new Promise((resolve) => setTimeout(resolve, 50));
    expect(upstreamRequestsSeen).toBe(before);
    return result;
  }

  function code(response: RawResponse): string {
    return (JSON.parse(response.body) as { code: string }).code;
  }

  describe('header count', () => {
    const filler = (n: number): string[] => Array.from({ length: n }, (_, i) => `X-Filler-${i}: ${i}`);

    it('forwards a request with exactly limits.max_headers fields', async () => {
      const response = await send(requestWith(filler(MAX_HEADERS - 3)));
      expect(response.status).toBe(200);
    });

    it('refuses one field more with 431 headers_too_large', async () => {
      const response = await notForwarded(() => send(requestWith(filler(MAX_HEADERS - 2))));
      expect(response.status).toBe(431);
      expect(code(response)).toBe('headers_too_large');
      expect(response.headers['x-airlock-request-id']?.[0]).toMatch(/^[0-9a-f-]{36}$/);
    });

    it('refuses thousands of fields (past node\'s own maxHeadersCount of 2000) instead of truncating', async () => {
      const response = await notForwarded(() => send(requestWith(Array.from({ length: 2500 }, (_, i) => `h${i}: 1`))));
      expect(response.status).toBe(431);
      expect(code(response)).toBe('headers_too_large');
    });
  });

  it('refuses header bytes over limits.max_header_bytes with 431', async () => {
    const response = await notForwarded(() => send(requestWith([`X-Big: ${'a'.repeat(MAX_HEADER_BYTES + 100)}`])));
    expect(response.status).toBe(431);
    expect(code(response)).toBe('headers_too_large');
  });

  // node checks header deadlines every connectionsCheckingInterval; Airlock ties it to headers_timeout.
  it('closes (or answers 408 to) a client that sends its headers too slowly', async () => {
    const outcome = await notForwarded(
      () =>
        new Promise<{ status: number | null; closed: boolean }>((resolve, reject) => {
          const { hostname, port } = new URL(proxy.url);
          const socket = connect(Number(port), hostname);
          const chunks: Buffer[] = [];
          let trickle: NodeJS.Timeout | undefined;
          // Bounded: headers_timeout is 1 s; 6 s is plenty for the proxy to act.
          const bound = setTimeout(() => {
            clearInterval(trickle);
            socket.destroy();
            reject(new Error('the slow client was neither answered nor closed within 6 s (headers_timeout is 1 s)'));
          }, 6000);
          socket.on('connect', () => {
            socket.write(`GET /svc/v1/x HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer ${agent.token}\r\n`);
            let i = 0;
            trickle = setInterval(() => {
              if (socket.writable) socket.write(`X-Slow-${i++}: y\r\n`);
            }, 200);
          });
          socket.on('data', (chunk: Buffer) => chunks.push(chunk));
          socket.on('error', () => undefined);
          socket.on('close', () => {
            clearTimeout(bound);
            clearInterval(trickle);
            const raw = Buffer.concat(chunks).toString('latin1');
            responses.push(raw);
            resolve({ status: raw === '' ? null : parseResponse(raw).status, closed: true });
          });
        }),
    );
    expect(outcome.closed).toBe(true);
    if (outcome.status !== null) expect(outcome.status).toBe(408);
  }, 15_000);

  it('refuses CONNECT with 405', async () => {
    const response = await notForwarded(() => send(`CONNECT 127.0.0.1:${upstream.port} HTTP/1.1\r\nHost: 127.0.0.1:${upstream.port}\r\nAuthorization: Bearer ${agent.token}\r\n\r\n`));
    expect(response.status).toBe(405);
    expect(code(response)).toBe('method_not_allowed');
  });

  it('refuses an Upgrade: websocket request and switches nothing', async () => {
    const response = await notForwarded(() =>
      send(
        requestWith(['Upgrade: websocket', 'Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==', 'Sec-WebSocket-Version: 13']).replace(
          'Connection: close',
          'Connection: Upgrade',
        ),
      ),
    );
    expect(response.status).not.toBe(101);
    expect(response.status).toBeGreaterThanOrEqual(400);
    expect(response.status).toBeLessThan(500);
    expect(code(response)).toBe('invalid_request');
    expect(response.headers['upgrade']).toBeUndefined();
  });

  it('refuses a request with both Content-Length and Transfer-Encoding with 400', async () => {
    const smuggled =
      'POST /svc/v1/x HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n' +
      `Authorization: Bearer ${agent.token}\r\nContent-Length: 6\r\nTransfer-Encoding: chunked\r\n\r\n` +
      '0\r\n\r\nGET /svc/v1/smuggled HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n';
    const response = await notForwarded(() => send(smuggled));
    expect(response.status).toBe(400);
    expect(code(response)).toBe('invalid_request');
    expect(upstream.requests.map((r) => r.target)).not.toContain('/v1/smuggled');
  });

  it('audits and logs each refusal once, under the request id the client got', async () => {
    expect(refusals.length).toBeGreaterThanOrEqual(6);
    const records = await proxy.waitForAudit(refusals.length);
    const lines = proxy.logRecords().filter((l) => l['msg'] === 'request');
    for (const response of refusals) {
      const id = response.headers['x-airlock-request-id']?.[0];
      expect(id).toMatch(/^[0-9a-f-]{36}$/);
      const audited = records.filter((r) => r.request_id === id);
      expect(audited).toHaveLength(1);
      expect(audited[0]).toMatchObject({ decision: 'deny', status: response.status, code: code(response) });
      expect(lines.filter((l) => l['request_id'] === id)).toHaveLength(1);
    }
  });

  it('leaves no trace of the key in responses, logs or audit', async () => {
    assertNoLeak([key], [
      { name: 'responses', text: responses.join('\n') },
      { name: 'log', text: proxy.logLines.join('') },
      { name: 'audit', text: proxy.auditText() },
    ]);
  });
});

// Found by review: a refusal on the raw socket (CONNECT, Upgrade, a parse failure, a request timed
// out) was written with end(), a half-close. node's timeouts no longer cover such a socket, so a client
// that read the answer and never closed its side held it (and a file descriptor) for good, and one such
// socket kept shutdown waiting for shutdown_timeout.
describe('listener limits: refused sockets are closed', () => {
  const agent = generateAgentToken();
  let upstream: Upstream;
  let proxy: ProxyFixture;

  beforeAll(async () => {
    upstream = await startUpstream();
    proxy = await startProxy({
      limits: { headers_timeout: 1, request_timeout: 2 },
      shutdown_timeout: 60,
      services: { svc: { upstream: upstream.url, credential: { secret: 'env:HOLD_KEY' }, routes: [{ method: 'GET', path: '/v1/*', scope: 'api:call' }] } },
      agents: { bot: { tokens: [agent.hash], credentials: [{ service: 'svc', max_scope: ['*'] }] } },
    }, { env: { HOLD_KEY: canary('held-sockets') } });
  });

  afterAll(async () => {
    await upstream?.close();
  });

  /** Sends `text` (or nothing) and never closes its side; resolves with the answer once the server ends its side. */
  function holdOpen(text: string | null): Promise<{ answer: string; socket: Socket }> {
    return new Promise((resolve, reject) => {
      const port = Number(new URL(proxy.url).port);
      const socket = connect({ host: '127.0.0.1', port, allowHalfOpen: true });
      let answer = '';
      socket.on('error', () => undefined);
      socket.on('data', (chunk: Buffer) => (answer += chunk.toString('latin1')));
      socket.once('end', () => resolve({ answer, socket }));
      socket.once('connect', () => {
        if (text !== null) socket.write(text);
      });
      setTimeout(() => reject(new Error(`no answer to ${JSON.stringify(text)}`)), 5_000).unref();
    });
  }

  it('CONNECT, an Upgrade and a request that never came are answered, then closed by the proxy; shutdown does not wait for them', async () => {
    const held = await Promise.all([
      holdOpen(`CONNECT 127.0.0.1:${upstream.port} HTTP/1.1\r\nHost: 127.0.0.1:${upstream.port}\r\n\r\n`),
      holdOpen(`GET /svc/v1/x HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer ${agent.token}\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n`),
      holdOpen(null),
    ]);
    expect(held.map((h) => parseResponse(h.answer).status)).toEqual([405, 400, 408]);
    // Past the proxy's grace of a second its side is gone, not merely half-closed (node's timeouts no
    // longer cover such sockets, so a half-closed one stayed until the client closed it): shutdown,
    // which waits for every connection up to shutdown_timeout (60 s here), has none left to wait for.
    await new Promise((resolve) => setTimeout(resolve, 1_500));
    const started = Date.now();
    await proxy.close();
    expect(Date.now() - started).toBeLessThan(5_000);
    for (const h of held) h.socket.destroy();
  }, 20_000);
});
