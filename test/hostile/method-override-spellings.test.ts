/**
 * Method overrides and stripped query keys in every spelling a mainstream parser reads as the name,
 * through the real proxy. Found by review, each verified against PHP 8.2 with Symfony and Laravel,
 * Rack 2.2 and 3.2, qs and Slim 4:
 *  - F1: PHP turns "." and " " in a parameter name into "_", drops leading spaces and cuts a name at
 *    NUL; Rack 2.2 and qs read "[_method]" as `_method`. In the query such a key is removed; in a form
 *    body it is refused. The same reading strips `session.key` for strip_query [session_key].
 *  - F3a: "Connection: content-type" made Airlock drop the Content-Type its body check had used.
 *  - F3b: Laravel reads a body as JSON when its Content-Type merely contains "/json" or "+json".
 *  - F3c: Slim reads `_METHOD`: a JSON key is matched in any case.
 * A refusal is a 400 problem and the upstream completes no request; benign keys that only resemble an
 * override (payment_method, method, {"method":"card"}) are forwarded byte for byte.
 */
import { brotliCompressSync, deflateSync, gzipSync } from 'node:zlib';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { generateAgentToken } from '../../src/identity/agent-token.js';
import { assertNoLeak } from '../helpers/assert-no-leak.js';
import { canary } from '../helpers/canary.js';
import { rawRequest, type RawResponse } from '../helpers/raw-http.js';
import { startProxy, type ProxyFixture } from '../helpers/start-proxy.js';
import { startUpstream, type RecordedRequest, type Upstream } from '../helpers/start-upstream.js';
import { auditRecordOf, expectProblem, hostileWatch } from './support/hostile-watch.js';

type HeaderLines = ReadonlyArray<readonly [string, string]>;

const FORM: HeaderLines = [['Content-Type', 'application/x-www-form-urlencoded']];
const JSON_BODY: HeaderLines = [['Content-Type', 'application/json']];

describe('method overrides and stripped keys in every spelling a parser reads', () => {
  const watch = hostileWatch();
  const agent = generateAgentToken();
  const queryKey = canary('spelling-query-key');
  const bearerKey = canary('spelling-bearer-key');
  const evil = canary('spelling-evil');
  const responses: string[] = [];
  let upstream: Upstream;
  let proxy: ProxyFixture;

  beforeAll(async () => {
    upstream = await startUpstream();
    const routes = [{ method: ['GET', 'POST'], path: '/v1/*', scope: 'api' }];
    proxy = await startProxy(
      {
        services: {
          bearer: { upstream: upstream.url, credential: { secret: 'env:BEARER_KEY', inject: 'bearer' }, routes },
          query: { upstream: upstream.url, credential: { secret: 'env:QUERY_KEY', inject: { query: 'api_key' } }, strip_query: ['session_key'], routes },
        },
        agents: { tester: { tokens: [agent.hash], credentials: [{ service: 'bearer', max_scope: ['*'] }, { service: 'query', max_scope: ['*'] }] } },
      },
      { env: { BEARER_KEY: bearerKey, QUERY_KEY: queryKey } },
    );
    watch.start();
  });

  afterAll(async () => {
    await proxy?.close();
    await upstream?.close();
  });

  async function exchange(method: string, target: string, headers: HeaderLines, body: string): Promise<RawResponse> {
    const lines = [`${method} ${target} HTTP/1.1`, 'Host: 127.0.0.1', 'Connection: close', `Authorization: Bearer ${agent.token}`];
    for (const [name, value] of headers) lines.push(`${name}: ${value}`);
    if (body !== '') lines.push(`Content-Length: ${Buffer.byteLength(body)}`);
    const response = await rawRequest(proxy.url, `${lines.join('\r\n')}\r\n\r\n${body}`);
    responses.push(response.raw);
    return response;
  }

  /** A request that must be forwarded: exactly one new upstream request, as POST, which is returned. */
  async function forwarded(target: string, headers: HeaderLines, body: string): Promise<RecordedRequest> {
    const before = upstream.requests.length;
    const response = await exchange('POST', target, headers, body);
    expect(response.status, response.body).toBe(200);
    expect(upstream.requests.length).toBe(before + 1);
    const seen = upstream.requests[before] as RecordedRequest;
    expect(seen.method).toBe('POST');
    return seen;
  }

  /** A request that must be refused with 400 `code`, audited, with nothing forwarded. */
  async function refused(target: string, headers: HeaderLines, body: string, code = 'invalid_request', agentName: string | null = 'tester'): Promise<string> {
    const before = upstream.requests.length;
    const response = await exchange('POST', target, headers, body);
    const problem = expectProblem({ status: response.status, contentType: response.headers['content-type']?.[0], body: response.body }, 400, code);
    const record = await auditRecordOf(proxy, problem.request_id);
    expect(record).toMatchObject({ agent: agentName, code, status: 400, upstream_status: null });
    expect(upstream.requests.length).toBe(before);
    return problem.detail;
  }

  describe('F1: the query', () => {
    it.each([
      '.method=DELETE',
      '%2Emethod=DELETE',
      '%2emethod=DELETE',
      '+_method=DELETE',
      '%20_method=DELETE',
      '%09_method=DELETE',
      '_method%00=DELETE',
      '[_method]=DELETE',
      '%5B_method%5D=DELETE',
      '_method]=DELETE',
      '_METHOD=DELETE',
    ])('removes %s before forwarding', async (pair) => {
      const seen = await forwarded(`/bearer/v1/things?a=1&${pair}&b=2`, JSON_BODY, '{}');
      expect(seen.target).toBe('/v1/things?a=1&b=2');
    });

    it('forwards keys that only resemble an override, byte for byte', async () => {
      const query = 'payment_method=pm_x&method=flickr.photos.search&methods=1&_methods=2&x_method=3&payment.method=4&a=_method';
      const seen = await forwarded(`/bearer/v1/things?${query}`, JSON_BODY, '{}');
      expect(seen.target).toBe(`/v1/things?${query}`);
    });

    it('removes strip_query keys and agent copies of the injected key as PHP names them', async () => {
      const target = `/query/v1/things?a=1&session.key=${evil}&session[key=${evil}&session+key=${evil}&api.key=${evil}&api[key=${evil}&%20api_key=${evil}&session_keys=kept`;
      const seen = await forwarded(target, JSON_BODY, '{}');
      expect(seen.target).toBe(`/v1/things?a=1&session_keys=kept&api_key=${encodeURIComponent(queryKey)}`);
    });
  });

  describe('F1: a form body', () => {
    it.each([
      '.method=DELETE',
      '%2Emethod=DELETE',
      '+_method=DELETE',
      '%20_method=DELETE',
      '_method%00=DELETE',
      'a=1&[_method]=DELETE',
      '%5B_method%5D=DELETE',
      '_METHOD=DELETE',
      `${'+'.repeat(300)}_method=DELETE`,
    ])('refuses %s (400), with or without a Content-Type', async (body) => {
      expect(await refused('/bearer/v1/things', FORM, body)).toContain('method override');
      expect(await refused('/bearer/v1/things', [], body)).toContain('method override');
    });

    it('forwards a form whose keys only resemble an override, byte for byte', async () => {
      const body = 'payment_method=pm_x&method=flickr.photos.search&methods=1&payment.method=2';
      const seen = await forwarded('/bearer/v1/things', FORM, body);
      expect(seen.body.toString('latin1')).toBe(body);
    });
  });

  describe('F3a: Connection naming a field meant for every recipient', () => {
    it.each(['content-type', 'Content-Type', 'keep-alive, content-type', 'content-length', 'content-encoding', 'host'])('refuses Connection: %s (400 invalid_request)', async (listed) => {
      // Refused with the request's shape, before authentication (no agent in the record), so a request
      // that needs approval is never shown to an approver first.
      const detail = await refused('/bearer/v1/things', [['Content-Type', 'application/json'], ['Connection', listed]], '_method=DELETE', 'invalid_request', null);
      expect(detail).toContain('Connection');
    });

    it.each(['gzip', 'deflate', 'br', 'GZIP, identity'])('refuses a request body coded %s (its _method or secret could not be checked)', async (coding) => {
      const body = coding === 'br' ? brotliCompressSync('_method=DELETE') : coding === 'deflate' ? deflateSync('_method=DELETE') : gzipSync('_method=DELETE');
      const before = upstream.requests.length;
      const lines = ['POST /bearer/v1/things HTTP/1.1', 'Host: 127.0.0.1', 'Connection: close', `Authorization: Bearer ${agent.token}`, `Content-Type: application/x-www-form-urlencoded`, `Content-Encoding: ${coding}`, `Content-Length: ${body.length}`];
      const response = await rawRequest(proxy.url, Buffer.concat([Buffer.from(`${lines.join('\r\n')}\r\n\r\n`, 'latin1'), body]));
      responses.push(response.raw);
      const problem = expectProblem({ status: response.status, contentType: response.headers['content-type']?.[0], body: response.body }, 400, 'invalid_request');
      expect(problem.detail).toContain('Compressed request bodies');
      expect(await auditRecordOf(proxy, problem.request_id)).toMatchObject({ agent: null, code: 'invalid_request', status: 400, upstream_status: null });
      expect(upstream.requests.length).toBe(before);
    });

    it('forwards a body declared Content-Encoding: identity, as sent', async () => {
      const seen = await forwarded('/bearer/v1/things', [['Content-Type', 'application/json'], ['Content-Encoding', 'identity']], '{"a":1}');
      expect(seen.body.toString()).toBe('{"a":1}');
    });

    it('refuses two Content-Type headers (node reads the first; an upstream may read the last as a form)', async () => {
      const detail = await refused('/bearer/v1/things', [['Content-Type', 'application/json'], ['content-type', 'application/x-www-form-urlencoded']], '_method=DELETE', 'invalid_request', null);
      expect(detail).toContain('more than one Content-Type');
    });

    it('still forwards Connection naming a header Airlock may drop (x-foo), Content-Type kept', async () => {
      const seen = await forwarded('/bearer/v1/things', [['Content-Type', 'application/json'], ['Connection', 'x-foo'], ['X-Foo', '1']], '{"a":1}');
      expect(seen.header('content-type')).toEqual(['application/json']);
      expect(seen.header('x-foo')).toEqual([]);
    });

    it('drops a Content_Type spelled with "_", which CGI-style servers read as CONTENT_TYPE', async () => {
      const seen = await forwarded('/bearer/v1/things', [['Content_Type', 'application/x-www-form-urlencoded'], ['Content-Type', 'application/json']], '{"a":1}');
      expect(seen.header('content_type')).toEqual([]);
      expect(seen.header('content-type')).toEqual(['application/json']);
    });
  });

  describe('F3b and F3c: JSON', () => {
    it.each<[string, string]>([
      ['application/json', '{"_METHOD":"DELETE"}'],
      ['application/json', '{"amount":5,"_Method":"DELETE"}'],
      ['application/json', '{"_\\u004DETHOD":"DELETE"}'],
      ['text/json', '{"_method":"DELETE"}'],
      ['text/plain; x=/json', '{"_method":"DELETE"}'],
      ['text/plain; x=/json', '{"\\u005fmethod":"DELETE"}'],
      ['application/x-www-form-urlencoded; x=/json', '{"_method":"DELETE"}'],
      ['multipart/form-data; boundary=b/json', '{"\\u005fmethod":"DELETE"}'],
    ])('refuses a body under %s: %s (400)', async (contentType, body) => {
      expect(await refused('/bearer/v1/things', [['Content-Type', contentType]], body)).toContain('method override');
    });

    it.each<[string, string]>([
      ['application/json', '{"method":"card"}'],
      ['application/json', '{"payment_method":"x","METHOD":"y"}'],
      ['text/json', '{"method":"card","payment_method":"x"}'],
    ])('forwards a body under %s: %s, byte for byte', async (contentType, body) => {
      const seen = await forwarded('/bearer/v1/things', [['Content-Type', contentType]], body);
      expect(seen.body.toString('utf8')).toBe(body);
    });
  });

  it('leaves no trace of the credentials or the agent\'s values in answers, logs or audit, and stays healthy', async () => {
    await proxy.waitForAudit(responses.length);
    expect(proxy.auditRecords()).toHaveLength(responses.length);
    for (const seen of upstream.requests) expect(seen.target).not.toContain(evil);
    assertNoLeak([bearerKey, queryKey, evil], [
      { name: 'answers', text: responses.join('\n') },
      { name: 'log', text: proxy.logLines.join('') },
      { name: 'audit', text: proxy.auditText() },
    ]);
    watch.assertHealthy();
  });
});
