/**
 * What a human operator does to a running Airlock, for governance tests: calls to its admin API with an
 * admin token, and runs of the real CLI (`runCli` with string streams) against a config file that points
 * at the same admin listener. Everything the operator saw is kept, so a test can leak-check it.
 */
import { writeFileSync } from 'node:fs';
import { createServer } from 'node:net';
import { join } from 'node:path';
import type { CliIo } from '../../src/cli/cli-io.js';
import { runCli } from '../../src/cli/run-cli.js';
import { sendRequest, type SentResponse } from './send-request.js';

/**
 * A port that was free a moment ago, for a listener whose address a config must name in advance, or an
 * upstream that must refuse connections. Below Linux's ephemeral range (32768-60999), which port 0
 * draws from: a port taken from there was given, once closed, to another test file's listener bound to
 * port 0, and a "closed" upstream answered as another test's Airlock (a CI flake: 401 where 502 was due).
 */
export async function freePort(): Promise<number> {
  for (let attempt = 0; attempt < 100; attempt++) {
    const port = 20_000 + Math.floor(Math.random() * 12_000);
    const server = createServer();
    const bound = await new Promise<boolean>((resolve) => {
      server.once('error', () => resolve(false));
      server.listen(port, '127.0.0.1', () => resolve(true));
    });
    if (!bound) continue;
    await new Promise<void>((resolve) => server.close(() => resolve()));
    return port;
  }
  throw new Error('no free port found in 20000-31999 after 100 tries');
}

export function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

/** Polls `probe` until it returns something other than undefined/false, or fails after the deadline. */
export async function eventually<T>(what: string, probe: () => Promise<T | undefined | false> | T | undefined | false, timeoutMs = 5_000, everyMs = 20): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const value = await probe();
    if (value !== undefined && value !== false) return value;
    if (Date.now() > deadline) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}`);
    await sleep(everyMs);
  }
}

export interface AdminClient {
  call(method: string, path: string, body?: unknown, token?: string | null): Promise<SentResponse>;
  /** Every answer (status, headers, body), for leak checks. */
  readonly seen: string[];
}

export function adminClient(baseUrl: () => string, token: string): AdminClient {
  const seen: string[] = [];
  return {
    seen,
    async call(method, path, body, as = token) {
      const response = await sendRequest(`${baseUrl()}${path}`, {
        method,
        headers: { ...(as === null ? {} : { authorization: `Bearer ${as}` }), ...(body === undefined ? {} : { 'content-type': 'application/json' }) },
        ...(body === undefined ? {} : { body: JSON.stringify(body) }),
      });
      seen.push(`${response.status}\n${JSON.stringify(response.headers)}\n${response.text}`);
      return response;
    },
  };
}

export interface CliRun {
  readonly code: number;
  readonly stdout: string;
  readonly stderr: string;
}

/** The real CLI with string streams; stdout and stderr are appended to `seen`; `stdinText` is piped in. */
export async function runCliCapture(args: readonly string[], env: Record<string, string>, seen: string[], cwd = process.cwd(), stdinText = ''): Promise<CliRun> {
  let stdout = '';
  let stderr = '';
  const io: CliIo = {
    args,
    env,
    cwd,
    stdout: { write: (text: string) => (stdout += text) },
    stderr: { write: (text: string) => (stderr += text) },
    stdin: (async function* pipedInput() {
      if (stdinText !== '') yield Buffer.from(stdinText, 'utf8');
    })(),
    stopRequested: new Promise<string>(() => undefined),
  };
  const code = await runCli(io);
  seen.push(stdout, stderr);
  return { code, stdout, stderr };
}

/** Writes a config object as a YAML file (JSON is YAML) in `dir`; returns its path. */
export function writeConfigFile(dir: string, config: Record<string, unknown>, name = 'airlock.yaml'): string {
  const file = join(dir, name);
  writeFileSync(file, `${JSON.stringify(config, null, 2)}\n`, { mode: 0o600 });
  return file;
}
