/**
 * A real node:http upstream on 127.0.0.1, port 0, that records every request exactly as it arrived
 * (request target, raw header pairs, body bytes). The default handler answers a neutral {"ok":true};
 * `echoHandler` reflects the request like httpbin; tests pass their own handler to play an API.
 * Teardown closes every connection.
 */
import { once } from 'node:events';
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';

export interface RecordedRequest {
  readonly method: string;
  /** The request target on the wire, byte for byte (path + query). */
  readonly target: string;
  /** Raw header pairs as received: [name, value, name, value, ...]. */
  readonly rawHeaders: readonly string[];
  readonly body: Buffer;
  /** All values of a header (case-insensitive). */
  header(name: string): string[];
}

export type UpstreamHandler = (req: IncomingMessage, res: ServerResponse, recorded: RecordedRequest) => void | Promise<void>;

export interface Upstream {
  readonly url: string;
  readonly port: number;
  readonly requests: RecordedRequest[];
  readonly server: Server;
  close(): Promise<void>;
}

/** The default: a small JSON answer that says nothing about the request. */
export function okHandler(_req: IncomingMessage, res: ServerResponse): void {
  const body = '{"ok":true}';
  res.writeHead(200, { 'content-type': 'application/json', 'content-length': Buffer.byteLength(body) });
  res.end(body);
}

/** Echoes the request record back as JSON (headers included), like httpbin's /anything. */
export function echoHandler(_req: IncomingMessage, res: ServerResponse, recorded: RecordedRequest): void {
  const body = JSON.stringify({ method: recorded.method, target: recorded.target, rawHeaders: recorded.rawHeaders, body: recorded.body.toString('utf8') });
  res.writeHead(200, { 'content-type': 'application/json', 'content-length': Buffer.byteLength(body) });
  res.end(body);
}

/**
 * Refuses every request with 401 and names the bearer token it was given in its error, as some providers
 * do: an upstream that has disabled the account, whose answer Airlock must redact before relaying it.
 */
export function refusingHandler(_req: IncomingMessage, res: ServerResponse, recorded: RecordedRequest): void {
  const token = (recorded.header('authorization')[0] ?? '').replace(/^Bearer /, '');
  const body = JSON.stringify({ error: 'invalid_token', error_description: `the token ${token} is not accepted` });
  res.writeHead(401, { 'content-type': 'application/json', 'content-length': Buffer.byteLength(body) });
  res.end(body);
}

function record(req: IncomingMessage, body: Buffer): RecordedRequest {
  const rawHeaders = [...req.rawHeaders];
  return {
    method: req.method ?? '',
    target: req.url ?? '',
    rawHeaders,
    body,
    header(name: string): string[] {
      const wanted = name.toLowerCase();
      const values: string[] = [];
      for (let i = 0; i < rawHeaders.length; i += 2) if ((rawHeaders[i] as string).toLowerCase() === wanted) values.push(rawHeaders[i + 1] as string);
      return values;
    },
  };
}

/** Starts an upstream; the handler sees each request after its whole body has arrived. */
export async function startUpstream(handler: UpstreamHandler = okHandler): Promise<Upstream> {
  const requests: RecordedRequest[] = [];
  const server = createServer((req, res) => {
    const chunks: Buffer[] = [];
    req.on('data', (chunk: Buffer) => chunks.push(chunk));
    req.on('end', () => {
      const recorded = record(req, Buffer.concat(chunks));
      requests.push(recorded);
      Promise.resolve(handler(req, res, recorded)).catch((error: unknown) => {
        res.destroy(error as Error);
      });
    });
  });
  server.listen(0, '127.0.0.1');
  await once(server, 'listening');
  const port = (server.address() as AddressInfo).port;
  return {
    url: `http://127.0.0.1:${port}`,
    port,
    requests,
    server,
    async close() {
      server.closeAllConnections();
      await new Promise<void>((resolve) => server.close(() => resolve()));
    },
  };
}
