/**
 * Request smuggling and HTTP/1.1 parsing (DESIGN.md invariants 2-5, README "Security model" 6): every
 * request here carries a VALID agent token for a fully granted agent, so authentication is never what
 * stops it. What must stop it is framing and parsing:
 *  - conflicting or obfuscated framing (CL.TE, TE.CL, TE.TE, duplicate or malformed Content-Length,
 *    bad chunks, forbidden trailers) is refused with 400 invalid_request and nothing reaches the
 *    upstream; framing that is merely unusual but unambiguous (OWS, case, chunk extensions, trailers) is
 *    accepted, and the upstream then sees exactly one request, re-framed, with the right body and only
 *    the injected credential;
 *  - malformed header sections and request lines are refused with 400 (obs-fold, CR/LF/NUL in values,
 *    bare LF, space before the colon, non-token names, odd versions, absolute- and asterisk-form);
 *  - limits: header count past limits.max_headers is refused with 431, never truncated (a header placed
 *    past the limit must not be silently dropped while the rest is forwarded); header bytes past
 *    limits.max_header_bytes: 431; bodies past the service's or the global max_body_bytes: 413, with
 *    Content-Length and chunked; headers or bodies sent too slowly: 408;
 *  - pipelining: several requests in one socket write, from different agents, are each authenticated on
 *    their own and answered in order; a request hidden in another's body is never run as its sender.
 *
 * Where node's parser refuses bytes before Airlock sees a request, the answer still comes from Airlock's
 * raw refusal handler (src/pipeline/run-pipeline.ts createRawRefusalHandler): problem+json, a request
 * id, an audit record.
 *
 * Requests are written on a plain socket (`exchange` below), not with rawRequest: several cases need
 * more than one response per connection (pipelining, and the double answer of one bug), timed writes
 * (slowloris), or must survive a connection reset after the answer.
 */
import { connect } from 'node:net';
import type { IncomingMessage } from 'node:http';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { generateAgentToken } from '../../src/identity/agent-token.js';
import type { AuditRecord } from '../../src/observability/audit-record.js';
import { assertNoLeak } from '../helpers/assert-no-leak.js';
import { canary } from '../helpers/canary.js';
import { parseResponse, type RawResponse } from '../helpers/raw-http.js';
import { startProxy, type ProxyFixture } from '../helpers/start-proxy.js';
import { okHandler, startUpstream, type RecordedRequest, type Upstream } from '../helpers/start-upstream.js';
import { auditRecordOf, expectProblem, hostileWatch, PROBLEM_JSON, type ProblemShape } from './support/hostile-watch.js';

// Limits of the proxy under test (see beforeAll).
const MAX_HEADERS = 100; // the default, written out
const MAX_HEADER_BYTES = 16_384; // the default, written out
const MAX_BODY_BYTES = 4_096; // limits.max_body_bytes (service "big")
const SVC_MAX_BODY_BYTES = 1_000; // services.svc.max_body_bytes
const HEADERS_TIMEOUT_S = 1;
const REQUEST_TIMEOUT_S = 1.5;

// ---------------------------------------------------------------------------------------------------
// Wire helpers

interface Exchange {
  /** Everything the proxy sent back, latin1. */
  readonly raw: string;
  /** The responses in `raw`, in order (interim 1xx included). */
  readonly answers: RawResponse[];
  /** The proxy closed the connection (rather than the test's bound). */
  readonly closedByProxy: boolean;
  readonly ms: number;
}

/**
 * Opens a connection, writes `parts` one after the other with `gapMs` between them, and collects what
 * comes back until the proxy closes the connection (or `boundMs` passes). A reset is not an error here:
 * what arrived before it is kept.
 */
function exchange(url: string, parts: readonly string[], gapMs = 0, boundMs = 6_000): Promise<Exchange> {
  const { hostname, port } = new URL(url);
  const startedAt = Date.now();
  return new Promise((resolve) => {
    const socket = connect(Number(port), hostname);
    const chunks: Buffer[] = [];
    let next: NodeJS.Timeout | undefined;
    let closedByProxy = true;
    const bound = setTimeout(() => {
      closedByProxy = false;
      socket.destroy();
    }, boundMs);
    socket.on('connect', () => {
      let i = 0;
      const writeNext = (): void => {
        if (i >= parts.length || !socket.writable) return;
        socket.write(Buffer.from(parts[i++] as string, 'latin1'));
        if (i < parts.length) next = setTimeout(writeNext, gapMs);
      };
      writeNext();
    });
    socket.on('data', (chunk: Buffer) => chunks.push(chunk));
    socket.on('error', () => undefined);
    socket.on('close', () => {
      clearTimeout(bound);
      clearTimeout(next);
      const raw = Buffer.concat(chunks).toString('latin1');
      resolve({ raw, answers: splitResponses(raw), closedByProxy, ms: Date.now() - startedAt });
    });
  });
}

/** Length of a chunked body at the start of `text`, final chunk and trailers included. */
function chunkedLength(text: string): number {
  let pos = 0;
  for (;;) {
    const lineEnd = text.indexOf('\r\n', pos);
    if (lineEnd === -1) return text.length;
    const size = parseInt(text.slice(pos, lineEnd), 16);
    if (!Number.isFinite(size)) return text.length;
    if (size === 0) {
      const end = text.indexOf('\r\n\r\n', lineEnd);
      return end === -1 ? text.length : end + 4;
    }
    pos = lineEnd + 2 + size + 2;
  }
}

/** Splits a byte stream holding one or more HTTP/1.1 responses (pipelining, interim 1xx). */
function splitResponses(raw: string): RawResponse[] {
  const answers: RawResponse[] = [];
  let rest = raw;
  while (rest.length > 0) {
    const headerEnd = rest.indexOf('\r\n\r\n');
    if (headerEnd === -1) break;
    const head = rest.slice(0, headerEnd);
    const status = Number(head.split(' ')[1]);
    const length = /\r\ncontent-length:[ \t]*(\d+)/i.exec(head);
    let end = headerEnd + 4;
    if ((status >= 100 && status < 200) || status === 204 || status === 304) end = headerEnd + 4;
    else if (length !== null) end = headerEnd + 4 + Number(length[1]);
    else if (/\r\ntransfer-encoding:[^\r]*chunked/i.test(head)) end = headerEnd + 4 + chunkedLength(rest.slice(headerEnd + 4));
    else end = rest.length;
    answers.push(parseResponse(rest.slice(0, end)));
    rest = rest.slice(end);
  }
  return answers;
}

function contentTypeOf(answer: RawResponse): string | undefined {
  return answer.headers['content-type']?.[0];
}

function requestIdOf(answer: RawResponse): string | undefined {
  return answer.headers['x-airlock-request-id']?.[0];
}

/** The final (non-1xx) answers of an exchange. */
function finalAnswers(result: Exchange): RawResponse[] {
  return result.answers.filter((a) => a.status >= 200);
}

const delay = (ms: number): Promise<void> => new Promise((resolve) => setTimeout(resolve, ms));

// ---------------------------------------------------------------------------------------------------
// The actors

const alice = generateAgentToken(); // granted svc and big (all scopes)
const bob = generateAgentToken(); // granted "other" only
const stranger = generateAgentToken(); // not in the config at all

interface MessageOptions {
  method?: string;
  target?: string;
  version?: string;
  /** Agent token for Authorization; null for none. Default alice. */
  token?: string | null;
  headers?: readonly string[];
  body?: string;
  /** Add Connection: close (default true). */
  close?: boolean;
}

/** A request as raw text: request line, Host, [Connection: close], Authorization, extra lines, body. */
function message({ method = 'POST', target = '/svc/v1/x', version = 'HTTP/1.1', token = alice.token, headers = [], body = '', close = true }: MessageOptions = {}): string {
  const lines = [`${method} ${target} ${version}`.trimEnd(), 'Host: 127.0.0.1'];
  if (close) lines.push('Connection: close');
  if (token !== null) lines.push(`Authorization: Bearer ${token}`);
  lines.push(...headers);
  return `${lines.join('\r\n')}\r\n\r\n${body}`;
}

const CHUNKED_HELLO = '5\r\nhello\r\n0\r\n\r\n';

/**
 * Node 20 before 20.19.2 bundles llhttp 8 (src/ingress/parser-leniency.ts), which takes what these
 * cases send and llhttp 9 refuses: a header section ended by CR CR LF, a Content-Length in a trailer,
 * and refuses a chunk extension without a value. There, the request leaves re-framed (nothing of it is
 * ambiguous to the upstream), or is refused: each is checked for what it does on the node running.
 */
const LLHTTP_8 = Number.parseInt(process.versions.llhttp ?? '', 10) < 9;
/** What llhttp 8 takes of the refused cases, and the request that leaves for it, re-framed. */
const LLHTTP_8_TAKES: ReadonlyMap<string, { method: string; body: string }> = new Map([
  ['trailer with Content-Length', { method: 'POST', body: 'hello' }],
  ['CR CR LF ending the header section', { method: 'GET', body: '' }],
]);
const LLHTTP_8_REFUSES = new Set(['chunk extensions (5;foo=bar;baz)']);
/** A complete second request, granted to alice: if it ever reaches the upstream, something was smuggled. */
const SMUGGLED = `GET /svc/v1/smuggled HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer ${alice.token}\r\n\r\n`;

// ---------------------------------------------------------------------------------------------------

interface StartedUpstreamRequest {
  readonly target: string;
  bytes: number;
  ended: boolean;
}

describe('request smuggling and HTTP parsing', () => {
  const watch = hostileWatch();
  const keys = { svc: canary('smuggle-svc'), big: canary('smuggle-big'), other: canary('smuggle-oth') };
  const responses: string[] = [];
  /** Every request the upstream started to receive, complete or not (streamed bodies cut short). */
  const started: StartedUpstreamRequest[] = [];
  /** Trailer lines of each complete upstream request. */
  const trailers = new Map<RecordedRequest, string[]>();
  let upstream: Upstream;
  let proxy: ProxyFixture;

  beforeAll(async () => {
    watch.start();
    upstream = await startUpstream((req: IncomingMessage, res, recorded) => {
      trailers.set(recorded, [...req.rawTrailers]);
      okHandler(req, res);
    });
    upstream.server.on('request', (req: IncomingMessage) => {
      const entry: StartedUpstreamRequest = { target: req.url ?? '', bytes: 0, ended: false };
      started.push(entry);
      req.on('data', (chunk: Buffer) => void (entry.bytes += chunk.length));
      req.on('end', () => void (entry.ended = true));
    });
    const routes = [{ method: ['GET', 'POST', 'PUT', 'OPTIONS'], path: '/v1/*', scope: 'api' }];
    proxy = await startProxy(
      {
        limits: {
          max_headers: MAX_HEADERS,
          max_header_bytes: MAX_HEADER_BYTES,
          max_body_bytes: MAX_BODY_BYTES,
          headers_timeout: HEADERS_TIMEOUT_S,
          request_timeout: REQUEST_TIMEOUT_S,
        },
        // Bob's and the stranger's denials are the point here, not a probe to quarantine.
        anomalies: { denial_burst: { count: 100_000 } },
        services: {
          svc: { upstream: upstream.url, credential: { secret: 'env:SVC_KEY', inject: 'bearer' }, max_body_bytes: SVC_MAX_BODY_BYTES, routes },
          big: { upstream: upstream.url, credential: { secret: 'env:BIG_KEY', inject: 'bearer' }, routes },
          other: { upstream: upstream.url, credential: { secret: 'env:OTHER_KEY', inject: 'bearer' }, routes },
        },
        agents: {
          alice: { tokens: [alice.hash], credentials: [{ service: 'svc', max_scope: ['*'] }, { service: 'big', max_scope: ['*'] }] },
          bob: { tokens: [bob.hash], credentials: [{ service: 'other', max_scope: ['*'] }] },
        },
      },
      { env: { SVC_KEY: keys.svc, BIG_KEY: keys.big, OTHER_KEY: keys.other } },
    );
  });

  afterAll(async () => {
    await proxy?.close();
    await upstream?.close();
  });

  async function send(parts: string | readonly string[], gapMs = 0, boundMs = 6_000): Promise<Exchange> {
    const result = await exchange(proxy.url, typeof parts === 'string' ? [parts] : parts, gapMs, boundMs);
    responses.push(result.raw);
    return result;
  }

  /** Marks where the upstream's records are, to see what a case added. */
  function mark(): { complete: number; started: number } {
    return { complete: upstream.requests.length, started: started.length };
  }

  /** Nothing at all reached the upstream since `since` (a wrongly forwarded request gets a moment to show). */
  async function expectNothingForwarded(since: { complete: number; started: number }): Promise<void> {
    await delay(50);
    expect(upstream.requests.slice(since.complete).map((r) => r.target)).toEqual([]);
    expect(started.slice(since.started).map((r) => r.target)).toEqual([]);
  }

  /**
   * The upstream may have begun receiving a streamed body (Airlock streams, and cannot know a chunked
   * body is too large or too slow before it is), but never a complete request, and never more than
   * `maxBytes` of it.
   */
  async function expectNoCompleteRequest(since: { complete: number; started: number }, maxBytes: number): Promise<void> {
    await delay(150);
    expect(upstream.requests.slice(since.complete).map((r) => r.target)).toEqual([]);
    for (const entry of started.slice(since.started)) {
      expect(entry.ended, `upstream request ${entry.target} was completed`).toBe(false);
      expect(entry.bytes).toBeLessThanOrEqual(maxBytes);
    }
  }

  /** The first final answer is Airlock's problem with this status and code, with a matching request id and audit record. */
  async function expectRefusal(result: Exchange, status: number, code: string, decision: 'allow' | 'deny' = 'deny'): Promise<{ problem: ProblemShape; record: AuditRecord }> {
    const answer = finalAnswers(result)[0];
    expect(answer, `no answer at all; got ${JSON.stringify(result.raw.slice(0, 200))}`).toBeDefined();
    const problem = expectProblem({ status: answer!.status, contentType: contentTypeOf(answer!), body: answer!.body }, status, code);
    expect(requestIdOf(answer!)).toBe(problem.request_id);
    const record = await auditRecordOf(proxy, problem.request_id);
    expect(record).toMatchObject({ decision, code, status, upstream_status: null });
    return { problem, record };
  }

  /**
   * On llhttp 8 (Node 20 before 20.19.2), what it takes of a refused case leaves as one re-framed request,
   * the trailer or the odd line ending left behind (src/ingress/parser-leniency.ts).
   */
  async function expectTakenByLlhttp8(result: Exchange, since: { complete: number; started: number }, taken: { method: string; body: string }): Promise<void> {
    const request = await expectForwardedOnce(result, since, { method: taken.method, target: '/v1/x', body: taken.body });
    expect(request.header('content-length')).toEqual(taken.body === '' ? [] : ['5']);
  }

  /** Exactly one well-framed upstream request with this method, target and body, carrying only the injected key. */
  async function expectForwardedOnce(result: Exchange, since: { complete: number; started: number }, expected: { method: string; target: string; body: string; key?: string }): Promise<RecordedRequest> {
    const answers = finalAnswers(result);
    expect(answers.map((a) => a.status), result.raw.slice(0, 300)).toEqual([200]);
    await delay(20);
    const seen = upstream.requests.slice(since.complete);
    expect(seen).toHaveLength(1);
    expect(started.length - since.started).toBe(1);
    const request = seen[0] as RecordedRequest;
    expect(request.method).toBe(expected.method);
    expect(request.target).toBe(expected.target);
    expect(request.body.toString('latin1')).toBe(expected.body);
    expect(request.header('authorization')).toEqual([`Bearer ${expected.key ?? keys.svc}`]);
    // Well framed: never both framings; a body comes with exactly one.
    const framing = request.header('content-length').length + request.header('transfer-encoding').length;
    expect(framing).toBeLessThanOrEqual(1);
    if (expected.body !== '') expect(framing).toBe(1);
    // Trailers (and whatever they tried to smuggle) stay on the agent's hop.
    expect(trailers.get(request) ?? []).toEqual([]);
    const everything = [...request.rawHeaders, ...(trailers.get(request) ?? [])].join('\n');
    expect(everything).not.toMatch(/evil/i);
    expect(everything).not.toContain(alice.token);
    const record = await auditRecordOf(proxy, requestIdOf(answers[0] as RawResponse) ?? '');
    expect(record).toMatchObject({ decision: 'allow', agent: 'alice', status: 200, upstream_status: 200 });
    return request;
  }

  // -------------------------------------------------------------------------------------------------
  // 1. Message framing: Content-Length vs Transfer-Encoding, chunks, trailers

  interface RefusedCase {
    readonly name: string;
    readonly bytes: string;
    readonly status?: number;
    readonly code?: string;
    /** Refused in the body, after the request was authorized (see the framing test). */
    readonly inBody?: boolean;
  }

  const FRAMING_REFUSED: readonly RefusedCase[] = [
    // CL.TE / TE.CL: both framings; a front end that picked the other one would see SMUGGLED as a request.
    { name: 'CL.TE: Content-Length then Transfer-Encoding: chunked', bytes: message({ headers: ['Content-Length: 6', 'Transfer-Encoding: chunked'], body: `0\r\n\r\nG${SMUGGLED}` }) },
    { name: 'TE.CL: Transfer-Encoding: chunked then Content-Length', bytes: message({ headers: ['Transfer-Encoding: chunked', 'Content-Length: 4'], body: `${SMUGGLED.length.toString(16)}\r\n${SMUGGLED}\r\n0\r\n\r\n` }) },
    { name: 'CL.TE with Content-Length: 0', bytes: message({ headers: ['Content-Length: 0', 'Transfer-Encoding: chunked'], body: `0\r\n\r\n${SMUGGLED}` }) },
    // TE.TE: obfuscated Transfer-Encoding that one parser reads as chunked and another does not.
    { name: 'TE.TE: Transfer-Encoding: xchunked', bytes: message({ headers: ['Transfer-Encoding: xchunked'], body: CHUNKED_HELLO + SMUGGLED }) },
    { name: 'TE.TE: Transfer-Encoding: chunked, identity', bytes: message({ headers: ['Transfer-Encoding: chunked, identity'], body: CHUNKED_HELLO }) },
    { name: 'TE.TE: Transfer-Encoding: identity, chunked', bytes: message({ headers: ['Transfer-Encoding: identity, chunked'], body: CHUNKED_HELLO }) },
    { name: 'TE.TE: Transfer-Encoding: chunked, chunked', bytes: message({ headers: ['Transfer-Encoding: chunked, chunked'], body: CHUNKED_HELLO }) },
    { name: 'TE.TE: two Transfer-Encoding: chunked lines', bytes: message({ headers: ['Transfer-Encoding: chunked', 'Transfer-Encoding: chunked'], body: CHUNKED_HELLO }) },
    { name: 'TE.TE: Transfer-Encoding: chunked plus Transfer-Encoding: x', bytes: message({ headers: ['Transfer-Encoding: chunked', 'Transfer-Encoding: x'], body: CHUNKED_HELLO }) },
    { name: 'TE.TE: space before the colon (Transfer-Encoding : chunked)', bytes: message({ headers: ['Transfer-Encoding : chunked'], body: CHUNKED_HELLO }) },
    { name: 'TE.TE: tab before the colon', bytes: message({ headers: ['Transfer-Encoding\t: chunked'], body: CHUNKED_HELLO }) },
    { name: 'TE.TE: vertical tab before the value', bytes: message({ headers: ['Transfer-Encoding: \x0bchunked'], body: CHUNKED_HELLO }) },
    { name: 'TE.TE: obs-folded value (Transfer-Encoding:\\r\\n chunked)', bytes: message({ headers: ['Transfer-Encoding:', ' chunked'], body: CHUNKED_HELLO }) },
    { name: 'TE.TE: quoted "chunked"', bytes: message({ headers: ['Transfer-Encoding: "chunked"'], body: CHUNKED_HELLO }) },
    { name: 'TE.TE: chunked with a parameter (chunked;foo=1)', bytes: message({ headers: ['Transfer-Encoding: chunked;foo=1'], body: CHUNKED_HELLO }) },
    { name: 'TE.TE: trailing comma (chunked,)', bytes: message({ headers: ['Transfer-Encoding: chunked,'], body: CHUNKED_HELLO }) },
    { name: 'unsupported coding: Transfer-Encoding: gzip, chunked', bytes: message({ headers: ['Transfer-Encoding: gzip, chunked'], body: CHUNKED_HELLO }) },
    { name: 'unsupported coding: Transfer-Encoding: identity with Content-Length', bytes: message({ headers: ['Content-Length: 5', 'Transfer-Encoding: identity'], body: 'hello' }) },
    { name: 'empty Transfer-Encoding', bytes: message({ headers: ['Transfer-Encoding:'], body: 'hello' }) },
    { name: 'HTTP/1.0 with both Transfer-Encoding and Content-Length', bytes: message({ version: 'HTTP/1.0', headers: ['Transfer-Encoding: chunked', 'Content-Length: 5'], body: CHUNKED_HELLO }) },
    // Content-Length variants.
    { name: 'duplicate Content-Length, equal values', bytes: message({ headers: ['Content-Length: 5', 'Content-Length: 5'], body: 'hello' }) },
    { name: 'duplicate Content-Length, different values', bytes: message({ headers: ['Content-Length: 5', 'Content-Length: 6'], body: 'hello!' }) },
    { name: 'duplicate Content-Length, different case', bytes: message({ headers: ['Content-Length: 5', 'content-length: 5'], body: 'hello' }) },
    { name: 'Content-Length as a list (5, 5)', bytes: message({ headers: ['Content-Length: 5, 5'], body: 'hello' }) },
    { name: 'Content-Length: +5', bytes: message({ headers: ['Content-Length: +5'], body: 'hello' }) },
    { name: 'Content-Length: -1', bytes: message({ headers: ['Content-Length: -1'], body: 'hello' }) },
    { name: 'Content-Length: 0x10', bytes: message({ headers: ['Content-Length: 0x10'], body: 'hello' }) },
    { name: 'Content-Length: 5 5', bytes: message({ headers: ['Content-Length: 5 5'], body: 'hello' }) },
    { name: 'Content-Length: 1e3', bytes: message({ headers: ['Content-Length: 1e3'], body: 'hello' }) },
    { name: 'Content-Length with no value', bytes: message({ headers: ['Content-Length:'], body: 'hello' }) },
    { name: 'Content-Length overflowing 64 bits', bytes: message({ headers: ['Content-Length: 99999999999999999999999'], body: 'hello' }) },
    { name: 'Content-Length obs-folded', bytes: message({ headers: ['Content-Length:', ' 5'], body: 'hello' }) },
    { name: 'Content-Length then an obs-folded Transfer-Encoding', bytes: message({ headers: ['Content-Length: 5', 'X-A: 1', ' Transfer-Encoding: chunked'], body: 'hello' }) },
    // Chunk syntax.
    { name: 'chunk size overflowing 64 bits', inBody: true, bytes: message({ headers: ['Transfer-Encoding: chunked'], body: `10000000000000000\r\nhello\r\n0\r\n\r\n` }) },
    { name: 'chunk size of 17 hex digits', inBody: true, bytes: message({ headers: ['Transfer-Encoding: chunked'], body: 'fffffffffffffffff\r\nhello\r\n0\r\n\r\n' }) },
    { name: 'chunk size not hex (zz)', inBody: true, bytes: message({ headers: ['Transfer-Encoding: chunked'], body: 'zz\r\nhello\r\n0\r\n\r\n' }) },
    { name: 'negative chunk size', inBody: true, bytes: message({ headers: ['Transfer-Encoding: chunked'], body: '-5\r\nhello\r\n0\r\n\r\n' }) },
    { name: 'chunk size with 0x prefix', inBody: true, bytes: message({ headers: ['Transfer-Encoding: chunked'], body: '0x5\r\nhello\r\n0\r\n\r\n' }) },
    { name: 'chunk size with a leading space', inBody: true, bytes: message({ headers: ['Transfer-Encoding: chunked'], body: ' 5\r\nhello\r\n0\r\n\r\n' }) },
    { name: 'chunk size with a trailing space', inBody: true, bytes: message({ headers: ['Transfer-Encoding: chunked'], body: '5 \r\nhello\r\n0\r\n\r\n' }) },
    { name: 'chunk data longer than its size', inBody: true, bytes: message({ headers: ['Transfer-Encoding: chunked'], body: '3\r\nhello\r\n0\r\n\r\n' }) },
    { name: 'no CRLF after chunk data', inBody: true, bytes: message({ headers: ['Transfer-Encoding: chunked'], body: '5\r\nhelloX0\r\n\r\n' }) },
    { name: 'bare LF chunk lines', inBody: true, bytes: message({ headers: ['Transfer-Encoding: chunked'], body: '5\nhello\n0\n\n' }) },
    { name: 'chunk extension ended by a bare LF', inBody: true, bytes: message({ headers: ['Transfer-Encoding: chunked'], body: '5;foo\nhello\r\n0\r\n\r\n' }) },
    { name: 'chunk extension with a quoted CRLF', inBody: true, bytes: message({ headers: ['Transfer-Encoding: chunked'], body: '5;foo="b\r\nar"\r\nhello\r\n0\r\n\r\n' }) },
    { name: 'chunk extension with no name (5;)', inBody: true, bytes: message({ headers: ['Transfer-Encoding: chunked'], body: '5;\r\nhello\r\n0\r\n\r\n' }) },
    // Trailers that would change the framing of the message they end.
    { name: 'trailer with Content-Length', inBody: true, bytes: message({ headers: ['Transfer-Encoding: chunked'], body: '5\r\nhello\r\n0\r\nContent-Length: 99\r\n\r\n' }) },
    { name: 'trailer with Transfer-Encoding', inBody: true, bytes: message({ headers: ['Transfer-Encoding: chunked'], body: '5\r\nhello\r\n0\r\nTransfer-Encoding: chunked\r\n\r\n' }) },
  ];

  describe('framing: CL.TE, TE.CL, TE.TE, Content-Length and chunk syntax', () => {
    it.each(FRAMING_REFUSED)('refuses $name', async ({ name, bytes, status = 400, code = 'invalid_request', inBody }) => {
      const since = mark();
      const result = await send(bytes);
      const taken = LLHTTP_8 ? LLHTTP_8_TAKES.get(name) : undefined;
      if (taken !== undefined) return expectTakenByLlhttp8(result, since, taken);
      // A body that breaks after the request was authorized: the request's own record (alice, whose
      // policy allowed it) carries the refusal; `decision` is the policy decision, `code` what she got.
      const { record } = await expectRefusal(result, status, code, inBody === true ? 'allow' : 'deny');
      if (inBody === true) expect(record).toMatchObject({ agent: 'alice', incomplete: true });
      // Sent in one write: the break is in the bytes that came with the headers, so the upstream gets
      // nothing, not even a start (node reports some of these after the request event's microtasks,
      // when the pipeline may already have dispatched: the body undici reads ends with the failure).
      // Split across packets, a body that breaks later may have begun to stream (the 408 cases below).
      await expectNothingForwarded(since);
    });

    // Unusual but unambiguous framing: accepted, and what leaves is one re-framed request with the body.
    it.each<{ name: string; bytes: string; method?: string; body?: string }>([
      { name: 'plain chunked body in two chunks (control)', bytes: message({ headers: ['Transfer-Encoding: chunked'], body: '2\r\nhe\r\n3\r\nllo\r\n0\r\n\r\n' }) },
      { name: 'Transfer-Encoding with extra OWS ("  chunked")', bytes: message({ headers: ['Transfer-Encoding:   chunked'], body: CHUNKED_HELLO }) },
      { name: 'Transfer-Encoding with a tab as OWS (":\\tchunked")', bytes: message({ headers: ['Transfer-Encoding:\tchunked'], body: CHUNKED_HELLO }) },
      { name: 'Transfer-Encoding: CHUNKED (case-insensitive)', bytes: message({ headers: ['Transfer-Encoding: CHUNKED'], body: CHUNKED_HELLO }) },
      { name: 'chunk extensions (5;foo=bar;baz)', bytes: message({ headers: ['Transfer-Encoding: chunked'], body: '5;foo=bar;baz\r\nhello\r\n0;last=1\r\n\r\n' }) },
      { name: 'a benign trailer', bytes: message({ headers: ['Transfer-Encoding: chunked'], body: '5\r\nhello\r\n0\r\nX-Checksum: 1\r\n\r\n' }) },
      { name: 'a trailer carrying Authorization (dropped)', bytes: message({ headers: ['Transfer-Encoding: chunked'], body: '5\r\nhello\r\n0\r\nAuthorization: Bearer sk-evil-trailer\r\n\r\n' }) },
      { name: 'a trailer carrying Host (dropped)', bytes: message({ headers: ['Transfer-Encoding: chunked'], body: '5\r\nhello\r\n0\r\nHost: evil.example\r\n\r\n' }) },
      { name: 'Connection: transfer-encoding naming the framing header', bytes: message({ headers: ['Transfer-Encoding: chunked', 'Connection: transfer-encoding'], body: CHUNKED_HELLO }) },
      { name: 'Content-Length with leading zeros (00005)', bytes: message({ headers: ['Content-Length: 00005'], body: 'hello' }) },
      { name: 'Content-Length with OWS around the value', bytes: message({ headers: ['Content-Length: \t5 '], body: 'hello' }) },
      { name: 'Content-Length exactly at the service max_body_bytes', bytes: message({ headers: [`Content-Length: ${SVC_MAX_BODY_BYTES}`], body: 'a'.repeat(SVC_MAX_BODY_BYTES) }), body: 'a'.repeat(SVC_MAX_BODY_BYTES) },
      { name: 'Expect: 100-continue', bytes: message({ headers: ['Content-Length: 5', 'Expect: 100-continue'], body: 'hello' }) },
    ])('forwards $name as one well-framed request', async ({ name, bytes, body = 'hello' }) => {
      const since = mark();
      const result = await send(bytes);
      if (LLHTTP_8 && LLHTTP_8_REFUSES.has(name)) {
        // llhttp 8 refuses a chunk extension without a value: fail closed, the body never complete upstream.
        await expectRefusal(result, 400, 'invalid_request', 'allow');
        return expectNoCompleteRequest(since, 5);
      }
      await expectForwardedOnce(result, since, { method: 'POST', target: '/v1/x', body });
    });

    // A body shorter than its Content-Length, or a chunked body without its last chunk, is a request the
    // agent never finishes: the request deadline ends it (408). Airlock streams the body, so the upstream
    // may have begun receiving it, but never sees it complete.
    it.concurrent.each([
      { name: 'body shorter than its Content-Length', bytes: message({ headers: ['Content-Length: 50'], body: 'hello' }) },
      { name: 'chunked body without the final 0 chunk', bytes: message({ headers: ['Transfer-Encoding: chunked'], body: '5\r\nhello\r\n' }) },
      { name: 'a chunk that declares 4 GiB and sends 5 bytes', bytes: message({ headers: ['Transfer-Encoding: chunked'], body: 'ffffffff\r\nhello' }) },
    ])('answers 408 when $name', async ({ bytes }) => {
      const since = mark();
      const result = await send(bytes);
      expect(result.closedByProxy).toBe(true);
      // Under the request's own record: alice, authorized, cut by the deadline.
      const { record } = await expectRefusal(result, 408, 'request_timeout', 'allow');
      expect(record).toMatchObject({ agent: 'alice', incomplete: true });
      await expectNoCompleteRequest(since, 5);
    });
  });

  // -------------------------------------------------------------------------------------------------
  // 2. Header section and request line

  const PARSING_REFUSED: readonly RefusedCase[] = [
    // Header section.
    { name: 'obs-fold continuation line', bytes: message({ method: 'GET', headers: ['X-A: one', ' two'] }) },
    { name: 'obs-fold hiding a Transfer-Encoding line', bytes: message({ headers: ['X-A: one', ' Transfer-Encoding: chunked'], body: CHUNKED_HELLO }) },
    { name: 'first header line folded onto the request line', bytes: message({ method: 'GET' }).replace('\r\nHost', '\r\n Host') },
    { name: 'a header line starting with whitespace', bytes: message({ method: 'GET' }).replace('Host: 127.0.0.1\r\n', 'Host: 127.0.0.1\r\n X-Lead: 1\r\n') },
    { name: 'CR inside a header value', bytes: message({ method: 'GET', headers: ['X-A: a\rAuthorization: Bearer sk-evil'] }) },
    { name: 'LF inside a header value (header injection)', bytes: message({ method: 'GET', headers: ['X-A: a\nAuthorization: Bearer sk-evil'] }) },
    { name: 'NUL inside a header value', bytes: message({ method: 'GET', headers: ['X-A: a\x00b'] }) },
    { name: 'bare LF line endings throughout', bytes: message({ method: 'GET' }).replace(/\r\n/g, '\n') },
    { name: 'bare CR line endings throughout', bytes: message({ method: 'GET' }).replace(/\r\n/g, '\r') },
    { name: 'CR CR LF ending the header section', bytes: message({ method: 'GET' }).replace(/\r\n\r\n$/, '\r\n\r\r\n') },
    { name: 'space before the colon (X-A : y)', bytes: message({ method: 'GET', headers: ['X-A : y'] }) },
    { name: 'space before the colon on Host (Host : x)', bytes: message({ method: 'GET' }).replace('Host: 127.0.0.1', 'Host : 127.0.0.1') },
    { name: 'header name with parentheses', bytes: message({ method: 'GET', headers: ['X(A): y'] }) },
    { name: 'header name with "@"', bytes: message({ method: 'GET', headers: ['X@A: y'] }) },
    { name: 'header name with DEL', bytes: message({ method: 'GET', headers: ['X\x7fA: y'] }) },
    { name: 'header name with a latin1 byte', bytes: message({ method: 'GET', headers: ['X\xe9: y'] }) },
    { name: 'empty header name (": y")', bytes: message({ method: 'GET', headers: [': y'] }) },
    { name: 'header line without a colon', bytes: message({ method: 'GET', headers: ['X-No-Colon'] }) },
    { name: 'two Host headers', bytes: message({ method: 'GET', headers: ['Host: evil.example'] }) },
    // Request line.
    { name: 'an extra token after the version', bytes: message({ method: 'GET', version: 'HTTP/1.1 extra' }) },
    { name: 'tabs as request-line separators', bytes: message({ method: 'GET' }).replace('GET /svc/v1/x HTTP/1.1', 'GET\t/svc/v1/x\tHTTP/1.1') },
    { name: 'whitespace before the method', bytes: ` ${message({ method: 'GET' })}` },
    { name: 'lower-case version (http/1.1)', bytes: message({ method: 'GET', version: 'http/1.1' }) },
    { name: 'HTTP/1.2', bytes: message({ method: 'GET', version: 'HTTP/1.2' }) },
    { name: 'HTTP/9.9', bytes: message({ method: 'GET', version: 'HTTP/9.9' }) },
    { name: 'the HTTP/2 connection preface (PRI * HTTP/2.0)', bytes: 'PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n' },
    { name: 'lower-case method (get)', bytes: message({ method: 'get' }) },
    { name: 'method with a non-token character (G@T)', bytes: message({ method: 'G@T' }) },
    { name: 'unknown method (FOO)', bytes: message({ method: 'FOO' }) },
    { name: 'absolute-form target', bytes: message({ method: 'GET', target: 'http://127.0.0.1/svc/v1/x' }) },
    { name: 'absolute-form target naming another origin', bytes: message({ method: 'GET', target: 'http://evil.example/svc/v1/x' }) },
    { name: 'asterisk-form (OPTIONS *)', bytes: message({ method: 'OPTIONS', target: '*' }) },
  ];

  describe('header section and request line', () => {
    it.each(PARSING_REFUSED)('refuses $name', async ({ name, bytes, status = 400, code = 'invalid_request' }) => {
      const since = mark();
      const result = await send(bytes);
      const taken = LLHTTP_8 ? LLHTTP_8_TAKES.get(name) : undefined;
      if (taken !== undefined) return expectTakenByLlhttp8(result, since, taken);
      await expectRefusal(result, status, code);
      await expectNothingForwarded(since);
    });

    it.each([
      { name: 'two spaces between method and target (RFC 9112 3: MAY parse on whitespace)', bytes: message({ method: 'GET' }).replace('GET /svc', 'GET  /svc') },
      { name: 'two spaces between target and version', bytes: message({ method: 'GET' }).replace('/x HTTP', '/x  HTTP') },
      { name: 'an empty line before the request line (RFC 9112 2.2)', bytes: `\r\n${message({ method: 'GET' })}` },
      { name: 'HTTP/1.0', bytes: message({ method: 'GET', version: 'HTTP/1.0' }) },
      { name: 'HTTP/1.0 without Host', bytes: message({ method: 'GET', version: 'HTTP/1.0' }).replace('Host: 127.0.0.1\r\n', '') },
      { name: 'an empty Host value (RFC 9112 3.2 allows it)', bytes: message({ method: 'GET' }).replace('Host: 127.0.0.1', 'Host:') },
      { name: 'an obs-text byte in a header value', bytes: message({ method: 'GET', headers: ['X-Name: caf\xe9'] }) },
    ])('forwards $name as one request', async ({ bytes }) => {
      const since = mark();
      const result = await send(bytes);
      await expectForwardedOnce(result, since, { method: 'GET', target: '/v1/x', body: '' });
    });
  });

  // -------------------------------------------------------------------------------------------------
  // 3. Limits: header count and bytes, body size

  describe('limits: header count and bytes, body size', () => {
    const filler = (n: number, from = 0): string[] => Array.from({ length: n }, (_, i) => `X-Filler-${from + i}: ${from + i}`);
    // message() writes Host, Connection and Authorization: three fields.
    const BASE_FIELDS = 3;

    it(`forwards a request with exactly limits.max_headers (${MAX_HEADERS}) fields, all of them`, async () => {
      const since = mark();
      const result = await send(message({ method: 'GET', headers: filler(MAX_HEADERS - BASE_FIELDS) }));
      const seen = await expectForwardedOnce(result, since, { method: 'GET', target: '/v1/x', body: '' });
      // Nothing truncated: the last filler made it.
      expect(seen.header(`x-filler-${MAX_HEADERS - BASE_FIELDS - 1}`)).toEqual([String(MAX_HEADERS - BASE_FIELDS - 1)]);
    });

    // "including the silent truncation of headers past the count limit": the field past the limit is the
    // attack (an override, a Connection nomination, a framing header); the request must be refused, not
    // forwarded without it.
    it.each([
      { name: 'an Authorization override', last: 'Authorization: Bearer sk-evil-override', method: 'GET', body: '' },
      { name: 'Connection: authorization', last: 'Connection: authorization', method: 'GET', body: '' },
      { name: 'X-HTTP-Method-Override: DELETE', last: 'X-HTTP-Method-Override: DELETE', method: 'GET', body: '' },
      { name: 'Transfer-Encoding: chunked framing the body', last: 'Transfer-Encoding: chunked', method: 'POST', body: CHUNKED_HELLO },
    ])(`refuses field ${MAX_HEADERS + 1} being $name with 431 instead of dropping it`, async ({ last, method, body }) => {
      const since = mark();
      const result = await send(message({ method, headers: [...filler(MAX_HEADERS - BASE_FIELDS), last], body }));
      await expectRefusal(result, 431, 'headers_too_large');
      await expectNothingForwarded(since);
    });

    it('refuses 2500 fields (past node\'s own maxHeadersCount of 2000) with 431', async () => {
      const since = mark();
      const result = await send(message({ method: 'GET', headers: [...filler(2_500), 'Authorization: Bearer sk-evil-2501'] }));
      await expectRefusal(result, 431, 'headers_too_large');
      await expectNothingForwarded(since);
    });

    it('forwards a header section just under limits.max_header_bytes', async () => {
      const since = mark();
      const size = Buffer.byteLength(message({ method: 'GET', headers: ['X-Big: '] }));
      const result = await send(message({ method: 'GET', headers: [`X-Big: ${'a'.repeat(MAX_HEADER_BYTES - size - 256)}`] }));
      await expectForwardedOnce(result, since, { method: 'GET', target: '/v1/x', body: '' });
    });

    it.each([
      { name: 'one header field', bytes: message({ method: 'GET', headers: [`X-Big: ${'a'.repeat(MAX_HEADER_BYTES + 256)}`] }) },
      { name: 'many fields under the count limit', bytes: message({ method: 'GET', headers: Array.from({ length: 90 }, (_, i) => `X-F-${i}: ${'b'.repeat(200)}`) }) },
      { name: 'the request target', bytes: message({ method: 'GET', target: `/svc/v1/${'a'.repeat(MAX_HEADER_BYTES + 256)}` }) },
    ])('refuses header bytes past limits.max_header_bytes in $name with 431', async ({ bytes }) => {
      const since = mark();
      const result = await send(bytes);
      await expectRefusal(result, 431, 'headers_too_large');
      await expectNothingForwarded(since);
    });

    it.each([
      { name: 'Content-Length one past the service max_body_bytes', bytes: message({ headers: [`Content-Length: ${SVC_MAX_BODY_BYTES + 1}`], body: 'a'.repeat(SVC_MAX_BODY_BYTES + 1) }) },
      { name: 'Content-Length past limits.max_body_bytes (service without its own)', bytes: message({ target: '/big/v1/x', headers: [`Content-Length: ${MAX_BODY_BYTES + 1}`], body: 'a'.repeat(MAX_BODY_BYTES + 1) }) },
      { name: 'Content-Length of 10^15, no body sent', bytes: message({ headers: ['Content-Length: 1000000000000000'] }) },
      { name: 'one chunk past the service limit', bytes: message({ headers: ['Transfer-Encoding: chunked'], body: `7d0\r\n${'a'.repeat(2_000)}\r\n0\r\n\r\n` }) },
      { name: 'many small chunks adding up past the service limit', bytes: message({ headers: ['Transfer-Encoding: chunked'], body: `${'64\r\n'.concat('c'.repeat(100), '\r\n').repeat(11)}0\r\n\r\n` }) },
      { name: 'one chunk past limits.max_body_bytes', bytes: message({ target: '/big/v1/x', headers: ['Transfer-Encoding: chunked'], body: `${(MAX_BODY_BYTES + 1024).toString(16)}\r\n${'a'.repeat(MAX_BODY_BYTES + 1024)}\r\n0\r\n\r\n` }) },
    ])('refuses $name with 413', async ({ bytes }) => {
      const since = mark();
      const result = await send(bytes);
      // README "Audit records": decision is the policy decision (alice holds the scope); code is the refusal.
      const { record } = await expectRefusal(result, 413, 'payload_too_large', 'allow');
      expect(record.agent).toBe('alice');
      // A chunked body is streamed until it crosses the limit: the upstream may see a start, never an end.
      await expectNoCompleteRequest(since, SVC_MAX_BODY_BYTES);
    });

    it('refuses a chunked body that crosses the limit after part of it was streamed upstream', async () => {
      const since = mark();
      const result = await send([message({ headers: ['Transfer-Encoding: chunked'] }), `384\r\n${'a'.repeat(900)}\r\n`, `12c\r\n${'b'.repeat(300)}\r\n0\r\n\r\n`], 150);
      const { record } = await expectRefusal(result, 413, 'payload_too_large', 'allow');
      expect(record.agent).toBe('alice');
      await expectNoCompleteRequest(since, SVC_MAX_BODY_BYTES);
    });
  });

  // -------------------------------------------------------------------------------------------------
  // 4. Pipelining: one socket write, several requests, several agents

  describe('pipelining', () => {
    /** Sends `bytes` in one write; returns the final answers with the audit record of each. */
    async function pipeline(bytes: string): Promise<Array<{ answer: RawResponse; record: AuditRecord }>> {
      const result = await send(bytes);
      const out: Array<{ answer: RawResponse; record: AuditRecord }> = [];
      for (const answer of finalAnswers(result)) {
        const id = requestIdOf(answer);
        expect(id).toMatch(/^[0-9a-f-]{36}$/);
        out.push({ answer, record: await auditRecordOf(proxy, id as string) });
      }
      return out;
    }

    function codeOf(answer: RawResponse): string | null {
      if (answer.status < 400) return null;
      expect(contentTypeOf(answer)).toMatch(PROBLEM_JSON);
      return (JSON.parse(answer.body) as ProblemShape).code;
    }

    it('authenticates each of four pipelined requests (alice, bob, a stranger, alice) on its own, in order', async () => {
      const since = mark();
      const results = await pipeline(
        message({ method: 'GET', target: '/svc/v1/one', close: false }) +
          message({ method: 'GET', target: '/svc/v1/two', token: bob.token, close: false }) +
          message({ method: 'GET', target: '/svc/v1/three', token: stranger.token, close: false }) +
          message({ method: 'GET', target: '/svc/v1/four' }),
      );
      expect(results.map(({ answer }) => [answer.status, codeOf(answer)])).toEqual([
        [200, null],
        [403, 'scope_denied'],
        [401, 'unauthenticated'],
        [200, null],
      ]);
      expect(results.map(({ record }) => [record.agent, record.path])).toEqual([
        ['alice', '/svc/v1/one'],
        ['bob', '/svc/v1/two'],
        [null, '/svc/v1/three'],
        ['alice', '/svc/v1/four'],
      ]);
      await delay(50);
      const seen = upstream.requests.slice(since.complete);
      expect(seen.map((r) => r.target)).toEqual(['/v1/one', '/v1/four']);
      for (const request of seen) expect(request.header('authorization')).toEqual([`Bearer ${keys.svc}`]);
    });

    it('answers a malformed request pipelined behind a good one on its own: the first keeps its 200 and record', async () => {
      const since = mark();
      const result = await send(message({ method: 'GET', target: '/svc/v1/good-first', close: false }) + 'GET /svc/v1/bad\x01 HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n');
      const answers = finalAnswers(result);
      expect(answers.map((answer) => answer.status)).toEqual([200, 400]);
      const [first, second] = await Promise.all(answers.map((answer) => auditRecordOf(proxy, requestIdOf(answer) as string)));
      expect(first).toMatchObject({ agent: 'alice', path: '/svc/v1/good-first', status: 200, code: null, incomplete: false });
      expect(second).toMatchObject({ decision: 'deny', code: 'invalid_request', status: 400 });
      expect(requestIdOf(answers[0] as RawResponse)).not.toBe(requestIdOf(answers[1] as RawResponse));
      await delay(50);
      expect(upstream.requests.slice(since.complete).map((r) => r.target)).toEqual(['/v1/good-first']);
    });

    it('does not carry a refused first request\'s agent over to the next (bob first, then alice)', async () => {
      const since = mark();
      const results = await pipeline(message({ method: 'GET', target: '/svc/v1/bob-first', token: bob.token, close: false }) + message({ method: 'GET', target: '/svc/v1/alice-second' }));
      expect(results.map(({ answer }) => answer.status)).toEqual([403, 200]);
      expect(results.map(({ record }) => record.agent)).toEqual(['bob', 'alice']);
      await delay(50);
      expect(upstream.requests.slice(since.complete).map((r) => [r.target, r.header('authorization')])).toEqual([['/v1/alice-second', [`Bearer ${keys.svc}`]]]);
    });

    it('injects each agent\'s own credential and refuses each agent the other\'s service', async () => {
      const since = mark();
      const results = await pipeline(
        message({ method: 'GET', target: '/other/v1/bob-own', token: bob.token, close: false }) +
          message({ method: 'GET', target: '/other/v1/alice-on-bobs', close: false }) +
          message({ method: 'GET', target: '/svc/v1/alice-own' }),
      );
      expect(results.map(({ answer }) => [answer.status, codeOf(answer)])).toEqual([
        [200, null],
        [403, 'scope_denied'],
        [200, null],
      ]);
      expect(results.map(({ record }) => record.agent)).toEqual(['bob', 'alice', 'alice']);
      await delay(50);
      const seen = upstream.requests.slice(since.complete).map((r) => [r.target, r.header('authorization')]);
      expect(seen).toHaveLength(2);
      expect(seen).toEqual(expect.arrayContaining([['/v1/bob-own', [`Bearer ${keys.other}`]], ['/v1/alice-own', [`Bearer ${keys.svc}`]]]));
    });

    it.each([
      { who: 'no token at all', token: null, status: 401, code: 'unauthenticated', agent: null },
      { who: 'bob\'s token', token: bob.token, status: 403, code: 'scope_denied', agent: 'bob' },
      { who: 'a stranger\'s token', token: stranger.token, status: 401, code: 'unauthenticated', agent: null },
    ])('never runs a request hidden after a too-small Content-Length as alice ($who)', async ({ token, status, code, agent }) => {
      const since = mark();
      const hidden = message({ method: 'GET', target: '/svc/v1/hidden', token });
      const results = await pipeline(message({ target: '/svc/v1/first', headers: ['Content-Length: 5'], body: `hello${hidden}`, close: false }));
      expect(results.map(({ answer }) => [answer.status, codeOf(answer)])).toEqual([
        [200, null],
        [status, code],
      ]);
      expect(results.map(({ record }) => [record.agent, record.path])).toEqual([
        ['alice', '/svc/v1/first'],
        [agent, '/svc/v1/hidden'],
      ]);
      await delay(50);
      const seen = upstream.requests.slice(since.complete);
      expect(seen.map((r) => [r.target, r.body.toString('latin1')])).toEqual([['/v1/first', 'hello']]);
    });

    it('treats a request inside a large enough Content-Length as body, never as a request', async () => {
      const since = mark();
      const body = `hello${SMUGGLED}`;
      const result = await send(message({ headers: [`Content-Length: ${body.length}`], body }));
      await expectForwardedOnce(result, since, { method: 'POST', target: '/v1/x', body });
      expect(upstream.requests.map((r) => r.target)).not.toContain('/v1/smuggled');
    });

    // The second request gets no answer and no audit record of its own: the first answer said
    // "connection: close" and the connection is closed after it, so those bytes arrived on a connection
    // the proxy had already given up (RFC 9112 9.6). That bare close is the expected outcome.
    it('answers a malformed first request once and never runs the pipelined second one', async () => {
      const since = mark();
      const result = await send(message({ method: 'GET', target: '/svc/v1/first', headers: ['X-Bad: a\x00b'], close: false }) + message({ method: 'GET', target: '/svc/v1/second' }));
      expect(finalAnswers(result).map((a) => a.status)).toEqual([400]);
      await expectRefusal(result, 400, 'invalid_request');
      await expectNothingForwarded(since);
    });

    it('closes after a CL.TE request and never runs the request smuggled behind it', async () => {
      const since = mark();
      const result = await send(message({ headers: ['Content-Length: 6', 'Transfer-Encoding: chunked'], body: `0\r\n\r\n${SMUGGLED}`, close: false }) + message({ method: 'GET', target: '/svc/v1/after' }));
      expect(finalAnswers(result).map((a) => a.status)).toEqual([400]);
      await expectRefusal(result, 400, 'invalid_request');
      await expectNothingForwarded(since);
    });
  });

  // -------------------------------------------------------------------------------------------------
  // 5. Slow clients: headers or body sent slower than the deadlines. Run together to keep the file fast.

  describe('slow clients: headers', () => {
    it.concurrent.each([
      {
        name: 'headers trickled one line every 200 ms (slowloris)',
        parts: [`GET /svc/v1/x HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer ${alice.token}\r\n`, ...Array.from({ length: 40 }, (_, i) => `X-Slow-${i}: y\r\n`)],
        gapMs: 200,
      },
      { name: 'the request line trickled byte by byte', parts: [...'GET /svc/v1/x HTTP/1.1'], gapMs: 250 },
      { name: 'a connection that sends nothing', parts: [], gapMs: 0 },
    ])(`answers 408 within headers_timeout (${HEADERS_TIMEOUT_S} s) to $name`, async ({ parts, gapMs }) => {
      const since = mark();
      const result = await send(parts, gapMs, 6_000);
      expect(result.closedByProxy, 'the proxy never closed the slow connection').toBe(true);
      // node checks deadlines every connectionsCheckingInterval (half the deadline here): 1 s + 0.5 s, plus slack.
      expect(result.ms).toBeLessThan(4_000);
      await expectRefusal(result, 408, 'request_timeout');
      await expectNothingForwarded(since);
    });
  });

  // The body cases start forwarding (Airlock streams bodies), so they run apart from the header cases,
  // which expect the upstream to see nothing at all.
  describe('slow clients: bodies', () => {
    it.concurrent.each([
      { name: 'a Content-Length body one byte every 150 ms', head: message({ headers: ['Content-Length: 40'] }), piece: 'a' },
      { name: 'a chunked body one 1-byte chunk every 150 ms', head: message({ headers: ['Transfer-Encoding: chunked'] }), piece: '1\r\na\r\n' },
    ])(`answers 408 within request_timeout (${REQUEST_TIMEOUT_S} s) to $name`, async ({ head, piece }) => {
      const since = mark();
      const result = await send([head, ...Array.from({ length: 40 }, () => piece)], 150, 8_000);
      expect(result.closedByProxy).toBe(true);
      expect(result.ms).toBeLessThan(5_000);
      const { record } = await expectRefusal(result, 408, 'request_timeout', 'allow');
      expect(record).toMatchObject({ agent: 'alice', incomplete: true });
      await expectNoCompleteRequest(since, 40);
    });

    it.concurrent('audits a body that misses request_timeout once, under the agent and the id it was given', async () => {
      const before = proxy.auditRecords().length;
      const result = await send([message({ target: '/svc/v1/slow-body', headers: ['Content-Length: 40'] }), ...Array.from({ length: 40 }, () => 'a')], 150, 8_000);
      const { record } = await expectRefusal(result, 408, 'request_timeout', 'allow');
      expect(record).toMatchObject({ agent: 'alice', method: 'POST', path: '/svc/v1/slow-body' });
      await delay(300);
      expect(proxy.auditRecords().slice(before).filter((r) => r.path === '/svc/v1/slow-body' || r.request_id === record.request_id)).toHaveLength(1);
    });
  });

  // -------------------------------------------------------------------------------------------------
  // 6. Parser edge cases node would answer (or let through) on its own: each is Airlock's answer, with a
  // request id and one audit record (these were bugs, fixed in src/ingress/create-listener.ts and
  // src/pipeline/run-pipeline.ts checkRequestShape / createRawRefusalHandler).

  describe('parser edge cases', () => {
    /** The correct outcome for all of these: Airlock's own problem+json, a request id, an audit record, nothing forwarded. */
    async function expectAirlockRefusal(bytes: string, status: number, code: string): Promise<void> {
      const since = mark();
      const result = await send(bytes);
      await expectRefusal(result, status, code);
      await expectNothingForwarded(since);
    }

    it('refuses an HTTP/1.1 request without Host as Airlock (problem+json, request id, audit)', async () => {
      await expectAirlockRefusal(message({ method: 'GET' }).replace('Host: 127.0.0.1\r\n', ''), 400, 'invalid_request');
    });

    it('answers an unknown Expect as Airlock (problem+json, request id, audit)', async () => {
      const since = mark();
      const result = await send(message({ headers: ['Expect: 200-ok', 'Content-Length: 5'], body: 'hello' }));
      const answer = finalAnswers(result)[0];
      expect(answer).toBeDefined();
      expect(contentTypeOf(answer!) ?? `none (status ${answer!.status})`).toMatch(PROBLEM_JSON);
      const id = requestIdOf(answer!);
      expect(id).toMatch(/^[0-9a-f-]{36}$/);
      await auditRecordOf(proxy, id as string, 1_000);
      await expectNothingForwarded(since);
    });

    it('refuses an HTTP/0.9 request line followed by header lines', async () => {
      await expectAirlockRefusal(`GET /svc/v1/x\r\nHost: 127.0.0.1\r\nAuthorization: Bearer ${alice.token}\r\nConnection: close\r\n\r\n`, 400, 'invalid_request');
    });

    it('refuses a text request line claiming HTTP/2.0', async () => {
      await expectAirlockRefusal(message({ headers: ['Content-Length: 5'], body: 'hello', version: 'HTTP/2.0' }), 400, 'invalid_request');
    });

    it('refuses an HTTP/1.0 request framed with Transfer-Encoding', async () => {
      await expectAirlockRefusal(message({ version: 'HTTP/1.0', headers: ['Transfer-Encoding: chunked'], body: CHUNKED_HELLO }), 400, 'invalid_request');
    });

    it('answers and audits a request with Transfer-Encoding: identity exactly once', async () => {
      const before = proxy.auditRecords().length;
      const result = await send(message({ headers: ['Transfer-Encoding: identity'], body: 'hello' }));
      await expectRefusal(result, 400, 'invalid_request');
      expect(finalAnswers(result)).toHaveLength(1);
      await delay(300);
      expect(proxy.auditRecords().length - before).toBe(1);
    });

    // Airlock streams request bodies, so a chunk that breaks after valid data (even in one write: node's
    // parser reports it only after the pipeline has dispatched) may find the upstream request begun; it is
    // cut and never completes (THREAT_MODEL.md, Known limits), and the agent gets one answer, one record.
    it('cuts, never completes, a request whose chunked framing breaks after valid data (one write)', async () => {
      const since = mark();
      const before = proxy.auditRecords().length;
      const result = await send(message({ headers: ['Transfer-Encoding: chunked'], body: '3\r\nhello\r\n0\r\n\r\n' }));
      const { record } = await expectRefusal(result, 400, 'invalid_request', 'allow');
      expect(record).toMatchObject({ agent: 'alice', incomplete: true });
      expect(finalAnswers(result)).toHaveLength(1);
      await expectNoCompleteRequest(since, 5);
      await delay(150);
      expect(proxy.auditRecords().length - before).toBe(1);
    });
  });

  // -------------------------------------------------------------------------------------------------

  it('has at least 30 concrete smuggling and parsing cases', () => {
    expect(FRAMING_REFUSED.length + PARSING_REFUSED.length).toBeGreaterThanOrEqual(30);
  });

  it('leaves no trace of any credential in responses, logs or audit', async () => {
    // Every answer above was audited (each case awaited its record); give trailing writes a moment.
    await delay(100);
    assertNoLeak(Object.values(keys), [
      { name: 'responses', text: responses.join('\n') },
      { name: 'log', text: proxy.logLines.join('') },
      { name: 'audit', text: proxy.auditText() },
    ]);
  });

  it('stayed healthy: no unhandled rejection, event loop responsive', () => {
    watch.assertHealthy();
  });
});
