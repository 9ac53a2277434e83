/**
 * An agent trying to override or smuggle the credential (invariant 5): its own copies of the header or
 * query key Airlock injects - duplicated, re-cased, percent-encoded, behind ";" - and Connection
 * tricks that would strip Airlock's copy. Whatever the agent sends, the upstream sees exactly one
 * credential, the real (canary) one, and never the agent token. Method-override headers and query keys,
 * which would make the upstream run a method other than the one authorized, are stripped too.
 *
 * Requests are written raw: duplicate and re-cased header lines must reach Airlock as sent.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { generateAgentToken } from '../../src/identity/agent-token.js';
import { assertNoLeak } from '../helpers/assert-no-leak.js';
import { canary } from '../helpers/canary.js';
import { rawRequest, type RawResponse } from '../helpers/raw-http.js';
import { startProxy, type ProxyFixture } from '../helpers/start-proxy.js';
import { startUpstream, type RecordedRequest, type Upstream } from '../helpers/start-upstream.js';

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

describe('an agent cannot override or smuggle the injected credential', () => {
  const keys = {
    bearer: canary('ovr-bearer'),
    header: canary('ovr-header'),
    custom: canary('ovr-custom'),
    query: canary('ovr-query'),
    basic: canary('ovr-basic'),
  };
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
  });

  afterAll(async () => {
    await proxy.close();
    await upstream.close();
  });

  /** Sends a raw request and returns what the upstream recorded for it (exactly one new request). */
  async function send(method: string, target: string, headers: HeaderLines, body = ''): Promise<{ response: RawResponse; seen: RecordedRequest }> {
    const lines = [`${method} ${target} HTTP/1.1`, 'Host: 127.0.0.1', 'Connection: close'];
    for (const [name, value] of headers) lines.push(`${name}: ${value}`);
    if (body !== '') lines.push(`Content-Length: ${Buffer.byteLength(body)}`);
    const before = upstream.requests.length;
    const response = await rawRequest(proxy.url, `${lines.join('\r\n')}\r\n\r\n${body}`);
    responses.push(response.raw);
    expect(response.status, response.body).toBe(200);
    expect(upstream.requests.length).toBe(before + 1);
    const seen = upstream.requests[before] as RecordedRequest;
    // The agent token is nowhere in what the upstream received.
    expect(seen.rawHeaders.join('\n')).not.toContain(agent.token);
    expect(seen.target).not.toContain(agent.token);
    expect(seen.target).not.toContain('alk_');
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
      { name: 'token and a second Authorization with its own key', headers: [['Authorization', `Bearer ${agent.token}`], ['Authorization', 'Bearer sk-evil-1']] },
      { name: 'its own key first, token second', headers: [['Authorization', 'Bearer sk-evil-1'], ['x-api-key', agent.token]] },
      { name: 'AUTHORIZATION in upper case', headers: [['x-api-key', agent.token], ['AUTHORIZATION', 'Bearer sk-evil-2']] },
      { name: 'mixed-case aUtHoRiZaTiOn', headers: [['x-api-key', agent.token], ['aUtHoRiZaTiOn', 'Bearer sk-evil-3']] },
      { name: 'three Authorization lines', headers: [['authorization', 'Bearer sk-evil-1'], ['Authorization', `Bearer ${agent.token}`], ['AUTHORIZATION', 'token sk-evil-2']] },
      { name: 'Connection: authorization (strip the injected one)', headers: [['Authorization', `Bearer ${agent.token}`], ['Connection', 'authorization']] },
      { name: 'Connection: authorization with its own key', headers: [['x-api-key', agent.token], ['Authorization', 'Bearer sk-evil-4'], ['Connection', 'keep-alive, Authorization']] },
      { name: 'its own key as Basic', headers: [['x-api-key', agent.token], ['Authorization', basic('evil-user', 'sk-evil-5')]] },
      { name: 'its own key in Proxy-Authorization', headers: [['Authorization', `Bearer ${agent.token}`], ['Proxy-Authorization', 'Bearer sk-evil-6']] },
    ])('$name', async ({ headers }) => {
      const { seen } = await send('GET', '/bearer/v1/models', headers);
      expect(seen.header('authorization')).toEqual([`Bearer ${keys.bearer}`]);
      expect(seen.header('proxy-authorization')).toEqual([]);
      expect(evilHeaders(seen)).toEqual([]);
    });
  });

  describe('header template injection (x-api-key)', () => {
    it.each<{ name: string; headers: HeaderLines }>([
      { name: 'its own x-api-key', headers: [['Authorization', `Bearer ${agent.token}`], ['x-api-key', 'sk-evil-1']] },
      { name: 'X-API-KEY in upper case', headers: [['Authorization', `Bearer ${agent.token}`], ['X-API-KEY', 'sk-evil-2']] },
      { name: 'two x-api-key lines', headers: [['Authorization', `Bearer ${agent.token}`], ['x-api-key', 'sk-evil-1'], ['X-Api-Key', 'sk-evil-2']] },
      { name: 'x-api-key carrying the token plus its own key', headers: [['x-api-key', agent.token], ['x-api-key', 'sk-evil-3']] },
      { name: 'Connection: x-api-key', headers: [['x-api-key', agent.token], ['Connection', 'x-api-key']] },
      { name: 'Connection: x-api-key with its own key', headers: [['Authorization', `Bearer ${agent.token}`], ['x-api-key', 'sk-evil-4'], ['Connection', 'X-Api-Key']] },
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
      { name: 'its own x-custom-auth', headers: [['Authorization', `Bearer ${agent.token}`], ['X-Custom-Auth', 'Token sk-evil-1']] },
      { name: 'repeated, re-cased copies', headers: [['Authorization', `Bearer ${agent.token}`], ['x-custom-auth', 'Token sk-evil-1'], ['X-CUSTOM-AUTH', 'Token sk-evil-2']] },
      { name: 'Connection: x-custom-auth', headers: [['Authorization', `Bearer ${agent.token}`], ['Connection', 'x-custom-auth']] },
      { name: 'Connection: x-custom-auth with its own copy', headers: [['Authorization', `Bearer ${agent.token}`], ['x-custom-auth', 'Token sk-evil-3'], ['Connection', 'X-Custom-Auth']] },
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
      const { seen } = await send('GET', `/query/v1/models${query}`, auth);
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
      const { seen } = await send('GET', `/query/v1/models${query}`, auth);
      expect(seen.target).not.toMatch(/evil/i);
      expect(seen.target).toBe(`/v1/models?key=${encodeURIComponent(keys.query)}`);
    });
  });

  describe('basic injection', () => {
    it.each<{ name: string; headers: HeaderLines }>([
      { name: 'the token as Basic user, as an SDK sends it', headers: [['Authorization', basic(agent.token, '')]] },
      { name: 'its own Basic credentials next to the token', headers: [['x-airlock-token', agent.token], ['Authorization', basic('api', 'sk-evil-1')]] },
      { name: 'its own Basic credentials, upper-case header', headers: [['x-airlock-token', agent.token], ['AUTHORIZATION', basic('evil', 'sk-evil-2')]] },
      { name: 'the token in Basic plus a second Basic line', headers: [['Authorization', basic('', agent.token)], ['Authorization', basic('evil', 'sk-evil-3')]] },
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

    it('strips override keys and keeps the credential on a query-injected service', async () => {
      const { seen } = await send('POST', '/query/v1/things?_method=DELETE&key=evil&a=1', auth, '{}');
      expect(seen.method).toBe('POST');
      expect(seen.target).toBe(`/v1/things?a=1&key=${encodeURIComponent(keys.query)}`);
    });
  });

  it('leaves no trace of any credential in responses, logs or audit', async () => {
    await proxy.waitForAudit(upstream.requests.length);
    assertNoLeak(Object.values(keys), [
      { name: 'responses', text: responses.join('\n') },
      { name: 'log', text: proxy.logLines.join('') },
      { name: 'audit', text: proxy.auditText() },
    ]);
    expect(proxy.auditText()).not.toContain(agent.token);
    expect(proxy.logLines.join('')).not.toContain(agent.token);
  });
});
