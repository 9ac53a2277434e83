/**
 * A long response (server-sent events) read through Airlock with node:http, counting the events as
 * they arrive: for tests that end streams from the side (kill switch, revocation on another replica,
 * shutdown) and check when and how they ended.
 */
import { request as httpRequest, type Agent } from 'node:http';

export interface LiveStream {
  /** The response status, or 0 when the request failed before one arrived. */
  readonly status: Promise<number>;
  /** Complete events received so far. */
  events(): number;
  text(): string;
  /** Settles when the response ends, cleanly or not; `complete` is false when it was cut. `at` is Date.now(). */
  readonly ended: Promise<{ complete: boolean; at: number }>;
  isEnded(): boolean;
  close(): void;
}

/** `agent`: a keep-alive agent to reuse the connection afterwards; by default a connection of its own. */
export function openStream(url: string, token: string, agent?: Agent): LiveStream {
  let count = 0;
  let done = false;
  let text = '';
  let resolveStatus: (status: number) => void = () => undefined;
  let resolveEnded: (outcome: { complete: boolean; at: number }) => void = () => undefined;
  const status = new Promise<number>((resolve) => (resolveStatus = resolve));
  const ended = new Promise<{ complete: boolean; at: number }>((resolve) => (resolveEnded = resolve));
  const finish = (complete: boolean): void => {
    if (done) return;
    done = true;
    resolveEnded({ complete, at: Date.now() });
  };
  const req = httpRequest(url, { headers: { authorization: `Bearer ${token}`, accept: 'text/event-stream' }, agent: agent ?? false }, (res) => {
    resolveStatus(res.statusCode ?? 0);
    res.setEncoding('utf8');
    res.on('data', (chunk: string) => {
      text += chunk;
      count = text.split('\n\n').length - 1;
    });
    res.on('error', () => finish(false));
    res.on('end', () => finish(true));
    res.on('close', () => finish(res.complete));
  });
  req.on('error', () => {
    resolveStatus(0);
    finish(false);
  });
  req.end();
  return { status, events: () => count, text: () => text, ended, isEnded: () => done, close: () => req.destroy() };
}
