/**
 * An agent trying to override or smuggle the credential (invariant 5): its own copies of the header or
 * query key Airlock injects - duplicated, re-cased, percent-encoded, behind ";" - and Connection
 * tricks that would strip Airlock's copy. Whatever the agent sends, the upstream sees exactly one
 * credential, the real (canary) one, and never the agent token. Method-override headers and query keys,
 * which would make the upstream run a method other than the one authorized, are stripped too.
 *
 * Requests are written raw: duplicate and re-cased header lines must reach Airlock as sent.
 *
 * Every case checks: exactly one audit record under the answer's x-airlock-request-id, with the expected
 * decision (an allow on the forwarded path, or a deny with the problem's code); what the recording
 * upstream received (the injected credential exactly once, none of the agent's own keys, which are
 * canaries too, and never the agent token); a refusal is an RFC 9457 problem with nothing forwarded. The
 * file ends with a leak scan of every canary over responses, logs and audit, and hostileWatch (no
 * unhandled rejection or uncaught exception, event-loop p99 under 250 ms).
 */
import { request as httpRequest, type IncomingMessage } from 'node:http';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { generateAgentToken } from '../../src/identity/agent-token.js';
import type { AuditRecord } from '../../src/observability/audit-record.js';
import { assertNoLeak } from '../helpers/assert-no-leak.js';
import { canary } from '../helpers/canary.js';
import { eventually } from '../helpers/operator.js';
import { rawRequest, type RawResponse } from '../helpers/raw-http.js';
import { startProxy, type ProxyFixture } from '../helpers/start-proxy.js';
import { startUpstream, type RecordedRequest, type Upstream } from '../helpers/start-upstream.js';
import { auditRecordOf, expectProblem, hostileWatch } from './support/hostile-watch.js';

type HeaderLines = ReadonlyArray<readonly [string, string]>;

function basic(user: string, password: string): string {
  return `Basic ${Buffer.from(`${user}:${password}`, 'utf8').toString('base64')}`;
}

/** Query pairs as an application/x-www-form-urlencoded parser sees them, split on "&" and ";". */
function queryPairs(target: string): Array<[string, string]> {
  const question = target.indexOf('?');
  if (question === -1) return [];
  return target
    .slice(question + 1)
    .split(/[&;]/)
    .filter((part) => part !== '')
    .map((part): [string, string] => {
      const eq = part.indexOf('=');
      const decode = (text: string): string => decodeURIComponent(text.replace(/\+/g, ' '));
      return eq === -1 ? [decode(part), ''] : [decode(part.slice(0, eq)), decode(part.slice(eq + 1))];
    });
}

type ServiceName = 'bearer' | 'header' | 'custom' | 'query' | 'basic';
const SERVICES: readonly ServiceName[] = ['bearer', 'header', 'custom', 'query', 'basic'];
const ENV_NAMES: Record<ServiceName, string> = { bearer: 'BEARER_KEY', header: 'HEADER_KEY', custom: 'CUSTOM_KEY', query: 'QUERY_KEY', basic: 'BASIC_KEY' };

/** Occurrences of `needle` in `text`. */
function occurrences(text: string, needle: string): number {
  let count = 0;
  for (let at = text.indexOf(needle); at !== -1; at = text.indexOf(needle, at + needle.length)) count++;
  return count;
}

/** Everything an upstream received for one request, Basic credentials decoded: where a key could be. */
function everythingSeen(seen: RecordedRequest): string {
  const decodedBasic = seen
    .header('authorization')
    .filter((value) => /^basic /i.test(value))
    .map((value) => Buffer.from(value.slice('Basic '.length), 'base64').toString('utf8'));
  return [seen.method, seen.target, ...seen.rawHeaders, seen.body.toString('latin1'), ...decodedBasic].join('\n');
}

describe('an agent cannot override or smuggle the injected credential', () => {
  const watch = hostileWatch();
  const keys: Record<ServiceName, string> = {
    bearer: canary('ovr-bearer'),
    header: canary('ovr-header'),
    custom: canary('ovr-custom'),
    query: canary('ovr-query'),
    basic: canary('ovr-basic'),
  };
  /**
   * The agent's own keys, the ones it tries to put in place of the injected credential: unique canaries
   * too (their tag holds "evil"), so any of them reaching the upstream or any output is attributable.
   */
  const EVIL = {
    1: canary('ovr-evil1'),
    2: canary('ovr-evil2'),
    3: canary('ovr-evil3'),
    4: canary('ovr-evil4'),
    5: canary('ovr-evil5'),
    6: canary('ovr-evil6'),
    7: canary('ovr-evil7'),
    q1: canary('ovr-evilq1'),
    q2: canary('ovr-evilq2'),
    alone: canary('ovr-evilalone'),
  } as const;
  const AGENT_KEYS: readonly string[] = Object.values(EVIL);
  /** The query tables below say "evil" and "evil2" for readable test names; the wire carries canaries. */
  const withEvil = (text: string): string => text.replace(/evil2?/g, (word) => (word === 'evil2' ? EVIL.q2 : EVIL.q1));
  const agent = generateAgentToken();
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
          header: { upstream: upstream.url, credential: { secret: 'env:HEADER_KEY', inject: { header: 'x-api-key', value: '${secret}' } }, routes },
          custom: { upstream: upstream.url, credential: { secret: 'env:CUSTOM_KEY', inject: { header: 'X-Custom-Auth', value: 'Token ${secret}' } }, routes },
          query: { upstream: upstream.url, credential: { secret: 'env:QUERY_KEY', inject: { query: 'key' } }, routes },
          basic: { upstream: upstream.url, credential: { secret: 'env:BASIC_KEY', inject: { basic: { username: 'api', password: '${secret}' } } }, routes },
        },
        agents: {
          tester: {
            tokens: [agent.hash],
            credentials: ['bearer', 'header', 'custom', 'query', 'basic'].map((service) => ({ service, max_scope: ['*'] })),
          },
        },
      },
      { env: { BEARER_KEY: keys.bearer, HEADER_KEY: keys.header, CUSTOM_KEY: keys.custom, QUERY_KEY: keys.query, BASIC_KEY: keys.basic } },
    );
    // Started once the proxy is up: the watch covers every case, not the synchronous start-up, which in
    // a file this short would weigh on the p99.
    watch.start();
  });

  afterAll(async () => {
    await proxy.close();
    await upstream.close();
  });

  async function exchange(method: string, target: string, headers: HeaderLines, body: string): Promise<RawResponse> {
    const lines = [`${method} ${target} HTTP/1.1`, 'Host: 127.0.0.1', 'Connection: close'];
    for (const [name, value] of headers) lines.push(`${name}: ${value}`);
    if (body !== '') lines.push(`Content-Length: ${Buffer.byteLength(body)}`);
    const response = await rawRequest(proxy.url, `${lines.join('\r\n')}\r\n\r\n${body}`);
    responses.push(response.raw);
    return response;
  }

  /** The request's audit record, and the only one with its id (looked up by x-airlock-request-id). */
  async function onlyAuditRecordOf(response: RawResponse): Promise<AuditRecord> {
    const requestIds = response.headers['x-airlock-request-id'] ?? [];
    expect(requestIds).toHaveLength(1);
    const requestId = requestIds[0] as string;
    const record = await auditRecordOf(proxy, requestId);
    expect(proxy.auditRecords().filter((r) => r.request_id === requestId)).toHaveLength(1);
    return record;
  }

  /**
   * Sends a raw request that must be allowed and returns what the upstream recorded for it (exactly one
   * new request). Checks, for every case: one audit record, an allow, on the path that was forwarded;
   * the upstream got the service's injected credential exactly once, and none of the agent's own keys,
   * no other service's credential and not the agent token.
   */
  async function send(method: string, target: string, headers: HeaderLines, body = ''): Promise<{ response: RawResponse; seen: RecordedRequest }> {
    const service = target.split('/')[1] as ServiceName;
    expect(SERVICES).toContain(service);
    const before = upstream.requests.length;
    const response = await exchange(method, target, headers, body);
    expect(response.status, response.body).toBe(200);
    expect(upstream.requests.length).toBe(before + 1);
    const seen = upstream.requests[before] as RecordedRequest;
    // The agent token is nowhere in what the upstream received.
    expect(seen.rawHeaders.join('\n')).not.toContain(agent.token);
    expect(seen.target).not.toContain(agent.token);
    expect(seen.target).not.toContain('alk_');
    const all = everythingSeen(seen);
    expect(all).not.toContain(agent.token);
    expect(occurrences(all, keys[service]), 'the injected credential, exactly once').toBe(1);
    for (const other of SERVICES) if (other !== service) expect(all, `the ${other} credential`).not.toContain(keys[other]);
    expect(AGENT_KEYS.filter((key) => all.includes(key)), "the agent's own keys").toEqual([]);
    const record = await onlyAuditRecordOf(response);
    expect(record).toMatchObject({
      agent: 'tester',
      service,
      method,
      decision: 'allow',
      code: null,
      status: 200,
      upstream_status: 200,
      credential: `env:${ENV_NAMES[service]}`,
      incomplete: false,
    });
    // The authorized path (audited, prefix included, no query) is the forwarded path.
    expect(record.path).toBe(`/${service}${seen.target.split('?')[0] ?? ''}`);
    return { response, seen };
  }

  /** Header names (lower case) the upstream saw whose value mentions any agent-chosen marker. */
  function evilHeaders(seen: RecordedRequest): string[] {
    const found: string[] = [];
    for (let i = 0; i < seen.rawHeaders.length; i += 2) {
      if (/evil/i.test(seen.rawHeaders[i + 1] as string)) found.push((seen.rawHeaders[i] as string).toLowerCase());
    }
    return found;
  }

  describe('bearer injection', () => {
    it.each<{ name: string; headers: HeaderLines }>([
      { name: 'token and a second Authorization with its own key', headers: [['Authorization', `Bearer ${agent.token}`], ['Authorization', `Bearer ${EVIL[1]}`]] },
      { name: 'its own key first, token second', headers: [['Authorization', `Bearer ${EVIL[1]}`], ['x-api-key', agent.token]] },
      { name: 'AUTHORIZATION in upper case', headers: [['x-api-key', agent.token], ['AUTHORIZATION', `Bearer ${EVIL[2]}`]] },
      { name: 'mixed-case aUtHoRiZaTiOn', headers: [['x-api-key', agent.token], ['aUtHoRiZaTiOn', `Bearer ${EVIL[3]}`]] },
      { name: 'three Authorization lines', headers: [['authorization', `Bearer ${EVIL[1]}`], ['Authorization', `Bearer ${agent.token}`], ['AUTHORIZATION', `token ${EVIL[2]}`]] },
      { name: 'Connection: authorization (strip the injected one)', headers: [['Authorization', `Bearer ${agent.token}`], ['Connection', 'authorization']] },
      { name: 'Connection: authorization with its own key', headers: [['x-api-key', agent.token], ['Authorization', `Bearer ${EVIL[4]}`], ['Connection', 'keep-alive, Authorization']] },
      { name: 'its own key as Basic', headers: [['x-api-key', agent.token], ['Authorization', basic('evil-user', EVIL[5])]] },
      { name: 'its own key in Proxy-Authorization', headers: [['Authorization', `Bearer ${agent.token}`], ['Proxy-Authorization', `Bearer ${EVIL[6]}`]] },
    ])('$name', async ({ headers }) => {
      const { seen } = await send('GET', '/bearer/v1/models', headers);
      expect(seen.header('authorization')).toEqual([`Bearer ${keys.bearer}`]);
      expect(seen.header('proxy-authorization')).toEqual([]);
      expect(evilHeaders(seen)).toEqual([]);
    });

    // Found by review: RFC 6750 2.3's other way to send a bearer token, which an upstream may prefer.
    it.each(['access_token', 'ACCESS_TOKEN', 'access%5Ftoken', 'access_token[]'])('its own key as %s in the query is removed', async (name) => {
      const { seen } = await send('GET', `/bearer/v1/models?${name}=${EVIL[7]}&keep=1`, [['Authorization', `Bearer ${agent.token}`]]);
      expect(seen.target).toBe('/v1/models?keep=1');
      expect(seen.header('authorization')).toEqual([`Bearer ${keys.bearer}`]);
    });
  });

  describe('header template injection (x-api-key)', () => {
    it.each<{ name: string; headers: HeaderLines }>([
      { name: 'its own x-api-key', headers: [['Authorization', `Bearer ${agent.token}`], ['x-api-key', EVIL[1]]] },
      { name: 'X-API-KEY in upper case', headers: [['Authorization', `Bearer ${agent.token}`], ['X-API-KEY', EVIL[2]]] },
      { name: 'two x-api-key lines', headers: [['Authorization', `Bearer ${agent.token}`], ['x-api-key', EVIL[1]], ['X-Api-Key', EVIL[2]]] },
      { name: 'x-api-key carrying the token plus its own key', headers: [['x-api-key', agent.token], ['x-api-key', EVIL[3]]] },
      { name: 'Connection: x-api-key', headers: [['x-api-key', agent.token], ['Connection', 'x-api-key']] },
      { name: 'Connection: x-api-key with its own key', headers: [['Authorization', `Bearer ${agent.token}`], ['x-api-key', EVIL[4]], ['Connection', 'X-Api-Key']] },
    ])('$name', async ({ headers }) => {
      const { seen } = await send('GET', '/header/v1/models', headers);
      expect(seen.header('x-api-key')).toEqual([keys.header]);
      // The agent's Authorization (its token) is a carrier and gone; nothing else carries a key.
      expect(seen.header('authorization')).toEqual([]);
      expect(evilHeaders(seen)).toEqual([]);
    });
  });

  describe('header template injection on a header that is not a token carrier (X-Custom-Auth)', () => {
    it.each<{ name: string; headers: HeaderLines }>([
      { name: 'its own x-custom-auth', headers: [['Authorization', `Bearer ${agent.token}`], ['X-Custom-Auth', `Token ${EVIL[1]}`]] },
      { name: 'repeated, re-cased copies', headers: [['Authorization', `Bearer ${agent.token}`], ['x-custom-auth', `Token ${EVIL[1]}`], ['X-CUSTOM-AUTH', `Token ${EVIL[2]}`]] },
      { name: 'Connection: x-custom-auth', headers: [['Authorization', `Bearer ${agent.token}`], ['Connection', 'x-custom-auth']] },
      { name: 'Connection: x-custom-auth with its own copy', headers: [['Authorization', `Bearer ${agent.token}`], ['x-custom-auth', `Token ${EVIL[3]}`], ['Connection', 'X-Custom-Auth']] },
    ])('$name', async ({ headers }) => {
      const { seen } = await send('GET', '/custom/v1/models', headers);
      expect(seen.header('x-custom-auth')).toEqual([`Token ${keys.custom}`]);
      expect(seen.header('authorization')).toEqual([]);
      expect(evilHeaders(seen)).toEqual([]);
    });
  });

  describe('query injection ({query: key})', () => {
    const auth: HeaderLines = [['Authorization', `Bearer ${agent.token}`]];
    it.each([
      { query: '?key=evil', rest: '' },
      { query: '?KEY=evil', rest: '' },
      { query: '?Key=evil', rest: '' },
      { query: '?k%65y=evil', rest: '' },
      { query: '?%6B%45%59=evil', rest: '' },
      { query: '?key=evil;key=evil2', rest: '' },
      { query: '?a=1&key=evil&key=evil2', rest: 'a=1' },
      { query: '?key=evil&a=1', rest: 'a=1' },
      { query: '?a=1;key=evil&b=2', rest: 'a=1&b=2' },
      { query: '?key', rest: '' },
      { query: '?key=', rest: '' },
      { query: '?key=evil&key=', rest: '' },
      { query: '?', rest: '' },
      { query: '', rest: '' },
      { query: '?keys=1&monkey=2&key_=3', rest: 'keys=1&monkey=2&key_=3' },
    ])('$query', async ({ query, rest }) => {
      const { seen } = await send('GET', `/query/v1/models${withEvil(query)}`, auth);
      const pairs = queryPairs(seen.target);
      expect(pairs.filter(([name]) => name.toLowerCase() === 'key')).toEqual([['key', keys.query]]);
      expect(seen.target).not.toMatch(/evil/i);
      // What remains of the agent's query is forwarded as sent, the credential appended last.
      expect(seen.target).toBe(`/v1/models?${rest === '' ? '' : `${rest}&`}key=${encodeURIComponent(keys.query)}`);
      expect(seen.header('authorization')).toEqual([]);
    });

    // "key[]" and "key[0]" are the same parameter to PHP, Rails and qs (Express): qs would read
    // "?key[]=evil&key=<real>" as key = ["evil", <real>], an agent-chosen value in the credential's place.
    it.each([{ query: '?key[]=evil' }, { query: '?key%5B%5D=evil' }, { query: '?key[0]=evil' }, { query: '?KEY[]=evil&key[x]=evil2' }])('bracket-notation copy $query is removed', async ({ query }) => {
      const { seen } = await send('GET', `/query/v1/models${withEvil(query)}`, auth);
      expect(seen.target).not.toMatch(/evil/i);
      expect(seen.target).toBe(`/v1/models?key=${encodeURIComponent(keys.query)}`);
    });
  });

  describe('basic injection', () => {
    it.each<{ name: string; headers: HeaderLines }>([
      { name: 'the token as Basic user, as an SDK sends it', headers: [['Authorization', basic(agent.token, '')]] },
      { name: 'its own Basic credentials next to the token', headers: [['x-airlock-token', agent.token], ['Authorization', basic('api', EVIL[1])]] },
      { name: 'its own Basic credentials, upper-case header', headers: [['x-airlock-token', agent.token], ['AUTHORIZATION', basic('evil', EVIL[2])]] },
      { name: 'the token in Basic plus a second Basic line', headers: [['Authorization', basic('', agent.token)], ['Authorization', basic('evil', EVIL[3])]] },
      { name: 'Connection: authorization', headers: [['Authorization', basic(agent.token, '')], ['Connection', 'authorization']] },
    ])('$name', async ({ headers }) => {
      const { seen } = await send('GET', '/basic/v1/models', headers);
      expect(seen.header('authorization')).toEqual([basic('api', keys.basic)]);
      expect(evilHeaders(seen)).toEqual([]);
      const decoded = Buffer.from((seen.header('authorization')[0] ?? '').slice('Basic '.length), 'base64').toString('utf8');
      expect(decoded).not.toContain('evil');
    });
  });

  describe('method override', () => {
    const auth: HeaderLines = [['Authorization', `Bearer ${agent.token}`]];
    it.each<{ name: string; headers: HeaderLines }>([
      { name: 'X-HTTP-Method-Override: DELETE', headers: [['X-HTTP-Method-Override', 'DELETE']] },
      { name: 'X-HTTP-Method: DELETE', headers: [['X-HTTP-Method', 'DELETE']] },
      { name: 'X-Method-Override: DELETE', headers: [['X-Method-Override', 'DELETE']] },
      { name: 'lower-case x-http-method-override: PUT', headers: [['x-http-method-override', 'PUT']] },
      { name: 'all of them, repeated', headers: [['X-HTTP-Method-Override', 'DELETE'], ['x-http-method-override', 'PATCH'], ['X-HTTP-METHOD', 'DELETE'], ['x-method-override', 'DELETE']] },
      { name: 'Connection lists a benign header next to an override', headers: [['Connection', 'x-foo'], ['X-HTTP-Method-Override', 'DELETE']] },
    ])('strips the header $name', async ({ headers }) => {
      const { seen } = await send('POST', '/bearer/v1/things', [...auth, ...headers], '{}');
      expect(seen.method).toBe('POST');
      expect(seen.header('x-http-method-override')).toEqual([]);
      expect(seen.header('x-http-method')).toEqual([]);
      expect(seen.header('x-method-override')).toEqual([]);
      expect(seen.header('authorization')).toEqual([`Bearer ${keys.bearer}`]);
    });

    it.each([
      { query: '?_method=DELETE', rest: '' },
      { query: '?_METHOD=delete', rest: '' },
      { query: '?%5Fmethod=DELETE', rest: '' },
      { query: '?a=1&_method=DELETE&b=2', rest: '?a=1&b=2' },
      { query: '?_method=DELETE;a=1', rest: '?a=1' },
      { query: '?x-http-method-override=DELETE&X-HTTP-Method=PUT&x-method-override=PATCH', rest: '' },
      { query: '?_method[]=DELETE&a=1', rest: '?a=1' },
      { query: '?a=_method', rest: '?a=_method' },
    ])('strips the query key in $query', async ({ query, rest }) => {
      const { seen } = await send('POST', `/bearer/v1/things${query}`, auth, '{}');
      expect(seen.method).toBe('POST');
      // Every override key was removed; the rest of the query is forwarded as sent (no "?" when nothing is left).
      expect(seen.target).toBe(`/v1/things${rest}`);
      expect(queryPairs(seen.target).map(([name]) => name.toLowerCase())).not.toContain('_method');
    });

    // Found by review: Rack::MethodOverride, Laravel and Symfony read _method from a POST form body too.
    it.each([
      'a=1&_method=DELETE',
      '_method=DELETE',
      '%5Fmethod=PUT&a=1',
      'a=1;_METHOD=delete',
      'X-HTTP-Method-Override=DELETE',
      '_method[]=DELETE',
      '_method',
    ])('refuses a form body carrying %s with 400, and the upstream completes no request', async (form) => {
      const before = upstream.requests.length;
      const response = await exchange('POST', '/bearer/v1/things', [...auth, ['Content-Type', 'application/x-www-form-urlencoded']], form);
      expect(response.status, response.body).toBe(400);
      expect(response.body).toContain('method override');
      expect(upstream.requests.length).toBe(before);
    });

    it.each(['a=_method', 'note=x-http-method-override&b=2', '_methods=DELETE'])('forwards a form body where %s is only a value or another key', async (form) => {
      const { seen } = await send('POST', '/bearer/v1/things', [...auth, ['Content-Type', 'application/x-www-form-urlencoded']], form);
      expect(seen.body.toString('utf8')).toBe(form);
    });

    // Found by the owner's review: Rack reads a POST without a Content-Type as a form, and multipart
    // fields too; Laravel reads JSON input as the request's fields.
    it.each<[string, HeaderLines, string]>([
      ['no Content-Type', [], 'a=1&_method=DELETE'],
      ['multipart/form-data', [['Content-Type', 'multipart/form-data; boundary=XyZ']], '--XyZ\r\nContent-Disposition: form-data; name="_method"\r\n\r\nDELETE\r\n--XyZ--\r\n'],
      ['multipart/form-data, NAME in capitals', [['Content-Type', 'multipart/form-data; boundary=XyZ']], '--XyZ\r\nContent-Disposition: form-data; NAME="_method"\r\n\r\nDELETE\r\n--XyZ--\r\n'],
      ['multipart/form-data, a space after =', [['Content-Type', 'multipart/form-data; boundary=XyZ']], '--XyZ\r\nContent-Disposition: form-data; name= "_method"\r\n\r\nDELETE\r\n--XyZ--\r\n'],
      ['application/json', [['Content-Type', 'application/json']], '{"amount":5,"_method":"DELETE"}'],
    ])('refuses _method in a body with %s (400), nothing forwarded', async (_type, headers, body) => {
      const before = upstream.requests.length;
      const response = await exchange('POST', '/bearer/v1/things', [...auth, ...headers], body);
      expect(response.status, response.body).toBe(400);
      expect(response.body).toContain('method override');
      expect(upstream.requests.length).toBe(before);
    });

    // Found by the owner's review of this stop: a JSON parser reads "\u005fmethod" as "_method".
    it.each([
      ['the underscore escaped', '{"amount":5,"\\u005fmethod":"DELETE"}'],
      ['in upper-case hex', '{"\\u005Fmethod":"DELETE"}'],
      ['a letter escaped', '{"_m\\u0065thod":"DELETE"}'],
      ['every character escaped', `{"${[...'_method'].map((c) => `\\u00${c.charCodeAt(0).toString(16)}`).join('')}":"DELETE"}`],
    ])('refuses a JSON key _method spelled with escapes (%s): 400, nothing forwarded', async (_how, body) => {
      expect(JSON.parse(body)).toHaveProperty('_method', 'DELETE');
      const before = upstream.requests.length;
      const response = await exchange('POST', '/bearer/v1/things', [...auth, ['Content-Type', 'application/json']], body);
      expect(response.status, response.body).toBe(400);
      expect(response.body).toContain('method override');
      expect(upstream.requests.length).toBe(before);
    });

    it('refuses an escaped _method whose escape is split across two writes of the body', async () => {
      const before = upstream.requests.length;
      const parts = ['{"amount":5,"\\u0', '05fmethod":"DELETE"}'];
      const response = await new Promise<{ status: number; body: string }>((resolve, reject) => {
        const request = httpRequest(`${proxy.url}/bearer/v1/things`, { method: 'POST', headers: { authorization: auth[0]?.[1] ?? '', 'content-type': 'application/json', 'content-length': String(Buffer.byteLength(parts.join(''))) } }, (res) => {
          const chunks: Buffer[] = [];
          res.on('data', (chunk: Buffer) => chunks.push(chunk));
          res.on('end', () => {
            const body = Buffer.concat(chunks).toString('utf8');
            responses.push(`${JSON.stringify(res.headers)}\n${body}`);
            resolve({ status: res.statusCode ?? 0, body });
          });
        });
        request.on('error', reject);
        request.write(parts[0]);
        setTimeout(() => request.end(parts[1]), 50);
      });
      expect(response.status, response.body).toBe(400);
      expect(response.body).toContain('method override');
      expect(upstream.requests.length).toBe(before);
    });

    /**
     * Sends a JSON body in parts, each certainly read on its own: the body is chunked, and each part after
     * the first is written only once the upstream has received more of the body (so the proxy read the
     * parts before alone, found nothing, and forwarded them), or not at all once the proxy has answered.
     * `written` counts the parts written: all of them only when every part but the last passed the watch.
     */
    async function sendInParts(parts: readonly string[]): Promise<{ status: number; body: string; requestId: string | undefined; written: number }> {
      /** Body bytes the upstream got of each request as they arrive (its record is made only at the end). */
      const arrivals: Array<{ bytes: number }> = [];
      const onRequest = (req: IncomingMessage): void => {
        const arrival = { bytes: 0 };
        arrivals.push(arrival);
        req.on('data', (chunk: Buffer) => (arrival.bytes += chunk.length));
      };
      upstream.server.on('request', onRequest);
      try {
        return await new Promise((resolve, reject) => {
          let answered = false;
          let written = 0;
          const timer = setTimeout(() => {
            request.destroy();
            reject(new Error('no answer within 10 s'));
          }, 10_000);
          const request = httpRequest(
            `${proxy.url}/bearer/v1/things`,
            { method: 'POST', agent: false, headers: { authorization: auth[0]?.[1] ?? '', 'content-type': 'application/json', 'transfer-encoding': 'chunked' } },
            (res) => {
              answered = true;
              const chunks: Buffer[] = [];
              res.on('data', (chunk: Buffer) => chunks.push(chunk));
              res.on('end', () => {
                clearTimeout(timer);
                const body = Buffer.concat(chunks).toString('utf8');
                responses.push(`${JSON.stringify(res.headers)}\n${body}`);
                request.destroy();
                const requestId = res.headers['x-airlock-request-id'];
                resolve({ status: res.statusCode ?? 0, body, requestId: typeof requestId === 'string' ? requestId : undefined, written });
              });
            },
          );
          // Once answered, the proxy may close the connection under the rest of the upload.
          request.on('error', (error) => {
            if (!answered) reject(error);
          });
          const writeFrom = (index: number): void => {
            const arrived = arrivals[0]?.bytes ?? 0;
            written = index + 1;
            if (index === parts.length - 1) {
              request.end(parts[index]);
              return;
            }
            request.write(parts[index]);
            eventually(`part ${index + 1} at the upstream, or an answer`, () => (arrivals[0]?.bytes ?? 0) > arrived || answered, 5_000, 2).then(() => {
              if (!answered) writeFrom(index + 1);
            }, (error: unknown) => {
              clearTimeout(timer);
              request.destroy();
              reject(error as Error);
            });
          };
          writeFrom(0);
        });
      } finally {
        upstream.server.off('request', onRequest);
      }
    }

    // The case above writes twice 50 ms apart, which the proxy may still read as one; here each split is
    // certain (sendInParts). One request per position inside "\u005fmethod" (from where the first part
    // holds the whole escape, that part alone is refused, and the second may never be written).
    const escapedKey = '"\\u005fmethod"';
    it.each(Array.from({ length: escapedKey.length - 1 }, (_, i) => i + 1))(
      'refuses an escaped _method whose key is split after its character %i, the parts read one at a time',
      async (split) => {
        const needle = escapedKey;
        const head = '{"amount":5,"note":"split",';
        const tail = ':"DELETE"}';
        expect(JSON.parse(`${head}${needle}${tail}`)).toHaveProperty('_method', 'DELETE');
        const first = `${head}${needle.slice(0, split)}`;
        const second = `${needle.slice(split)}${tail}`;
        const firstHoldsTheEscape = first.includes('\\u005f');
        const before = upstream.requests.length;
        const outcome = await sendInParts([first, second]);
        expect(outcome.status, outcome.body).toBe(400);
        expect(outcome.body).toContain('method override');
        // A first part without the whole escape passed the watch on its own (it reached the upstream
        // before the second was written): the refusal came from reading the second part.
        if (!firstHoldsTheEscape) expect(outcome.written).toBe(2);
        // Whatever part of the body reached the upstream, no request was completed there.
        expect(upstream.requests.length).toBe(before);
      },
    );

    // Found by review: "\\" is the escape for a backslash (RFC 8259 7), so the characters \u0065 after
    // one are text, not an escape: JSON.stringify writes them so for a prompt holding a regex or code, and
    // such a body was refused. Each value below holds a backslash then "u00" and the hex of a character
    // of _method, behind runs of one, two and five backslashes once encoded (the last longer than the
    // bytes the watch carries across a chunk boundary).
    type EscapeCase = [how: string, body: string, parsed: Record<string, string>];
    const literalEscapes = (
      [
        ['a regex in a prompt', { prompt: 'in regex write \\u0065 for e' }],
        ['one backslash before u005f', { p: '\\u005fmethod' }],
        ['two backslashes before u005f', { p: '\\\\u005fmethod' }],
        ['five backslashes before u005f', { p: `${'\\'.repeat(5)}u005fmethod` }],
        ['in a key, and after a run of three', { '\\u005fmethod': 'DELETE', n: '\\\\\\u0065' }],
      ] as Array<[string, Record<string, string>]>
    ).map(([how, value]): EscapeCase => [how, JSON.stringify(value), value]);
    // The same for the key itself: a quote after a backslash is text, so "_method" quoted inside a
    // string value is no key (found by the owner's review: refused before).
    const quotedInText = [
      ['a value ending in a quote and _method', { note: 'say "_method' }],
      ['after an escaped backslash and an escaped quote', { note: 'x\\"_method' }],
    ].map(([how, value]) => [how, JSON.stringify(value), value] as [string, string, Record<string, string>]);

    it.each(quotedInText)('forwards JSON whose value quotes "_method" with escaped quotes (%s), byte for byte', async (_how, body, value) => {
      // The bytes "_method" (quote, name, quote) are in the body, its first quote escaped.
      expect(body).toContain('\\"_method"');
      expect(JSON.parse(body)).toEqual(value);
      const { seen } = await send('POST', '/bearer/v1/things', [...auth, ['Content-Type', 'application/json']], body);
      expect(seen.body.toString('utf8')).toBe(body);
    });

    it.each(quotedInText.flatMap(([how, body]) => Array.from({ length: body.length - 1 }, (_, i) => [how, i + 1, body] as [string, number, string])))(
      'forwards JSON quoting "_method" in a value (%s) split after its byte %i',
      async (_how, split, body) => {
        const before = upstream.requests.length;
        const outcome = await sendInParts([body.slice(0, split), body.slice(split)]);
        expect(outcome.status, outcome.body).toBe(200);
        expect(upstream.requests.length).toBe(before + 1);
        expect((upstream.requests[before] as RecordedRequest).body.toString('utf8')).toBe(body);
      },
    );

    /** Parsed back, the body's strings still hold the six characters: the parser read no escape there. */
    function expectNoEscape(body: string, value: Record<string, string>): void {
      expect(Object.entries(value).flat().join('\n')).toMatch(/\\u00(5f|65)/);
      expect(JSON.parse(body)).toEqual(value);
    }

    it.each(literalEscapes)('forwards JSON whose text holds an escaped backslash then u00XX (%s), byte for byte', async (_how, body, value) => {
      expectNoEscape(body, value);
      const { seen } = await send('POST', '/bearer/v1/things', [...auth, ['Content-Type', 'application/json']], body);
      expect(seen.method).toBe('POST');
      expect(seen.body.toString('utf8')).toBe(body);
    });

    /**
     * A real escape after escaped backslashes: the parser reads each "\\" as a backslash, then the escape
     * as a character of _method (each body's parse is checked against what it must yield).
     */
    const realEscapes: EscapeCase[] = [
      ['"\\\\\\u0065" (an escaped backslash, then e escaped)', '{"p":"\\\\\\u0065"}', { p: '\\e' }],
      ['two escaped backslashes, then _ escaped, in a key', '{"\\\\\\\\\\u005fmethod":"DELETE"}', { '\\\\_method': 'DELETE' }],
      ['five escaped backslashes, then e escaped', `{"p":"${'\\'.repeat(10)}\\u0065"}`, { p: `${'\\'.repeat(5)}e` }],
    ];

    it.each(realEscapes)('refuses a real escape after escaped backslashes (%s): 400, nothing forwarded', async (_how, body, parsed) => {
      expect(JSON.parse(body)).toEqual(parsed);
      const before = upstream.requests.length;
      const response = await exchange('POST', '/bearer/v1/things', [...auth, ['Content-Type', 'application/json']], body);
      expect(response.status, response.body).toBe(400);
      expect(response.body).toContain('method override');
      expect(upstream.requests.length).toBe(before);
    });

    // The parity of a run of backslashes must hold across a chunk boundary: each body above split at
    // every position, the parts read one at a time (sendInParts).
    const everySplit = (cases: readonly EscapeCase[]): Array<[string, number, string, Record<string, string>]> =>
      cases.flatMap(([how, body, parsed]) => Array.from({ length: body.length - 1 }, (_, i): [string, number, string, Record<string, string>] => [how, i + 1, body, parsed]));

    it.each(everySplit(literalEscapes))('forwards JSON with an escaped backslash then u00XX (%s) split after its byte %i, byte for byte', async (_how, split, body, value) => {
      expectNoEscape(body, value);
      const before = upstream.requests.length;
      const outcome = await sendInParts([body.slice(0, split), body.slice(split)]);
      expect(outcome.status, outcome.body).toBe(200);
      // The split was real: the first part reached the upstream before the second was written.
      expect(outcome.written).toBe(2);
      expect(upstream.requests.length).toBe(before + 1);
      const seen = upstream.requests[before] as RecordedRequest;
      expect(seen.method).toBe('POST');
      expect(seen.body.toString('utf8')).toBe(body);
      expect(outcome.requestId).toBeDefined();
      expect(await auditRecordOf(proxy, outcome.requestId as string)).toMatchObject({ decision: 'allow', method: 'POST', status: 200 });
    });

    it.each(everySplit(realEscapes))('refuses a real escape after escaped backslashes (%s) split after its byte %i', async (_how, split, body, parsed) => {
      expect(JSON.parse(body)).toEqual(parsed);
      const first = body.slice(0, split);
      // The real escape is the body's last "\u00"; a first part holding all of it is refused on its own.
      const firstHoldsTheEscape = first.length >= body.lastIndexOf('\\u00') + 6;
      const before = upstream.requests.length;
      const outcome = await sendInParts([first, body.slice(split)]);
      expect(outcome.status, outcome.body).toBe(400);
      expect(outcome.body).toContain('method override');
      if (!firstHoldsTheEscape) expect(outcome.written).toBe(2);
      expect(upstream.requests.length).toBe(before);
    });

    // A run of backslashes longer than the bytes the watch carries across a boundary, in three parts:
    // the first ends inside the run, the second lies inside it (short, or longer than the carry), and
    // the third starts at or inside the escape-like "\u00XX" that follows, so the parity must be carried
    // through the middle part to the third (its own bytes and the seam). Twenty backslashes before
    // "u005f" are ten escaped ones (forwarded); twenty before a "\u0065" leave that escape real (refused).
    const longRun: Array<[string, string, Record<string, string>, number]> = [
      ['forwards', JSON.stringify({ p: `${'\\'.repeat(10)}u005fmethod` }), { p: `${'\\'.repeat(10)}u005fmethod` }, 200],
      ['refuses', `{"p":"${'\\'.repeat(20)}\\u0065"}`, { p: `${'\\'.repeat(10)}e` }, 400],
    ];
    it.each(
      longRun.flatMap(([what, body, parsed, status]) => {
        const escape = body.lastIndexOf('\\u00');
        const runStart = body.indexOf('\\');
        return [escape, escape + 1, escape + 4].flatMap((second) =>
          Array.from({ length: Math.min(second - 1, escape) - runStart }, (_, i): [string, number, number, string, Record<string, string>, number] => [what, runStart + 1 + i, second, body, parsed, status]),
        );
      }),
    )('%s JSON whose run of backslashes before u00XX is split after its bytes %i and %i (three parts)', async (_what, first, second, body, parsed, status) => {
      expect(JSON.parse(body)).toEqual(parsed);
      const before = upstream.requests.length;
      const outcome = await sendInParts([body.slice(0, first), body.slice(first, second), body.slice(second)]);
      expect(outcome.status, outcome.body).toBe(status);
      // Every part was read on its own: the verdict came from reading the third.
      expect(outcome.written).toBe(3);
      if (status === 400) {
        expect(outcome.body).toContain('method override');
        expect(upstream.requests.length).toBe(before);
      } else {
        expect(upstream.requests.length).toBe(before + 1);
        expect((upstream.requests[before] as RecordedRequest).body.toString('utf8')).toBe(body);
      }
    });

    it('forwards JSON with the escapes encoders do write (non-ASCII, HTML-safe, control characters)', async () => {
      const body = '{"name":"caf\\u00e9","html":"\\u003cb\\u003e \\u0026 \\u0027","tab":"\\u0009","method":"\\u00e9"}';
      const { seen } = await send('POST', '/bearer/v1/things', [...auth, ['Content-Type', 'application/json']], body);
      expect(seen.method).toBe('POST');
      expect(seen.body.toString('utf8')).toBe(body);
    });

    it('forwards a JSON body whose keys only resemble an override', async () => {
      const body = '{"method":"DELETE","_methods":1,"x_method":"PUT"}';
      const { seen } = await send('POST', '/bearer/v1/things', [...auth, ['Content-Type', 'application/json']], body);
      expect(seen.method).toBe('POST');
      expect(seen.body.toString('utf8')).toBe(body);
    });

    it('strips override keys and keeps the credential on a query-injected service', async () => {
      const { seen } = await send('POST', `/query/v1/things?_method=DELETE&key=${EVIL.q1}&a=1`, auth, '{}');
      expect(seen.method).toBe('POST');
      expect(seen.target).toBe(`/v1/things?a=1&key=${encodeURIComponent(keys.query)}`);
    });
  });

  describe("the agent's own key without an Airlock token is refused, never forwarded", () => {
    it.each<{ name: string; target: string; headers: HeaderLines }>([
      { name: 'its own key as Bearer', target: '/bearer/v1/models', headers: [['Authorization', `Bearer ${EVIL.alone}`]] },
      { name: 'its own key in x-api-key', target: '/header/v1/models', headers: [['x-api-key', EVIL.alone]] },
      { name: 'its own key in X-Custom-Auth', target: '/custom/v1/models', headers: [['X-Custom-Auth', `Token ${EVIL.alone}`]] },
      { name: 'its own key in the query', target: `/query/v1/models?key=${EVIL.alone}`, headers: [] },
      { name: 'its own key as Basic', target: '/basic/v1/models', headers: [['Authorization', basic('api', EVIL.alone)]] },
      { name: 'its own key in Proxy-Authorization', target: '/bearer/v1/models', headers: [['Proxy-Authorization', `Bearer ${EVIL.alone}`]] },
      { name: 'the token plus a second, different Airlock token', target: '/bearer/v1/models', headers: [['Authorization', `Bearer ${agent.token}`], ['x-api-key', generateAgentToken().token]] },
    ])('$name: 401 problem, audited, nothing forwarded', async ({ target, headers }) => {
      const before = upstream.requests.length;
      const response = await exchange('GET', target, headers, '');
      const problem = expectProblem({ status: response.status, contentType: response.headers['content-type']?.[0], body: response.body }, 401, 'unauthenticated');
      expect(response.headers['x-airlock-request-id']).toEqual([problem.request_id]);
      expect(upstream.requests.length).toBe(before);
      const record = await onlyAuditRecordOf(response);
      expect(record).toMatchObject({ agent: null, decision: 'deny', code: 'unauthenticated', status: 401, upstream_status: null, credential: null });
    });
  });

  it('leaves no trace of any credential (injected or the agent\'s own) in responses, logs or audit', async () => {
    // One audit record per request sent, allowed or refused.
    await proxy.waitForAudit(responses.length);
    expect(proxy.auditRecords()).toHaveLength(responses.length);
    assertNoLeak([...Object.values(keys), ...AGENT_KEYS], [
      { name: 'responses', text: responses.join('\n') },
      { name: 'log', text: proxy.logLines.join('') },
      { name: 'audit', text: proxy.auditText() },
    ]);
    expect(proxy.auditText()).not.toContain(agent.token);
    expect(proxy.logLines.join('')).not.toContain(agent.token);
  });

  it('the process stayed healthy (no unhandled rejection or uncaught exception, event-loop p99 under 250 ms)', () => {
    const { p99Ms, maxMs } = watch.assertHealthy();
    console.info(`[credential-override] event loop: p99 ${p99Ms.toFixed(1)} ms, max ${maxMs.toFixed(1)} ms`);
  });
});
