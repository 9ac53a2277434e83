/**
 * Requests one at a time on a fixed schedule, one every `intervalMs`, so that each finds the proxy idle:
 * "unloaded" as an agent sees it, whose calls are far apart. wrk at one connection sends the next request
 * the moment an answer arrives, so each request there also waits behind the work a proxy does after
 * answering the one before (Airlock: its audit record, log line, metrics); the bench reports both.
 *
 * The client is a raw keep-alive socket (no HTTP library), so its own cost is small and the same for every
 * target. A request is timed from its write to the last byte of its answer. When an answer comes after the
 * next request's slot, that request goes at once and is counted as late (a closed loop then, not a paced one).
 */
import { connect, type Socket } from 'node:net';
import type { LoadOptions, LoadResult } from './run-load.js';

export interface PacedOptions {
  readonly url: string;
  readonly requests: number;
  readonly intervalMs: number;
  readonly headers?: Readonly<Record<string, string>>;
}

export interface PacedResult extends LoadResult {
  /** Requests sent after their slot because the answer before came late. */
  readonly late: number;
}

/** The benchmarks' pace: one request every 2 ms. */
export const PACED_INTERVAL_MS = 2;

/** `options.seconds` of requests at PACED_INTERVAL_MS, for the places that take run-load's options (connections is 1). */
export function runPacedFor(options: LoadOptions): Promise<PacedResult> {
  return runPaced({ url: options.url, headers: options.headers ?? {}, requests: Math.round((options.seconds * 1000) / PACED_INTERVAL_MS), intervalMs: PACED_INTERVAL_MS });
}

const sleep = (ms: number): Promise<void> => new Promise((resolve) => setTimeout(resolve, ms));

/** Reads one response off the socket: its status once its content-length bytes of body are in. */
class ResponseReader {
  #buffer: Buffer = Buffer.alloc(0);
  #waiting: { resolve: (status: number) => void; reject: (error: Error) => void } | null = null;
  #failure: Error | null = null;

  constructor(socket: Socket) {
    socket.on('data', (chunk: Buffer) => {
      this.#buffer = this.#buffer.length === 0 ? chunk : Buffer.concat([this.#buffer, chunk]);
      this.#settle();
    });
    const fail = (error: Error): void => {
      this.#failure ??= error;
      this.#waiting?.reject(this.#failure);
      this.#waiting = null;
    };
    socket.on('error', fail);
    socket.on('close', () => fail(new Error('the target closed the connection')));
  }

  next(): Promise<number> {
    if (this.#failure !== null) return Promise.reject(this.#failure);
    return new Promise((resolve, reject) => {
      this.#waiting = { resolve, reject };
      this.#settle();
    });
  }

  #settle(): void {
    if (this.#waiting === null) return;
    const end = this.#buffer.indexOf('\r\n\r\n');
    if (end < 0) return;
    const head = this.#buffer.subarray(0, end).toString('latin1');
    const length = /\r\ncontent-length:\s*(\d+)/i.exec(head);
    if (length === null) {
      this.#waiting.reject(new Error(`the paced load reads answers with a content-length only; got: ${head.slice(0, 200)}`));
      this.#waiting = null;
      return;
    }
    const total = end + 4 + Number(length[1]);
    if (this.#buffer.length < total) return;
    this.#buffer = this.#buffer.subarray(total);
    const waiting = this.#waiting;
    this.#waiting = null;
    waiting.resolve(Number(head.slice(9, 12)));
  }
}

export async function runPaced(options: PacedOptions): Promise<PacedResult> {
  const url = new URL(options.url);
  const lines = [`GET ${url.pathname}${url.search} HTTP/1.1`, `host: ${url.host}`];
  for (const [name, value] of Object.entries(options.headers ?? {})) lines.push(`${name}: ${value}`);
  const request = Buffer.from(`${lines.join('\r\n')}\r\n\r\n`, 'latin1');
  const socket = connect(Number(url.port), url.hostname);
  socket.setNoDelay(true);
  await new Promise<void>((resolve, reject) => socket.once('connect', resolve).once('error', reject));
  const reader = new ResponseReader(socket);
  const latencies = new Float64Array(options.requests);
  let errors = 0;
  let late = 0;
  const started = performance.now();
  try {
    for (let i = 0; i < options.requests; i++) {
      const wait = started + i * options.intervalMs - performance.now();
      if (wait > 0) await sleep(wait);
      else if (i > 0) late++;
      const sent = performance.now();
      socket.write(request);
      const status = await reader.next();
      latencies[i] = performance.now() - sent;
      if (!(status >= 200 && status < 400)) errors++;
    }
  } finally {
    socket.destroy();
  }
  const seconds = (performance.now() - started) / 1000;
  latencies.sort();
  const at = (p: number): number => Math.round((latencies[Math.min(latencies.length - 1, Math.floor(p * latencies.length))] as number) * 1000) / 1000;
  return { requests: options.requests, rps: options.requests / seconds, p50Ms: at(0.5), p99Ms: at(0.99), errors, late };
}
