/**
 * Hostile request targets (invariant 3): every target that upstreams or frameworks could read as a
 * different path than the one Airlock authorized is refused with 400 invalid_request as RFC 9457
 * problem+json, and the recording upstream behind an authenticated, fully granted agent receives
 * nothing. Targets node's own parser refuses are answered by Airlock's raw-socket refusal handler, which
 * sends the same problem+json shape. What is accepted is normalized to one spelling, and that spelling is
 * what the upstream receives, byte for byte; the query goes through exactly as sent.
 *
 * Every target is sent with rawRequest: fetch/undici would resolve dot segments, re-encode or refuse
 * most of these before they left the test (raw NUL bytes included, not only "%00").
 *
 * Case and trailing-slash variants of route paths get their own block below: they are distinct paths,
 * matched exactly, so each is either the route it spells or refused. Every answer has exactly one audit
 * record under its x-airlock-request-id, and hostileWatch checks the whole file (no unhandled rejection
 * or uncaught exception, event-loop p99 under 250 ms).
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { generateAgentToken } from '../../src/identity/agent-token.js';
import type { AuditRecord } from '../../src/observability/audit-record.js';
import { assertNoLeak } from '../helpers/assert-no-leak.js';
import { canary } from '../helpers/canary.js';
import { rawGet, rawRequest, type RawResponse } from '../helpers/raw-http.js';
import { startProxy, type ProxyFixture } from '../helpers/start-proxy.js';
import { startUpstream, type Upstream } from '../helpers/start-upstream.js';
import { auditRecordOf, expectProblem, hostileWatch, PROBLEM_JSON } from './support/hostile-watch.js';

/** Over every case of the file: no unhandled rejection or uncaught exception, event-loop p99 under 250 ms. */
const watch = hostileWatch();

/**
 * Each block registers how its proxy and upstream start and stop. All of them are started before the
 * watch starts and stopped after its final check, so the watch measures every case of the file and no
 * proxy start-up: starting an Airlock runs synchronous set-up on the event loop, which is no hostile
 * case but, three times in a file this short, would weigh on the p99.
 */
const setUps: Array<() => Promise<void>> = [];
const tearDowns: Array<() => Promise<void>> = [];
function fixture(setUp: () => Promise<void>, tearDown: () => Promise<void>): void {
  setUps.push(setUp);
  tearDowns.push(tearDown);
}

beforeAll(async () => {
  for (const setUp of setUps) await setUp();
  watch.start();
});

afterAll(async () => {
  for (const tearDown of tearDowns) await tearDown();
});

function expectProblemContentType(response: RawResponse): void {
  const types = response.headers['content-type'] ?? [];
  expect(types).toHaveLength(1);
  expect(types[0]).toMatch(PROBLEM_JSON);
}

/** The UTF-8 bytes of `text` as a latin1 string, so rawRequest puts those exact bytes on the wire. */
function utf8Bytes(text: string): string {
  return Buffer.from(text, 'utf8').toString('latin1');
}

/** A proxy whose services (one plain, one with an upstream base path) forward every /v1/* path to one recording upstream. */
async function startGrantedProxy(upstream: Upstream, agentHash: string, realKey: string): Promise<ProxyFixture> {
  return startProxy(
    {
      // The agent's refused paths are the point here, not a probe to quarantine: denial_burst counts a path
      // servers read differently (AirlockError.probing), and 40-odd of them would suspend it mid-table.
      anomalies: { denial_burst: { count: 100_000 } },
      services: {
        openai: {
          upstream: upstream.url,
          credential: { secret: 'env:OPENAI_API_KEY', inject: 'bearer' },
          routes: [
            { method: ['GET', 'HEAD', 'POST', 'PUT', 'PATCH', 'DELETE', 'OPTIONS'], path: '/v1/*', scope: 'api' },
            { method: ['GET', 'OPTIONS'], path: '/', scope: 'api' },
          ],
        },
        based: {
          upstream: `${upstream.url}/api/base`,
          credential: { secret: 'env:OPENAI_API_KEY', inject: 'bearer' },
          routes: [{ method: ['GET', 'POST'], path: '/v1/*', scope: 'api' }],
        },
      },
      agents: {
        tester: {
          tokens: [agentHash],
          credentials: [
            { service: 'openai', max_scope: ['*'] },
            { service: 'based', max_scope: ['*'] },
          ],
        },
      },
    },
    { env: { OPENAI_API_KEY: realKey } },
  );
}

interface HostileCase {
  readonly label: string;
  /** The request target as it goes on the wire (latin1: one char per byte). */
  readonly target: string;
  readonly method?: string;
}

const HOSTILE: readonly HostileCase[] = [
  // Dot segments, raw and encoded, in every position.
  { label: 'raw ".." segment', target: '/openai/v1/../x' },
  { label: 'raw "." segment', target: '/openai/v1/./x' },
  { label: 'encoded "%2e%2e"', target: '/openai/v1/%2e%2e/x' },
  { label: 'encoded "%2E%2E" (upper case)', target: '/openai/v1/%2E%2E/x' },
  { label: 'mixed ".%2e"', target: '/openai/v1/.%2e/x' },
  { label: 'mixed "%2e."', target: '/openai/v1/%2e./x' },
  { label: 'encoded "%2e" single dot', target: '/openai/v1/%2e/x' },
  { label: 'trailing "/.."', target: '/openai/v1/x/..' },
  { label: 'trailing "/."', target: '/openai/v1/x/.' },
  { label: 'trailing encoded "/%2e%2e"', target: '/openai/v1/x/%2e%2e' },
  { label: '".." climbing out of the prefix', target: '/openai/../admin' },
  { label: '".." right after the prefix', target: '/openai/..' },
  { label: '".." with a query behind it', target: '/openai/v1/x/..?a=1' },
  // Empty segments.
  { label: '"//" inside the path', target: '/openai/v1//x' },
  { label: '"//" at the start (protocol-relative)', target: '//openai/v1/x' },
  { label: 'trailing "//"', target: '/openai/v1/x//' },
  // Encoded separators.
  { label: 'encoded slash opening a segment', target: '/openai/v1/%2fetc%2fpasswd' },
  { label: 'encoded slash closing a segment', target: '/openai/v1/a%2F' },
  { label: 'two encoded slashes together', target: '/openai/v1/a%2F%2Fb' },
  { label: '"..%2f" traversal', target: '/openai/v1/..%2f..%2fadmin' },
  { label: '"%2e%2e%2f" traversal, all encoded', target: '/openai/v1/x%2f%2e%2e%2f%2e%2e%2fadmin' },
  { label: 'a single dot between encoded slashes', target: '/openai/v1/a%2F.%2Fb' },
  { label: 'encoded backslash %5c', target: '/openai/v1/a%5cb' },
  { label: 'encoded backslash %5C', target: '/openai/v1/a%5Cb' },
  { label: 'raw backslash', target: '/openai/v1/a\\b' },
  { label: 'raw backslash traversal "..\\"', target: '/openai/v1/..\\admin' },
  // Matrix parameters.
  { label: 'Tomcat "..;/"', target: '/openai/v1/..;/x' },
  { label: '";" parameter in a segment', target: '/openai/v1/x;jsessionid=1' },
  { label: '";" alone as a segment', target: '/openai/v1/;/x' },
  { label: 'encoded ";" in "..%3B/"', target: '/openai/v1/..%3B/admin' },
  { label: 'encoded ";" lower-case %3b', target: '/openai/v1/..%3b/x' },
  { label: 'encoded ";" parameter', target: '/openai/v1/x%3Bjsessionid=1' },
  // Double encoding.
  { label: 'double-encoded dot %252e', target: '/openai/v1/%252e%252e/x' },
  { label: 'double-encoded slash %252f', target: '/openai/v1/a%252fb' },
  { label: 'escaped percent %25 alone', target: '/openai/v1/100%25' },
  // Control characters, encoded.
  { label: 'encoded NUL %00', target: '/openai/v1/a%00' },
  { label: 'encoded NUL before an extension', target: '/openai/v1/a%00.json' },
  { label: 'encoded CR LF (header injection)', target: '/openai/v1/a%0d%0aX-Injected:%20yes' },
  { label: 'encoded TAB %09', target: '/openai/v1/a%09' },
  { label: 'encoded US %1f', target: '/openai/v1/a%1f' },
  { label: 'encoded DEL %7f', target: '/openai/v1/a%7f' },
  // Malformed escapes.
  { label: 'non-hex escape %zz', target: '/openai/v1/%zz' },
  { label: 'short escape %4', target: '/openai/v1/%4' },
  { label: 'bare trailing %', target: '/openai/v1/a%' },
  { label: 'half-hex escape %g0', target: '/openai/v1/%g0' },
  // Invalid and overlong UTF-8.
  { label: 'overlong dot %c0%ae', target: '/openai/v1/%c0%ae%c0%ae/x' },
  { label: 'overlong slash %c0%af', target: '/openai/v1/a%c0%afb' },
  { label: 'three-byte overlong dot %e0%80%ae', target: '/openai/v1/%e0%80%ae%e0%80%ae/x' },
  { label: 'byte %ff (never valid UTF-8)', target: '/openai/v1/%ff' },
  { label: 'lone continuation byte %80', target: '/openai/v1/%80' },
  { label: 'two lone continuation bytes %bf%bf', target: '/openai/v1/a%bf%bfb' },
  { label: 'truncated sequence %c3', target: '/openai/v1/caf%c3' },
  { label: 'UTF-16 surrogate encoded in UTF-8 %ed%a0%80', target: '/openai/v1/%ed%a0%80' },
  // Characters that NFKC-normalize to separators or dots.
  { label: 'fullwidth ".." %ef%bc%8e%ef%bc%8e', target: '/openai/v1/%ef%bc%8e%ef%bc%8e/x' },
  { label: 'fullwidth "." %ef%bc%8e', target: '/openai/v1/%ef%bc%8e/x' },
  { label: 'dot then fullwidth dot', target: '/openai/v1/.%ef%bc%8e/x' },
  { label: 'fullwidth "/" %ef%bc%8f', target: '/openai/v1/a%ef%bc%8fb' },
  { label: 'fullwidth "\\" %ef%bc%bc', target: '/openai/v1/a%ef%bc%bcb' },
  { label: 'fullwidth "%" %ef%bc%85', target: '/openai/v1/a%ef%bc%852e' },
  { label: 'fullwidth ";" %ef%bc%9b', target: '/openai/v1/a%ef%bc%9bb' },
  // Slashes NFKC keeps but best-fit conversions map to "/" or "\" (found by review).
  { label: 'division slash U+2215 %e2%88%95', target: '/openai/v1/a%e2%88%95..%e2%88%95admin' },
  { label: 'fraction slash U+2044 %e2%81%84', target: '/openai/v1/a%e2%81%84b' },
  { label: 'big solidus U+29F8 %e2%a7%b8', target: '/openai/v1/a%e2%a7%b8b' },
  { label: 'set minus U+2216 %e2%88%96', target: '/openai/v1/a%e2%88%96b' },
  { label: 'big reverse solidus U+29F9 %e2%a7%b9', target: '/openai/v1/a%e2%a7%b9b' },
  { label: 'raw UTF-8 division slash', target: `/openai/v1/a${utf8Bytes('\u2215')}b` },
  { label: 'two dot leader U+2025', target: '/openai/v1/%e2%80%a5/x' },
  { label: 'small full stops U+FE52', target: '/openai/v1/%ef%b9%92%ef%b9%92/x' },
  // Not origin-form.
  { label: 'absolute-form http://evil', target: 'http://evil/openai/v1/x' },
  { label: 'absolute-form naming the proxy itself', target: 'http://127.0.0.1/openai/v1/x' },
  { label: 'absolute-form naming the real provider', target: 'https://api.openai.com/v1/models' },
  { label: 'authority-form on GET', target: 'evil.example:443' },
  { label: 'asterisk-form on OPTIONS', target: '*', method: 'OPTIONS' },
  { label: 'asterisk-form on GET', target: '*' },
  // Fragments and raw bytes (several of these are refused by node's parser, answered by Airlock's refusal handler).
  { label: 'raw "#" fragment', target: '/openai/v1/x#frag' },
  { label: 'raw "#" hiding a traversal', target: '/openai/v1/x#/../../admin' },
  { label: 'raw "#" in the query', target: '/openai/v1/x?a=1#b' },
  { label: 'raw space', target: '/openai/v1/a b' },
  { label: 'raw TAB', target: '/openai/v1/a\tb' },
  // A raw NUL byte on the wire (0x00, not "%00"): C string handling in an upstream or a WAF would end the path there.
  { label: 'raw NUL byte 0x00', target: '/openai/v1/a\x00b' },
  { label: 'raw NUL before an extension', target: '/openai/v1/a\x00.json' },
  { label: 'raw NUL ending the path', target: '/openai/v1/x\x00' },
  { label: 'raw NUL hiding a traversal', target: '/openai/v1/x\x00/../../admin' },
  { label: 'raw NUL right after the prefix', target: '/openai\x00/v1/x' },
  { label: 'raw NUL in the query', target: '/openai/v1/x?a=\x00' },
  { label: 'raw control byte 0x01', target: '/openai/v1/a\x01b' },
  { label: 'raw DEL 0x7f', target: '/openai/v1/a\x7fb' },
  { label: 'raw latin1 byte 0xe9', target: '/openai/v1/caf\xe9' },
  { label: 'raw UTF-8 fullwidth dots', target: `/openai/v1/${utf8Bytes('．．')}/x` },
  { label: 'raw UTF-8 "é"', target: `/openai/v1/${utf8Bytes('café')}` },
];

interface ProblemJson {
  type: string;
  title: string;
  status: number;
  detail: string;
  code: string;
  request_id: string;
  error: { type: string; code: string; message: string };
}

function expectInvalidRequestProblem(response: RawResponse): ProblemJson {
  expect(response.status).toBe(400);
  expectProblemContentType(response);
  const requestIds = response.headers['x-airlock-request-id'] ?? [];
  expect(requestIds).toHaveLength(1);
  const problem = JSON.parse(response.body) as ProblemJson;
  expect(problem).toMatchObject({
    status: 400,
    code: 'invalid_request',
    title: 'Invalid request',
    type: 'tag:airlock.dev,2026:problem:invalid_request',
    error: { type: 'airlock_error', code: 'invalid_request' },
  });
  expect(problem.request_id).toBe(requestIds[0]);
  expect(problem.error.message).toBe(problem.detail);
  expect(problem.detail.length).toBeGreaterThan(0);
  return problem;
}

/**
 * The audit record of one request, and the only one with its id. Allowed requests are audited once the
 * response has ended, so the record may trail the response a little (auditRecordOf waits, bounded).
 */
async function onlyAuditRecordOf(proxy: ProxyFixture, requestId: string | undefined): Promise<AuditRecord> {
  expect(requestId ?? '', 'every answer carries x-airlock-request-id').toMatch(/\S/);
  const record = await auditRecordOf(proxy, requestId ?? '');
  expect(proxy.auditRecords().filter((r) => r.request_id === requestId)).toHaveLength(1);
  return record;
}

describe('hostile request targets', () => {
  const realKey = canary('hostile-paths');
  const agent = generateAgentToken();
  const bodies: string[] = [];
  let trap: Upstream;
  let proxy: ProxyFixture;

  fixture(
    async () => {
      trap = await startUpstream();
      proxy = await startGrantedProxy(trap, agent.hash, realKey);
    },
    async () => {
      await proxy.close();
      await trap.close();
    },
  );

  it('has at least 40 hostile targets in the table', () => {
    expect(HOSTILE.length).toBeGreaterThanOrEqual(40);
  });

  it.each(HOSTILE)('refuses $label: $target', async ({ target, method }) => {
    const request = Buffer.from(rawGet(target, { authorization: `Bearer ${agent.token}` }, method ?? 'GET'), 'latin1');
    const response = await rawRequest(proxy.url, request);
    bodies.push(response.raw);
    const problem = expectInvalidRequestProblem(response);
    // The upstream behind this proxy has seen nothing, ever: this block sends no benign request before the end.
    expect(trap.requests).toHaveLength(0);
    // Every refusal is audited as a denial under the id the agent was given.
    const record = await onlyAuditRecordOf(proxy, problem.request_id);
    expect(record).toMatchObject({ decision: 'deny', code: 'invalid_request', status: 400, upstream_status: null, credential: null });
  });

  it('refuses CONNECT (authority-form tunnel) with 405 and forwards nothing', async () => {
    const response = await rawRequest(proxy.url, rawGet('evil.example:443', { authorization: `Bearer ${agent.token}` }, 'CONNECT'));
    bodies.push(response.raw);
    expect(response.status).toBe(405);
    expectProblemContentType(response);
    const problem = JSON.parse(response.body) as ProblemJson;
    expect(problem.code).toBe('method_not_allowed');
    expect(problem.request_id).toBe(response.headers['x-airlock-request-id']?.[0]);
    expect(trap.requests).toHaveLength(0);
    expect(await onlyAuditRecordOf(proxy, problem.request_id)).toMatchObject({ decision: 'deny', code: 'method_not_allowed', status: 405, upstream_status: null });
  });

  it('forwards the same request with a benign target, so the refusals above were the path check', async () => {
    const response = await rawRequest(proxy.url, rawGet('/openai/v1/x', { authorization: `Bearer ${agent.token}` }));
    bodies.push(response.raw);
    expect(response.status).toBe(200);
    expect(trap.requests.map((r) => r.target)).toEqual(['/v1/x']);
    expect(trap.requests[0]?.header('authorization')).toEqual([`Bearer ${realKey}`]);
  });

  it('leaves no trace of the credential in responses, logs or audit', async () => {
    // Every hostile target, the CONNECT and the benign control request are audited.
    await proxy.waitForAudit(HOSTILE.length + 2);
    assertNoLeak([realKey], [
      { name: 'responses', text: bodies.join('\n') },
      { name: 'log', text: proxy.logLines.join('') },
      { name: 'audit', text: proxy.auditText() },
    ]);
  });
});

describe('accepted targets are canonicalized and forwarded byte for byte', () => {
  const realKey = canary('canonical-paths');
  const agent = generateAgentToken();
  const bodies: string[] = [];
  let upstream: Upstream;
  let proxy: ProxyFixture;

  fixture(
    async () => {
      upstream = await startUpstream();
      proxy = await startGrantedProxy(upstream, agent.hash, realKey);
    },
    async () => {
      await proxy.close();
      await upstream.close();
    },
  );

  async function send(target: string): Promise<{ response: RawResponse; forwarded: string; auditPath: string | null }> {
    const before = upstream.requests.length;
    const response = await rawRequest(proxy.url, Buffer.from(rawGet(target, { authorization: `Bearer ${agent.token}` }), 'latin1'));
    bodies.push(response.raw);
    expect(response.status).toBe(200);
    expect(upstream.requests.length).toBe(before + 1);
    const requestId = response.headers['x-airlock-request-id']?.[0];
    const record = await onlyAuditRecordOf(proxy, requestId);
    expect(record).toMatchObject({ decision: 'allow', code: null, status: 200, upstream_status: 200 });
    return { response, forwarded: upstream.requests[before]?.target ?? '', auditPath: record.path };
  }

  it.each([
    { sent: '/openai/v1/%41', upstream: '/v1/A', why: 'unreserved ALPHA is decoded' },
    { sent: '/openai/v1/%61%62%63', upstream: '/v1/abc', why: 'lower-case letters decoded' },
    { sent: '/openai/v1/%30%39', upstream: '/v1/09', why: 'digits decoded' },
    { sent: '/openai/v1/a%2db%5fc%7ed', upstream: '/v1/a-b_c~d', why: '"-", "_" and "~" decoded' },
    { sent: '/openai/v1/a%2fb', upstream: '/v1/a%2Fb', why: 'an encoded slash under "*", upper-cased (read either way, "/v1/*" is the route)' },
    { sent: '/openai/v1/a%2eb', upstream: '/v1/a.b', why: 'an encoded dot inside a segment is decoded' },
    { sent: '/openai/v1/file%2Ejson', upstream: '/v1/file.json', why: 'upper-case %2E inside a segment' },
    { sent: '/openai/v1/caf%c3%a9', upstream: '/v1/caf%C3%A9', why: 'UTF-8 escapes are upper-cased, not decoded' },
    { sent: '/openai/v1/caf%C3%A9', upstream: '/v1/caf%C3%A9', why: 'already canonical' },
    { sent: '/openai/v1/a%20b', upstream: '/v1/a%20b', why: 'an encoded space stays encoded' },
    { sent: '/openai/v1/a%3ab', upstream: '/v1/a%3Ab', why: 'reserved ":" stays encoded, upper-cased' },
    { sent: '/openai/v1/a%2bb', upstream: '/v1/a%2Bb', why: 'reserved "+" stays encoded' },
    { sent: '/openai/v1/q%3fx', upstream: '/v1/q%3Fx', why: 'an encoded "?" stays in the path' },
    { sent: '/openai/v1/h%23x', upstream: '/v1/h%23x', why: 'an encoded "#" stays in the path' },
    { sent: '/openai/v1/%e2%82%ac', upstream: '/v1/%E2%82%AC', why: 'a three-byte character (euro sign)' },
    { sent: '/openai/v1/%f0%9f%94%91', upstream: '/v1/%F0%9F%94%91', why: 'a four-byte character (emoji)' },
    { sent: '/openai/v1/%ef%bc%a1', upstream: '/v1/%EF%BC%A1', why: 'fullwidth "A" normalizes to a letter, harmless' },
    { sent: '/openai/v1/a..b', upstream: '/v1/a..b', why: 'dots inside a segment are not a dot segment' },
    { sent: '/openai/v1/...', upstream: '/v1/...', why: 'three dots are not a dot segment (RFC 3986 5.2.4)' },
    { sent: '/openai/v1/.well-known', upstream: '/v1/.well-known', why: 'a leading dot in a name' },
    { sent: '/openai/v1/x/', upstream: '/v1/x/', why: 'a trailing slash is kept' },
    { sent: '/openai/v1/a:b@c!$&\'()*+,=', upstream: '/v1/a:b@c!$&\'()*+,=', why: 'raw sub-delims and ":" "@" are kept as sent' },
    { sent: '/openai', upstream: '/', why: 'the bare prefix is the upstream root' },
    { sent: '/based/v1/%41%2e', upstream: '/api/base/v1/A.', why: 'an upstream base path is prepended to the canonical path' },
    { sent: '/based/v1/caf%c3%a9/', upstream: '/api/base/v1/caf%C3%A9/', why: 'base path and upper-cased escapes' },
  ])('$sent -> $upstream ($why)', async ({ sent, upstream: expected }) => {
    const { forwarded, auditPath } = await send(sent);
    expect(forwarded).toBe(expected);
    // The path that was authorized (audit: the canonical path, prefix included) is the forwarded one.
    const prefix = sent.startsWith('/based') ? '/based' : '/openai';
    const base = sent.startsWith('/based') ? '/api/base' : '';
    const authorized = auditPath ?? '';
    expect(authorized.startsWith(prefix)).toBe(true);
    const servicePath = authorized === prefix ? '/' : authorized.slice(prefix.length);
    expect(base + servicePath).toBe(expected);
  });

  it.each([
    { query: 'a=1', why: 'plain' },
    { query: 'a=1&b=2&a=3', why: 'repeated keys, in order' },
    { query: '', why: 'a bare "?"' },
    { query: 'q=%2e%2e%2f%2F%5c', why: 'encoded dots and slashes are data here' },
    { query: 'p=/../..//x', why: 'raw dot segments and "//" in the query are data' },
    { query: 'x=%zz%4&y=%', why: 'malformed escapes are not touched' },
    { query: 'u=%c3%a9&U=%C3%A9', why: 'escapes are not re-cased in the query' },
    { query: 'k=a+b%20c', why: '"+" and %20 are not rewritten' },
    { query: 'a=1;b=2', why: '";" separators are kept' },
    { query: '&&a&=&b==', why: 'empty pairs and odd "=" are kept' },
    { query: 'next=http://evil.example/?x=1', why: 'a URL as a value, "?" inside the query' },
    { query: 'A=%41', why: 'an unreserved escape is not decoded in the query' },
  ])('forwards the query exactly as sent: ?$query ($why)', async ({ query }) => {
    const { forwarded } = await send(`/openai/v1/search?${query}`);
    expect(forwarded).toBe(`/v1/search?${query}`);
  });

  it('forwards a canonicalized path with its query untouched', async () => {
    const { forwarded } = await send('/openai/v1/%41/caf%c3%a9?z=%c3%a9&y=%2e%2e');
    expect(forwarded).toBe('/v1/A/caf%C3%A9?z=%c3%a9&y=%2e%2e');
  });

  it('leaves no trace of the credential in responses, logs or audit', async () => {
    await proxy.waitForAudit(upstream.requests.length);
    expect(upstream.requests.every((r) => r.header('authorization').join() === `Bearer ${realKey}`)).toBe(true);
    assertNoLeak([realKey], [
      { name: 'responses', text: bodies.join('\n') },
      { name: 'log', text: proxy.logLines.join('') },
      { name: 'audit', text: proxy.auditText() },
    ]);
  });
});

/**
 * Case and trailing-slash variants of a route path. Airlock promises (README "Routes"; route-template.ts,
 * select-service.ts) that prefixes and route literals match the canonical path exactly and
 * case-sensitively, and that a trailing "/" is a different path: "/v1/things/" is not the route
 * "/v1/things" and ":id" never matches "42/". So a case or slash variant is never read as the route it
 * resembles: it is the route it spells exactly (a route of its own, with its own scope), or it matches no
 * route and is refused with an RFC 9457 problem (404 unknown_service for a prefix, 403 route_not_allowed
 * for a route) with nothing forwarded. Only under a trailing "*" does a trailing slash match, and then the
 * upstream receives exactly the audited (authorized) path, slash included. Every answer has exactly one
 * audit record under its request id.
 */
describe('case and trailing-slash variants of a route path', () => {
  const realKey = canary('paths-variants');
  const agent = generateAgentToken();
  const bodies: string[] = [];
  let upstream: Upstream;
  let proxy: ProxyFixture;

  fixture(
    async () => {
      upstream = await startUpstream();
      proxy = await startProxy(
        {
          // Refusals are the point here, not a probe to quarantine (see startGrantedProxy).
          anomalies: { denial_burst: { count: 100_000 } },
          services: {
            api: {
              upstream: upstream.url,
              credential: { secret: 'env:VARIANT_KEY', inject: 'bearer' },
              routes: [
                { method: 'GET', path: '/v1/things', scope: 'things:read' },
                // Before :id, with a scope of its own, not granted: what :id must not reach in lower case.
                { method: 'GET', path: '/v1/things/export', scope: 'things:export' },
                { method: 'GET', path: '/v1/things/:id', scope: 'things:read' },
                { method: 'DELETE', path: '/v1/things/:id', scope: 'things:delete' },
                // Two routes told apart by case only, with different scopes: only the lower-case one is granted.
                { method: 'GET', path: '/v1/reports', scope: 'reports:read' },
                { method: 'GET', path: '/v1/Reports', scope: 'reports:admin' },
                // Before the wildcard: what a path under it reads as when an upstream decodes %2F.
                { method: 'GET', path: '/v1/files/:id/raw', scope: 'files:raw' },
                { method: 'GET', path: '/v1/files/*', scope: 'files:read' },
              ],
            },
          },
          agents: {
            tester: { tokens: [agent.hash], credentials: [{ service: 'api', max_scope: ['things:read', 'reports:read', 'files:read'] }] },
          },
        },
        { env: { VARIANT_KEY: realKey } },
      );
    },
    async () => {
      await proxy.close();
      await upstream.close();
    },
  );

  async function exchange(method: string, target: string): Promise<RawResponse> {
    const response = await rawRequest(proxy.url, Buffer.from(rawGet(target, { authorization: `Bearer ${agent.token}` }, method), 'latin1'));
    bodies.push(response.raw);
    return response;
  }

  it.each([
    { method: 'GET', target: '/api/v1/things', forwarded: '/v1/things', route: '/v1/things', why: 'the route as configured' },
    { method: 'GET', target: '/api/v1/thing%73', forwarded: '/v1/things', route: '/v1/things', why: 'an escaped lower-case letter is the same canonical path' },
    { method: 'GET', target: '/api/v1/things/42', forwarded: '/v1/things/42', route: '/v1/things/:id', why: 'a parameter route' },
    { method: 'GET', target: '/api/v1/things/AbC-42', forwarded: '/v1/things/AbC-42', route: '/v1/things/:id', why: 'capitals in a parameter: in lower case it is the same route' },
    { method: 'GET', target: '/api/v1/reports', forwarded: '/v1/reports', route: '/v1/reports', why: 'the granted one of two case-distinct routes' },
    { method: 'GET', target: '/api/v1/files/a', forwarded: '/v1/files/a', route: '/v1/files/*', why: 'a wildcard route' },
    { method: 'GET', target: '/api/v1/files/a/', forwarded: '/v1/files/a/', route: '/v1/files/*', why: 'a trailing slash under "*" is kept, as authorized' },
    { method: 'GET', target: '/api/v1/files/A/b/', forwarded: '/v1/files/A/b/', route: '/v1/files/*', why: 'case below "*" is the agent\'s, forwarded as authorized' },
    { method: 'GET', target: '/api/v1/files/docs%2FREADME.md', forwarded: '/v1/files/docs%2FREADME.md', route: '/v1/files/*', why: 'an encoded slash under "*": both readings select it' },
    { method: 'GET', target: '/api/v1/files/a%2fb%2fc', forwarded: '/v1/files/a%2Fb%2Fc', route: '/v1/files/*', why: 'encoded slashes upper-cased, as every escape' },
  ])('forwards $method $target as $forwarded ($why)', async ({ method, target, forwarded, route }) => {
    const before = upstream.requests.length;
    const response = await exchange(method, target);
    expect(response.status, response.body).toBe(200);
    expect(upstream.requests).toHaveLength(before + 1);
    const seen = upstream.requests[before];
    expect(seen?.target).toBe(forwarded);
    expect(seen?.header('authorization')).toEqual([`Bearer ${realKey}`]);
    const record = await onlyAuditRecordOf(proxy, response.headers['x-airlock-request-id']?.[0]);
    expect(record).toMatchObject({ decision: 'allow', code: null, status: 200, upstream_status: 200, service: 'api', route, credential: 'env:VARIANT_KEY' });
    // The authorized path (audited, prefix included) is the forwarded path.
    expect(record.path).toBe(`/api${forwarded}`);
  });

  it.each([
    // The service prefix is case-sensitive: no service is selected, nothing is authorized.
    { method: 'GET', target: '/API/v1/things', status: 404, code: 'unknown_service', why: 'upper-case prefix' },
    { method: 'GET', target: '/Api/v1/things', status: 404, code: 'unknown_service', why: 'capitalized prefix' },
    { method: 'GET', target: '/%41PI/v1/things', status: 404, code: 'unknown_service', why: 'escaped upper-case prefix' },
    { method: 'GET', target: '/api/', status: 403, code: 'route_not_allowed', why: 'the prefix with a trailing slash is the service root, which has no route' },
    // Route literals are case-sensitive.
    { method: 'GET', target: '/api/V1/things', status: 403, code: 'route_not_allowed', why: 'upper-case version segment' },
    { method: 'GET', target: '/api/v1/Things', status: 403, code: 'route_not_allowed', why: 'capitalized resource' },
    { method: 'GET', target: '/api/v1/THINGS', status: 403, code: 'route_not_allowed', why: 'upper-case resource' },
    { method: 'GET', target: '/api/v1/%54hings', status: 403, code: 'route_not_allowed', why: 'escaped upper-case letter decodes to "Things"' },
    { method: 'GET', target: '/api/V1/Things/42', status: 403, code: 'route_not_allowed', why: 'case variant of a parameter route' },
    { method: 'GET', target: '/api/v1/REPORTS', status: 403, code: 'route_not_allowed', why: 'a third spelling matches neither case-distinct route' },
    { method: 'DELETE', target: '/api/v1/Things/42', status: 403, code: 'route_not_allowed', why: 'case variant of an ungranted route' },
    // A trailing slash is a different path.
    { method: 'GET', target: '/api/v1/things/', status: 403, code: 'route_not_allowed', why: 'trailing slash on a literal route' },
    { method: 'GET', target: '/api/v1/things/42/', status: 403, code: 'route_not_allowed', why: 'trailing slash after a parameter' },
    { method: 'GET', target: '/api/V1/things/', status: 403, code: 'route_not_allowed', why: 'case and trailing slash together' },
    { method: 'GET', target: '/api/v1/reports/', status: 403, code: 'route_not_allowed', why: 'trailing slash on the granted case-distinct route' },
    { method: 'GET', target: '/api/v1/files/', status: 403, code: 'route_not_allowed', why: '"*" needs at least one segment; a bare trailing slash is none' },
    { method: 'DELETE', target: '/api/v1/things/42/', status: 403, code: 'route_not_allowed', why: 'trailing slash on an ungranted route' },
    { method: 'GET', target: '/api/v1/things%2F', status: 400, code: 'invalid_request', why: 'an encoded trailing slash' },
    // Encoded slashes: every reading of the path (as sent, %2F as "/") must select the same route.
    { method: 'GET', target: '/api/v1/things%2F42', status: 403, code: 'route_not_allowed', why: 'read with "/" it is a granted route, but as sent no route holds it' },
    { method: 'GET', target: '/api/v1/things/4%2F2', status: 400, code: 'invalid_request', why: ':id holds 4%2F2 as sent, but read with "/" no route is selected' },
    { method: 'GET', target: '/api/v1/files/x%2Fraw', status: 400, code: 'invalid_request', why: 'under "*" as sent, but read with "/" it is /v1/files/:id/raw, another route with another scope' },
    { method: 'GET', target: '/api/v1/files/a%2Fb/raw', status: 400, code: 'invalid_request', why: 'as sent :id holds a%2Fb (/v1/files/:id/raw, not granted), read with "/" it is "*": it fell through to "*" before review' },
    { method: 'GET', target: '/api/v1/files/%2E%2E%2Fthings', status: 400, code: 'invalid_request', why: 'a dot piece between encoded slashes' },
    // Under "*", a trailing "/" and upper case must not select another route when an upstream ignores them.
    { method: 'GET', target: '/api/v1/files/ab/raw/', status: 400, code: 'invalid_request', why: 'under "*", but without its trailing "/" it is /v1/files/:id/raw' },
    { method: 'GET', target: '/api/v1/files/ab/RAW', status: 400, code: 'invalid_request', why: 'under "*", but in lower case it is /v1/files/:id/raw' },
    { method: 'GET', target: '/api/v1/things/EXPORT', status: 400, code: 'invalid_request', why: ':id holds EXPORT as sent, but in lower case it is /v1/things/export (forwarded with :id\'s scope before review)' },
    { method: 'GET', target: '/api/v1/things/Export', status: 400, code: 'invalid_request', why: 'the same, capitalized' },
    { method: 'GET', target: '/api/v1/things//', status: 400, code: 'invalid_request', why: 'a doubled trailing slash' },
    { method: 'GET', target: '/api/v1/things/.', status: 400, code: 'invalid_request', why: 'a trailing dot segment' },
    // Routes that exist but are not granted: refused on scope, never read as a granted route.
    { method: 'GET', target: '/api/v1/Reports', status: 403, code: 'scope_denied', why: 'the case-distinct route has its own, ungranted scope' },
    { method: 'DELETE', target: '/api/v1/things/42', status: 403, code: 'scope_denied', why: 'control: the ungranted route as configured' },
  ])('refuses $method $target with $status $code ($why)', async ({ method, target, status, code }) => {
    const before = upstream.requests.length;
    const response = await exchange(method, target);
    const problem = expectProblem({ status: response.status, contentType: response.headers['content-type']?.[0], body: response.body }, status, code);
    expect(response.headers['x-airlock-request-id']).toEqual([problem.request_id]);
    // Nothing was forwarded: no path was authorized.
    expect(upstream.requests).toHaveLength(before);
    const record = await onlyAuditRecordOf(proxy, problem.request_id);
    expect(record).toMatchObject({ decision: 'deny', code, status, upstream_status: null });
    if (code === 'scope_denied') {
      // Refused on the route the path spells exactly, not on one it resembles.
      expect(record.route).toBe(target.endsWith('/42') ? '/v1/things/:id' : '/v1/Reports');
    }
  });

  it('forwarded only what was authorized, and leaves no trace of the credential in responses, logs or audit', async () => {
    await proxy.waitForAudit(bodies.length);
    const allowed = proxy.auditRecords().filter((r) => r.decision === 'allow');
    expect(upstream.requests.map((r) => `/api${r.target}`)).toEqual(allowed.map((r) => r.path));
    assertNoLeak([realKey], [
      { name: 'responses', text: bodies.join('\n') },
      { name: 'log', text: proxy.logLines.join('') },
      { name: 'audit', text: proxy.auditText() },
    ]);
  });
});

describe('hostile request targets: the process', () => {
  it('stayed healthy over every case of the file (no unhandled rejection or uncaught exception, event-loop p99 under 250 ms)', () => {
    const { p99Ms, maxMs } = watch.assertHealthy();
    console.info(`[hostile-paths] event loop: p99 ${p99Ms.toFixed(1)} ms, max ${maxMs.toFixed(1)} ms`);
  });
});
