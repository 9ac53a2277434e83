/**
 * The admin listener's bound on sockets (bound-admin-connections.ts) over TLS (admin.tls): a request's
 * socket is then the TLS socket made at 'secureConnection', not the TCP one of 'connection'. An admin
 * call being answered must keep its socket when newcomers push past the bound, and the oldest idle TLS
 * connection is closed instead. Keyed by the TCP socket without taking the TLS one back to it, the held
 * call was not found (its hold did nothing) and was closed as if idle.
 */
import { once } from 'node:events';
import { readFileSync, rmSync } from 'node:fs';
import { createServer, type Server } from 'node:https';
import type { AddressInfo } from 'node:net';
import { connect as connectTcp, type Socket } from 'node:net';
import { connect, type TLSSocket } from 'node:tls';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { AdminConnections } from '../../src/admin/bound-admin-connections.js';
import { serveTls } from '../../src/ingress/serve-tls.js';
import { eventually } from '../helpers/operator.js';
import { tempDir } from '../helpers/start-proxy.js';
import { HAVE_OPENSSL, makeTestCa, warnWithoutOpenssl } from '../helpers/test-certificates.js';

warnWithoutOpenssl('admin-connections-tls.test.ts', 'the TLS connection-bound tests');

const BOUND = 3;

describe.skipIf(!HAVE_OPENSSL)('the admin connection bound over TLS', () => {
  let dir: string;
  let ca: Buffer;
  let server: Server;
  let port: number;
  const sockets: TLSSocket[] = [];

  beforeAll(async () => {
    dir = tempDir('airlock-admin-bound-tls-');
    const authority = makeTestCa(dir);
    const files = authority.issue('bound');
    ca = readFileSync(authority.ca);
    let connections: AdminConnections | null = null;
    server = createServer({ cert: readFileSync(files.cert), key: readFileSync(files.key) }, (req, res) => {
      if (req.url === '/hold') {
        // An admin call being answered (a console's audit stream): it keeps its place.
        connections?.hold(req, res);
        res.writeHead(200, { 'content-type': 'text/event-stream' });
        res.write(': held\n\n');
        return;
      }
      res.end('ok');
    });
    connections = new AdminConnections(server as never, BOUND, true);
    server.listen(0, '127.0.0.1');
    await once(server, 'listening');
    port = (server.address() as AddressInfo).port;
  });

  afterAll(async () => {
    for (const socket of sockets) socket.destroy();
    server?.closeAllConnections();
    server?.close();
    if (dir !== undefined) rmSync(dir, { recursive: true, force: true });
  });

  async function open(): Promise<TLSSocket> {
    const socket = connect({ host: '127.0.0.1', port, ca, servername: 'localhost' });
    socket.on('error', () => undefined);
    sockets.push(socket);
    await once(socket, 'secureConnect');
    return socket;
  }

  it('keeps a held call past the bound and closes the oldest idle connection instead', async () => {
    const held = await open();
    held.write('GET /hold HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n');
    let heldText = '';
    held.on('data', (chunk: Buffer) => (heldText += chunk.toString('utf8')));
    await eventually('the held call to be answered', () => heldText.includes(': held') || undefined);
    const idle: TLSSocket[] = [];
    for (let i = 0; i < BOUND + 1; i += 1) idle.push(await open());
    // The bound is 3 sockets: the held one and the newest two idle stay; the two oldest idle go.
    await eventually('the oldest idle connections to be closed', () => (idle[0]?.destroyed || idle[0]?.readableEnded) && (idle[1]?.destroyed || idle[1]?.readableEnded) ? true : undefined);
    expect(held.destroyed || held.readableEnded).toBe(false);
    expect(idle.slice(2).every((socket) => !socket.destroyed && !socket.readableEnded)).toBe(true);
  });
});

/**
 * As the admin listener has it (admin-api.ts): serveTls in front. A connection that has not finished
 * its handshake (it sent nothing yet, or a plain-HTTP head being read) is a socket too. Counted only
 * at 'secureConnection', such connections were outside the bound: a local process opening them by the
 * thousand held that many descriptors, each for up to twice the headers deadline, however low the
 * bound.
 */
describe.skipIf(!HAVE_OPENSSL)('the admin connection bound over TLS, before the handshake', () => {
  let dir: string;
  let ca: Buffer;
  let server: ReturnType<typeof serveTls>;
  let port: number;
  const sockets: Array<TLSSocket | Socket> = [];

  beforeAll(async () => {
    dir = tempDir('airlock-admin-bound-unshaken-');
    const authority = makeTestCa(dir);
    const files = authority.issue('unshaken');
    ca = readFileSync(authority.ca);
    let connections: AdminConnections | null = null;
    const https = createServer({ cert: readFileSync(files.cert), key: readFileSync(files.key), handshakeTimeout: 30_000 }, (req, res) => {
      connections?.hold(req, res);
      res.writeHead(200, { 'content-type': 'text/event-stream' });
      res.write(': held\n\n');
    });
    // Deadlines far longer than the test: only the bound can close these connections.
    server = serveTls(https, { headersTimeoutMs: 30_000, maxHeaderBytes: 16 * 1024 }, { onPlainHttp: (socket) => socket.destroy() });
    connections = new AdminConnections(server as never, BOUND, true);
    server.listen(0, '127.0.0.1');
    await once(server, 'listening');
    port = (server.address() as AddressInfo).port;
  });

  afterAll(async () => {
    for (const socket of sockets) socket.destroy();
    server?.closeAllConnections();
    server?.close();
    if (dir !== undefined) rmSync(dir, { recursive: true, force: true });
  });

  it('counts connections still before their handshake, and closes the oldest idle ones past the bound; a held call stays', async () => {
    const held = connect({ host: '127.0.0.1', port, ca, servername: 'localhost' });
    held.on('error', () => undefined);
    sockets.push(held);
    await once(held, 'secureConnect');
    let heldText = '';
    held.on('data', (chunk: Buffer) => (heldText += chunk.toString('utf8')));
    held.write('GET /v1/audit/stream HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n');
    await eventually('the held call to be answered', () => heldText.includes(': held') || undefined);
    const silent: Socket[] = [];
    for (let i = 0; i < BOUND + 2; i += 1) {
      const socket = connectTcp(port, '127.0.0.1');
      socket.on('error', () => undefined);
      sockets.push(socket);
      silent.push(socket);
      await once(socket, 'connect');
    }
    // The bound is 3 sockets: the held call and the newest two silent ones stay; the three oldest go.
    const gone = (socket: Socket): boolean => socket.destroyed || socket.readableEnded;
    await eventually('the oldest silent connections to be closed', () => (silent.slice(0, 3).every(gone) ? true : undefined), 3_000);
    expect(silent.slice(3).some(gone)).toBe(false);
    expect(held.destroyed || held.readableEnded).toBe(false);
  });
});
