/**
 * What happens between Airlock and the upstream: request bodies arrive byte for byte (Content-Length
 * and chunked) and are bounded (413); connection failures and silence become 502/504; redirects are
 * handed to the agent, never followed; response framing is kept, and a response cut short upstream is
 * cut short for the agent too (and audited as incomplete); an agent that goes away closes the
 * upstream socket; TLS upstreams with a private CA; the egress guard on host names; a service's
 * max_connections bounds the connections (and requests in flight) the upstream sees, the rest queue.
 */
import { once } from 'node:events';
import { readFileSync, rmSync } from 'node:fs';
import { request as httpRequest, type IncomingHttpHeaders, type IncomingMessage, type ServerResponse } from 'node:http';
import { createServer as createHttpsServer, type Server as HttpsServer } from 'node:https';
import { createServer as createNetServer, type AddressInfo } from 'node:net';
import { randomBytes } from 'node:crypto';
import { gzipSync } from 'node:zlib';
import OpenAI from 'openai';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { buildConfig } from '../../src/config/load-config.js';
import { generateAgentToken } from '../../src/identity/agent-token.js';
import type { AuditRecord } from '../../src/observability/audit-record.js';
import { assertNoLeak } from '../helpers/assert-no-leak.js';
import { canary, plainCanary } from '../helpers/canary.js';
import { rawRequest } from '../helpers/raw-http.js';
import { sendRequest, type Problem, type SentResponse } from '../helpers/send-request.js';
import { startProxy, tempDir, type ProxyFixture } from '../helpers/start-proxy.js';
import { startUpstream, type Upstream } from '../helpers/start-upstream.js';
import { HAVE_OPENSSL, makeTestCa, warnWithoutOpenssl } from '../helpers/test-certificates.js';

const sleep = (ms: number): Promise<void> => new Promise((resolve) => setTimeout(resolve, ms));

warnWithoutOpenssl('forwarding.test.ts', 'the HTTPS upstream tests');

/** A CA and a server certificate for IP 127.0.0.1 signed by it. */
function makeCertificates(dir: string): { ca: string; key: string; cert: string } {
  const authority = makeTestCa(dir);
  return { ca: authority.ca, ...authority.issue('server') };
}

async function closedPort(): Promise<number> {
  const server = createNetServer();
  server.listen(0, '127.0.0.1');
  await once(server, 'listening');
  const port = (server.address() as AddressInfo).port;
  await new Promise<void>((resolve) => server.close(() => resolve()));
  return port;
}

interface StreamedResponse {
  status: number;
  headers: IncomingHttpHeaders;
  body: Buffer;
  /** True only when the response ended cleanly ('end' with the message complete). */
  cleanEnd: boolean;
}

/** Reads a response until its socket closes, reporting whether it ended cleanly or was cut. */
function readToClose(url: string, headers: Record<string, string>, timeoutMs = 10_000): Promise<StreamedResponse> {
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => {
      req.destroy();
      reject(new Error(`response from ${url} neither ended nor was cut within ${timeoutMs} ms`));
    }, timeoutMs);
    const req = httpRequest(url, { headers, agent: false }, (res: IncomingMessage) => {
      const chunks: Buffer[] = [];
      let cleanEnd = false;
      res.on('data', (chunk: Buffer) => chunks.push(chunk));
      res.on('end', () => {
        cleanEnd = res.complete;
      });
      res.on('error', () => undefined);
      res.on('close', () => {
        clearTimeout(timer);
        resolve({ status: res.statusCode ?? 0, headers: res.headers, body: Buffer.concat(chunks), cleanEnd });
      });
    });
    req.on('error', (error) => {
      clearTimeout(timer);
      reject(error);
    });
    req.end();
  });
}

async function waitFor(condition: () => boolean, what: string, timeoutMs = 5000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!condition()) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((resolve) => setTimeout(resolve, 10));
  }
}

describe('forwarding', () => {
  const key = canary('forwarding');
  const agent = generateAgentToken();
  const auth = { authorization: `Bearer ${agent.token}` };
  const routes = [{ method: ['GET', 'HEAD', 'POST', 'PUT'], path: '/v1/*', scope: 'api:call' }];
  const credential = { secret: 'env:FWD_KEY' };
  const fixedBody = randomBytes(12_345);
  let upstream: Upstream;
  let silent: Upstream;
  let tls: { server: HttpsServer; url: string; targets: string[]; authorizations: string[] } | null = null;
  /**
   * A key with a non-ASCII character, injected as a query parameter: a URL parser re-encodes the raw
   * UTF-8 bytes of it (read as Latin-1 from the header) into escapes of no form the scan knows.
   */
  const quotedKey = `${plainCanary('quoted')}'é`;
  /**
   * Redirects to a same-origin URL holding the query it received, decoded to raw bytes, the key with it.
   * Under /v1/twice the Location also repeats the key as it was sent (percent-encoded), a copy that
   * rewriting to the proxy prefix keeps in a form the scan knows.
   */
  const redirecting = createNetServer((socket) => {
    socket.once('data', (chunk: Buffer) => {
      const target = chunk.toString('latin1').split(' ')[1] ?? '/';
      const query = target.includes('?') ? target.slice(target.indexOf('?')) : '';
      const raw = Buffer.from(query.replace(/%([0-9A-Fa-f]{2})/g, (_escape, hex: string) => String.fromCharCode(parseInt(hex, 16))), 'latin1');
      const again = target.startsWith('/v1/twice') ? `&again=${query.slice(query.indexOf('=') + 1)}` : '';
      socket.end(Buffer.concat([Buffer.from('HTTP/1.1 301 Moved Permanently\r\nLocation: /v1/items/', 'latin1'), raw, Buffer.from(`${again}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n`, 'latin1')]));
    });
  });
  /** Answers every request with Transfer-Encoding: gzip, chunked: the key, compressed, past a redactor that read it as plain. */
  const transferCoded = createNetServer((socket) => {
    socket.once('data', () => {
      const body = gzipSync(Buffer.from(`{"echo":"${key}"}`));
      socket.end(`HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nTransfer-Encoding: gzip, chunked\r\nConnection: close\r\n\r\n${body.length.toString(16)}\r\n${body.toString('latin1')}\r\n0\r\n\r\n`, 'latin1');
    });
  });
  let certDir: string;
  let caFile = '';
  let proxy: ProxyFixture;
  let upstreamRequestsSeen = 0;
  let endlessSocketClosed = false;
  const surfaces: string[] = [];

  beforeAll(async () => {
    upstream = await startUpstream((req, res) => {
      const path = (req.url ?? '').split('?')[0];
      switch (path) {
        case '/v1/redirect-away':
          res.writeHead(302, { location: 'http://elsewhere.example/landing?x=1', 'content-length': 0 });
          res.end();
          return;
        case '/v1/redirect-home-absolute':
          res.writeHead(302, { location: `${upstream.url}/v1/landing?x=1`, 'content-length': 0 });
          res.end();
          return;
        case '/v1/redirect-home-relative':
          res.writeHead(301, { location: '/v1/landing', 'content-length': 0 });
          res.end();
          return;
        case '/base/v1/redirect-in':
          res.writeHead(307, { location: '/base/v1/landing?page=2', 'content-length': 0 });
          res.end();
          return;
        case '/base/v1/redirect-out':
          res.writeHead(302, { location: `${upstream.url}/outside/base`, 'content-length': 0 });
          res.end();
          return;
        case '/v1/fixed-length':
          res.writeHead(200, { 'content-type': 'application/octet-stream', 'content-length': fixedBody.length });
          res.end(fixedBody);
          return;
        case '/v1/die-mid-body':
          // Chunked (no Content-Length), so only the missing last chunk tells the agent it was cut.
          res.writeHead(200, { 'content-type': 'text/plain' });
          res.write('x'.repeat(1000));
          setTimeout(() => res.socket?.destroy(), 50);
          return;
        case '/v1/endless': {
          res.writeHead(200, { 'content-type': 'text/event-stream' });
          res.write('data: first\n\n');
          const timer = setInterval(() => res.write('data: more\n\n'), 20);
          req.socket.on('close', () => {
            clearInterval(timer);
            endlessSocketClosed = true;
          });
          return;
        }
        default: {
          const body = '{"ok":true}';
          res.writeHead(200, { 'content-type': 'application/json', 'content-length': Buffer.byteLength(body) });
          res.end(body);
        }
      }
    });
    upstream.server.on('request', () => upstreamRequestsSeen++);
    silent = await startUpstream(() => undefined);

    const services: Record<string, unknown> = {
      fwd: { upstream: upstream.url, credential, routes },
      based: { upstream: `${upstream.url}/base`, credential, routes },
      small: { upstream: upstream.url, max_body_bytes: 1024, credential, routes },
      dead: { upstream: `http://127.0.0.1:${await closedPort()}`, credential, routes },
      silent: { upstream: silent.url, timeouts: { headers: 0.5 }, credential, routes },
      byname: { upstream: `http://localhost:${upstream.port}`, credential, routes },
      'byname-private': { upstream: `http://localhost:${upstream.port}`, allow_private: true, credential, routes },
    };

    redirecting.listen(0, '127.0.0.1');
    await once(redirecting, 'listening');
    services['redirecting'] = { upstream: `http://127.0.0.1:${(redirecting.address() as AddressInfo).port}`, credential: { secret: 'env:QUOTED_KEY', inject: { query: 'api_key' } }, routes };
    transferCoded.listen(0, '127.0.0.1');
    await once(transferCoded, 'listening');
    services['transfer-coded'] = { upstream: `http://127.0.0.1:${(transferCoded.address() as AddressInfo).port}`, credential, routes };

    certDir = tempDir('airlock-tls-');
    if (HAVE_OPENSSL) {
      const files = makeCertificates(certDir);
      caFile = files.ca;
      const targets: string[] = [];
      const authorizations: string[] = [];
      const server = createHttpsServer({ key: readFileSync(files.key), cert: readFileSync(files.cert) }, (req, res) => {
        targets.push(req.url ?? '');
        authorizations.push(req.headers.authorization ?? '');
        res.writeHead(200, { 'content-type': 'application/json', 'content-length': 16 });
        res.end('{"secure":true} ');
      });
      server.listen(0, '127.0.0.1');
      await once(server, 'listening');
      const url = `https://127.0.0.1:${(server.address() as AddressInfo).port}`;
      tls = { server, url, targets, authorizations };
      services['tls'] = { upstream: url, ca: caFile, credential, routes };
      services['tls-no-ca'] = { upstream: url, credential, routes };
    }

    proxy = await startProxy(
      { services, agents: { bot: { tokens: [agent.hash], credentials: Object.keys(services).map((service) => ({ service, max_scope: ['*'] })) } } },
      { env: { FWD_KEY: key, QUOTED_KEY: quotedKey } },
    );
  });

  afterAll(async () => {
    await proxy?.close();
    await Promise.all([upstream?.close(), silent?.close(), ...[transferCoded, redirecting].map((server) => new Promise<void>((resolve) => server.close(() => resolve())))]);
    if (tls !== null) {
      tls.server.closeAllConnections();
      await new Promise<void>((resolve) => tls?.server.close(() => resolve()));
    }
    rmSync(certDir, { recursive: true, force: true });
  });

  async function call(path: string, options: Parameters<typeof sendRequest>[1] = {}): Promise<SentResponse> {
    const response = await sendRequest(`${proxy.url}${path}`, { ...options, headers: { ...auth, ...(options.headers ?? {}) } });
    surfaces.push(response.body.toString('latin1'), JSON.stringify(response.headers));
    return response;
  }

  async function auditFor(requestId: string | string[] | undefined): Promise<AuditRecord> {
    let found: AuditRecord | undefined;
    await waitFor(() => (found = proxy.auditRecords().find((r) => r.request_id === requestId)) !== undefined, `the audit record of ${String(requestId)}`);
    return found as AuditRecord;
  }

  describe('request bodies', () => {
    const binary = Buffer.concat([Buffer.from(Array.from({ length: 256 }, (_, i) => i)), Buffer.from('\r\n0\r\n\r\n'), randomBytes(200_000)]);

    it('arrive byte for byte with Content-Length', async () => {
      const response = await call('/fwd/v1/upload', { method: 'POST', body: binary, headers: { 'content-type': 'application/octet-stream' } });
      expect(response.status).toBe(200);
      const seen = upstream.requests.at(-1);
      expect(seen?.method).toBe('POST');
      expect(seen?.body.equals(binary)).toBe(true);
      expect(seen?.header('content-length')).toEqual([String(binary.length)]);
      expect(seen?.header('authorization')).toEqual([`Bearer ${key}`]);
    });

    it('arrive byte for byte when chunked', async () => {
      const chunks = [binary.subarray(0, 1), binary.subarray(1, 4097), binary.subarray(4097, 100_000), binary.subarray(100_000)];
      const response = await call('/fwd/v1/upload', { method: 'PUT', chunks });
      expect(response.status).toBe(200);
      const seen = upstream.requests.at(-1);
      expect(seen?.method).toBe('PUT');
      expect(seen?.body.equals(binary)).toBe(true);
    });

    it('over the limit with Content-Length: 413 payload_too_large and nothing forwarded', async () => {
      const before = upstreamRequestsSeen;
      const response = await call('/small/v1/upload', { method: 'POST', body: randomBytes(2048) });
      expect(response.status).toBe(413);
      const problem = response.json<Problem>();
      expect(problem.code).toBe('payload_too_large');
      expect(problem.detail).toContain('1024');
      expect(upstreamRequestsSeen).toBe(before);
    });

    it('over the limit with Content-Length: refused on the headers alone, before any body byte', async () => {
      const before = upstreamRequestsSeen;
      // No body follows the headers: the declared length alone must be enough to refuse (bounded wait).
      // The client asks to close: on a kept connection the rest of a refused body is read and thrown
      // away when it comes (answerRefusal), and this one never does.
      const response = await rawRequest(
        proxy.url,
        `POST /small/v1/upload HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer ${agent.token}\r\nContent-Length: 2048\r\nConnection: close\r\n\r\n`,
        5000,
      );
      surfaces.push(response.raw);
      expect(response.status).toBe(413);
      expect((JSON.parse(response.body) as Problem).code).toBe('payload_too_large');
      expect(upstreamRequestsSeen).toBe(before);
    });

    it('over the limit when chunked without a length: 413 payload_too_large', async () => {
      const before = upstream.requests.length;
      const response = await call('/small/v1/upload', { method: 'POST', chunks: [randomBytes(600), randomBytes(600), randomBytes(600)] });
      expect(response.status).toBe(413);
      expect(response.json<Problem>().code).toBe('payload_too_large');
      // The upstream may have seen the start of the request, never a complete one.
      expect(upstream.requests.length).toBe(before);
      const id = response.headers['x-airlock-request-id'];
      expect(await auditFor(id)).toMatchObject({ decision: 'allow', code: 'payload_too_large', status: 413 });
      expect(proxy.auditRecords().filter((r) => r.request_id === id)).toHaveLength(1);
    });

    it('exactly at the limit is forwarded', async () => {
      const body = randomBytes(1024);
      const response = await call('/small/v1/upload', { method: 'POST', body });
      expect(response.status).toBe(200);
      expect(upstream.requests.at(-1)?.body.equals(body)).toBe(true);
    });
  });

  describe('upstream failures', () => {
    it('an upstream that refuses connections: 502 upstream_unreachable', async () => {
      const response = await call('/dead/v1/x');
      expect(response.status).toBe(502);
      const problem = response.json<Problem>();
      expect(problem.code).toBe('upstream_unreachable');
      expect(problem.detail).toContain('refused');
      expect(await auditFor(response.headers['x-airlock-request-id'])).toMatchObject({ decision: 'allow', code: 'upstream_unreachable', status: 502, upstream_status: null });
    });

    it('an upstream that never answers: 504 upstream_timeout after timeouts.headers', async () => {
      const response = await call('/silent/v1/x', { timeoutMs: 10_000 });
      expect(response.status).toBe(504);
      const problem = response.json<Problem>();
      expect(problem.code).toBe('upstream_timeout');
      expect(problem.detail).toContain('timeouts.headers');
      expect(problem.detail).toContain('The request was sent, so it may have taken effect there');
      expect(silent.requests.length).toBe(1);
    });

    it('the openai SDK, with its default two retries, sends a call that timed out once (x-should-retry: false)', async () => {
      // Found by the SDK walkthrough: one slow completion reached the upstream three times.
      const before = silent.requests.length;
      const client = new OpenAI({ apiKey: agent.token, baseURL: `${proxy.url}/silent/v1` });
      const failure = await client.post('/chat/completions', { body: { model: 'gpt-4o', messages: [] } }).then(
        () => null,
        (error: unknown) => error,
      );
      expect(failure).toBeInstanceOf(OpenAI.InternalServerError);
      expect((failure as InstanceType<typeof OpenAI.InternalServerError>).status).toBe(504);
      surfaces.push((failure as Error).message);
      expect(silent.requests.length - before).toBe(1);
    });

    it('an upstream that dies mid-body cuts the agent\'s response, and the audit says incomplete', async () => {
      const response = await readToClose(`${proxy.url}/fwd/v1/die-mid-body`, auth);
      surfaces.push(response.body.toString('latin1'));
      expect(response.status).toBe(200);
      expect(response.body.length).toBeGreaterThan(0);
      expect(response.cleanEnd).toBe(false);
      const record = await auditFor(response.headers['x-airlock-request-id']);
      expect(record).toMatchObject({ decision: 'allow', upstream_status: 200, incomplete: true });
    });

    it('an agent that goes away mid-download closes the upstream socket', async () => {
      endlessSocketClosed = false;
      let requestId: string | string[] | undefined;
      await new Promise<void>((resolve, reject) => {
        const req = httpRequest(`${proxy.url}/fwd/v1/endless`, { headers: auth, agent: false }, (res) => {
          requestId = res.headers['x-airlock-request-id'];
          res.once('data', () => {
            req.destroy();
            resolve();
          });
        });
        req.on('error', (error) => {
          if (requestId === undefined) reject(error);
        });
        req.end();
      });
      await waitFor(() => endlessSocketClosed, 'the upstream socket to close after the agent left');
      expect(await auditFor(requestId)).toMatchObject({ decision: 'allow', upstream_status: 200, incomplete: true });
    });
  });

  describe('redirects and framing', () => {
    it('a redirect to another origin reaches the agent unchanged and is not followed', async () => {
      const before = upstream.requests.length;
      const response = await call('/fwd/v1/redirect-away');
      expect(response.status).toBe(302);
      expect(response.headers['location']).toBe('http://elsewhere.example/landing?x=1');
      expect(upstream.requests.length).toBe(before + 1);
    });

    it('a same-origin absolute Location is rewritten to the proxy prefix', async () => {
      const before = upstream.requests.length;
      const response = await call('/fwd/v1/redirect-home-absolute');
      expect(response.status).toBe(302);
      expect(response.headers['location']).toBe('/fwd/v1/landing?x=1');
      expect(upstream.requests.length).toBe(before + 1);
    });

    it('a relative Location is rewritten to the proxy prefix', async () => {
      const response = await call('/fwd/v1/redirect-home-relative');
      expect(response.status).toBe(301);
      expect(response.headers['location']).toBe('/fwd/v1/landing');
    });

    it('with an upstream base path, a Location under it is rewritten and one outside it is not', async () => {
      const inside = await call('/based/v1/redirect-in');
      expect(inside.status).toBe(307);
      expect(inside.headers['location']).toBe('/based/v1/landing?page=2');
      const outside = await call('/based/v1/redirect-out');
      expect(outside.status).toBe(302);
      expect(outside.headers['location']).toBe(`${upstream.url}/outside/base`);
    });

    it('keeps the upstream Content-Length exactly', async () => {
      const response = await call('/fwd/v1/fixed-length');
      expect(response.status).toBe(200);
      expect(response.headers['content-length']).toBe(String(fixedBody.length));
      expect(response.headers['transfer-encoding']).toBeUndefined();
      expect(response.body.equals(fixedBody)).toBe(true);
    });

    it('keeps the upstream Content-Length of a HEAD response, with no body', async () => {
      const response = await call('/fwd/v1/fixed-length', { method: 'HEAD' });
      expect(response.status).toBe(200);
      expect(upstream.requests.at(-1)?.method).toBe('HEAD');
      expect(response.headers['content-length']).toBe(String(fixedBody.length));
      expect(response.body.length).toBe(0);
    });
  });

  describe('TLS upstreams', () => {
    it.skipIf(!HAVE_OPENSSL)('trusts a private CA given as the service\'s ca: file', async () => {
      const response = await call('/tls/v1/secure?x=1');
      expect(response.status).toBe(200);
      expect(response.text).toBe('{"secure":true} ');
      expect(tls?.targets.at(-1)).toBe('/v1/secure?x=1');
      expect(tls?.authorizations.at(-1)).toBe(`Bearer ${key}`);
    });

    it.skipIf(!HAVE_OPENSSL)('without ca: refuses the certificate with 502 saying so', async () => {
      const before = tls?.targets.length;
      const response = await call('/tls-no-ca/v1/secure');
      expect(response.status).toBe(502);
      const problem = response.json<Problem>();
      expect(problem.code).toBe('upstream_unreachable');
      expect(problem.detail).toContain('certificate');
      expect(tls?.targets.length).toBe(before);
    });

    // Node skips certificate checks on any connection that does not ask for them while this variable
    // is 0, and reads it at every connect: a development shell's leftover must not let the key go to
    // whoever answers. The upstream pool asks for verification itself.
    it.skipIf(!HAVE_OPENSSL)('without ca: still refuses the certificate when NODE_TLS_REJECT_UNAUTHORIZED=0 appears in the environment', async () => {
      const before = tls?.targets.length;
      const saved = process.env['NODE_TLS_REJECT_UNAUTHORIZED'];
      process.env['NODE_TLS_REJECT_UNAUTHORIZED'] = '0';
      try {
        const response = await call('/tls-no-ca/v1/secure');
        expect(response.status, response.text).toBe(502);
        expect(response.json<Problem>().detail).toContain('certificate');
      } finally {
        if (saved === undefined) delete process.env['NODE_TLS_REJECT_UNAUTHORIZED'];
        else process.env['NODE_TLS_REJECT_UNAUTHORIZED'] = saved;
      }
      expect(tls?.targets.length).toBe(before);
    });

    it('refuses to start with NODE_TLS_REJECT_UNAUTHORIZED=0, saying how to trust a private CA instead', async () => {
      const attempt = startProxy({ services: { api: { upstream: `http://127.0.0.1:${upstream.port}`, credential, routes } } }, { env: { FWD_KEY: key, NODE_TLS_REJECT_UNAUTHORIZED: '0' } });
      await expect(attempt).rejects.toThrow(/does not start:\n  - NODE_TLS_REJECT_UNAUTHORIZED=0 is set.*Unset it; to trust a private CA, name it: a service's ca:/s);
    });
  });

  // Found by review: a same-origin Location was rewritten (parsed and re-serialized) before the header
  // scan, and the parser re-encodes raw non-ASCII bytes: the scan then knew no form of what it saw.
  it('a same-origin redirect that echoes the injected key is relayed with the key masked, not re-encoded past the scan', async () => {
    const response = await call('/redirecting/v1/items');
    expect(response.status).toBe(301);
    const location = String(response.headers['location']);
    expect(location).toContain('[REDACTED]');
    assertNoLeak([quotedKey], [{ name: 'Location', text: location }]);
  });

  // Found by review (a known limit until then): with the key echoed twice, once in a form rewriting keeps
  // and once in one it re-encodes, the Location was rewritten first and the second copy went out. It is
  // now masked as the upstream wrote it, then rewritten, then scanned again.
  it('a same-origin redirect that echoes the key twice, raw and as sent, is rewritten to the prefix with both copies masked and counted', async () => {
    const response = await call('/redirecting/v1/twice');
    expect(response.status).toBe(301);
    const location = String(response.headers['location']);
    expect(location.startsWith('/redirecting/v1/items/')).toBe(true);
    expect(location.split('[REDACTED]').length - 1).toBe(2);
    assertNoLeak([quotedKey], [{ name: 'Location', text: location }]);
    expect(await auditFor(response.headers['x-airlock-request-id'])).toMatchObject({ status: 301, redactions: 2 });
  });

  // Found by review: undici removes only the chunked framing, and Transfer-Encoding is hop-by-hop, so a
  // "gzip, chunked" body reached the redactor compressed and the agent could gunzip the key out of it.
  it('refuses a response with a transfer-coding other than chunked: 502 unscannable_response, no byte of it relayed', async () => {
    const response = await call('/transfer-coded/v1/anything');
    expect(response.status, response.text).toBe(502);
    expect(response.json<Problem>()).toMatchObject({ code: 'unscannable_response' });
    expect(response.json<Problem>().detail).toContain('transfer-coding');
    expect(response.text).not.toContain('echo');
  });

  describe('egress guard', () => {
    it('refuses a host name that resolves to loopback with 502 and sends nothing', async () => {
      const before = upstreamRequestsSeen;
      const response = await call('/byname/v1/x');
      expect(response.status).toBe(502);
      const problem = response.json<Problem>();
      expect(problem.code).toBe('upstream_unreachable');
      expect(problem.detail).toContain('allow_private');
      expect(upstreamRequestsSeen).toBe(before);
    });

    it('allows that host name when the service sets allow_private: true', async () => {
      const response = await call('/byname-private/v1/x');
      expect(response.status).toBe(200);
      expect(upstream.requests.at(-1)?.header('host')).toEqual([`localhost:${upstream.port}`]);
    });

    it('allows an IP literal loopback upstream', async () => {
      const response = await call('/fwd/v1/x');
      expect(response.status).toBe(200);
      expect(upstream.requests.at(-1)?.header('host')).toEqual([`127.0.0.1:${upstream.port}`]);
    });

    it('makes a cloud metadata upstream without allow_private a config error', () => {
      const service = { upstream: 'http://169.254.169.254', credential, routes };
      const refused = buildConfig({ services: { meta: service } }, { baseDir: certDir });
      expect(refused.config).toBeNull();
      const problem = refused.problems.find((p) => p.severity === 'error');
      expect(problem?.path).toEqual(['services', 'meta', 'upstream']);
      expect(problem?.message).toContain('allow_private');

      const allowed = buildConfig({ services: { meta: { ...service, allow_private: true } } }, { baseDir: certDir });
      expect(allowed.config).not.toBeNull();
      expect(allowed.problems.filter((p) => p.severity === 'error')).toEqual([]);
    });
  });

  it('leaves no trace of the key in responses, logs or audit', async () => {
    await proxy.waitForAudit(1);
    assertNoLeak([key], [
      { name: 'responses', text: surfaces.join('\n') },
      { name: 'log', text: proxy.logLines.join('') },
      { name: 'audit', text: proxy.auditText() },
    ]);
  });
});

describe('max_connections', () => {
  const key = canary('max-connections');
  const agent = generateAgentToken();
  const MAX = 2;
  const AGENT_REQUESTS = 6;
  let held: Upstream;
  let proxy: ProxyFixture;
  let released = false;
  const waiting: Array<() => void> = [];
  let openSockets = 0;
  let maxOpenSockets = 0;
  let inFlight = 0;
  let maxInFlight = 0;

  function answer(res: ServerResponse): void {
    const body = '{"held":false}';
    res.writeHead(200, { 'content-type': 'application/json', 'content-length': Buffer.byteLength(body) });
    res.end(body);
  }

  beforeAll(async () => {
    // Holds every request until released; counts TCP connections and requests in flight as they happen.
    held = await startUpstream((_req, res) => {
      if (released) answer(res);
      else waiting.push(() => answer(res));
    });
    held.server.on('connection', (socket) => {
      maxOpenSockets = Math.max(maxOpenSockets, ++openSockets);
      socket.on('close', () => openSockets--);
    });
    held.server.on('request', (_req, res) => {
      maxInFlight = Math.max(maxInFlight, ++inFlight);
      res.on('close', () => inFlight--);
    });
    proxy = await startProxy(
      {
        services: { pooled: { upstream: held.url, max_connections: MAX, credential: { secret: 'env:POOL_KEY' }, routes: [{ method: 'GET', path: '/v1/*', scope: 'api:call' }] } },
        agents: { bot: { tokens: [agent.hash], credentials: [{ service: 'pooled', max_scope: ['*'] }] } },
      },
      { env: { POOL_KEY: key } },
    );
  });

  afterAll(async () => {
    released = true;
    for (const release of waiting.splice(0)) release();
    await proxy?.close();
    await held?.close();
  });

  /** The proxy's own view of the service's undici pool (airlock_upstream_connections). */
  async function poolStat(state: 'connected' | 'queued' | 'running'): Promise<number> {
    const metric = await proxy.airlock.metrics.registry.getSingleMetric('airlock_upstream_connections')?.get();
    return metric?.values.find((v) => v.labels['service'] === 'pooled' && v.labels['state'] === state)?.value ?? -1;
  }

  it(`with max_connections: ${MAX}, ${AGENT_REQUESTS} concurrent agent requests never reach the upstream more than ${MAX} at a time, and all complete`, async () => {
    let finished = 0;
    const responses = Array.from({ length: AGENT_REQUESTS }, (_, i) =>
      sendRequest(`${proxy.url}/pooled/v1/held/${i}`, { headers: { authorization: `Bearer ${agent.token}` }, timeoutMs: 15_000 }).finally(() => finished++),
    );

    // Every agent request has reached the pool: MAX dispatched and held upstream, the rest queued.
    await waitFor(() => held.requests.length >= MAX, `${MAX} requests to reach the held upstream`);
    let queued = -1;
    const deadline = Date.now() + 5000;
    while ((queued = await poolStat('queued')) < AGENT_REQUESTS - MAX) {
      if (Date.now() > deadline) throw new Error(`only ${queued} requests queued in the pool, expected ${AGENT_REQUESTS - MAX}`);
      await sleep(10);
    }
    // Bounded settle: time for a pool that ignored the bound to open another connection.
    await sleep(300);
    expect(finished).toBe(0);
    expect(held.requests.length).toBe(MAX);
    expect(waiting.length).toBe(MAX);
    expect(maxInFlight).toBe(MAX);
    expect(maxOpenSockets).toBe(MAX);
    expect(await poolStat('connected')).toBeLessThanOrEqual(MAX);
    expect(await poolStat('running')).toBe(MAX);
    expect(await poolStat('queued')).toBe(AGENT_REQUESTS - MAX);

    released = true;
    for (const release of waiting.splice(0)) release();
    const settled = await Promise.all(responses);
    expect(settled.map((r) => r.status)).toEqual(Array<number>(AGENT_REQUESTS).fill(200));
    for (const response of settled) expect(response.json()).toEqual({ held: false });
    expect(held.requests).toHaveLength(AGENT_REQUESTS);
    expect(held.requests.map((r) => r.target).sort()).toEqual(Array.from({ length: AGENT_REQUESTS }, (_, i) => `/v1/held/${i}`).sort());
    for (const request of held.requests) expect(request.header('authorization')).toEqual([`Bearer ${key}`]);
    // Never more than MAX at once, before or after the release.
    expect(maxInFlight).toBe(MAX);
    expect(maxOpenSockets).toBeLessThanOrEqual(MAX);

    const records = await proxy.waitForAudit(AGENT_REQUESTS);
    expect(records.filter((r) => r.service === 'pooled' && r.status === 200 && r.upstream_status === 200)).toHaveLength(AGENT_REQUESTS);
    assertNoLeak([key], [
      { name: 'responses', text: settled.map((r) => `${JSON.stringify(r.headers)}\n${r.text}`).join('\n') },
      { name: 'log', text: proxy.logLines.join('') },
      { name: 'audit', text: proxy.auditText() },
    ]);
  });
});
