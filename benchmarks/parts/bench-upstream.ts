/**
 * The upstream of every benchmark, in its own process so its CPU is not counted against a proxy:
 *   GET /small  a small JSON body (~100 bytes)
 *   GET /64k    a 64 KiB JSON-ish body
 *   GET /1mb    a 1 MiB body of JSON lines (what a big completion or a list endpoint sends)
 *   GET /sse    20 server-sent events 20 ms apart; each carries its send time (performance.timeOrigin +
 *               performance.now(), comparable across processes on one machine) so the client can
 *               measure how long each event took to arrive.
 * Prints its port on stdout as the first line.
 */
import { createServer } from 'node:http';

const SMALL = Buffer.from(JSON.stringify({ id: 'chatcmpl-bench', object: 'chat.completion', model: 'bench', choices: [{ index: 0, text: 'ok' }] }));

function body(size: number): Buffer {
  const lines: string[] = [];
  let length = 0;
  for (let i = 0; length < size; i++) {
    const line = JSON.stringify({ id: `item_${i}`, object: 'list.item', text: `lorem ipsum dolor sit amet, consectetur adipiscing elit ${i}`, n: i });
    lines.push(line);
    length += line.length + 1;
  }
  return Buffer.from(lines.join('\n')).subarray(0, size);
}

const BODY_64K = body(64 * 1024);
const BODY_1MB = body(1024 * 1024);
const SSE_EVENTS = 20;
const SSE_GAP_MS = 20;

function wallClockMs(): number {
  return performance.timeOrigin + performance.now();
}

const server = createServer((req, res) => {
  switch (req.url) {
    case '/small':
      res.writeHead(200, { 'content-type': 'application/json', 'content-length': SMALL.length });
      res.end(SMALL);
      return;
    case '/64k':
      res.writeHead(200, { 'content-type': 'application/json', 'content-length': BODY_64K.length });
      res.end(BODY_64K);
      return;
    case '/1mb':
      res.writeHead(200, { 'content-type': 'application/json', 'content-length': BODY_1MB.length });
      res.end(BODY_1MB);
      return;
    case '/sse': {
      res.writeHead(200, { 'content-type': 'text/event-stream', 'cache-control': 'no-cache' });
      let sent = 0;
      const timer = setInterval(() => {
        res.write(`data: {"n":${sent},"sent_at":${wallClockMs()}}\n\n`);
        if (++sent === SSE_EVENTS) {
          clearInterval(timer);
          res.end();
        }
      }, SSE_GAP_MS);
      res.on('close', () => clearInterval(timer));
      return;
    }
    default:
      res.writeHead(404).end();
  }
});
server.keepAliveTimeout = 60_000;
server.listen(0, '127.0.0.1', () => {
  const address = server.address();
  process.stdout.write(`${typeof address === 'object' && address !== null ? address.port : 0}\n`);
});
process.on('SIGTERM', () => server.close(() => process.exit(0)));
