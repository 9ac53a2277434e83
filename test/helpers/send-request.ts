/**
 * One HTTP/1.1 request with node:http on a fresh connection (no keep-alive pool shared between tests,
 * no redirect following, Host settable), returning status, headers and the body bytes. For framings
 * node would not produce (or would refuse), use raw-http.ts instead.
 */
import { request as httpRequest, type IncomingHttpHeaders } from 'node:http';

export interface SentResponse {
  readonly status: number;
  readonly headers: IncomingHttpHeaders;
  readonly body: Buffer;
  readonly text: string;
  json<T = Record<string, unknown>>(): T;
}

export interface SendOptions {
  readonly method?: string;
  readonly headers?: Record<string, string | string[] | number>;
  /** A whole body (node sends it with Content-Length unless the headers say chunked). */
  readonly body?: Buffer | string;
  /** Body written chunk by chunk with Transfer-Encoding: chunked. */
  readonly chunks?: ReadonlyArray<Buffer | string>;
  readonly timeoutMs?: number;
  /** The client address to send from (another loopback address, e.g. 127.0.0.2: a second client). */
  readonly localAddress?: string;
}

export function sendRequest(url: string, options: SendOptions = {}): Promise<SentResponse> {
  const timeoutMs = options.timeoutMs ?? 10_000;
  const headers: Record<string, string | string[] | number> = { ...(options.headers ?? {}) };
  if (options.chunks !== undefined) headers['transfer-encoding'] = 'chunked';
  return new Promise((resolve, reject) => {
    const req = httpRequest(url, { method: options.method ?? 'GET', headers, agent: false, ...(options.localAddress === undefined ? {} : { localAddress: options.localAddress }) }, (res) => {
      const chunks: Buffer[] = [];
      res.on('data', (chunk: Buffer) => chunks.push(chunk));
      res.on('error', fail);
      res.on('aborted', () => fail(new Error('response aborted before its end')));
      res.on('end', () => {
        clearTimeout(timer);
        const body = Buffer.concat(chunks);
        const text = body.toString('utf8');
        resolve({
          status: res.statusCode ?? 0,
          headers: res.headers,
          body,
          text,
          json<T>() {
            return JSON.parse(text) as T;
          },
        });
      });
    });
    const timer = setTimeout(() => {
      req.destroy();
      reject(new Error(`no complete response from ${url} within ${timeoutMs} ms`));
    }, timeoutMs);
    function fail(error: Error): void {
      clearTimeout(timer);
      reject(error);
    }
    req.on('error', fail);
    if (options.chunks !== undefined) {
      for (const chunk of options.chunks) req.write(chunk);
      req.end();
    } else {
      req.end(options.body);
    }
  });
}

/** The problem+json body of an Airlock error response. */
export interface Problem {
  type: string;
  title: string;
  status: number;
  detail: string;
  code: string;
  request_id: string;
  error: { type: string; code: string; message: string };
}
