/**
 * A plain-HTTP request on an HTTPS listener (serve-tls.ts; the agent listeners with `tls`, the admin
 * API with `admin.tls`) is read until its head is whole, its header bytes are reached, or the listener's
 * headers deadline passes, counted from its first byte. The deadline was the socket's idle timeout,
 * which each byte starts again: a client sending a byte just inside it held the connection, for the
 * admin listener 16 KiB at one byte per 10 s, about two days, and uncounted by the admin connection bound.
 */
import { once } from 'node:events';
import { readFileSync, rmSync } from 'node:fs';
import { createServer, type Server } from 'node:https';
import { connect, type AddressInfo, type Socket } from 'node:net';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { serveTls } from '../../src/ingress/serve-tls.js';
import { sleep } from '../helpers/operator.js';
import { tempDir } from '../helpers/start-proxy.js';
import { HAVE_OPENSSL, makeTestCa, warnWithoutOpenssl } from '../helpers/test-certificates.js';

warnWithoutOpenssl('serve-tls-plain-deadline.test.ts', 'the plain-HTTP deadline tests');

const DEADLINE_MS = 400;

describe.skipIf(!HAVE_OPENSSL)('a plain-HTTP head on an HTTPS listener, sent slowly', () => {
  let dir: string;
  let server: Server | ReturnType<typeof serveTls>;
  let port: number;
  const heads: string[] = [];

  beforeAll(async () => {
    dir = tempDir('airlock-plain-deadline-');
    const files = makeTestCa(dir).issue('plain');
    server = serveTls(createServer({ cert: readFileSync(files.cert), key: readFileSync(files.key) }), { headersTimeoutMs: DEADLINE_MS, maxHeaderBytes: 16 * 1024 }, {
      onPlainHttp(socket: Socket, head: string) {
        heads.push(head);
        socket.end('HTTP/1.1 400 Bad Request\r\nconnection: close\r\ncontent-length: 0\r\n\r\n');
        setTimeout(() => socket.destroy(), 100).unref();
      },
    });
    server.listen(0, '127.0.0.1');
    await once(server, 'listening');
    port = (server.address() as AddressInfo).port;
  });

  afterAll(async () => {
    server?.closeAllConnections();
    server?.close();
    if (dir !== undefined) rmSync(dir, { recursive: true, force: true });
  });

  it('is answered and closed once the headers deadline passes, though a byte came within every interval of it', async () => {
    const socket = connect(port, '127.0.0.1');
    socket.on('error', () => undefined);
    socket.on('data', () => undefined);
    await once(socket, 'connect');
    const started = Date.now();
    let closedAfter: number | null = null;
    socket.once('close', () => (closedAfter = Date.now() - started));
    const head = `GET /v1/health HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: ${'a'.repeat(200)}`;
    for (let i = 0; i < head.length && closedAfter === null && Date.now() - started < 6 * DEADLINE_MS; i += 1) {
      socket.write(head[i] as string);
      await sleep(DEADLINE_MS / 4);
    }
    socket.destroy();
    expect(closedAfter, 'the connection was still open after six headers deadlines').not.toBeNull();
    expect(closedAfter as unknown as number).toBeLessThan(3 * DEADLINE_MS);
    // Answered with what had come (the refusal reads the head for a token it carried).
    expect(heads.at(-1)).toMatch(/^GE/);
  });
});
