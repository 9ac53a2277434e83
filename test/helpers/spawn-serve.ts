/**
 * `node dist/main.js serve --config F` as a real process (the built CLI, signals and all), in its own
 * process group so that a cluster's workers end with it. Output is collected; stdout's JSON log lines
 * are parsed on demand. Waiting for it to listen is the caller's business (each test waits for what it
 * needs: a summary line, every worker's "airlock listening", or nothing at all).
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { existsSync } from 'node:fs';
import { resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { expect } from 'vitest';

export const DIST_MAIN = resolve(fileURLToPath(new URL('../..', import.meta.url)), 'dist/main.js');

export interface SpawnedServe {
  readonly child: ChildProcess;
  out(): string;
  err(): string;
  /** stdout's JSON log lines, parsed (a line that is not JSON as { unparsable }). */
  logs(): Array<Record<string, unknown>>;
  readonly exited: Promise<{ code: number | null; signal: NodeJS.Signals | null; at: number }>;
  isRunning(): boolean;
}

export function spawnServe(configFile: string, env: Record<string, string>, options: { cwd?: string } = {}): SpawnedServe {
  expect(existsSync(DIST_MAIN), `${DIST_MAIN} is missing: run \`npm run build\` (npm test does)`).toBe(true);
  const child = spawn(process.execPath, [DIST_MAIN, 'serve', '--config', configFile], {
    ...(options.cwd === undefined ? {} : { cwd: options.cwd }),
    env: { PATH: process.env['PATH'] ?? '', ...env },
    stdio: ['ignore', 'pipe', 'pipe'],
    detached: true,
  });
  let out = '';
  let err = '';
  child.stdout?.setEncoding('utf8').on('data', (chunk: string) => (out += chunk));
  child.stderr?.setEncoding('utf8').on('data', (chunk: string) => (err += chunk));
  let running = true;
  const exited = new Promise<{ code: number | null; signal: NodeJS.Signals | null; at: number }>((done) =>
    child.once('exit', (code, signal) => {
      running = false;
      done({ code, signal, at: Date.now() });
    }),
  );
  const logs = (): Array<Record<string, unknown>> =>
    out
      .split('\n')
      .filter((line) => line.startsWith('{'))
      .map((line) => {
        try {
          return JSON.parse(line) as Record<string, unknown>;
        } catch {
          return { unparsable: line };
        }
      });
  return { child, out: () => out, err: () => err, logs, exited, isRunning: () => running };
}
