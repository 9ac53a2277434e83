/**
 * Header hygiene in both directions (RFC 9110 7.6.1, DESIGN.md invariants 3 and 5):
 *  - request: hop-by-hop fields and every field named in Connection stay on the agent's hop; the
 *    agent's forwarding/routing headers (X-Forwarded-*, Forwarded, X-Real-IP, X-Original-URL,
 *    X-Rewrite-URL) are dropped and Airlock sets its own X-Forwarded-For; the upstream sees its own
 *    host:port as Host; everything ordinary passes unchanged and in order;
 *  - response: the upstream's hop-by-hop fields (and those its Connection names) are not relayed,
 *    repeated Set-Cookie lines are, and every response carries Airlock's own x-airlock-request-id.
 *
 * Raw requests are used where the test needs exact header lines (repeats, case, framing).
 */
import type { ServerResponse } from 'node:http';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { generateAgentToken } from '../../src/identity/agent-token.js';
import { assertNoLeak } from '../helpers/assert-no-leak.js';
import { canary } from '../helpers/canary.js';
import { parseResponse, rawRequest, type RawResponse } from '../helpers/raw-http.js';
import { startProxy, type ProxyFixture } from '../helpers/start-proxy.js';
import { okHandler, startUpstream, type RecordedRequest, type Upstream } from '../helpers/start-upstream.js';

/** RFC 9457 media type; a charset parameter may follow. */
const PROBLEM_JSON = /^application\/problem\+json\s*(;|$)/;

function expectProblemContentType(response: RawResponse): void {
  const types = response.headers['content-type'] ?? [];
  expect(types).toHaveLength(1);
  expect(types[0]).toMatch(PROBLEM_JSON);
}

type HeaderLines = ReadonlyArray<readonly [string, string]>;

const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/;

/** Plays an API whose responses carry hop-by-hop fields, cookies and a forged Airlock request id. */
function upstreamApi(req: { url?: string; headers: Record<string, string | string[] | undefined> }, res: ServerResponse): void {
  if (req.url === '/v1/hop-response') {
    const body = '{"hop":true}';
    res.writeHead(200, [
      ['Content-Type', 'application/json'],
      ['Content-Length', String(Buffer.byteLength(body))],
      ['Connection', 'keep-alive, X-Upstream-Hop, x-upstream-hop-2'],
      ['X-Upstream-Hop', 'listed-in-connection'],
      ['X-Upstream-Hop-2', 'also-listed'],
      ['Keep-Alive', 'timeout=99, max=7'],
      ['Proxy-Authenticate', 'Basic realm="upstream"'],
      ['Proxy-Connection', 'keep-alive'],
      ['Upgrade', 'h2c'],
      ['Set-Cookie', 'a=1; Path=/'],
      ['Set-Cookie', 'b=2; HttpOnly'],
      ['Set-Cookie', 'c=3; Secure; SameSite=Strict'],
      // Airlock's own header is exempt from the redactor's scan: an upstream copy (here carrying the
      // injected key) must be dropped, never relayed unscanned.
      ['X-Airlock-Request-Id', `forged-by-upstream ${req.headers.authorization ?? ''}`],
      ['X-Custom-Response', 'kept'],
      ['Cache-Control', 'no-cache, private'],
    ]);
    res.end(body);
    return;
  }
  if (req.url === '/v1/chunked-response') {
    res.writeHead(200, [
      ['Content-Type', 'text/plain'],
      ['Transfer-Encoding', 'chunked'],
    ]);
    res.write('part one, ');
    res.end('part two');
    return;
  }
  okHandler(req as never, res);
}

describe('header hygiene', () => {
  const realKey = canary('header-hygiene');
  const agent = generateAgentToken();
  const responses: string[] = [];
  let upstream: Upstream;
  let proxy: ProxyFixture;

  beforeAll(async () => {
    upstream = await startUpstream((req, res) => upstreamApi(req, res));
    proxy = await startProxy(
      {
        services: {
          openai: {
            upstream: upstream.url,
            credential: { secret: 'env:OPENAI_API_KEY', inject: 'bearer' },
            routes: [
              { method: ['GET', 'POST'], path: '/v1/*', scope: 'api' },
              { method: 'GET', path: '/admin/*', scope: 'admin' },
            ],
          },
        },
        agents: { tester: { tokens: [agent.hash], credentials: [{ service: 'openai', max_scope: ['api'] }] } },
      },
      { env: { OPENAI_API_KEY: realKey } },
    );
  });

  afterAll(async () => {
    await proxy.close();
    await upstream.close();
  });

  function rawMessage(method: string, target: string, headers: HeaderLines, body = ''): string {
    const lines = [`${method} ${target} HTTP/1.1`];
    for (const [name, value] of headers) lines.push(`${name}: ${value}`);
    return `${lines.join('\r\n')}\r\n\r\n${body}`;
  }

  async function send(method: string, target: string, headers: HeaderLines, body = ''): Promise<RawResponse> {
    let response = await rawRequest(proxy.url, rawMessage(method, target, headers, body));
    responses.push(response.raw);
    // An interim "100 Continue" (the answer to Expect) precedes the final response on the wire.
    while (response.status === 100) response = parseResponse(response.raw.slice(response.raw.indexOf('\r\n\r\n') + 4));
    return response;
  }

  async function auditHas(requestId: string | undefined): Promise<boolean> {
    const deadline = Date.now() + 5000;
    while (Date.now() < deadline) {
      if (proxy.auditRecords().some((r) => r.request_id === requestId)) return true;
      await new Promise((resolve) => setTimeout(resolve, 10));
    }
    return false;
  }

  const base: HeaderLines = [
    ['Host', '127.0.0.1'],
    ['Connection', 'close'],
    ['Authorization', `Bearer ${agent.token}`],
  ];

  /** Sends and returns what the upstream recorded (exactly one new request). */
  async function forward(method: string, target: string, headers: HeaderLines, body = ''): Promise<{ response: RawResponse; seen: RecordedRequest }> {
    const before = upstream.requests.length;
    const response = await send(method, target, headers, body);
    expect(response.status, response.body).toBe(200);
    expect(upstream.requests.length).toBe(before + 1);
    return { response, seen: upstream.requests[before] as RecordedRequest };
  }

  function lowerNames(seen: RecordedRequest): string[] {
    return seen.rawHeaders.filter((_, i) => i % 2 === 0).map((name) => name.toLowerCase());
  }

  describe('request side', () => {
    it('does not forward hop-by-hop headers or the headers Connection names', async () => {
      const { seen } = await forward('GET', '/openai/v1/models', [
        ['Host', '127.0.0.1'],
        ['Authorization', `Bearer ${agent.token}`],
        ['Connection', 'close, X-Hop-One'],
        ['Connection', 'x-hop-two , X-Hop-Three'],
        ['X-Hop-One', 'one'],
        ['x-hop-two', 'two'],
        ['X-HOP-THREE', 'three'],
        ['Keep-Alive', 'timeout=100, max=5'],
        ['TE', 'trailers'],
        ['Trailer', 'x-checksum'],
        ['Upgrade', 'h2c'],
        ['Proxy-Connection', 'keep-alive'],
        ['Proxy-Authorization', 'Basic cHJveHk6cGFzcw=='],
        ['HTTP2-Settings', 'AAMAAABkAARAAAAAAAIAAAAA'],
        ['X-Survivor', 'stays'],
      ]);
      const names = lowerNames(seen);
      for (const gone of ['x-hop-one', 'x-hop-two', 'x-hop-three', 'keep-alive', 'te', 'trailer', 'upgrade', 'proxy-connection', 'proxy-authorization', 'http2-settings']) {
        expect(names, gone).not.toContain(gone);
      }
      // undici may set its own Connection for the upstream hop; none of the agent's tokens survive in it.
      expect(seen.header('connection').join(',').toLowerCase()).not.toMatch(/x-hop|close/);
      expect(seen.header('x-survivor')).toEqual(['stays']);
      expect(seen.header('authorization')).toEqual([`Bearer ${realKey}`]);
    });

    it('refuses a protocol upgrade (Connection: Upgrade) without forwarding it', async () => {
      const before = upstream.requests.length;
      const response = await send('GET', '/openai/v1/models', [
        ['Host', '127.0.0.1'],
        ['Authorization', `Bearer ${agent.token}`],
        ['Connection', 'Upgrade'],
        ['Upgrade', 'websocket'],
        ['Sec-WebSocket-Version', '13'],
        ['Sec-WebSocket-Key', 'dGhlIHNhbXBsZSBub25jZQ=='],
      ]);
      expect(response.status).toBe(400);
      expectProblemContentType(response);
      expect((JSON.parse(response.body) as { code: string }).code).toBe('invalid_request');
      expect(upstream.requests.length).toBe(before);
    });

    it('re-frames a chunked request body: the body arrives intact with one framing', async () => {
      const chunks = ['{"messages":', '[{"role":"user",', '"content":"hi"}]}'];
      const chunked = `${chunks.map((c) => `${Buffer.byteLength(c).toString(16)}\r\n${c}\r\n`).join('')}0\r\n\r\n`;
      const { seen } = await forward('POST', '/openai/v1/chat', [...base, ['Content-Type', 'application/json'], ['Transfer-Encoding', 'chunked']], chunked);
      expect(seen.body.toString('utf8')).toBe(chunks.join(''));
      const te = seen.header('transfer-encoding');
      const cl = seen.header('content-length');
      // Exactly one framing (RFC 9112 6.1: never both), and not the agent's header copied next to undici's.
      expect(te.length + cl.length).toBe(1);
      if (te.length === 1) expect(te).toEqual(['chunked']);
      else expect(cl).toEqual([String(Buffer.byteLength(chunks.join('')))]);
    });

    it('refuses Content-Length together with Transfer-Encoding (request smuggling) without forwarding', async () => {
      const before = upstream.requests.length;
      const response = await send('POST', '/openai/v1/chat', [...base, ['Content-Length', '4'], ['Transfer-Encoding', 'chunked']], '0\r\n\r\n');
      expect(response.status).toBe(400);
      expectProblemContentType(response);
      expect(upstream.requests.length).toBe(before);
    });

    it('drops Expect: 100-continue (this hop answers it) and forwards the body', async () => {
      const body = '{"a":1}';
      const { response, seen } = await forward('POST', '/openai/v1/chat', [...base, ['Expect', '100-continue'], ['Content-Type', 'application/json'], ['Content-Length', String(body.length)]], body);
      expect(seen.header('expect')).toEqual([]);
      expect(response.status).toBe(200);
      expect(seen.body.toString('utf8')).toBe(body);
    });

    it('drops the agent\'s forwarding and routing headers and sets its own X-Forwarded-For', async () => {
      const { seen } = await forward('GET', '/openai/v1/models', [
        ...base,
        ['X-Forwarded-For', '203.0.113.7, 10.0.0.1'],
        ['x-forwarded-for', '198.51.100.9'],
        ['X-Forwarded-Host', 'evil.example'],
        ['X-Forwarded-Proto', 'https'],
        ['X-Forwarded-Port', '8443'],
        ['X-Forwarded-Prefix', '/admin'],
        ['Forwarded', 'for=203.0.113.7;host=evil.example;proto=https'],
        ['X-Real-IP', '203.0.113.7'],
        ['X-Original-URL', '/admin/secrets'],
        ['X-Rewrite-URL', '/admin/secrets'],
      ]);
      expect(seen.target).toBe('/v1/models');
      expect(seen.header('x-forwarded-for')).toEqual(['127.0.0.1']);
      for (const gone of ['x-forwarded-host', 'x-forwarded-proto', 'x-forwarded-port', 'x-forwarded-prefix', 'forwarded', 'x-real-ip', 'x-original-url', 'x-rewrite-url']) {
        expect(seen.header(gone), gone).toEqual([]);
      }
      expect(seen.rawHeaders.join('\n')).not.toMatch(/evil\.example|203\.0\.113\.7|198\.51\.100\.9|\/admin/);
    });

    it.each(['evil.example', 'api.openai.com', 'evil.example:8080', '127.0.0.1'])('sends the upstream its own host:port as Host, not the agent\'s %s', async (agentHost) => {
      const { seen } = await forward('GET', '/openai/v1/models', [
        ['Host', agentHost],
        ['Connection', 'close'],
        ['Authorization', `Bearer ${agent.token}`],
      ]);
      expect(seen.header('host')).toEqual([`127.0.0.1:${upstream.port}`]);
    });

    it('refuses two Host headers without forwarding', async () => {
      const before = upstream.requests.length;
      const response = await send('GET', '/openai/v1/models', [['Host', '127.0.0.1'], ['Host', 'evil.example'], ['Connection', 'close'], ['Authorization', `Bearer ${agent.token}`]]);
      expect(response.status).toBe(400);
      expectProblemContentType(response);
      expect(upstream.requests.length).toBe(before);
    });

    it('passes ordinary headers through unchanged and in order, repeats included', async () => {
      const ordinary: HeaderLines = [
        ['User-Agent', 'OpenAI/JS 6.0.0 test-agent'],
        ['Content-Type', 'application/json; charset=utf-8'],
        ['Accept', 'application/json, text/event-stream;q=0.9'],
        ['X-Foo', 'first'],
        ['Accept-Language', 'en-GB, fr;q=0.5'],
        ['X-Foo', 'second'],
        ['x-foo', 'third, with a comma'],
        ['X-Stainless-Retry-Count', '0'],
        ['Idempotency-Key', 'abc-123'],
        ['Cookie', 'session=xyz'],
        ['X-Empty', ''],
      ];
      const body = '{"model":"gpt-test"}';
      const { seen } = await forward('POST', '/openai/v1/chat/completions', [...base, ...ordinary, ['Content-Length', String(body.length)]], body);
      const wanted = new Set(ordinary.map(([name]) => name.toLowerCase()));
      const received: Array<[string, string]> = [];
      for (let i = 0; i < seen.rawHeaders.length; i += 2) {
        const name = (seen.rawHeaders[i] as string).toLowerCase();
        if (wanted.has(name)) received.push([name, seen.rawHeaders[i + 1] as string]);
      }
      expect(received).toEqual(ordinary.map(([name, value]) => [name.toLowerCase(), value]));
      expect(seen.header('content-length')).toEqual([String(body.length)]);
      expect(seen.body.toString('utf8')).toBe(body);
      expect(seen.method).toBe('POST');
    });
  });

  describe('response side', () => {
    it('does not relay the upstream\'s hop-by-hop headers or those its Connection names', async () => {
      const response = await send('GET', '/openai/v1/hop-response', base);
      expect(response.status).toBe(200);
      expect(response.body).toBe('{"hop":true}');
      for (const gone of ['x-upstream-hop', 'x-upstream-hop-2', 'keep-alive', 'proxy-authenticate', 'proxy-connection', 'upgrade']) {
        expect(response.headers[gone], gone).toBeUndefined();
      }
      // The agent's own hop: node's Connection answers the agent's "close", nothing of the upstream's list.
      expect(response.headers['connection']).toEqual(['close']);
      expect(response.headers['x-custom-response']).toEqual(['kept']);
      expect(response.headers['cache-control']).toEqual(['no-cache, private']);
      expect(response.headers['content-type']).toEqual(['application/json']);
    });

    it('keeps every Set-Cookie line, in order', async () => {
      const response = await send('GET', '/openai/v1/hop-response', base);
      expect(response.headers['set-cookie']).toEqual(['a=1; Path=/', 'b=2; HttpOnly', 'c=3; Secure; SameSite=Strict']);
    });

    it('replaces an upstream\'s own x-airlock-request-id with Airlock\'s', async () => {
      const response = await send('GET', '/openai/v1/hop-response', base);
      const ids = response.headers['x-airlock-request-id'] ?? [];
      expect(ids).toHaveLength(1);
      expect(ids[0]).toMatch(UUID);
      expect(response.raw).not.toContain('forged-by-upstream');
      assertNoLeak([realKey], [{ name: 'response with a forged request id', text: response.raw }]);
      expect(await auditHas(ids[0])).toBe(true);
    });

    it('re-frames a chunked upstream response with a single Transfer-Encoding', async () => {
      const response = await send('GET', '/openai/v1/chunked-response', base);
      expect(response.status).toBe(200);
      expect(response.body).toBe('part one, part two');
      expect(response.headers['transfer-encoding'] ?? []).toHaveLength(response.headers['content-length'] === undefined ? 1 : 0);
    });

    it.each<{ name: string; target: string; headers: HeaderLines; status: number }>([
      { name: 'success', target: '/openai/v1/models', headers: base, status: 200 },
      { name: 'route denial (403)', target: '/openai/v2/models', headers: base, status: 403 },
      { name: 'scope denial (403)', target: '/openai/admin/users', headers: base, status: 403 },
      { name: 'unknown service (404)', target: '/nowhere/v1/models', headers: base, status: 404 },
      { name: 'no token (401)', target: '/openai/v1/models', headers: [['Host', '127.0.0.1'], ['Connection', 'close']], status: 401 },
      { name: 'hostile path (400)', target: '/openai/v1/../admin', headers: base, status: 400 },
      { name: 'unparsable request (400, node refuses)', target: '/openai/v1/a b', headers: base, status: 400 },
      { name: 'health', target: '/_airlock/health', headers: [['Host', '127.0.0.1'], ['Connection', 'close']], status: 200 },
    ])('puts x-airlock-request-id on every response: $name', async ({ target, headers, status }) => {
      const response = await send('GET', target, headers);
      expect(response.status).toBe(status);
      const ids = response.headers['x-airlock-request-id'] ?? [];
      expect(ids).toHaveLength(1);
      expect(ids[0]).toMatch(UUID);
      if (status !== 200) {
        expectProblemContentType(response);
        expect((JSON.parse(response.body) as { request_id: string }).request_id).toBe(ids[0]);
      }
    });

    it('gives every response its own request id', () => {
      const ids = responses.map((raw) => /\r\nx-airlock-request-id: ([^\r]*)\r\n/i.exec(raw)?.[1]).filter((id) => id !== undefined);
      expect(ids.length).toBeGreaterThanOrEqual(10);
      expect(new Set(ids).size).toBe(ids.length);
    });
  });

  it('leaves no trace of the credential in responses, logs or audit', async () => {
    await proxy.waitForAudit(upstream.requests.length);
    assertNoLeak([realKey], [
      { name: 'responses', text: responses.join('\n') },
      { name: 'log', text: proxy.logLines.join('') },
      { name: 'audit', text: proxy.auditText() },
    ]);
  });
});
