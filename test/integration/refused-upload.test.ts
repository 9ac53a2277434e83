/**
 * A request refused while its body is still arriving (a denied upload). Found by review: Airlock
 * answered and closed the connection at once, the kernel reset it under the client still writing, and
 * node's HTTP clients (the SDKs' fetch) reported a connection error (EPIPE) instead of the answer: the
 * openai SDK's files.create, denied, raised APIConnectionError 16 times in 16, and every retry counted
 * as one more denial. Now the rest of the body is read and thrown away (within bounds) and the agent
 * gets the SDK's usual exception; a body declared larger than the bound is still answered with close.
 */
import OpenAI, { toFile } from 'openai';
import { readFileSync, rmSync } from 'node:fs';
import { Agent, request as httpRequest } from 'node:http';
import { connect } from 'node:net';
import type { Writable } from 'node:stream';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { generateAgentToken } from '../../src/identity/agent-token.js';
import { assertNoLeak } from '../helpers/assert-no-leak.js';
import { canary } from '../helpers/canary.js';
import { eventually, writeConfigFile } from '../helpers/operator.js';
import { spawnServe, type SpawnedServe } from '../helpers/spawn-serve.js';
import { tempDir } from '../helpers/start-proxy.js';
import { startUpstream, type Upstream } from '../helpers/start-upstream.js';

/** Writes `body` in 64 KiB pieces, as an upload is sent, waiting for 'drain' when told to; then `done`. */
function writeInPieces(stream: Writable, body: Buffer, done: () => void): void {
  let at = 0;
  const next = (): void => {
    while (at < body.length) {
      const piece = body.subarray(at, at + 64 * 1024);
      at += piece.length;
      if (!stream.write(piece)) return void stream.once('drain', next);
    }
    done();
  };
  next();
}

// A process of its own, as in production: in the test's process the client's writes and the proxy's
// reads share one event loop, and the whole body was in before the answer went (the reset never showed).
describe('a request refused while its body is still arriving', () => {
  const key = canary('upload');
  const bot = generateAgentToken();
  const dataDir = tempDir('airlock-refused-upload-');
  let upstream: Upstream;
  let airlock: SpawnedServe;
  let url: string;

  beforeAll(async () => {
    upstream = await startUpstream();
    const configFile = writeConfigFile(dataDir, {
      listen: '127.0.0.1:0',
      data_dir: dataDir,
      services: {
        openai: {
          upstream: upstream.url,
          credential: { secret: 'env:OPENAI_API_KEY', inject: 'bearer' },
          routes: [
            { method: 'POST', path: '/v1/files', scope: 'files:write' },
            { method: 'POST', path: '/v1/chat/completions', scope: 'chat:write' },
          ],
        },
      },
      // Not every denial here should suspend the agent.
      anomalies: { enabled: false },
      agents: { bot: { tokens: [bot.hash], credentials: [{ service: 'openai', max_scope: ['chat:write'] }] } },
    });
    airlock = spawnServe(configFile, { OPENAI_API_KEY: key });
    url = await eventually('Airlock listening', () => airlock.logs().find((line) => line['msg'] === 'airlock listening')?.['url'] as string | undefined, 15_000);
  });

  afterAll(async () => {
    if (airlock?.isRunning()) {
      airlock.child.kill('SIGTERM');
      await airlock.exited;
    }
    await upstream?.close();
    rmSync(dataDir, { recursive: true, force: true });
  });

  const audit = (): Array<Record<string, unknown>> =>
    readFileSync(join(dataDir, 'audit.jsonl'), 'utf8')
      .split('\n')
      .filter((line) => line !== '')
      .map((line) => JSON.parse(line) as Record<string, unknown>);

  it("a denied files.create raises the SDK's PermissionDeniedError, every time, never a connection error", async () => {
    const client = new OpenAI({ apiKey: bot.token, baseURL: `${url}/openai/v1`, maxRetries: 0 });
    const outcomes: string[] = [];
    for (let i = 0; i < 12; i++) {
      const file = await toFile(Buffer.alloc(256 * 1024, 'a'), `data-${i}.jsonl`);
      const error = await client.files.create({ file, purpose: 'fine-tune' }).then(
        () => null,
        (failure: unknown) => failure,
      );
      outcomes.push(error instanceof OpenAI.PermissionDeniedError ? `403 ${String((error.error as { code?: string } | undefined)?.code)}` : String(error));
    }
    expect(new Set(outcomes)).toEqual(new Set(['403 scope_denied']));
    expect(upstream.requests).toHaveLength(0);
    // Each refusal audited once.
    await eventually('the refusals audited', () => audit().filter((r) => r['code'] === 'scope_denied').length >= 12);
    expect(audit().filter((r) => r['code'] === 'scope_denied')).toHaveLength(12);
  });

  // Found by review: an upload declared over 16 MiB was answered and closed under the body, and the
  // SDK read a connection error (retrying twice). Provider uploads reach 25-32 MB.
  it("a denied 25 MiB files.create raises the SDK's PermissionDeniedError, not a connection error", async () => {
    const client = new OpenAI({ apiKey: bot.token, baseURL: `${url}/openai/v1`, maxRetries: 0 });
    const file = await toFile(Buffer.alloc(25 * 1024 * 1024, 'z'), 'speech.mp3');
    const error = await client.files.create({ file, purpose: 'batch' }).then(
      () => null,
      (failure: unknown) => failure,
    );
    expect(error instanceof OpenAI.PermissionDeniedError ? 'PermissionDeniedError' : String(error)).toBe('PermissionDeniedError');
    expect(upstream.requests).toHaveLength(0);
  });

  it('an unknown token uploading 2 MiB gets 401 on a connection kept for the next request', async () => {
    const agent = new Agent({ keepAlive: true, maxSockets: 1 });
    try {
      const post = (token: string, body: Buffer, path: string): Promise<{ status: number; code: string; socket: unknown }> =>
        new Promise((resolve, reject) => {
          const req = httpRequest(`${url}${path}`, { method: 'POST', agent, headers: { authorization: `Bearer ${token}`, 'content-type': 'application/octet-stream', 'content-length': body.length } }, (res) => {
            const chunks: Buffer[] = [];
            res.on('data', (chunk: Buffer) => chunks.push(chunk));
            res.on('end', () => resolve({ status: res.statusCode ?? 0, code: (JSON.parse(Buffer.concat(chunks).toString('utf8')) as { code?: string }).code ?? '', socket: req.socket }));
          });
          req.on('error', reject);
          // Written in pieces, as an upload is: the answer comes while the body is still being sent.
          writeInPieces(req, body, () => req.end());
        });
      const first = await post(generateAgentToken().token, Buffer.alloc(2 * 1024 * 1024, 'b'), '/openai/v1/files');
      expect(first).toMatchObject({ status: 401, code: 'unauthenticated' });
      const second = await post(bot.token, Buffer.from('{"messages":[]}'), '/openai/v1/chat/completions');
      expect(second.status).toBe(200);
      expect(second.socket).toBe(first.socket);
    } finally {
      agent.destroy();
    }
  });

  // Found by review: a connection that closes after the answer was answered before its body was in,
  // node closed it, and the client still writing saw a reset (Python's urllib, which sends
  // `Connection: close` on every request, raised URLError EPIPE, never HTTPError 401).
  it('a client that sends Connection: close gets its 401 after the upload, never a broken pipe', async () => {
    const outcomes: string[] = [];
    for (let i = 0; i < 4; i++) {
      const body = Buffer.alloc(4 * 1024 * 1024, 'd');
      const outcome = await new Promise<string>((resolve) => {
        const req = httpRequest(`${url}/openai/v1/files`, { method: 'POST', agent: false, headers: { authorization: `Bearer ${generateAgentToken().token}`, connection: 'close', 'content-length': body.length } }, (res) => {
          const chunks: Buffer[] = [];
          res.on('data', (chunk: Buffer) => chunks.push(chunk));
          res.on('end', () => resolve(`${res.statusCode} ${(JSON.parse(Buffer.concat(chunks).toString('utf8')) as { code?: string }).code} ${res.headers.connection}`));
        });
        req.on('error', (error: NodeJS.ErrnoException) => resolve(`error ${error.code}`));
        writeInPieces(req, body, () => req.end());
      });
      outcomes.push(outcome);
    }
    expect(outcomes).toEqual(Array(4).fill('401 unauthenticated close'));
  });

  it('so does an HTTP/1.0 client', async () => {
    const { port } = new URL(url);
    const body = Buffer.alloc(4 * 1024 * 1024, 'e');
    const answer = await new Promise<string>((resolve) => {
      const socket = connect(Number(port), '127.0.0.1');
      const received: Buffer[] = [];
      let failure: string | null = null;
      socket.on('data', (chunk: Buffer) => received.push(chunk));
      socket.on('error', (error: NodeJS.ErrnoException) => {
        failure = `error ${error.code}`;
      });
      // Every byte written and the answer read, with no reset on the way.
      socket.on('close', () => resolve(failure ?? Buffer.concat(received).toString('latin1')));
      socket.write(`POST /openai/v1/files HTTP/1.0\r\nHost: airlock\r\nAuthorization: Bearer ${generateAgentToken().token}\r\nContent-Length: ${body.length}\r\n\r\n`);
      writeInPieces(socket, body, () => undefined);
    });
    expect(answer).toMatch(/^HTTP\/1\.1 401 /);
    expect(answer).toContain('"code":"unauthenticated"');
  });

  it('a body declared larger than the bound is answered and the connection closed, as before', async () => {
    const answer = await new Promise<{ status: number; connection: string | undefined }>((resolve, reject) => {
      const req = httpRequest(`${url}/openai/v1/files`, { method: 'POST', headers: { authorization: `Bearer ${bot.token}`, 'content-length': 128 * 1024 * 1024 } }, (res) => {
        res.resume();
        resolve({ status: res.statusCode ?? 0, connection: res.headers.connection });
      });
      req.on('error', reject);
      req.write(Buffer.alloc(1024, 'c'));
    });
    expect(answer).toEqual({ status: 403, connection: 'close' });
    assertNoLeak([key, bot.token], [
      { name: 'audit', text: readFileSync(join(dataDir, 'audit.jsonl'), 'utf8') },
      { name: 'logs', text: `${airlock.out()}${airlock.err()}` },
    ]);
  });
});
