/**
 * The Node floor: the least a proxy in Node can do per request. node:http in, undici dispatch out with
 * a raw handler, one header injected, bytes relayed with backpressure, the upstream request aborted when
 * the client goes away. No auth, no checks, no redaction, no audit. Usage: floor-proxy <upstream origin>; prints its port on stdout.
 */
import { createServer } from 'node:http';
import { Pool, type Dispatcher } from 'undici';

const origin = process.argv[2] as string;
const pool = new Pool(origin, { connections: 128, pipelining: 1 });

const server = createServer((req, res) => {
  const headers: Record<string, string | string[]> = {};
  for (const [name, value] of Object.entries(req.headers)) if (value !== undefined && name !== 'host' && name !== 'connection') headers[name] = value;
  headers['authorization'] = 'Bearer floor-key';
  // A client that goes away mid-response (wrk closes its connections at the end of every run) must free
  // the upstream connection: paused for a 'drain' that never comes, it would stay taken, and after a few
  // runs every connection of the pool was (the floor then answered nothing). Heard from the start: at
  // 1,000 connections most requests wait in the pool's queue, and a client gone while its request
  // waited had no listener yet, so its request was sent later and held a connection for good.
  let controller: Dispatcher.DispatchController | null = null;
  let gone = false;
  res.once('close', () => {
    if (res.writableFinished) return;
    gone = true;
    controller?.abort(new Error('the client closed the connection'));
  });
  const handler: Dispatcher.DispatchHandler = {
    onRequestStart(started) {
      controller = started;
      if (gone) started.abort(new Error('the client closed the connection'));
    },
    onResponseStart(controller, status, upstreamHeaders) {
      const out: Record<string, string | string[]> = {};
      for (const [name, value] of Object.entries(upstreamHeaders)) if (value !== undefined && name !== 'connection' && name !== 'keep-alive' && name !== 'transfer-encoding') out[name] = value;
      res.writeHead(status, out);
      res.on('drain', () => controller.resume());
    },
    onResponseData(controller, chunk) {
      if (!res.write(chunk)) controller.pause();
    },
    onResponseEnd() {
      res.end();
    },
    onResponseError(_controller, error) {
      if (res.headersSent) res.destroy(error);
      else res.writeHead(502).end();
    },
  };
  pool.dispatch({ method: req.method as Dispatcher.HttpMethod, path: req.url as string, headers, body: req.method === 'GET' ? null : req }, handler);
});
server.keepAliveTimeout = 60_000;
server.listen(0, '127.0.0.1', () => {
  const address = server.address();
  process.stdout.write(`${typeof address === 'object' && address !== null ? address.port : 0}\n`);
});
process.on('SIGTERM', () => server.close(() => process.exit(0)));
