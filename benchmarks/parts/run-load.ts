/**
 * The load generator: wrk when it is installed (Debian package wrk), autocannon (an npm dev dependency)
 * otherwise. Both run in their own process and report the same summary.
 */
import { spawn, spawnSync } from 'node:child_process';
import { createRequire } from 'node:module';

export const LOAD_TOOL: 'wrk' | 'autocannon' = spawnSync('wrk', ['--version']).error === undefined ? 'wrk' : 'autocannon';

export interface LoadResult {
  readonly requests: number;
  readonly rps: number;
  readonly p50Ms: number;
  readonly p99Ms: number;
  /** Non-2xx/3xx answers plus socket errors: a benchmark with errors measures the wrong thing. */
  readonly errors: number;
}

export interface LoadOptions {
  readonly url: string;
  readonly connections: number;
  readonly seconds: number;
  readonly headers?: Readonly<Record<string, string>>;
  readonly threads?: number;
}

function toMs(value: string): number {
  const match = /^([\d.]+)(us|ms|s|m)$/.exec(value);
  if (match === null) return Number.NaN;
  const n = Number(match[1]);
  return match[2] === 'us' ? n / 1000 : match[2] === 'ms' ? n : match[2] === 's' ? n * 1000 : n * 60_000;
}

export function parseWrk(output: string): LoadResult {
  const requests = Number(/(\d+) requests in/.exec(output)?.[1] ?? Number.NaN);
  const rps = Number(/Requests\/sec:\s+([\d.]+)/.exec(output)?.[1] ?? Number.NaN);
  const p50 = toMs(/^\s+50%\s+(\S+)/m.exec(output)?.[1] ?? '');
  const p99 = toMs(/^\s+99%\s+(\S+)/m.exec(output)?.[1] ?? '');
  const non2xx = Number(/Non-2xx or 3xx responses: (\d+)/.exec(output)?.[1] ?? 0);
  const socket = /Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)/.exec(output);
  const socketErrors = socket === null ? 0 : socket.slice(1).reduce((sum, n) => sum + Number(n), 0);
  return { requests, rps, p50Ms: p50, p99Ms: p99, errors: non2xx + socketErrors };
}

export function runLoad(options: LoadOptions): Promise<LoadResult> {
  return LOAD_TOOL === 'wrk' ? runWrk(options) : runAutocannon(options);
}

function collect(command: string, args: string[], parse: (output: string, code: number | null) => LoadResult): Promise<LoadResult> {
  return new Promise((resolve, reject) => {
    const child = spawn(command, args, { stdio: ['ignore', 'pipe', 'pipe'] });
    let out = '';
    let err = '';
    child.stdout.on('data', (chunk: Buffer) => (out += chunk.toString('utf8')));
    child.stderr.on('data', (chunk: Buffer) => (err += chunk.toString('utf8')));
    child.on('error', reject);
    child.on('close', (code) => {
      try {
        resolve(parse(out + err, code));
      } catch (error) {
        reject(new Error(`${command} failed (exit ${code}): ${(error as Error).message}\n${out}${err}`));
      }
    });
  });
}

function runAutocannon(options: LoadOptions): Promise<LoadResult> {
  const bin = createRequire(import.meta.url).resolve('autocannon/autocannon.js');
  const args = [bin, '-c', String(options.connections), '-d', String(options.seconds), '-j', '-t', '10'];
  for (const [name, value] of Object.entries(options.headers ?? {})) args.push('-H', `${name}=${value}`);
  args.push(options.url);
  return collect(process.execPath, args, (output) => {
    const json = JSON.parse(output.slice(output.indexOf('{'), output.lastIndexOf('}') + 1)) as {
      requests: { total: number; average: number };
      latency: { p50: number; p99: number };
      non2xx: number;
      errors: number;
      timeouts: number;
      duration: number;
    };
    return { requests: json.requests.total, rps: json.requests.total / json.duration, p50Ms: json.latency.p50, p99Ms: json.latency.p99, errors: json.non2xx + json.errors + json.timeouts };
  });
}

function runWrk(options: LoadOptions): Promise<LoadResult> {
  const args = ['-t', String(options.threads ?? 1), '-c', String(options.connections), '-d', `${options.seconds}s`, '--latency', '--timeout', '10s'];
  for (const [name, value] of Object.entries(options.headers ?? {})) args.push('-H', `${name}: ${value}`);
  args.push(options.url);
  return collect('wrk', args, (output, code) => {
    const result = parseWrk(output);
    if (code !== 0 || Number.isNaN(result.rps)) throw new Error('no summary');
    return result;
  });
}
