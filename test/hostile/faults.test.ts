/**
 * Attack class: faults. Everything Airlock depends on misbehaves - the upstream (refuses, hangs, resets
 * mid-body, speaks garbage, sends a broken status line, an endless body, headers byte by byte, a huge
 * header block, closes right after its headers), the credential stores (Vault and an OAuth2 token
 * endpoint slow, down, sealed, answering 500 or garbage or an endless body), the audit file (/dev/full),
 * a config reload (restart-only or unbuildable), the agent itself (leaves mid-upload, mid-download, while
 * waiting) and a flood of 10,000 idle connections.
 *
 * For every case: the process stays up (hostileWatch), the agent gets a clear RFC 9457 problem when one
 * can still be sent and otherwise a cut connection - never a clean-looking truncated 200 (chunked
 * framing without its last chunk, or a Content-Length not reached) - the request has an audit record
 * (`incomplete: true` when cut), no canary reaches a response, log or audit line, and other requests
 * running at the same time are answered normally (bystanders per case, and a background loop for the
 * whole file).
 *
 * Agent requests are written on raw sockets, so the exact framing the agent received can be checked.
 * Misbehaving upstreams and stores are raw TCP or node:http servers scripted per path. Behaviour that
 * this suite found wrong was fixed; each such case says so in a comment above it.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { once } from 'node:events';
import { readdirSync, rmSync, writeFileSync } from 'node:fs';
import { createServer as createHttpServer, type IncomingMessage, type Server as HttpServer, type ServerResponse } from 'node:http';
import { connect, createServer as createNetServer, type AddressInfo, type Server as NetServer, type Socket } from 'node:net';
import { join } from 'node:path';
import { createInterface } from 'node:readline';
import { afterAll, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import { formatProblem } from '../../src/config/config-problem.js';
import { buildConfig } from '../../src/config/load-config.js';
import type { AirlockConfig } from '../../src/config/types.js';
import { generateAgentToken } from '../../src/identity/agent-token.js';
import type { AuditRecord } from '../../src/observability/audit-record.js';
import { assertNoLeak, type Surface } from '../helpers/assert-no-leak.js';
import { canary } from '../helpers/canary.js';
import { eventually, freePort, sleep } from '../helpers/operator.js';
import { startProxy, tempDir, type ProxyFixture } from '../helpers/start-proxy.js';
import { startUpstream, type Upstream } from '../helpers/start-upstream.js';
import { FIXED_CA_PEM } from '../helpers/test-certificates.js';
import { startOAuth2Server, type OAuth2Mode, type OAuth2Server } from '../support/oauth2-server.js';
import { startVaultServer, type VaultServer } from '../support/vault-server.js';
import { auditRecordOf, expectProblem, hostileWatch, type ProblemShape } from './support/hostile-watch.js';

// --- the agent side: raw exchanges --------------------------------------------------------------------

interface Answer {
  /** 0 when no complete status line and header block arrived. */
  readonly status: number;
  readonly headers: Readonly<Record<string, string[]>>;
  /** The body as framed (chunked decoded; as much as arrived). */
  readonly body: Buffer;
  /** Whether the framing says the message is whole: last chunk seen, Content-Length reached, or close-delimited. */
  readonly complete: boolean;
  readonly framing: 'chunked' | 'length' | 'close' | 'none';
  readonly raw: Buffer;
  /** The client gave up waiting (timeoutMs) before the connection closed. */
  readonly timedOut: boolean;
  readonly ms: number;
  readonly requestId: string | undefined;
}

function parseAnswer(raw: Buffer): Omit<Answer, 'raw' | 'timedOut' | 'ms' | 'requestId'> {
  const headEnd = raw.indexOf('\r\n\r\n');
  if (headEnd === -1) return { status: 0, headers: {}, body: Buffer.alloc(0), complete: false, framing: 'none' };
  const [statusLine = '', ...lines] = raw.subarray(0, headEnd).toString('latin1').split('\r\n');
  const status = Number(statusLine.split(' ')[1]);
  const headers: Record<string, string[]> = {};
  for (const line of lines) {
    const colon = line.indexOf(':');
    (headers[line.slice(0, colon).trim().toLowerCase()] ??= []).push(line.slice(colon + 1).trim());
  }
  const rest = raw.subarray(headEnd + 4);
  if ((headers['transfer-encoding'] ?? []).some((v) => v.toLowerCase().includes('chunked'))) {
    const parts: Buffer[] = [];
    let pos = 0;
    let complete = false;
    for (;;) {
      const lineEnd = rest.indexOf('\r\n', pos);
      if (lineEnd === -1) break;
      const size = parseInt(rest.subarray(pos, lineEnd).toString('latin1').split(';')[0] ?? '', 16);
      if (!Number.isFinite(size)) break;
      if (size === 0) {
        // The last chunk, then trailers (if any) and the empty line that ends the message.
        const tail = rest.subarray(lineEnd + 2).toString('latin1');
        complete = tail.startsWith('\r\n') || tail.includes('\r\n\r\n');
        break;
      }
      const start = lineEnd + 2;
      if (start + size + 2 > rest.length) {
        parts.push(rest.subarray(start, Math.min(rest.length, start + size)));
        break;
      }
      parts.push(rest.subarray(start, start + size));
      pos = start + size + 2;
    }
    return { status, headers, body: Buffer.concat(parts), complete, framing: 'chunked' };
  }
  const length = headers['content-length']?.[0];
  if (length !== undefined) {
    const expected = Number(length);
    return { status, headers, body: rest.subarray(0, expected), complete: rest.length >= expected, framing: 'length' };
  }
  return { status, headers, body: rest, complete: true, framing: 'close' };
}

interface ExchangeOptions {
  readonly timeoutMs?: number;
  /** The agent goes away this long after sending. */
  readonly destroyAfterMs?: number;
  /** The agent goes away once this many bytes (head included) arrived. */
  readonly destroyAfterBytes?: number;
  /** Bytes kept for the answer (the rest is read and dropped): an endless body must not fill the test's own memory. */
  readonly keepBytes?: number;
}

/** What each exchange contributes to the leak check: its start (head and first body bytes) and its end. */
const LEAK_CHECK_HEAD = 1024 * 1024;

/** Everything any agent received, for the leak check. */
const agentSaw: string[] = [];

function exchange(baseUrl: string, request: string | Buffer, options: ExchangeOptions = {}): Promise<Answer> {
  const { hostname, port } = new URL(baseUrl);
  const started = performance.now();
  return new Promise((resolve) => {
    const socket = connect(Number(port), hostname);
    const chunks: Buffer[] = [];
    const keep = options.keepBytes ?? Infinity;
    let kept = 0;
    let last: Buffer = Buffer.alloc(0);
    let received = 0;
    let timedOut = false;
    const timer = setTimeout(() => {
      timedOut = true;
      socket.destroy();
    }, options.timeoutMs ?? 10_000);
    socket.on('connect', () => {
      socket.write(request);
      if (options.destroyAfterMs !== undefined) setTimeout(() => socket.destroy(), options.destroyAfterMs);
    });
    socket.on('data', (chunk: Buffer) => {
      if (kept < keep) {
        chunks.push(chunk);
        kept += chunk.length;
      }
      last = chunk;
      received += chunk.length;
      if (options.destroyAfterBytes !== undefined && received >= options.destroyAfterBytes) socket.destroy();
    });
    socket.on('error', () => undefined);
    socket.on('close', () => {
      clearTimeout(timer);
      const raw = Buffer.concat(chunks);
      agentSaw.push(raw.subarray(0, LEAK_CHECK_HEAD).toString('latin1'), last.toString('latin1'));
      const parsed = parseAnswer(raw);
      resolve({ ...parsed, raw, timedOut, ms: performance.now() - started, requestId: parsed.headers['x-airlock-request-id']?.[0] });
    });
  });
}

const agent = generateAgentToken();

function requestText(method: string, path: string, extra: Record<string, string> = {}, body = ''): string {
  const lines = [`${method} ${path} HTTP/1.1`, 'Host: 127.0.0.1', 'Connection: close', `Authorization: Bearer ${agent.token}`];
  for (const [name, value] of Object.entries(extra)) lines.push(`${name}: ${value}`);
  if (body !== '') lines.push(`Content-Length: ${Buffer.byteLength(body)}`);
  return `${lines.join('\r\n')}\r\n\r\n${body}`;
}

function get(baseUrl: string, path: string, options: ExchangeOptions = {}): Promise<Answer> {
  return exchange(baseUrl, requestText('GET', path), options);
}

function problemOf(answer: Answer): { status: number; contentType: string | undefined; body: string } {
  return { status: answer.status, contentType: answer.headers['content-type']?.[0], body: answer.body.toString('utf8') };
}

/** A refusal sent before anything else: a whole problem+json answer, its id on the header, and its audit record. */
async function expectRefusal(proxy: ProxyFixture, answer: Answer, status: number, code: string, detail?: RegExp): Promise<{ problem: ProblemShape; record: AuditRecord }> {
  expect(answer.complete, 'a refusal arrives whole').toBe(true);
  const problem = expectProblem(problemOf(answer), status, code);
  if (detail !== undefined) expect(problem.detail).toMatch(detail);
  expect(answer.requestId).toBe(problem.request_id);
  const record = await auditRecordOf(proxy, problem.request_id);
  expect(record).toMatchObject({ code, status, incomplete: false });
  return { problem, record };
}

/** A response cut after its headers went out: 200 on the wire, framing never finished, audited incomplete. */
async function expectCut(proxy: ProxyFixture, answer: Answer, code: string | null): Promise<AuditRecord> {
  expect(answer.status).toBe(200);
  expect(answer.framing, 'a streamed answer is chunked, so a cut shows').toBe('chunked');
  expect(answer.complete, 'never a clean-looking truncated 200').toBe(false);
  expect(answer.timedOut).toBe(false);
  const record = await auditRecordOf(proxy, answer.requestId ?? '');
  expect(record).toMatchObject({ decision: 'allow', status: 200, upstream_status: 200, incomplete: true, code });
  return record;
}

// --- misbehaving upstream: a raw TCP server scripted by path ------------------------------------------

interface RogueConnection {
  /** The act: the path segment after /v1/. */
  readonly act: string;
  readonly target: string;
  /** The credential Airlock injected (Bearer value), so acts can echo it back. */
  readonly credential: string;
  bodyBytes: number;
  /** The last bytes of the request body received (latin1), to see whether a chunked body ended. */
  tail: string;
  /** Body bytes the act wrote (streaming acts). */
  written: number;
  closed: boolean;
}

type RogueAct = (socket: Socket, connection: RogueConnection) => void;

interface Rogue {
  readonly url: string;
  readonly connections: RogueConnection[];
  find(target: string): RogueConnection | undefined;
  close(): Promise<void>;
}

async function startRogue(acts: Readonly<Record<string, RogueAct>>): Promise<Rogue> {
  const connections: RogueConnection[] = [];
  const sockets = new Set<Socket>();
  const server: NetServer = createNetServer((socket) => {
    sockets.add(socket);
    socket.on('error', () => undefined);
    let head = Buffer.alloc(0);
    let connection: RogueConnection | null = null;
    socket.on('close', () => {
      sockets.delete(socket);
      if (connection !== null) connection.closed = true;
    });
    socket.on('data', (data: Buffer) => {
      if (connection !== null) {
        connection.bodyBytes += data.length;
        connection.tail = (connection.tail + data.toString('latin1')).slice(-64);
        return;
      }
      head = Buffer.concat([head, data]);
      const end = head.indexOf('\r\n\r\n');
      if (end === -1) return;
      const text = head.subarray(0, end).toString('latin1');
      const target = text.split(' ')[1] ?? '';
      const act = /\/v1\/([^/?]+)/.exec(target)?.[1] ?? '';
      const credential = /^authorization: Bearer (\S+)$/im.exec(text)?.[1] ?? '';
      connection = { act, target, credential, bodyBytes: head.length - end - 4, tail: head.subarray(end + 4).toString('latin1').slice(-64), written: 0, closed: false };
      connections.push(connection);
      (acts[act] ?? ((s: Socket) => s.end('HTTP/1.1 404 Not Found\r\ncontent-length: 0\r\nconnection: close\r\n\r\n')))(socket, connection);
    });
  });
  server.listen(0, '127.0.0.1');
  await once(server, 'listening');
  return {
    url: `http://127.0.0.1:${(server.address() as AddressInfo).port}`,
    connections,
    find: (target) => connections.find((c) => c.target.endsWith(target)),
    async close() {
      for (const socket of sockets) socket.destroy();
      await new Promise<void>((resolve) => server.close(() => resolve()));
    },
  };
}

const CHUNKED_200 = 'HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\ntransfer-encoding: chunked\r\n\r\n';

function chunk(data: string | Buffer): Buffer {
  const bytes = typeof data === 'string' ? Buffer.from(data, 'latin1') : data;
  return Buffer.concat([Buffer.from(`${bytes.length.toString(16)}\r\n`), bytes, Buffer.from('\r\n')]);
}

const FRAME = Buffer.alloc(64 * 1024, 0x61);
/** More than socket buffers on both hops can hold, so an upstream that went on writing would show. */
const BIG_BODY = 64 * 1024 * 1024;
const FRAMED = chunk(FRAME);

/** Writes as fast as the peer takes it (respecting backpressure) until `limit` body bytes or forever. */
function pump(socket: Socket, connection: RogueConnection, piece: Buffer, bytesPerPiece: number, limit = Infinity): void {
  const step = (): void => {
    while (!socket.destroyed && connection.written < limit) {
      connection.written += bytesPerPiece;
      if (!socket.write(piece)) {
        socket.once('drain', step);
        return;
      }
    }
  };
  step();
}

const ROGUE_ACTS: Record<string, RogueAct> = {
  hang: () => undefined,
  'reset-small-length': (socket) => {
    socket.write(`HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\ncontent-length: 1000\r\n\r\n${'x'.repeat(300)}`);
    setTimeout(() => socket.resetAndDestroy(), 50);
  },
  'close-after-headers-length': (socket) => socket.end('HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: 100\r\n\r\n'),
  // Not HTTP at all, and carrying the credential it was sent: none of it may reach the agent.
  garbage: (socket, c) => socket.end(`SSH-2.0-OpenSSH_9.6 ${c.credential}\r\n\u0000\u0001\u0002\r\n\r\n`),
  'bad-status': (socket, c) => socket.end(`HTTP/1.1 2x0 OK\r\ncontent-length: ${c.credential.length}\r\n\r\n${c.credential}`),
  'status-099': (socket, c) => socket.end(`HTTP/1.1 099 Early\r\ncontent-length: ${c.credential.length}\r\n\r\n${c.credential}`),
  'status-four-digits': (socket, c) => socket.end(`HTTP/1.1 2000 OK\r\ncontent-length: ${c.credential.length}\r\n\r\n${c.credential}`),
  'no-status-line': (socket, c) => socket.end(`content-type: text/plain\r\n\r\n${c.credential}`),
  'slow-headers': (socket) => {
    socket.write('HTTP/1.1 200 OK\r\nx-slow: ');
    const timer = setInterval(() => socket.write('a'), 100);
    socket.on('close', () => clearInterval(timer));
  },
  'huge-headers': (socket, c) => {
    let text = 'HTTP/1.1 200 OK\r\n';
    for (let i = 0; i < 300; i++) text += `x-filler-${i}: ${'v'.repeat(1000)}\r\n`;
    socket.end(`${text}x-echo: ${c.credential}\r\ncontent-length: 2\r\nconnection: close\r\n\r\nok`);
  },
  'reset-large-length': (socket) => {
    socket.write(`HTTP/1.1 200 OK\r\ncontent-type: application/octet-stream\r\ncontent-length: 1000000\r\n\r\n${'x'.repeat(200_000)}`);
    setTimeout(() => socket.resetAndDestroy(), 100);
  },
  'reset-chunked': (socket) => {
    socket.write(Buffer.concat([Buffer.from(CHUNKED_200), chunk('x'.repeat(5000))]));
    setTimeout(() => socket.resetAndDestroy(), 100);
  },
  // The stream breaks while the first 24 characters of the credential are the last bytes sent.
  'reset-mid-secret': (socket, c) => {
    socket.write(Buffer.concat([Buffer.from(CHUNKED_200), chunk(`data: ${c.credential.slice(0, 24)}`)]));
    setTimeout(() => socket.resetAndDestroy(), 150);
  },
  'close-after-headers-chunked': (socket) => socket.end(CHUNKED_200),
  'stall-mid-body': (socket) => socket.write(Buffer.concat([Buffer.from(CHUNKED_200), chunk('partial body, then silence')])),
  // No Content-Length, no chunked: the body ends when the connection does (RFC 9112 6.3 rule 8).
  'close-delimited': (socket) => socket.end('HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\nconnection: close\r\n\r\nthe body ends when the connection closes'),
  endless: (socket, c) => {
    socket.write(CHUNKED_200);
    pump(socket, c, FRAMED, FRAME.length);
  },
  'big-length': (socket, c) => {
    socket.write(`HTTP/1.1 200 OK\r\ncontent-type: application/octet-stream\r\ncontent-length: ${BIG_BODY}\r\nconnection: close\r\n\r\n`);
    pump(socket, c, FRAME, FRAME.length, BIG_BODY);
  },
  'slow-stream': (socket) => {
    socket.write(CHUNKED_200.replace('\r\n\r\n', '\r\nconnection: close\r\n\r\n'));
    let sent = 0;
    const timer = setInterval(() => {
      sent++;
      socket.write(chunk(`event ${sent}\n`));
      if (sent === 10) {
        clearInterval(timer);
        socket.end('0\r\n\r\n');
      }
    }, 100);
    socket.on('close', () => clearInterval(timer));
  },
  // Reads the upload and never answers: the agent is the one that gives up.
  'upload-sink': () => undefined,
};

// --- misbehaving credential stores: node:http scripted by name ----------------------------------------

type StoreMode = 'ok' | 'e500' | 'garbage' | 'nofield' | 'notoken' | 'html' | 'truncated' | 'endless' | 'trickle' | 'delay-ok';

interface RogueStore {
  readonly url: string;
  readonly modes: Map<string, StoreMode>;
  /** Every value this store handed out (KV values and access tokens). */
  readonly issued: string[];
  close(): Promise<void>;
}

/** How long an endless or trickling store answer lasts before the store gives up itself. */
const STORE_STREAM_CAP_MS = 3_000;

async function startRogueStore(): Promise<RogueStore> {
  const modes = new Map<string, StoreMode>();
  const issued: string[] = [];
  const values = new Map<string, string>();
  const timers = new Set<NodeJS.Timeout>();
  const valueOf = (name: string): string => {
    let value = values.get(name);
    if (value === undefined) {
      value = canary(`store${name}`);
      values.set(name, value);
      issued.push(value);
    }
    return value;
  };
  const json = (res: ServerResponse, status: number, body: unknown): void => {
    const text = JSON.stringify(body);
    res.writeHead(status, { 'content-type': 'application/json', 'content-length': Buffer.byteLength(text) });
    res.end(text);
  };
  const stream = (res: ServerResponse, opening: string, piece: string, everyMs: number): void => {
    res.writeHead(200, { 'content-type': 'application/json' });
    res.write(opening);
    const interval = setInterval(() => res.write(piece), everyMs);
    const cap = setTimeout(() => res.destroy(), STORE_STREAM_CAP_MS);
    timers.add(interval).add(cap);
    res.on('close', () => {
      clearInterval(interval);
      clearTimeout(cap);
      timers.delete(interval);
      timers.delete(cap);
    });
  };
  const server: HttpServer = createHttpServer((req: IncomingMessage, res: ServerResponse) => {
    req.resume();
    const url = req.url ?? '';
    if (url.startsWith('/v1/auth/token/lookup-self')) return json(res, 200, { data: { ttl: 0, renewable: false, policies: ['default'] } });
    const vault = /^\/v1\/secret\/data\/([a-z0-9-]+)/.exec(url);
    const oauth = /^\/oauth\/([a-z0-9-]+)/.exec(url);
    const name = vault?.[1] ?? oauth?.[1];
    if (name === undefined) return json(res, 404, { errors: [] });
    const mode = modes.get(name) ?? 'ok';
    const good = (): void => {
      if (vault !== null) json(res, 200, { data: { data: { api_key: valueOf(name) }, metadata: { version: 1 } } });
      else json(res, 200, { access_token: valueOf(name), token_type: 'Bearer', expires_in: 3600 });
    };
    switch (mode) {
      case 'ok':
        return good();
      case 'delay-ok': {
        const timer = setTimeout(good, 300);
        timers.add(timer);
        return;
      }
      case 'e500':
        return json(res, 500, vault !== null ? { errors: ['internal error'] } : { error: 'server_error' });
      case 'garbage':
        res.writeHead(200, { 'content-type': 'application/json' });
        return void res.end('{"data": {"data": <html>this is not JSON');
      case 'nofield':
        return json(res, 200, { data: { data: { other: 'x' }, metadata: { version: 2 } } });
      case 'notoken':
        return json(res, 200, { token_type: 'Bearer', expires_in: 3600 });
      case 'html':
        res.writeHead(502, { 'content-type': 'text/html' });
        return void res.end('<html><body>502 Bad Gateway</body></html>');
      case 'truncated':
        res.writeHead(200, { 'content-type': 'application/json', 'content-length': 500 });
        res.write('{"data":{"data":{"api');
        return void setTimeout(() => res.destroy(), 20);
      case 'endless':
        return stream(res, vault !== null ? '{"data":{"data":{"api_key":"' : '{"access_token":"', 'a'.repeat(64 * 1024), 10);
      case 'trickle':
        return stream(res, '', ' ', 100);
    }
  });
  server.listen(0, '127.0.0.1');
  await once(server, 'listening');
  return {
    url: `http://127.0.0.1:${(server.address() as AddressInfo).port}`,
    modes,
    issued,
    async close() {
      for (const timer of timers) clearTimeout(timer);
      server.closeAllConnections();
      await new Promise<void>((resolve) => server.close(() => resolve()));
    },
  };
}

// --- the file -----------------------------------------------------------------------------------------

const watch = hostileWatch();
const planted: string[] = [agent.token];
function plant(label: string): string {
  const value = canary(label);
  planted.push(value);
  return value;
}

const ROUTES = [{ method: ['GET', 'POST', 'PUT'], path: '/v1/*', scope: 'api:call' }];
/** Credential cache for "nothing usable cached": a value is fresh 0.1 s and never served past 0.15 s. */
const FRESH_ONLY = { ttl: 0.1, max_staleness: 0.15 } as const;
/** Waited after a store starts failing, so a FRESH_ONLY value (even one refreshed just before) is unusable. */
const PAST_STALENESS_MS = 450;
/**
 * secrets.vault.timeout and the OAuth2 client timeout for the stand-ins: long enough that a request
 * served from the cache (well under it) is told apart from one that waited for a hanging store.
 */
const STORE_TIMEOUT_S = 1.5;
/** ... and for "last known good": fresh 0.2 s, then served up to 60 s while the store fails. */
const STALE_OK = { ttl: 0.2, max_staleness: 60 } as const;

function grantAll(services: Record<string, unknown>): Record<string, unknown> {
  return { bot: { tokens: [agent.hash], credentials: Object.keys(services).map((service) => ({ service, max_scope: ['*'] })) } };
}

function configOf(proxy: ProxyFixture, input: Record<string, unknown>): AirlockConfig {
  const built = buildConfig({ listen: '127.0.0.1:0', data_dir: proxy.dataDir, ...input }, { baseDir: proxy.dataDir });
  if (built.config === null) throw new Error(built.problems.map((p) => formatProblem(p, null)).join('\n'));
  return built.config;
}

describe('faults: Airlock stays up, answers clearly or cuts honestly, audits, leaks nothing', () => {
  const keys = { ok: plant('flt-ok'), rogue: plant('flt-rogue'), plain: plant('flt-plain'), dead: plant('flt-dead') };
  const vaultToken = plant('flt-vault-token');
  const oauthSecret = plant('flt-oauth-secret');
  const OAUTH_CLIENT = 'airlock-faults';

  let okUpstream: Upstream;
  /** Behind the /dev/full proxy only, so "nothing sent upstream" is not confused with other traffic. */
  let fullDiskUpstream: Upstream;
  /** Accepts connections and never says a word (a store that hangs). */
  let blackhole: NetServer;
  const blackholeSockets = new Set<Socket>();
  let storeUpstream: Upstream;
  let rogue: Rogue;
  let store: RogueStore;
  let oauth: OAuth2Server;
  let vault: VaultServer;
  /** Main proxy: upstream faults, a scripted Vault, OAuth2 clients, reloads, agent aborts. */
  let main: ProxyFixture;
  let mainInput: Record<string, unknown>;
  /** The Vault stand-in behind it (Vault faults are global to one Vault address). */
  let vaulted: ProxyFixture;
  let vaultedInput: Record<string, unknown>;
  /** audit.file: /dev/full. */
  let fullDisk: ProxyFixture;
  const extraProxies: ProxyFixture[] = [];
  const scratchDirs: string[] = [];

  /** Healthy requests sent all along, to the main proxy. */
  const background: Array<{ status: number; ms: number; body: string; during: string }> = [];
  let currentTest = 'setup';
  let backgroundTimer: NodeJS.Timeout | null = null;

  beforeAll(async () => {
    watch.start();
    okUpstream = await startUpstream();
    fullDiskUpstream = await startUpstream();
    blackhole = createNetServer((socket) => {
      blackholeSockets.add(socket);
      socket.on('error', () => undefined);
      socket.on('close', () => blackholeSockets.delete(socket));
    });
    blackhole.listen(0, '127.0.0.1');
    await once(blackhole, 'listening');
    storeUpstream = await startUpstream();
    rogue = await startRogue(ROGUE_ACTS);
    store = await startRogueStore();
    oauth = await startOAuth2Server({ clients: [{ clientId: OAUTH_CLIENT, clientSecret: oauthSecret }], slowMs: 3_000 });
    vault = await startVaultServer();
    vault.putSecret('secret', 'fresh', { api_key: plant('flt-vault-fresh') });
    vault.putSecret('secret', 'stale', { api_key: plant('flt-vault-stale') });

    const services: Record<string, unknown> = {
      ok: { upstream: okUpstream.url, credential: { secret: 'env:OK_KEY' }, routes: ROUTES },
      dead: { upstream: `http://127.0.0.1:${await freePort()}`, credential: { secret: 'env:DEAD_KEY' }, routes: ROUTES },
      rogue: { upstream: rogue.url, timeouts: { connect: 2, headers: 0.6, body: 0.6 }, credential: { secret: 'env:ROGUE_KEY' }, routes: ROUTES },
      // The same rogue, patient: for endless and big bodies an agent reads (or does not read).
      stream: { upstream: rogue.url, credential: { secret: 'env:ROGUE_KEY' }, routes: ROUTES },
    };
    for (const name of ['v-e500', 'v-garbage', 'v-nofield', 'v-truncated', 'v-endless', 'v-trickle', 'v-delay']) {
      services[name] = { upstream: storeUpstream.url, credential: { secret: `vault:secret/${name}#api_key`, ...FRESH_ONLY }, routes: ROUTES };
    }
    const oauth2: Record<string, unknown> = {
      fresh: { token_url: oauth.tokenUrl, client_id: 'env:OAUTH_CLIENT_ID', client_secret: 'env:OAUTH_SECRET', timeout: STORE_TIMEOUT_S },
      stale: { token_url: oauth.tokenUrl, client_id: 'env:OAUTH_CLIENT_ID', client_secret: 'env:OAUTH_SECRET', timeout: STORE_TIMEOUT_S },
    };
    services['o-fresh'] = { upstream: storeUpstream.url, credential: { secret: 'oauth2:fresh', ...FRESH_ONLY }, routes: ROUTES };
    services['o-stale'] = { upstream: storeUpstream.url, credential: { secret: 'oauth2:stale', ...STALE_OK }, routes: ROUTES };
    for (const name of ['rg-garbage', 'rg-html', 'rg-notoken', 'rg-endless', 'rg-trickle']) {
      oauth2[name] = { token_url: `${store.url}/oauth/${name}`, client_id: 'env:OAUTH_CLIENT_ID', client_secret: 'env:OAUTH_SECRET', timeout: 0.5 };
      services[`o-${name}`] = { upstream: storeUpstream.url, credential: { secret: `oauth2:${name}`, ...FRESH_ONLY }, routes: ROUTES };
    }
    mainInput = { secrets: { vault: { address: store.url, timeout: 0.5, auth: { method: 'token', token: 'env:VAULT_TOKEN' } }, oauth2 }, services, agents: grantAll(services) };
    const mainEnv = { OK_KEY: keys.ok, DEAD_KEY: keys.dead, ROGUE_KEY: keys.rogue, VAULT_TOKEN: vaultToken, OAUTH_CLIENT_ID: OAUTH_CLIENT, OAUTH_SECRET: oauthSecret };

    const vaultedServices: Record<string, unknown> = {
      plain: { upstream: okUpstream.url, credential: { secret: 'env:PLAIN_KEY' }, routes: ROUTES },
      'vs-fresh': { upstream: storeUpstream.url, credential: { secret: 'vault:secret/fresh#api_key', ...FRESH_ONLY }, routes: ROUTES },
      'vs-stale': { upstream: storeUpstream.url, credential: { secret: 'vault:secret/stale#api_key', ...STALE_OK }, routes: ROUTES },
    };
    vaultedInput = { secrets: { vault: { address: vault.url, timeout: STORE_TIMEOUT_S, auth: { method: 'token', token: 'env:VAULT_TOKEN' } } }, services: vaultedServices, agents: grantAll(vaultedServices) };
    const fullDiskServices = { ok: { upstream: fullDiskUpstream.url, credential: { secret: 'env:OK_KEY' }, routes: [{ method: 'GET', path: '/v1/things/:id', scope: 'things:read' }] } };

    [main, vaulted, fullDisk] = await Promise.all([
      startProxy(mainInput, { env: mainEnv }),
      startProxy(vaultedInput, { env: { PLAIN_KEY: keys.plain, VAULT_TOKEN: vault.createToken() } }),
      startProxy({ audit: { file: '/dev/full' }, services: fullDiskServices, agents: grantAll(fullDiskServices) }, { env: { OK_KEY: keys.ok } }),
    ]);

    backgroundTimer = setInterval(() => {
      const during = currentTest;
      void get(main.url, '/ok/v1/background', { timeoutMs: 5_000 }).then((answer) => background.push({ status: answer.status, ms: answer.ms, body: answer.body.toString('utf8'), during }));
    }, 150);
  });

  beforeEach(() => {
    currentTest = expect.getState().currentTestName ?? 'unknown';
  });

  afterAll(async () => {
    if (backgroundTimer !== null) clearInterval(backgroundTimer);
    vault?.setDelay(0);
    await vault?.setDown(false).catch(() => undefined);
    await Promise.all([main, vaulted, fullDisk, ...extraProxies].map((proxy) => proxy?.close()));
    for (const socket of blackholeSockets) socket.destroy();
    await new Promise<void>((resolve) => (blackhole === undefined ? resolve() : blackhole.close(() => resolve())));
    await Promise.all([okUpstream?.close(), fullDiskUpstream?.close(), storeUpstream?.close(), rogue?.close(), store?.close(), oauth?.close(), vault?.close()]);
    for (const dir of scratchDirs) rmSync(dir, { recursive: true, force: true });
  });

  /** Runs a fault while healthy requests go to the same proxy, staggered over its first 150 ms. */
  async function alongside<T>(fault: () => Promise<T>, proxy: ProxyFixture = main, path = '/ok/v1/bystander'): Promise<T> {
    const bystanders = [0, 50, 150].map(async (delay) => {
      await sleep(delay);
      return get(proxy.url, path, { timeoutMs: 5_000 });
    });
    const [result, ...others] = await Promise.all([fault(), ...bystanders]);
    for (const other of others) {
      expect(other.status, other.raw.toString('latin1')).toBe(200);
      expect(other.body.toString('utf8')).toBe('{"ok":true}');
      expect(other.ms, 'a bystander is answered at once').toBeLessThan(2_000);
    }
    return result;
  }

  // --- the upstream fails before anything was sent: a problem --------------------------------------

  describe('upstream fails before its response starts: a whole RFC 9457 problem', () => {
    it('refuses connections (closed port): 502 upstream_unreachable naming the refusal', async () => {
      const answer = await alongside(() => get(main.url, '/dead/v1/anything'));
      const { record } = await expectRefusal(main, answer, 502, 'upstream_unreachable', /refused/);
      expect(record).toMatchObject({ decision: 'allow', upstream_status: null, credential: 'env:DEAD_KEY' });
    });

    it.each<{ act: string; status: number; code: string; detail: RegExp; within: number }>([
      { act: 'hang', status: 504, code: 'upstream_timeout', detail: /timeouts\.headers/, within: 3_000 },
      { act: 'slow-headers', status: 504, code: 'upstream_timeout', detail: /timeouts\.headers/, within: 3_000 },
      { act: 'reset-small-length', status: 502, code: 'upstream_unreachable', detail: /reset/, within: 2_000 },
      { act: 'close-after-headers-length', status: 502, code: 'upstream_unreachable', detail: /closed unexpectedly/, within: 2_000 },
      { act: 'garbage', status: 502, code: 'upstream_unreachable', detail: /service rogue/, within: 2_000 },
      { act: 'bad-status', status: 502, code: 'upstream_unreachable', detail: /service rogue/, within: 2_000 },
      { act: 'status-099', status: 502, code: 'upstream_unreachable', detail: /service rogue/, within: 2_000 },
      { act: 'status-four-digits', status: 502, code: 'upstream_unreachable', detail: /service rogue/, within: 2_000 },
      { act: 'no-status-line', status: 502, code: 'upstream_unreachable', detail: /service rogue/, within: 2_000 },
      { act: 'huge-headers', status: 502, code: 'upstream_unreachable', detail: /service rogue/, within: 2_000 },
    ])('$act: $status $code, the upstream connection closed, none of its bytes relayed', async ({ act, status, code, detail, within }) => {
      const target = `/v1/${act}/${Date.now()}`;
      const answer = await alongside(() => get(main.url, `/rogue${target}`));
      expect(answer.ms).toBeLessThan(within);
      const { problem, record } = await expectRefusal(main, answer, status, code, detail);
      expect(record).toMatchObject({ decision: 'allow', upstream_status: null, credential: 'env:ROGUE_KEY' });
      // Nothing of the upstream's answer (which echoes the credential) is passed on; the problem's words are Airlock's.
      expect(problem.detail).not.toMatch(/SSH|2x0|filler|Early/);
      expect(answer.raw.toString('latin1')).not.toContain(keys.rogue.slice(0, 16));
      const seen = rogue.find(target);
      expect(seen?.credential, 'the upstream was asked, with the injected credential').toBe(keys.rogue);
      await eventually(`the upstream connection of ${act} closed`, () => seen?.closed === true, 3_000);
    });
  });

  // --- the upstream fails after the response started: a cut, never a clean end ---------------------

  describe('upstream fails after its response started: the agent\'s response is cut, not ended', () => {
    it.each<{ act: string; code: string; minBody: number }>([
      { act: 'reset-large-length', code: 'upstream_unreachable', minBody: 1 },
      { act: 'reset-chunked', code: 'upstream_unreachable', minBody: 5000 },
      { act: 'stall-mid-body', code: 'upstream_timeout', minBody: 1 },
    ])('$act: 200 with unfinished chunked framing, audited incomplete with $code', async ({ act, code, minBody }) => {
      const answer = await alongside(() => get(main.url, `/rogue/v1/${act}/${Date.now()}`));
      expect(answer.body.length).toBeGreaterThanOrEqual(minBody);
      await expectCut(main, answer, code);
    });

    it('a break while part of the credential is held back: the partial secret is dropped, never flushed', async () => {
      const answer = await alongside(() => get(main.url, `/rogue/v1/reset-mid-secret/${Date.now()}`));
      await expectCut(main, answer, 'upstream_unreachable');
      const text = answer.raw.toString('latin1');
      expect(text).not.toContain(keys.rogue.slice(0, 12));
      expect(answer.body.toString('latin1')).toMatch(/^(data: )?$/);
    });

    it('closes right after chunked headers: no clean-looking 200 (a 502 problem or a cut connection)', async () => {
      const answer = await alongside(() => get(main.url, `/rogue/v1/close-after-headers-chunked/${Date.now()}`));
      if (answer.status === 502) {
        await expectRefusal(main, answer, 502, 'upstream_unreachable');
      } else {
        expect(answer.complete).toBe(false);
        expect(answer.timedOut).toBe(false);
      }
    });

    // Nothing reached the agent yet when the upstream closed (stream-mode headers go out with the first
    // body bytes), so a whole 502 problem is still possible (found by this suite; fixed in redact-response.ts).
    it('closes right after chunked headers: the agent gets 502 upstream_unreachable, since nothing was sent yet', async () => {
      const answer = await get(main.url, `/rogue/v1/close-after-headers-chunked/${Date.now()}`);
      await expectRefusal(main, answer, 502, 'upstream_unreachable');
    });

    it('a close-delimited body (no Content-Length, no chunked) ends at the close: relayed whole, by RFC 9112 6.3 rule 8', async () => {
      // The one truncation HTTP/1.1 cannot express: a body delimited by the connection's close is whole
      // by definition. Airlock re-frames it chunked and ends it; documented here, not a fault it can see.
      const answer = await get(main.url, `/rogue/v1/close-delimited/${Date.now()}`);
      expect(answer).toMatchObject({ status: 200, framing: 'chunked', complete: true });
      expect(answer.body.toString('utf8')).toBe('the body ends when the connection closes');
      expect(await auditRecordOf(main, answer.requestId ?? '')).toMatchObject({ status: 200, incomplete: false, code: null });
    });
  });

  // --- endless and large bodies ---------------------------------------------------------------------

  describe('an endless upstream body', () => {
    it('read by the agent: memory stays bounded while 128 MiB stream through, and the upstream is closed when the agent leaves', async () => {
      const target = `/v1/endless/read-${Date.now()}`;
      const before = process.memoryUsage();
      let peakRss = before.rss;
      let peakHeap = before.heapUsed + before.arrayBuffers;
      const sampler = setInterval(() => {
        const now = process.memoryUsage();
        peakRss = Math.max(peakRss, now.rss);
        peakHeap = Math.max(peakHeap, now.heapUsed + now.arrayBuffers);
      }, 50);
      const answer = await alongside(() => get(main.url, `/stream${target}`, { destroyAfterBytes: 128 * 1024 * 1024, keepBytes: 64 * 1024, timeoutMs: 20_000 }));
      clearInterval(sampler);
      const rssGrowthMb = (peakRss - before.rss) / 2 ** 20;
      const heapGrowthMb = (peakHeap - before.heapUsed - before.arrayBuffers) / 2 ** 20;
      console.info(`[faults] endless body: 128 MiB relayed in ${answer.ms.toFixed(0)} ms; peak growth rss ${rssGrowthMb.toFixed(1)} MiB, heap+buffers ${heapGrowthMb.toFixed(1)} MiB`);
      expect(answer.status).toBe(200);
      expect(answer.timedOut).toBe(false);
      expect(rssGrowthMb, 'the body is streamed, never accumulated').toBeLessThan(100);
      const seen = rogue.find(target);
      await eventually('the upstream connection closed after the agent left', () => seen?.closed === true, 3_000);
      const record = await auditRecordOf(main, answer.requestId ?? '');
      expect(record).toMatchObject({ status: 200, upstream_status: 200, incomplete: true, code: null });
      expect(record.response_bytes).toBeGreaterThan(64 * 1024 * 1024);
    });

    it('not read by the agent: backpressure stops the upstream (its writes plateau), and leaving closes it', async () => {
      const target = `/v1/endless/paused-${Date.now()}`;
      const { port } = new URL(main.url);
      const socket = connect(Number(port), '127.0.0.1');
      socket.on('error', () => undefined);
      const head: Buffer[] = [];
      await new Promise<void>((resolve) => {
        socket.once('data', (data: Buffer) => {
          head.push(data);
          socket.pause();
          resolve();
        });
        socket.write(requestText('GET', `/stream${target}`));
      });
      agentSaw.push(Buffer.concat(head).toString('latin1'));
      expect(Buffer.concat(head).toString('latin1')).toMatch(/^HTTP\/1\.1 200 /);
      const seen = rogue.find(target);
      await sleep(700);
      const first = seen?.written ?? 0;
      const memoryThen = process.memoryUsage().rss;
      await sleep(700);
      const second = seen?.written ?? 0;
      const requestId = /x-airlock-request-id: (\S+)/i.exec(Buffer.concat(head).toString('latin1'))?.[1] ?? '';
      console.info(`[faults] paused agent: upstream wrote ${(first / 2 ** 20).toFixed(1)} MiB, then ${((second - first) / 2 ** 20).toFixed(2)} MiB more in 0.7 s`);
      expect(second, 'socket buffers, not memory, hold the rest').toBeLessThan(48 * 1024 * 1024);
      expect(second - first, 'the upstream is paused').toBeLessThan(1024 * 1024);
      expect(process.memoryUsage().rss - memoryThen).toBeLessThan(32 * 1024 * 1024);
      expect(seen?.closed).toBe(false);
      socket.destroy();
      await eventually('the upstream connection closed after the paused agent left', () => seen?.closed === true, 3_000);
      expect(await auditRecordOf(main, requestId)).toMatchObject({ status: 200, incomplete: true });
    });

    it('a large fixed-length body the agent abandons after 256 KiB: upstream closed, audited incomplete with the bytes sent', async () => {
      const target = `/v1/big-length/${Date.now()}`;
      const answer = await alongside(() => get(main.url, `/stream${target}`, { destroyAfterBytes: 256 * 1024 }));
      expect(answer.status).toBe(200);
      expect(answer.complete).toBe(false);
      const seen = rogue.find(target);
      await eventually('the upstream connection closed', () => seen?.closed === true, 3_000);
      expect(seen?.written ?? 0).toBeLessThan(BIG_BODY);
      const record = await auditRecordOf(main, answer.requestId ?? '');
      expect(record).toMatchObject({ status: 200, incomplete: true });
      expect(record.response_bytes).toBeLessThan(BIG_BODY);
    });
  });

  // --- the agent goes away ---------------------------------------------------------------------------

  describe('the agent goes away', () => {
    /** Records written since `mark` for a path (the background loop's /ok/ records excluded). */
    function recordsSince(mark: number): AuditRecord[] {
      return main.auditRecords().slice(mark).filter((r) => !(r.path ?? '').startsWith('/ok/'));
    }

    it.each<{ name: string; head: string; body: Buffer; whole: (seen: RogueConnection) => boolean }>([
      {
        name: 'Content-Length upload (1 MiB of 5 MiB sent)',
        head: `POST /rogue/v1/upload-sink/length-${Date.now()} HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer ${agent.token}\r\nContent-Length: 5242880\r\n\r\n`,
        body: Buffer.alloc(1024 * 1024, 0x62),
        whole: (seen) => seen.bodyBytes >= 5242880,
      },
      {
        name: 'chunked upload (two chunks, no last chunk)',
        head: `POST /rogue/v1/upload-sink/chunked-${Date.now()} HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer ${agent.token}\r\nTransfer-Encoding: chunked\r\n\r\n`,
        body: Buffer.concat([chunk(Buffer.alloc(65536, 0x63)), chunk(Buffer.alloc(1000, 0x64))]),
        // undici re-frames the chunks; what must never arrive is a last chunk.
        whole: (seen) => seen.tail.endsWith('\r\n0\r\n\r\n'),
      },
    ])('mid-upload, $name: the upstream request is aborted, the audit says incomplete', async ({ head, body, whole }) => {
      const target = (/ (\S+) HTTP/.exec(head)?.[1] ?? '').replace('/rogue', '');
      const mark = main.auditRecords().length;
      await alongside(() => exchange(main.url, Buffer.concat([Buffer.from(head), body]), { destroyAfterMs: 300 }));
      const seen = await eventually('the upstream saw the upload', () => rogue.find(target), 3_000);
      await eventually('the upstream connection closed', () => seen.closed, 3_000);
      expect(seen.bodyBytes).toBeGreaterThan(0);
      expect(whole(seen), 'the upstream never got a whole body').toBe(false);
      const record = await eventually('the audit record of the upload', () => recordsSince(mark).find((r) => r.path === `/rogue${target}`), 5_000);
      expect(record).toMatchObject({ decision: 'allow', upstream_status: null, incomplete: true });
      // Two honest outcomes race: the agent's close is seen first (status null), or the half-read body
      // fails first and a 400 invalid_request ("closed before sending the whole body") is written to a
      // socket that is only half-closed at that moment. Either way: incomplete, and never forwarded whole.
      if (record.status !== null) expect(record).toMatchObject({ status: 400, code: 'invalid_request' });
    });

    // node's parser reports the half-closed upload (HPE_INVALID_EOF_STATE) through 'clientError' on a
    // socket that is still writable; at HEAD (3d154d1) the raw refusal handler audited that as a second,
    // phantom request (path null, 400). The working tree attributes it to the request the pipeline holds.
    it('mid-upload: exactly one audit record for the aborted request (no phantom 400)', async () => {
      const target = `/v1/upload-sink/once-${Date.now()}`;
      const mark = main.auditRecords().length;
      const head = `POST /rogue${target} HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer ${agent.token}\r\nContent-Length: 100000\r\n\r\n`;
      await exchange(main.url, Buffer.concat([Buffer.from(head), Buffer.alloc(10_000, 0x65)]), { destroyAfterMs: 200 });
      await eventually('the audit record of the upload', () => recordsSince(mark).some((r) => r.path === `/rogue${target}`), 5_000);
      await sleep(300);
      expect(recordsSince(mark).map((r) => r.path)).toEqual([`/rogue${target}`]);
    });

    it('while the upstream has not answered yet: the upstream request is aborted at once, audited incomplete with no status', async () => {
      const target = `/v1/hang/leave-${Date.now()}`;
      // Through the patient service (timeouts.headers 60 s): only the agent leaving can close it.
      await alongside(() => exchange(main.url, requestText('GET', `/stream${target}`), { destroyAfterMs: 150 }));
      const seen = await eventually('the upstream saw the request', () => rogue.find(target), 3_000);
      await eventually('the upstream connection closed', () => seen.closed, 3_000, 10);
      const record = await eventually('the audit record', () => main.auditRecords().find((r) => r.path === `/stream${target}`), 5_000);
      expect(record).toMatchObject({ decision: 'allow', status: null, upstream_status: null, incomplete: true, code: null });
    });

    // The agent left while earlier stages waited: its 'close' fired before the relay existed, so
    // forwardRequest checks the response is still live before dispatching (found by this suite; fixed).
    it('while its credential is being fetched: nothing is sent upstream, and the audit says incomplete', async () => {
      store.modes.set('v-delay', 'delay-ok');
      await sleep(PAST_STALENESS_MS);
      const target = `/v1/leave-during-fetch-${Date.now()}`;
      await exchange(main.url, requestText('POST', `/v-delay${target}`, {}, '{"refund":"all"}'), { destroyAfterMs: 100 });
      const record = await eventually('the audit record', () => main.auditRecords().find((r) => r.path === `/v-delay${target}`), 5_000);
      await sleep(200);
      expect(storeUpstream.requests.filter((r) => r.target === target)).toHaveLength(0);
      expect(record).toMatchObject({ status: null, incomplete: true });
    });
  });

  // --- credential stores ----------------------------------------------------------------------------

  describe('Vault (the stand-in) sealed, resetting, refusing, hanging or slow', () => {
    const modes: Array<{ mode: string; apply: () => Promise<void> | void; restore: () => Promise<void> | void; detail: RegExp }> = [
      { mode: 'sealed (503)', apply: () => vault.seal(), restore: () => vault.unseal(), detail: /Vault answered 503/ },
      { mode: 'down: connections reset', apply: () => vault.setDown(true, 'reset'), restore: () => vault.setDown(false), detail: /did not answer in time or is unreachable/ },
      { mode: 'down: connections refused (unreachable)', apply: () => vault.setDown(true, 'refuse'), restore: () => vault.setDown(false), detail: /did not answer in time or is unreachable/ },
      { mode: 'hanging (never answers)', apply: () => vault.setDown(true, 'hang'), restore: () => vault.setDown(false), detail: /did not answer in time or is unreachable/ },
      { mode: 'slower than secrets.vault.timeout', apply: () => vault.setDelay(3_000), restore: () => vault.setDelay(0), detail: /did not answer in time or is unreachable/ },
    ];

    it.each(modes)('$mode: 503 credential_unavailable with nothing cached; the last good value keeps serving within max_staleness', async ({ apply, restore, detail }) => {
      // Both references healthy and cached first.
      await eventually('vs-fresh served', async () => (await get(vaulted.url, '/vs-fresh/v1/warm')).status === 200, 8_000, 100);
      expect((await get(vaulted.url, '/vs-stale/v1/warm')).status).toBe(200);
      const staleValue = vault.getSecret('secret', 'stale')?.['api_key'];
      await apply();
      try {
        await sleep(PAST_STALENESS_MS);
        const target = `/v1/charges-${Date.now()}`;
        const answer = await alongside(() => get(vaulted.url, `/vs-fresh${target}`), vaulted, '/plain/v1/bystander');
        // Bounded by secrets.vault.timeout (1.5 s), not by the store.
        expect(answer.ms).toBeLessThan(STORE_TIMEOUT_S * 1000 + 2_000);
        const { record } = await expectRefusal(vaulted, answer, 503, 'credential_unavailable', detail);
        expect(record).toMatchObject({ decision: 'allow', credential: 'vault:secret/fresh#api_key', upstream_status: null });
        expect(storeUpstream.requests.filter((r) => r.target === target)).toHaveLength(0);

        // What is asserted for max_staleness: the stale reference (max_staleness 60 s) is answered from
        // the last value fetched, at once (it does not wait for the failing store), with that value
        // injected, and its audit generation is the version it was read at.
        const staleTarget = `/v1/charges-stale-${Date.now()}`;
        const stale = await get(vaulted.url, `/vs-stale${staleTarget}`);
        expect(stale.status, stale.body.toString('utf8')).toBe(200);
        expect(stale.ms, 'served from the cache, not after the store').toBeLessThan(STORE_TIMEOUT_S * 1000 * 0.6);
        expect(storeUpstream.requests.find((r) => r.target === staleTarget)?.header('authorization')).toEqual([`Bearer ${String(staleValue)}`]);
        expect(await auditRecordOf(vaulted, stale.requestId ?? '')).toMatchObject({ status: 200, credential: 'vault:secret/stale#api_key', generation: '1' });
      } finally {
        await restore();
      }
      await eventually('recovery once Vault is back', async () => (await get(vaulted.url, '/vs-fresh/v1/recovered')).status === 200, 8_000, 100);
    });

    it('a reload whose new Vault hangs (warm-up waits its 2 s cap) does not hold up traffic on the running config', async () => {
      const hanging = { address: `http://127.0.0.1:${(blackhole.address() as AddressInfo).port}`, timeout: 5, auth: { method: 'token', token: 'env:VAULT_TOKEN' } };
      const started = performance.now();
      const reloading = vaulted.airlock.reload(configOf(vaulted, { ...vaultedInput, secrets: { vault: hanging } }));
      const during: Answer[] = [];
      let settled = false;
      void reloading.then(() => (settled = true));
      while (!settled) {
        during.push(await get(vaulted.url, `/plain/v1/during-reload-${during.length}`));
        await sleep(100);
      }
      const reloadMs = performance.now() - started;
      expect(await reloading).toEqual({ ok: true });
      console.info(`[faults] reload with a hanging Vault took ${reloadMs.toFixed(0)} ms; ${during.length} requests meanwhile, slowest ${Math.max(...during.map((a) => a.ms)).toFixed(0)} ms`);
      expect(reloadMs).toBeGreaterThan(1_500);
      expect(during.length).toBeGreaterThan(5);
      for (const answer of during) {
        expect(answer.status).toBe(200);
        expect(answer.ms).toBeLessThan(1_000);
      }
      expect((await get(vaulted.url, '/plain/v1/after-reload')).status).toBe(200);
      // Back to the real Vault for what follows.
      expect(await vaulted.airlock.reload(configOf(vaulted, vaultedInput))).toEqual({ ok: true });
    });
  });

  describe('Vault answering badly (a scripted store)', () => {
    it.each<{ name: string; mode: StoreMode; detail: RegExp }>([
      { name: 'v-e500', mode: 'e500', detail: /Vault answered 500/ },
      { name: 'v-garbage', mode: 'garbage', detail: /vault:secret\/v-garbage#api_key/ },
      { name: 'v-nofield', mode: 'nofield', detail: /no non-empty string field "api_key"/ },
      { name: 'v-truncated', mode: 'truncated', detail: /vault:secret\/v-truncated#api_key/ },
    ])('$mode: 503 credential_unavailable with a clear detail, nothing forwarded', async ({ name, mode, detail }) => {
      store.modes.set(name, mode);
      await sleep(PAST_STALENESS_MS);
      const target = `/v1/x-${Date.now()}`;
      const answer = await alongside(() => get(main.url, `/${name}${target}`));
      const { problem } = await expectRefusal(main, answer, 503, 'credential_unavailable', detail);
      expect(problem.detail).not.toMatch(/internal error|<html>/);
      expect(storeUpstream.requests.filter((r) => r.target === target)).toHaveLength(0);
    });

    // secrets.vault.timeout bounds the whole call, connect to last byte, through our undici transport for
    // node-vault (vault-transport.ts); the answer is also size-capped (found by this suite; fixed).
    it('an endless Vault answer: 503 within secrets.vault.timeout', async () => {
      store.modes.set('v-endless', 'endless');
      await sleep(PAST_STALENESS_MS);
      const answer = await get(main.url, `/v-endless/v1/x-${Date.now()}`, { timeoutMs: 1_800 });
      expect(answer.timedOut).toBe(false);
      expect(answer.status).toBe(503);
    });

    // Same deadline: a trickle does not reset it the way an idle-socket timeout would.
    it('a trickling Vault answer (a byte every 100 ms): 503 within secrets.vault.timeout', async () => {
      store.modes.set('v-trickle', 'trickle');
      await sleep(PAST_STALENESS_MS);
      const answer = await get(main.url, `/v-trickle/v1/x-${Date.now()}`, { timeoutMs: 1_800 });
      expect(answer.timedOut).toBe(false);
      expect(answer.status).toBe(503);
    });
  });

  describe('OAuth2 token endpoint down, slow, failing or refusing', () => {
    it.each<{ mode: OAuth2Mode; detail: RegExp }>([
      { mode: 'down', detail: /did not answer/ },
      { mode: 'slow', detail: /did not answer/ },
      { mode: 'server_error', detail: /answered 500 without an access token/ },
      { mode: 'invalid_client', detail: /refused its credentials \(invalid_client\)/ },
    ])('$mode: 503 credential_unavailable with nothing cached; a cached token keeps serving within max_staleness', async ({ mode, detail }) => {
      await eventually('o-fresh served', async () => (await get(main.url, '/o-fresh/v1/warm')).status === 200, 8_000, 100);
      expect((await get(main.url, `/o-stale/v1/warm-${Date.now()}`)).status).toBe(200);
      await sleep(50);
      const issuedBefore = oauth.issued.map((token) => `Bearer ${token}`);
      oauth.setMode(mode);
      try {
        await sleep(PAST_STALENESS_MS);
        const target = `/v1/tickets-${Date.now()}`;
        const answer = await alongside(() => get(main.url, `/o-fresh${target}`));
        expect(answer.ms).toBeLessThan(STORE_TIMEOUT_S * 1000 + 2_000);
        const { record } = await expectRefusal(main, answer, 503, 'credential_unavailable', detail);
        expect(record).toMatchObject({ credential: 'oauth2:fresh', upstream_status: null });
        expect(storeUpstream.requests.filter((r) => r.target === target)).toHaveLength(0);
        // max_staleness: the token fetched before the outage is still injected, without waiting.
        const staleTarget = `/v1/tickets-stale-${Date.now()}`;
        const stale = await get(main.url, `/o-stale${staleTarget}`);
        expect(stale.status).toBe(200);
        expect(stale.ms, 'served from the cache, not after the store').toBeLessThan(STORE_TIMEOUT_S * 1000 * 0.6);
        const injected = storeUpstream.requests.find((r) => r.target === staleTarget)?.header('authorization')[0];
        expect(issuedBefore, 'a token issued before the outage').toContain(injected);
      } finally {
        oauth.setMode('ok');
      }
      await eventually('recovery once the token endpoint is back', async () => (await get(main.url, '/o-fresh/v1/recovered')).status === 200, 8_000, 100);
    });

    it.each<{ name: string; mode: StoreMode; detail: RegExp }>([
      { name: 'rg-garbage', mode: 'garbage', detail: /answered 200 without an access token/ },
      { name: 'rg-html', mode: 'html', detail: /answered 502 without an access token/ },
      { name: 'rg-notoken', mode: 'notoken', detail: /answered 200 without an access token/ },
    ])('a token endpoint answering $mode: 503 credential_unavailable, its words not passed on', async ({ name, mode, detail }) => {
      store.modes.set(name, mode);
      await sleep(PAST_STALENESS_MS);
      const target = `/v1/x-${Date.now()}`;
      const answer = await alongside(() => get(main.url, `/o-${name}${target}`));
      const { problem } = await expectRefusal(main, answer, 503, 'credential_unavailable', detail);
      expect(problem.detail).not.toMatch(/<html>|Bad Gateway|not JSON/);
      expect(storeUpstream.requests.filter((r) => r.target === target)).toHaveLength(0);
    });

    // The client timeout bounds the whole token request and the answer is size-capped
    // (read-store-answer.ts; found by this suite; fixed).
    it('an endless token answer: 503 within the client timeout', async () => {
      store.modes.set('rg-endless', 'endless');
      await sleep(PAST_STALENESS_MS);
      const answer = await get(main.url, `/o-rg-endless/v1/x-${Date.now()}`, { timeoutMs: 1_800 });
      expect(answer.timedOut).toBe(false);
      expect(answer.status).toBe(503);
    });

    // Same deadline for a trickle.
    it('a trickling token answer: 503 within the client timeout', async () => {
      store.modes.set('rg-trickle', 'trickle');
      await sleep(PAST_STALENESS_MS);
      const answer = await get(main.url, `/o-rg-trickle/v1/x-${Date.now()}`, { timeoutMs: 1_800 });
      expect(answer.timedOut).toBe(false);
      expect(answer.status).toBe(503);
    });
  });

  // --- the audit file cannot be written --------------------------------------------------------------

  describe('audit.file /dev/full (every write fails)', () => {
    // By construction there is no audit record to look up here; the log line for the request id, which
    // says audited: false, stands in for it. The audit file is never read back (/dev/full reads zeros forever).
    function logLineOf(requestId: string): Record<string, unknown> | undefined {
      return fullDisk.logRecords().find((line) => line['request_id'] === requestId && line['msg'] === 'request');
    }

    it.each<{ name: string; path: string; token: string | null }>([
      { name: 'an allowed request', path: '/ok/v1/things/1', token: agent.token },
      { name: 'a request for a route that is not allowed (would be 403)', path: '/ok/v1/other', token: agent.token },
      { name: 'an unauthenticated request (would be 401)', path: '/ok/v1/things/1', token: null },
      { name: 'an unknown service (would be 404)', path: '/nowhere/v1/x', token: agent.token },
    ])('$name: 503 audit_unavailable, nothing sent upstream', async ({ path, token }) => {
      const before = fullDiskUpstream.requests.length;
      const lines = [`GET ${path} HTTP/1.1`, 'Host: 127.0.0.1', 'Connection: close', ...(token === null ? [] : [`Authorization: Bearer ${token}`])];
      const answer = await exchange(fullDisk.url, `${lines.join('\r\n')}\r\n\r\n`);
      const problem = expectProblem(problemOf(answer), 503, 'audit_unavailable');
      expect(fullDiskUpstream.requests.length).toBe(before);
      expect(await eventually('the log line', () => logLineOf(problem.request_id), 3_000)).toMatchObject({ audited: false, code: 'audit_unavailable', status: 503 });
    });

    it('a burst of 40 concurrent requests: every one refused 503, nothing sent upstream, health still 200 and ready 503', async () => {
      const before = fullDiskUpstream.requests.length;
      const answers = await Promise.all(Array.from({ length: 40 }, (_, i) => get(fullDisk.url, `/ok/v1/things/${i}`)));
      for (const answer of answers) expectProblem(problemOf(answer), 503, 'audit_unavailable');
      expect(fullDiskUpstream.requests.length).toBe(before);
      const health = await exchange(fullDisk.url, 'GET /_airlock/health HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n');
      expect(health.status).toBe(200);
      const ready = await exchange(fullDisk.url, 'GET /_airlock/ready HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n');
      expect(ready.status).toBe(503);
      expect(ready.body.toString('utf8')).toContain('audit');
    });

    // The raw refusal path follows the same rule as every other refusal: a record that cannot be written
    // turns the answer into 503 audit_unavailable (found by this suite; fixed in run-pipeline.ts).
    it('a malformed request (Content-Length with Transfer-Encoding): 503 audit_unavailable like every other refusal', async () => {
      const answer = await exchange(
        fullDisk.url,
        `POST /ok/v1/things/1 HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer ${agent.token}\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n`,
      );
      expectProblem(problemOf(answer), 503, 'audit_unavailable');
    });
  });

  // --- config reload faults --------------------------------------------------------------------------

  describe('a reload that cannot be applied', () => {
    /** A stream of 10 events over about a second, through the main proxy. */
    function slowStream(): Promise<Answer> {
      return get(main.url, `/stream/v1/slow-stream/${Date.now()}`);
    }

    async function expectStreamWhole(pending: Promise<Answer>): Promise<void> {
      const answer = await pending;
      expect(answer).toMatchObject({ status: 200, framing: 'chunked', complete: true, timedOut: false });
      expect(answer.body.toString('utf8').trim().split('\n')).toEqual(Array.from({ length: 10 }, (_, i) => `event ${i + 1}`));
      expect(await auditRecordOf(main, answer.requestId ?? '')).toMatchObject({ status: 200, incomplete: false });
    }

    it('a restart-only change (limits): applied but for limits, which keep their running value; a stream in flight finishes', async () => {
      const stream = slowStream();
      await sleep(250);
      const result = await main.airlock.reload(configOf(main, { ...mainInput, limits: { max_headers: 50 } }));
      expect(result).toEqual({ ok: true, restartNeeded: ['limits'] });
      // 60 headers: over the new max_headers, within the running one.
      const many = Object.fromEntries(Array.from({ length: 60 }, (_, i) => [`x-extra-${i}`, 'v']));
      expect((await exchange(main.url, requestText('GET', '/ok/v1/after-partial-reload', many))).status).toBe(200);
      await expectStreamWhole(stream);
      expect(main.logLines.some((line) => line.includes('config reloaded except limits'))).toBe(true);
    });

    it('a config that fails to build (its CA file vanished after validation): refused, old config serves, a stream in flight finishes', async () => {
      const dir = tempDir('airlock-faults-ca-');
      scratchDirs.push(dir);
      const caFile = join(dir, 'ca.pem');
      writeFileSync(caFile, FIXED_CA_PEM);
      const services = { ...(mainInput['services'] as Record<string, unknown>), extra: { upstream: okUpstream.url, ca: caFile, credential: { secret: 'env:OK_KEY' }, routes: ROUTES } };
      const next = configOf(main, { ...mainInput, services, agents: grantAll(services) });
      rmSync(caFile);
      const stream = slowStream();
      await sleep(250);
      const result = await main.airlock.reload(next);
      expect(result.ok).toBe(false);
      expect(result.ok ? '' : result.reason).toMatch(/ENOENT|no such file/);
      // Still the old config: the service the new one would add does not exist.
      await expectRefusal(main, await get(main.url, '/extra/v1/x'), 404, 'unknown_service');
      expect((await get(main.url, '/ok/v1/after-failed-reload')).status).toBe(200);
      await expectStreamWhole(stream);
      expect(main.logLines.some((line) => line.includes('config reload failed'))).toBe(true);
    });
  });

  // --- connection floods -----------------------------------------------------------------------------

  describe('idle connections', () => {
    const IDLE = 10_000;
    let child: ChildProcess | null = null;

    afterAll(() => {
      child?.kill('SIGTERM');
    });

    async function agentConnections(proxy: ProxyFixture): Promise<number> {
      const { values } = await proxy.airlock.metrics.registry.getSingleMetric('airlock_agent_connections')!.get();
      return values.find((v) => v.labels.listener === 'shared')?.value ?? 0;
    }

    function openDescriptors(): number {
      return readdirSync('/proc/self/fd').length;
    }

    interface ChildEvent {
      event: 'ready' | 'status';
      open: number;
      failed?: number;
      ms?: number;
      closedByPeer?: number;
      bytesReceived?: number;
      firstBytes?: string;
    }

    function spawnIdle(port: string, count: number): { process: ChildProcess; next: (predicate: (e: ChildEvent) => boolean, timeoutMs: number) => Promise<ChildEvent> } {
      const processHandle = spawn(process.execPath, ['--import', 'tsx', 'test/hostile/support/idle-connections.ts', port, String(count)], { cwd: process.cwd(), stdio: ['pipe', 'pipe', 'inherit'] });
      const events: ChildEvent[] = [];
      const waiters = new Set<() => void>();
      createInterface({ input: processHandle.stdout as NodeJS.ReadableStream }).on('line', (line) => {
        events.push(JSON.parse(line) as ChildEvent);
        for (const wake of waiters) wake();
      });
      return {
        process: processHandle,
        next(predicate, timeoutMs) {
          return new Promise((resolve, reject) => {
            const check = (): void => {
              const found = events.find(predicate);
              if (found !== undefined) {
                waiters.delete(check);
                clearTimeout(timer);
                resolve(found);
              }
            };
            const timer = setTimeout(() => {
              waiters.delete(check);
              reject(new Error(`idle-connections child: no matching event within ${timeoutMs} ms (last: ${JSON.stringify(events.at(-1))})`));
            }, timeoutMs);
            waiters.add(check);
            check();
          });
        },
      };
    }

    it(`${IDLE.toLocaleString('en')} idle connections: normal requests still answered quickly, memory growth bounded, nothing dropped early, all closed afterwards`, async () => {
      const services = { ok: { upstream: okUpstream.url, credential: { secret: 'env:OK_KEY' }, routes: ROUTES } };
      // headers_timeout 60 s: the flood is held for the whole measurement (the expiry is the next case).
      const proxy = await startProxy({ limits: { headers_timeout: 60 }, services, agents: grantAll(services) }, { env: { OK_KEY: keys.ok } });
      extraProxies.push(proxy);
      const descriptorsBefore = openDescriptors();
      const memoryBefore = process.memoryUsage();
      const flood = spawnIdle(new URL(proxy.url).port, IDLE);
      child = flood.process;
      const ready = await flood.next((e) => e.event === 'ready', 30_000);
      expect(ready).toMatchObject({ open: IDLE, failed: 0 });
      // Counted by the proxy's own gauge: the test process's descriptor count also moves with sockets
      // other cases left to close, which once kept it a few short of IDLE (a CI flake).
      await eventually('the proxy accepted every connection', async () => (await agentConnections(proxy)) >= IDLE, 20_000, 100);

      const single: number[] = [];
      for (let i = 0; i < 5; i++) {
        const answer = await get(proxy.url, `/ok/v1/while-flooded-${i}`);
        expect(answer.status).toBe(200);
        single.push(answer.ms);
      }
      const burst = await Promise.all(Array.from({ length: 20 }, (_, i) => get(proxy.url, `/ok/v1/burst-${i}`)));
      for (const answer of burst) expect(answer.status).toBe(200);
      const memoryDuring = process.memoryUsage();
      const rssGrowth = (memoryDuring.rss - memoryBefore.rss) / 2 ** 20;
      const heapGrowth = (memoryDuring.heapUsed - memoryBefore.heapUsed) / 2 ** 20;
      const descriptorsDuring = openDescriptors();
      const status = await flood.next((e) => e.event === 'status', 2_000);
      console.info(
        `[faults] ${IDLE} idle connections opened in ${ready.ms} ms; proxy fds +${descriptorsDuring - descriptorsBefore}; ` +
          `rss +${rssGrowth.toFixed(1)} MiB, heap +${heapGrowth.toFixed(1)} MiB (~${((rssGrowth * 1024) / IDLE).toFixed(1)} KiB per connection); ` +
          `requests meanwhile ${single.map((ms) => ms.toFixed(0)).join(', ')} ms, burst of 20 max ${Math.max(...burst.map((a) => a.ms)).toFixed(0)} ms`,
      );
      expect(Math.max(...single)).toBeLessThan(1_000);
      expect(Math.max(...burst.map((a) => a.ms))).toBeLessThan(2_000);
      expect(rssGrowth).toBeLessThan(200);
      // Airlock drops none of them before limits.headers_timeout and says nothing on them.
      expect(status).toMatchObject({ open: IDLE, closedByPeer: 0, bytesReceived: 0 });

      flood.process.kill('SIGTERM');
      await once(flood.process, 'exit');
      child = null;
      await eventually('every server-side socket closed', async () => (await agentConnections(proxy)) === 0 && openDescriptors() <= descriptorsBefore + 5, 10_000, 50);
      expect((await get(proxy.url, '/ok/v1/after-flood')).status).toBe(200);
      // The clients closed without sending anything: nothing to audit.
      expect(proxy.auditRecords().filter((r) => r.code === 'request_timeout' || r.path === null)).toHaveLength(0);
    }, 60_000);

    it('connections that never send a request are answered 408 request_timeout and closed after limits.headers_timeout (each audited)', async () => {
      const COUNT = 300;
      const services = { ok: { upstream: okUpstream.url, credential: { secret: 'env:OK_KEY' }, routes: ROUTES } };
      const proxy = await startProxy({ limits: { headers_timeout: 1, keep_alive_timeout: 1 }, services, agents: grantAll(services) }, { env: { OK_KEY: keys.ok } });
      extraProxies.push(proxy);
      const flood = spawnIdle(new URL(proxy.url).port, COUNT);
      child = flood.process;
      const ready = await flood.next((e) => e.event === 'ready', 10_000);
      expect(ready.open).toBe(COUNT);
      const started = performance.now();
      const closed = await flood.next((e) => e.event === 'status' && e.open === 0, 6_000);
      console.info(`[faults] ${COUNT} idle connections closed by Airlock ${(performance.now() - started).toFixed(0)} ms after all were open (headers_timeout 1 s, checked every 0.5 s)`);
      expect(closed.closedByPeer).toBe(COUNT);
      expect(closed.firstBytes).toMatch(/^HTTP\/1\.1 408 /);
      expect(closed.firstBytes).toMatch(/application\/problem\+json/);
      flood.process.kill('SIGTERM');
      await once(flood.process, 'exit');
      child = null;
      const records = await eventually('an audit record per idle connection', () => {
        const timeouts = proxy.auditRecords().filter((r) => r.code === 'request_timeout');
        return timeouts.length >= COUNT ? timeouts : undefined;
      }, 5_000);
      expect(records[0]).toMatchObject({ decision: 'deny', status: 408, path: null, agent: null });
    }, 30_000);

    it('a keep-alive connection left idle after its response is closed after limits.keep_alive_timeout', async () => {
      const proxy = extraProxies.at(-1) as ProxyFixture;
      const { port } = new URL(proxy.url);
      const socket = connect(Number(port), '127.0.0.1');
      socket.on('error', () => undefined);
      const received: Buffer[] = [];
      socket.on('data', (data: Buffer) => received.push(data));
      await once(socket, 'connect');
      socket.write(`GET /ok/v1/keep-alive HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer ${agent.token}\r\n\r\n`);
      await eventually('the response', () => parseAnswer(Buffer.concat(received)).complete, 3_000, 10);
      const answeredAt = performance.now();
      await once(socket, 'close');
      const idleMs = performance.now() - answeredAt;
      agentSaw.push(Buffer.concat(received).toString('latin1'));
      expect(parseAnswer(Buffer.concat(received)).status).toBe(200);
      expect(idleMs).toBeGreaterThan(800);
      expect(idleMs).toBeLessThan(5_000);
    });
  });

  // --- the whole file -------------------------------------------------------------------------------

  it('background requests to the main proxy were all answered normally throughout', () => {
    if (backgroundTimer !== null) clearInterval(backgroundTimer);
    backgroundTimer = null;
    const failures = background.filter((b) => b.status !== 200 || b.body !== '{"ok":true}');
    const sorted = background.map((b) => b.ms).sort((a, b) => a - b);
    const p99 = sorted[Math.floor(sorted.length * 0.99)] ?? 0;
    const slowest = [...background].sort((a, b) => b.ms - a.ms).slice(0, 3);
    console.info(
      `[faults] background: ${background.length} requests, ${failures.length} failed, p99 ${p99.toFixed(0)} ms, max ${(sorted.at(-1) ?? 0).toFixed(0)} ms; ` +
        `slowest during: ${slowest.map((b) => `${b.ms.toFixed(0)} ms in "${b.during.split(' > ').at(-1) ?? ''}"`).join('; ')}`,
    );
    expect(background.length).toBeGreaterThan(50);
    expect(failures).toEqual([]);
    expect(p99).toBeLessThan(1_000);
    expect(sorted.at(-1) ?? 0, 'bounded even during the connection flood').toBeLessThan(5_000);
  });

  it('no canary in any response, log line or audit record', () => {
    const secrets = [...planted, ...store.issued, ...oauth.issued, ...vault.issuedTokens()];
    const surfaces: Surface[] = [{ name: 'agent responses', text: agentSaw.join('\n') }];
    for (const [name, proxy] of [['main', main], ['vaulted', vaulted], ['full-disk', fullDisk], ...extraProxies.map((p, i) => [`extra-${i}`, p] as const)] as const) {
      surfaces.push({ name: `${name} log`, text: proxy.logLines.join('') });
      // /dev/full is never read back.
      if (proxy !== fullDisk) surfaces.push({ name: `${name} audit`, text: proxy.auditText() });
    }
    assertNoLeak(secrets, surfaces);
  });

  it('the process stayed healthy: no unhandled rejection, event-loop p99 under 250 ms', () => {
    const { p99Ms, maxMs } = watch.assertHealthy();
    console.info(`[faults] event loop: p99 ${p99Ms.toFixed(1)} ms, max ${maxMs.toFixed(1)} ms`);
  });
});
