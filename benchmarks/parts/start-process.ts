/** Spawns a benchmark process (a TypeScript script under tsx, or Airlock's dist/main.js) and waits until it is ready. */
import { spawn, type ChildProcess } from 'node:child_process';
import { createWriteStream } from 'node:fs';
import { fileURLToPath } from 'node:url';

const START_TIMEOUT_MS = 30_000;

export interface BenchProcess {
  readonly pid: number;
  readonly port: number;
  /** https when the config has tls (its agent listener's scheme); http for every other process. */
  readonly scheme?: 'http' | 'https';
  stop(): Promise<void>;
}

function stopper(child: ChildProcess): () => Promise<void> {
  return async () => {
    if (child.exitCode !== null || child.signalCode !== null) return;
    const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()));
    child.kill('SIGTERM');
    const hard = setTimeout(() => child.kill('SIGKILL'), 10_000);
    await exited;
    clearTimeout(hard);
  };
}

/** A script that prints its port as its first line of stdout; `nodeFlags` go to node before the script. */
export function startScript(script: string, args: readonly string[] = [], nodeFlags: readonly string[] = [], env: Record<string, string> = {}): Promise<BenchProcess> {
  const path = fileURLToPath(new URL(script, import.meta.url));
  const child = spawn(process.execPath, [...nodeFlags, '--import', 'tsx', path, ...args], { stdio: ['ignore', 'pipe', 'inherit'], env: { ...process.env, ...env } });
  return new Promise((resolve, reject) => {
    let out = '';
    child.once('error', reject);
    child.once('exit', (code) => reject(new Error(`${script} exited (${code}) before it listened`)));
    child.stdout?.on('data', (chunk: Buffer) => {
      out += chunk.toString('utf8');
      const newline = out.indexOf('\n');
      if (newline >= 0) {
        child.stdout?.removeAllListeners('data');
        child.stdout?.resume();
        resolve({ pid: child.pid as number, port: Number(out.slice(0, newline)), stop: stopper(child) });
      }
    });
  });
}

/**
 * `node --no-memory-reducer [nodeFlags] dist/main.js serve --config F` (or another build's main.js); the
 * JSON log goes to logFile; ready when it prints where it listens.
 */
export function startAirlockProcess(
  configFile: string,
  env: Record<string, string>,
  logFile: string,
  main = fileURLToPath(new URL('../../dist/main.js', import.meta.url)),
  nodeFlags: readonly string[] = [],
): Promise<BenchProcess> {
  // As npm start and the Docker image run it (see NO_MEMORY_REDUCER in src/cli/serve-command.ts): each
  // Airlock here waits ~40 s between its runs, and would otherwise be measured in V8's shrunken-heap state.
  const child = spawn(process.execPath, ['--no-memory-reducer', ...nodeFlags, main, 'serve', '--config', configFile], { stdio: ['ignore', 'pipe', 'pipe'], env: { ...process.env, ...env } });
  child.stdout?.pipe(createWriteStream(logFile));
  return new Promise((resolve, reject) => {
    let err = '';
    // A build that never says where it listens would hang the benchmark before its cleanup.
    const timer = setTimeout(() => {
      child.kill('SIGKILL');
      reject(new Error(`Airlock did not listen within ${START_TIMEOUT_MS / 1000} s:\n${err}`));
    }, START_TIMEOUT_MS);
    child.once('exit', () => clearTimeout(timer));
    child.once('error', reject);
    child.once('exit', (code) => reject(new Error(`Airlock exited (${code}) before it listened:\n${err}`)));
    child.stderr?.on('data', (chunk: Buffer) => {
      err += chunk.toString('utf8');
      const match = /Airlock is listening on (https?):\/\/127\.0\.0\.1:(\d+)/.exec(err);
      if (match !== null) {
        clearTimeout(timer);
        child.stderr?.removeAllListeners('data');
        child.stderr?.resume();
        resolve({ pid: child.pid as number, port: Number(match[2]), scheme: match[1] as 'http' | 'https', stop: stopper(child) });
      }
    });
  });
}
