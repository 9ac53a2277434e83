/**
 * OutboundRequest: the request Airlock sends upstream. removeQueryKey strips every copy of a parameter an
 * agent could use to smuggle its own credential past a query injector (any case, percent-encoded, "+" for
 * space, "&" or ";" separated) and leaves every other byte of the query as the agent sent it.
 */
import { describe, expect, it } from 'vitest';
import { AirlockError } from '../../src/errors.js';
import { buildUpstreamRequest } from '../../src/pipeline/build-upstream-request.js';
import { formKeyNames, OutboundRequest, queryKeyNames, queryKeyNameSet } from '../../src/upstream/outbound-request.js';
import { parseUpstream, type UpstreamTarget } from '../../src/upstream/upstream-target.js';

function strip(query: string | null, key: string): string | null {
  const request = new OutboundRequest('GET', '/v1/x', query);
  request.removeQueryKey(key);
  return request.query;
}

describe('removeQueryKey', () => {
  it.each([
    // plain, at each position
    ['a=1&key=s&b=2', 'key', 'a=1&b=2'],
    ['key=s&a=1', 'key', 'a=1'],
    ['a=1&key=s', 'key', 'a=1'],
    ['key=s', 'key', null],
    ['key=1&key=2&KEY=3', 'key', null],
    // ";" is a separator too (query parameter pollution)
    ['a=1;key=s;b=2', 'key', 'a=1;b=2'],
    ['key=s;a=1', 'key', 'a=1'],
    ['a=1;b=2&key=s', 'key', 'a=1;b=2'],
    // case variants of the key
    ['a=1&KEY=s&Key=t&kEy=u', 'key', 'a=1'],
    ['a=1&api_key=s', 'API_KEY', 'a=1'],
    // percent-encoded key variants, upper- and lower-case hex
    ['a=1&%6Bey=s', 'key', 'a=1'],
    ['a=1&%6bey=s', 'key', 'a=1'],
    ['a=1&%4B%45%59=s', 'key', 'a=1'],
    ['a=1&k%65y=s&b=2', 'key', 'a=1&b=2'],
    ['a=1&api%5Fkey=s', 'api_key', 'a=1'],
    // "+" and %20 are a space in a form-encoded key
    ['a=1&api+key=s', 'api key', 'a=1'],
    ['a=1&api%20key=s', 'api key', 'a=1'],
    // a key with no "=" or an empty value
    ['a=1&key', 'key', 'a=1'],
    ['a=1&key=', 'key', 'a=1'],
    // similar keys stay
    ['keyx=1&xkey=2&a=key&ke=3&key%3D=4', 'key', 'keyx=1&xkey=2&a=key&ke=3&key%3D=4'],
    ['a=1&api+key=s', 'api+key', 'a=1&api+key=s'],
    ['api%2Bkey=s', 'api+key', null],
    // a bad escape elsewhere in the key does not hide it, nor break the rest
    ['%ZZ=1&k%65y=s&b=%', 'key', '%ZZ=1&b=%'],
    // no query, an empty query
    [null, 'key', null],
    ['', 'key', ''],
  ] as Array<[string | null, string, string | null]>)('%j without %s -> %j', (query, key, expected) => {
    expect(strip(query, key)).toBe(expected);
  });

  it('keeps every other parameter byte for byte (escapes, "+", empty values, odd bytes)', () => {
    const others = ['a=%2f%2F', 'b=c+d', 'c=%ZZ', 'd=', 'e', 'f=%E2%9C%93', 'g=x=y', "h=!$'()*,:@/?"];
    const query = [others[0], 'key=secret', ...others.slice(1, 4), 'KEY=again', ...others.slice(4)].join('&');
    expect(strip(query, 'key')).toBe(others.join('&'));
  });

  it('a parameter whose value merely mentions the key stays', () => {
    expect(strip('q=key%3Dsecret&key2=x', 'key')).toBe('q=key%3Dsecret&key2=x');
  });

  it('target() joins path and query and leaves out "?" when nothing is left', () => {
    const request = new OutboundRequest('GET', '/base/v1/x', 'key=s');
    expect(request.target()).toBe('/base/v1/x?key=s');
    request.removeQueryKey('key');
    expect(request.target()).toBe('/base/v1/x');
    expect(new OutboundRequest('GET', '/v1/x', '').target()).toBe('/v1/x?');
  });
});

describe('removeQueryKeys: several keys in one pass', () => {
  const keys = ['_method', 'api_key', 'session_key', 'access_token'];
  const queries = [
    'a=1&_method=DELETE&b=2;API_KEY=x&session.key=s&c=3',
    '_method=x',
    '_method=x&api_key=y',
    'a=1&b=2',
    'a=1;b=2&&c',
    '&_method=x&',
    'x=1&access_token=t;y=2&api_key[]=k',
    '',
  ];
  it.each(queries)('%j: the same as removing each key in turn', (query) => {
    const one = new OutboundRequest('GET', '/p', query);
    for (const key of keys) one.removeQueryKey(key);
    const all = new OutboundRequest('GET', '/p', query);
    all.removeQueryKeys(queryKeyNameSet(keys));
    expect(all.target()).toBe(one.target());
  });

  it('leaves a query with none of the keys exactly as sent', () => {
    const request = new OutboundRequest('GET', '/p', 'b=2;a=1&&c=%20');
    request.removeQueryKeys(queryKeyNameSet(keys));
    expect(request.target()).toBe('/p?b=2;a=1&&c=%20');
  });
});

describe('appendQueryParam', () => {
  it('appends an encoded pair after what is there', () => {
    const request = new OutboundRequest('GET', '/v1/x', 'a=1');
    request.appendQueryParam('api key', 'v&l=u/e');
    expect(request.query).toBe('a=1&api%20key=v%26l%3Du%2Fe');
  });

  it('starts the query when there is none', () => {
    const request = new OutboundRequest('GET', '/v1/x', null);
    request.appendQueryParam('key', 'v');
    expect(request.target()).toBe('/v1/x?key=v');
  });
});

describe('headers', () => {
  function requestWith(...pairs: Array<[string, string]>): OutboundRequest {
    const request = new OutboundRequest('POST', '/v1/x', null);
    for (const [name, value] of pairs) request.addHeader(name, value);
    return request;
  }

  it('addHeader keeps order and repeats', () => {
    expect(requestWith(['a', '1'], ['b', '2'], ['a', '3']).headers).toEqual(['a', '1', 'b', '2', 'a', '3']);
  });

  it('removeHeader removes every copy and keeps the order of the rest', () => {
    const request = requestWith(['authorization', 'x'], ['accept', 'json'], ['authorization', 'y'], ['x-trace', 't'], ['authorization', 'z']);
    request.removeHeader('authorization');
    expect(request.headers).toEqual(['accept', 'json', 'x-trace', 't']);
    expect(request.hasHeader('authorization')).toBe(false);
    expect(request.hasHeader('accept')).toBe(true);
  });

  it('removeHeader of an absent header changes nothing', () => {
    const request = requestWith(['a', '1']);
    request.removeHeader('b');
    expect(request.headers).toEqual(['a', '1']);
  });

  it('removeHeader matches the lower-case name it is given exactly (callers pass lower case)', () => {
    const request = requestWith(['authorization', 'x']);
    request.removeHeader('Authorization');
    expect(request.headers).toEqual(['authorization', 'x']);
  });

  it('setHeader replaces every copy with one value, set last', () => {
    const request = requestWith(['authorization', 'agent-1'], ['accept', 'json'], ['authorization', 'agent-2'], ['x-b', '2']);
    request.setHeader('authorization', 'Bearer real');
    expect(request.headers).toEqual(['accept', 'json', 'x-b', '2', 'authorization', 'Bearer real']);
  });

  it('setHeader adds a header that was not there', () => {
    const request = requestWith(['accept', 'json']);
    request.setHeader('x-api-key', 'k');
    expect(request.headers).toEqual(['accept', 'json', 'x-api-key', 'k']);
  });

  // Found by review: CGI-style servers (Rack/Puma, PHP-CGI) read "_" and "-" as one (CVE-2024-45614), so
  // an agent's x_custom_key next to the injected x-custom-key overwrote or joined it.
  it('setHeader replaces the spellings with "_" for "-" too', () => {
    const request = requestWith(['x_custom_key', 'AGENT'], ['X_Custom-Key'.toLowerCase(), 'AGENT2'], ['x_other', 'kept']);
    request.setHeader('x-custom-key', 'Token real');
    expect(request.headers).toEqual(['x_other', 'kept', 'x-custom-key', 'Token real']);
  });

  it('a header name that equals another header value is not confused with it', () => {
    const request = requestWith(['x-a', 'authorization'], ['authorization', 'x-a']);
    request.removeHeader('authorization');
    expect(request.headers).toEqual(['x-a', 'authorization']);
  });
});

function upstreamOf(text: string): UpstreamTarget {
  const parsed = parseUpstream(text);
  if (!parsed.ok) throw new Error(parsed.problem);
  return parsed.target;
}

describe('buildUpstreamRequest: agent headers spelled with "_"', () => {
  it('drops a token carrier, a hop-by-hop header or an X-Forwarded-* spelled with "_", and keeps other names', () => {
    const outbound = buildUpstreamRequest({
      method: 'GET',
      rawHeaders: ['x_forwarded_for', '1.2.3.4', 'X_API_KEY', 'alk_agent', 'proxy_authorization', 'Basic x', 'transfer_encoding', 'chunked', 'x_request_id', 'r1', 'accept', 'json'],
      upstream: upstreamOf('http://127.0.0.1:9000'),
      path: '/v1/x',
      query: null,
      clientAddress: '10.0.0.1',
    });
    expect(outbound.headers).toEqual(['x_request_id', 'r1', 'accept', 'json', 'x-forwarded-for', '10.0.0.1']);
  });
});

// Found by review (PHP 8.2 with Symfony, Rack 2.2 and 3.2, qs): spellings each parser reads as `_method`,
// or as a stripped key, that the single decoded name did not match. Names are lower case; PHP's reading
// comes second when it differs.
describe('formKeyNames: the names parsers read a key as', () => {
  it.each<[string, string[]]>([
    ['_method=DELETE', ['_method']],
    ['_METHOD=DELETE', ['_method']],
    ['.method=DELETE', ['.method', '_method']],
    ['%2Emethod=DELETE', ['.method', '_method']],
    ['+_method=DELETE', ['_method']],
    ['%20_method=DELETE', ['_method']],
    ['%09_method=DELETE', ['_method']],
    ['_method%00=DELETE', ['_method']],
    ['_method%00anything=DELETE', ['_method']],
    ['[_method]=DELETE', ['_method']],
    ['%5B_method%5D=DELETE', ['_method']],
    ['[[_method]]=DELETE', ['_method']],
    ['_method]=DELETE', ['_method', '_method]']],
    ['_method[]=DELETE', ['_method']],
    ['_method[0]=DELETE', ['_method']],
    ['session.key=s', ['session.key', 'session_key']],
    ['session[key=s', ['session', 'session_key']],
    ['session[key]=s', ['session']],
    ['a[b.c=1', ['a', 'a_b_c']],
    // distinct names stay distinct
    ['payment_method=pm_x', ['payment_method']],
    ['payment.method=pm_x', ['payment.method', 'payment_method']],
    ['method=flickr.photos.search', ['method']],
    ['methods=1', ['methods']],
    ['_methods=1', ['_methods']],
    ['.methods=1', ['.methods', '_methods']],
    ['method.=1', ['method.', 'method_']],
    ['%00_method=1', []],
    ['[]=1', []],
    ['=1', []],
  ])('%j -> %j', (part, names) => {
    expect(formKeyNames(part)).toEqual(names);
  });
});

describe('removeQueryKey: every spelling a parser reads as the key', () => {
  it.each([
    // _method as PHP (Symfony, Laravel) reads it
    ['.method=DELETE&a=1', '_method', 'a=1'],
    ['%2Emethod=DELETE&a=1', '_method', 'a=1'],
    ['%2emethod=DELETE', '_method', null],
    ['+_method=DELETE&a=1', '_method', 'a=1'],
    ['%20_method=DELETE&a=1', '_method', 'a=1'],
    ['a=1&_method%00=DELETE', '_method', 'a=1'],
    ['a=1;_method%00x=DELETE', '_method', 'a=1'],
    // as Rack 2.2 and qs read it, and as Slim reads it (any case)
    ['[_method]=DELETE&a=1', '_method', 'a=1'],
    ['%5B_method%5D=DELETE&a=1', '_method', 'a=1'],
    ['_method]=DELETE&a=1', '_method', 'a=1'],
    ['_METHOD=DELETE&a=1', '_method', 'a=1'],
    // a stripped key: PHP reads "session.key", "session key" and "session[key" as session_key
    ['session.key=s&a=1', 'session_key', 'a=1'],
    ['session+key=s&a=1', 'session_key', 'a=1'],
    ['session[key=s&a=1', 'session_key', 'a=1'],
    ['session%5Bkey=s&a=1', 'session_key', 'a=1'],
    ['session_key=s&a=1', 'session.key', 'a=1'],
    ['a=1&%20session_key=s', 'session_key', 'a=1'],
    // names that are not the key stay, byte for byte
    ['payment_method=pm_x&method=flickr.photos.search&methods=1&_methods=2&x_method=3&payment.method=4&method.=5&a=_method', '_method', 'payment_method=pm_x&method=flickr.photos.search&methods=1&_methods=2&x_method=3&payment.method=4&method.=5&a=_method'],
    ['sessionkey=s&session-key=t&session=u&key=v&session[key]=w', 'session_key', 'sessionkey=s&session-key=t&session=u&key=v&session[key]=w'],
  ] as Array<[string, string, string | null]>)('%j without %s -> %j', (query, key, expected) => {
    expect(strip(query, key)).toBe(expected);
  });

  it('queryKeyNames reads a configured key as a request key is read', () => {
    expect(queryKeyNames('session.key')).toEqual(['session.key', 'session_key']);
    expect(queryKeyNames('_method')).toEqual(['_method']);
    expect(queryKeyNames('API_KEY')).toEqual(['api_key']);
  });
});

describe('buildUpstreamRequest: Connection naming a field meant for every recipient', () => {
  function build(rawHeaders: string[]): OutboundRequest {
    return buildUpstreamRequest({ method: 'POST', rawHeaders, upstream: upstreamOf('http://127.0.0.1:9000'), path: '/v1/x', query: null, clientAddress: undefined });
  }

  // Found by review: "Connection: content-type" removed the Content-Type the body was checked by, and
  // Rack read the JSON-typed body "_method=DELETE" as a form.
  it.each(['content-type', 'Content-Type', 'keep-alive, content-type', 'content-length', 'Content-Encoding', 'content-md5', 'host', 'content_type'])('refuses Connection: %s (400 invalid_request)', (listed) => {
    let thrown: unknown = null;
    try {
      build(['Content-Type', 'application/json', 'Connection', listed]);
    } catch (error) {
      thrown = error;
    }
    expect(thrown).toBeInstanceOf(AirlockError);
    expect((thrown as AirlockError).code).toBe('invalid_request');
    expect((thrown as AirlockError).detail).toContain('Connection');
    expect((thrown as AirlockError).detail).toContain(listed.split(',').pop()?.trim().toLowerCase().replaceAll('_', '-'));
  });

  it('does not repeat an unknown Content-* name the agent wrote (it could be anything)', () => {
    expect(() => build(['Connection', 'content-alk_secretish'])).toThrow(/lists a Content-\* field,/);
  });

  it.each(['keep-alive', 'close', 'authorization', 'x-api-key', 'transfer-encoding', 'te', 'upgrade', 'x-foo'])('still accepts Connection: %s, and drops what it names', (listed) => {
    const outbound = build(['Content-Type', 'application/json', 'Connection', listed, 'x-foo', '1']);
    expect(outbound.headers.slice(0, 2)).toEqual(['content-type', 'application/json']);
    expect(outbound.hasHeader('x-foo')).toBe(listed !== 'x-foo');
  });

  it('drops Content_Type and Content_Length, which CGI-style servers read as CONTENT_TYPE and CONTENT_LENGTH', () => {
    const outbound = build(['Content_Type', 'application/x-www-form-urlencoded', 'Content-Type', 'application/json', 'content_length', '5', 'x_request_id', 'r1']);
    expect(outbound.headers).toEqual(['content-type', 'application/json', 'x_request_id', 'r1']);
  });
});
