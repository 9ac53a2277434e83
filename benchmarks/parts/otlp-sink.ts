/**
 * An OTLP/HTTP collector stand-in for the benchmarks: takes every export, answers 200, counts them.
 * In the harness's own process, as a collector would be on another machine's CPU budget rather than
 * the proxy's.
 */
import { createServer, type Server } from 'node:http';

export interface OtlpSink {
  readonly server: Server;
  readonly url: string;
  /** Export requests received. */
  exports(): number;
  close(): Promise<void>;
}

export function startOtlpSink(): Promise<OtlpSink> {
  let received = 0;
  const server = createServer((req, res) => {
    req.resume();
    req.on('end', () => {
      received++;
      res.writeHead(200, { 'content-type': 'application/json' }).end('{}');
    });
  });
  return new Promise((resolve) =>
    server.listen(0, '127.0.0.1', () => {
      const address = server.address();
      resolve({
        server,
        url: `http://127.0.0.1:${typeof address === 'object' && address !== null ? address.port : 0}`,
        exports: () => received,
        close: () => new Promise<void>((done) => server.close(() => done())),
      });
    }),
  );
}
