/**
 * Child process for the idle-connection flood in test/hostile/faults.test.ts: opens COUNT TCP
 * connections to 127.0.0.1:PORT that never send a byte, and holds them until killed.
 *
 *   node --import tsx test/hostile/support/idle-connections.ts PORT COUNT
 *
 * It runs apart from the test process because both ends of 10,000 connections in one process would
 * need 20,000 descriptors, the whole `ulimit -n` of the machines this suite runs on.
 *
 * Protocol on stdout, one JSON object per line:
 *   {"event":"ready","open":N,"failed":F,"ms":T}   once every connection attempt has settled
 *   {"event":"status","open":N,"closedByPeer":C,"bytesReceived":B,"firstBytes":"..."}   every 250 ms
 * `closedByPeer` counts connections the server ended; `firstBytes` is the start of the first answer a
 * server sent on an idle connection (for instance a 408), so the test can say what it was.
 * SIGTERM (or stdin closing) destroys every socket and exits 0.
 */
import { connect, type Socket } from 'node:net';

const port = Number(process.argv[2]);
const count = Number(process.argv[3] ?? '10000');
if (!Number.isInteger(port) || port <= 0 || !Number.isInteger(count) || count <= 0) {
  process.stderr.write('usage: idle-connections.ts PORT COUNT\n');
  process.exit(2);
}

/** Connection attempts in flight at once: well under the listener's accept backlog (511). */
const WAVE = 250;

const sockets = new Set<Socket>();
let open = 0;
let failed = 0;
let closedByPeer = 0;
let bytesReceived = 0;
let firstBytes = '';
let shuttingDown = false;
const started = Date.now();

function emit(event: Record<string, unknown>): void {
  process.stdout.write(`${JSON.stringify(event)}\n`);
}

function openOne(): Promise<void> {
  return new Promise((resolve) => {
    const socket = connect({ port, host: '127.0.0.1' });
    let settled = false;
    socket.setNoDelay(true);
    socket.on('connect', () => {
      settled = true;
      open++;
      sockets.add(socket);
      resolve();
    });
    socket.on('data', (chunk: Buffer) => {
      bytesReceived += chunk.length;
      if (firstBytes === '') firstBytes = chunk.toString('latin1').slice(0, 120);
    });
    socket.on('error', () => {
      if (!settled) {
        settled = true;
        failed++;
        resolve();
      }
    });
    socket.on('close', () => {
      if (sockets.delete(socket)) {
        open--;
        if (!shuttingDown) closedByPeer++;
      }
    });
  });
}

function shutdown(): void {
  shuttingDown = true;
  for (const socket of sockets) socket.destroy();
  sockets.clear();
  process.exit(0);
}

process.on('SIGTERM', shutdown);
process.on('SIGINT', shutdown);
// The parent dying (or closing our stdin) must not leave thousands of sockets behind.
process.stdin.on('end', shutdown);
process.stdin.on('error', shutdown);
process.stdin.resume();

for (let done = 0; done < count; done += WAVE) {
  const wave: Array<Promise<void>> = [];
  for (let i = done; i < Math.min(count, done + WAVE); i++) wave.push(openOne());
  await Promise.all(wave);
}
emit({ event: 'ready', open, failed, ms: Date.now() - started });
setInterval(() => emit({ event: 'status', open, closedByPeer, bytesReceived, firstBytes }), 250);
