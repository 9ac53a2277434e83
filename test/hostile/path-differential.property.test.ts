/**
 * Differential property test of invariant 3 ("paths are canonical or rejected; the authorized path is
 * the forwarded path"), on the wire: fast-check generates request targets from a hostile alphabet (dot
 * segments raw and encoded, encoded slashes and backslashes, double encoding, matrix ";", NUL and
 * control escapes, overlong and fullwidth UTF-8, empty segments, escaped unreserved characters, lower-
 * case escapes, sub-delimiters, fragments, queries), sends each over a raw keep-alive socket to a real
 * Airlock in front of a recording upstream, and checks every outcome:
 *  - forwarded: the target on the upstream wire is exactly the authorized canonical path (the audit
 *    record's `path`, minus the service prefix) plus "?" and the query as sent; that path is canonical by
 *    an independent checker written here, and canonicalizing it again changes nothing;
 *  - refused: a 4xx RFC 9457 problem, and the upstream never saw the request;
 *  - targets made only of unreserved characters in plain segments are always forwarded unchanged (the
 *    canonicalizer does not refuse what is safe);
 *  - one audit record per request.
 *
 * FUZZ_TARGETS sets the number of targets (default 100,000; `npm run fuzz` runs 1,000,000).
 */
import { connect, type Socket } from 'node:net';
import fc from 'fast-check';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { generateAgentToken } from '../../src/identity/agent-token.js';
import { canonicalizeTarget } from '../../src/pipeline/canonicalize-target.js';
import { assertNoLeak } from '../helpers/assert-no-leak.js';
import { canary } from '../helpers/canary.js';
import { startProxy, type ProxyFixture } from '../helpers/start-proxy.js';
import { startUpstream, type Upstream } from '../helpers/start-upstream.js';
import { hostileWatch } from './support/hostile-watch.js';

const TARGETS = Number(process.env['FUZZ_TARGETS'] ?? 100_000);
const SOCKETS = 8;
const PREFIX = '/api';

/** Pieces of a path segment that a canonical path may hold (some only after normalization). */
const PLAIN = [
  'a', 'b', 'v1', 'models', 'x-y', 'A_Z', '0', '~', '-', '_', '.x', 'x.', '...',
  '@', ':', '!', '$', '&', "'", '(', ')', '*', '+', ',', '=',
  '%41', '%61', '%7E', '%7e', '%2D', '%5F', '%30', '%2e%2e%2e',
  '%c3%a9', '%C3%A9', '%E2%82%AC', '%20', '%3F', '%23', '%40', '%3A', '%22',
] as const;
/** Pieces that make a path ambiguous somewhere: dot segments, escaped separators, double encoding, matrix parameters, control bytes, bad UTF-8, fullwidth forms, fragments. */
const HOSTILE = [
  '.', '..', '%2e', '%2E', '%2e%2e', '.%2e', '%2E.',
  '%2f', '%2F', '%5c', '%5C', '\\', '%252f', '%25', '%2525',
  ';', '%3b', '%3B', ';x=1', '..;',
  '%00', '%0a', '%0D', '%09', '%7f', '%1f',
  '%c0%ae', '%C0%AF', '%e0%80%ae', '%ff', '%fe%ff', '%c3%28',
  '%ef%bc%8f', '%EF%BC%8E', '%ef%bc%bc', '\u00ef\u00bc\u008f', '\u00ef\u00bc\u008e', '\u00c3\u00a9',
  '%e2%80%ae', '%zz', '%4', '%',
] as const;

const tokenArb = fc.oneof({ weight: 6, arbitrary: fc.constantFrom(...PLAIN) }, { weight: 1, arbitrary: fc.constantFrom(...HOSTILE) });
const segmentArb = fc.array(tokenArb, { minLength: 0, maxLength: 4 }).map((parts) => parts.join(''));
const queryArb = fc.option(
  fc.array(fc.tuple(fc.constantFrom('q', 'page', 'a%20b', 'k', ''), fc.constantFrom('1', 'x', '%2F', '..', '%00', 'a/b', '', '%25')), { maxLength: 3 }).map((pairs) => pairs.map(([k, v]) => `${k}=${v}`).join('&')),
  { nil: null },
);
const targetArb = fc.record({
  segments: fc.array(segmentArb, { minLength: 1, maxLength: 5 }),
  trailingSlash: fc.boolean(),
  query: queryArb,
  fragment: fc.oneof({ weight: 19, arbitrary: fc.constant(null) }, { weight: 1, arbitrary: fc.constantFrom('#frag', '#/../x', '#%2F') }),
});
/** Only unreserved characters in non-dot segments: always canonical already. */
const benignArb = fc.array(fc.stringMatching(/^[A-Za-z0-9_~-][A-Za-z0-9._~-]{0,11}$/).filter((s) => s !== '.' && s !== '..'), { minLength: 1, maxLength: 5 });

interface Sample {
  readonly index: number;
  /** Path part as sent (prefix included), without the tag query. */
  readonly path: string;
  readonly query: string | null;
  readonly benign: boolean;
}

interface Answer {
  readonly status: number;
  readonly requestId: string;
  readonly contentType: string;
  readonly body: string;
}

/** An independent check that a path is in Airlock's canonical form (README, Security model 3). */
function canonicalProblem(path: string): string | null {
  if (!path.startsWith('/')) return 'does not start with /';
  if (path.includes('//')) return 'empty segment';
  if (/[\\;\x00-\x20\x7f#?]/.test(path)) return 'raw backslash, ";", control, space, "#" or "?"';
  if (/[^\x21-\x7e]/.test(path)) return 'raw non-ASCII byte';
  if (/%(?![0-9A-F]{2})/.test(path)) return 'lowercase or broken escape';
  for (const match of path.matchAll(/%([0-9A-F]{2})/g)) {
    const byte = parseInt(match[1] as string, 16);
    if (/[A-Za-z0-9._~-]/.test(String.fromCharCode(byte))) return `escaped unreserved %${match[1]}`;
    if ([0x5c, 0x25, 0x3b].includes(byte) || byte < 0x20 || byte === 0x7f) return `escaped reserved %${match[1]}`;
  }
  for (const segment of path.split('/').slice(1)) {
    if (segment === '.' || segment === '..') return 'dot segment';
    // An encoded slash is data in a segment only where reading it as "/" leaves a canonical path too.
    if (segment.includes('%2F') && segment.split('%2F').some((piece) => piece === '' || piece === '.' || piece === '..')) return 'empty or dot piece between encoded slashes';
  }
  return null;
}

/** A keep-alive connection that sends one request at a time and reads one response (Content-Length framed). */
class Connection {
  #socket: Socket | null = null;
  #buffer = Buffer.alloc(0);
  #waiter: { resolve: (answer: Answer) => void; reject: (error: Error) => void } | null = null;

  constructor(private readonly port: number) {}

  async send(request: string): Promise<Answer> {
    const socket = await this.#connected();
    return new Promise<Answer>((resolve, reject) => {
      this.#waiter = { resolve, reject };
      socket.write(Buffer.from(request, 'latin1'));
    });
  }

  close(): void {
    this.#socket?.destroy();
  }

  #connected(): Promise<Socket> {
    if (this.#socket !== null && !this.#socket.destroyed) return Promise.resolve(this.#socket);
    this.#buffer = Buffer.alloc(0);
    return new Promise((resolve, reject) => {
      const socket = connect(this.port, '127.0.0.1');
      socket.setNoDelay(true);
      socket.once('connect', () => resolve(socket));
      socket.once('error', reject);
      socket.on('data', (chunk: Buffer) => {
        if (this.#socket === socket) this.#onData(chunk);
      });
      socket.on('close', () => {
        if (this.#socket !== socket) return;
        this.#socket = null;
        const waiter = this.#waiter;
        this.#waiter = null;
        if (waiter !== null && !this.#tryParse(waiter)) waiter.reject(new Error('connection closed before a full response'));
      });
      this.#socket = socket;
    });
  }

  #onData(chunk: Buffer): void {
    this.#buffer = Buffer.concat([this.#buffer, chunk]);
    if (this.#waiter !== null && this.#tryParse(this.#waiter)) this.#waiter = null;
  }

  #tryParse(waiter: { resolve: (answer: Answer) => void }): boolean {
    const end = this.#buffer.indexOf('\r\n\r\n');
    if (end === -1) return false;
    const head = this.#buffer.subarray(0, end).toString('latin1');
    const length = Number(/\r\ncontent-length:\s*(\d+)/i.exec(head)?.[1] ?? 0);
    if (this.#buffer.length < end + 4 + length) return false;
    const body = this.#buffer.subarray(end + 4, end + 4 + length).toString('utf8');
    this.#buffer = this.#buffer.subarray(end + 4 + length);
    const status = Number(head.split(' ')[1]);
    const requestId = /\r\nx-airlock-request-id:\s*(\S+)/i.exec(head)?.[1] ?? '';
    const contentType = /\r\ncontent-type:\s*([^\r]+)/i.exec(head)?.[1] ?? '';
    if (/\r\nconnection:\s*close/i.test(head)) {
      // The server closes this one: the next request gets a new connection.
      const closing = this.#socket;
      this.#socket = null;
      closing?.end();
    }
    waiter.resolve({ status, requestId, contentType, body });
    return true;
  }
}

describe(`path differential: ${TARGETS.toLocaleString()} generated targets over the wire`, () => {
  const key = canary('path-diff');
  const agent = generateAgentToken();
  const watch = hostileWatch();
  let upstream: Upstream;
  let proxy: ProxyFixture;
  const samples: Sample[] = [];
  const answers = new Map<number, Answer>();
  const latencies = new Map<number, number>();

  beforeAll(async () => {
    watch.start();
    upstream = await startUpstream();
    proxy = await startProxy(
      {
        log: { level: 'warn' },
        anomalies: { enabled: false },
        audit: { max_bytes: 0 },
        services: { api: { upstream: upstream.url, prefix: PREFIX, credential: { secret: 'env:DIFF_KEY' }, routes: [{ method: 'GET', path: '/*', scope: 'api:read' }] } },
        agents: { fuzzer: { tokens: [agent.hash], credentials: [{ service: 'api', max_scope: ['api:read'] }] } },
      },
      { env: { DIFF_KEY: key } },
    );
    const hostile = fc.sample(targetArb, { numRuns: Math.ceil(TARGETS * 0.9), seed: Number(process.env['FUZZ_SEED'] ?? 20261126) });
    const benign = fc.sample(benignArb, { numRuns: TARGETS - hostile.length, seed: 7 });
    for (const t of hostile) {
      const path = `${PREFIX}/${t.segments.join('/')}${t.trailingSlash ? '/' : ''}${t.fragment ?? ''}`;
      samples.push({ index: samples.length, path, query: t.query, benign: false });
    }
    for (const segments of benign) samples.push({ index: samples.length, path: `${PREFIX}/${segments.join('/')}`, query: null, benign: true });

    const port = Number(new URL(proxy.url).port);
    const connections = Array.from({ length: SOCKETS }, () => new Connection(port));
    let next = 0;
    const started = Date.now();
    await Promise.all(
      connections.map(async (connection) => {
        while (next < samples.length) {
          const sample = samples[next++] as Sample;
          const tag = `t=${sample.index}`;
          const target = `${sample.path.replace(/#.*$/, '')}?${sample.query === null ? tag : `${sample.query}&${tag}`}${/#.*$/.exec(sample.path)?.[0] ?? ''}`;
          const request = `GET ${target} HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer ${agent.token}\r\n\r\n`;
          try {
            const sentAt = performance.now();
            answers.set(sample.index, await connection.send(request));
            latencies.set(sample.index, performance.now() - sentAt);
          } catch (error) {
            throw new Error(`target #${sample.index} ${JSON.stringify(target)}: ${(error as Error).message}`);
          }
        }
        connection.close();
      }),
    );
    const reasons = new Map<string, number>();
    for (const a of answers.values()) if (a.status !== 200) { const d = `${a.status} ${(JSON.parse(a.body) as { detail: string }).detail.slice(0, 90)}`; reasons.set(d, (reasons.get(d) ?? 0) + 1); }
    console.log([...reasons.entries()].sort((x, y) => y[1] - x[1]).slice(0, 12));
    const slowest = [...latencies.entries()].sort((x, y) => y[1] - x[1])[0];
    console.log(`path differential: ${samples.length} targets in ${((Date.now() - started) / 1000).toFixed(1)} s, ${upstream.requests.length} forwarded, slowest #${slowest?.[0]} ${slowest?.[1].toFixed(0)} ms`);
    // A forwarded request's record is written just after its answer is sent: let the last ones land.
    await proxy.waitForAudit(samples.length, 15_000);
  }, 600_000);

  afterAll(async () => {
    await proxy?.close();
    await upstream?.close();
  });

  it('forwards exactly the authorized canonical path plus the query as sent, and refuses the rest with a problem', () => {
    const byTag = new Map<number, string>();
    for (const request of upstream.requests) {
      const tag = /[?&]t=(\d+)$/.exec(request.target)?.[1];
      expect(tag, `an upstream request without its tag: ${request.target}`).toBeDefined();
      expect(byTag.has(Number(tag)), 'one request forwarded twice').toBe(false);
      byTag.set(Number(tag), request.target);
    }
    const audit = new Map(proxy.auditRecords().map((r) => [r.request_id, r]));
    let forwarded = 0;
    let refused = 0;
    for (const sample of samples) {
      const answer = answers.get(sample.index) as Answer;
      const wire = byTag.get(sample.index);
      const record = audit.get(answer.requestId);
      expect(record, `no audit record for target #${sample.index} ${JSON.stringify(sample.path)} (answered ${answer.status} id ${answer.requestId} after ${latencies.get(sample.index)?.toFixed(0)} ms)`).toBeDefined();
      if (wire !== undefined) {
        forwarded++;
        expect(answer.status).toBe(200);
        const authorized = record?.path as string;
        expect(authorized.startsWith(`${PREFIX}/`)).toBe(true);
        const query = sample.query === null ? `t=${sample.index}` : `${sample.query}&t=${sample.index}`;
        // The invariant: what went upstream is what was authorized, plus the query as sent.
        expect(wire).toBe(`${authorized.slice(PREFIX.length)}?${query}`);
        expect(canonicalProblem(authorized), `forwarded a non-canonical path ${JSON.stringify(authorized)} for ${JSON.stringify(sample.path)}`).toBeNull();
        expect(canonicalizeTarget(authorized).path).toBe(authorized);
      } else {
        refused++;
        expect(answer.status, `${JSON.stringify(sample.path)} -> ${answer.status}`).toBeGreaterThanOrEqual(400);
        expect(answer.status).toBeLessThan(500);
        expect(answer.contentType).toMatch(/^application\/problem\+json/);
        expect(record?.decision).toBe('deny');
      }
      if (sample.benign) expect(wire, `benign ${sample.path} was not forwarded (${answer.status})`).toBe(`${sample.path.slice(PREFIX.length)}?t=${sample.index}`);
    }
    expect(forwarded + refused).toBe(samples.length);
    // Both outcomes are exercised in bulk, so neither branch is vacuous.
    expect(forwarded).toBeGreaterThan(samples.length / 10);
    expect(refused).toBeGreaterThan(samples.length / 10);
  });

  it('writes one audit record per request and leaks the credential nowhere', () => {
    expect(proxy.auditRecords()).toHaveLength(samples.length);
    for (const request of upstream.requests) expect(request.header('authorization')).toEqual([`Bearer ${key}`]);
    assertNoLeak([key, agent.token], [
      { name: 'agent answers', text: [...answers.values()].map((a) => a.body).join('\n') },
      { name: 'logs', text: proxy.logLines.join('') },
      { name: 'audit', text: proxy.auditText() },
    ]);
  });

  it('stays healthy: no unhandled rejection, event-loop p99 under 250 ms', () => {
    watch.assertHealthy();
  });
});
