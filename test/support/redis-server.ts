/**
 * A real redis-server (Debian package redis-server) on 127.0.0.1 and a free port, for the tests of
 * shared state. No persistence; killed and restarted on the same port by the tests that need it.
 * `redisAvailable()` tells a suite to skip, loudly, when the binary is missing.
 */
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { Redis } from 'ioredis';
import { freePort } from '../helpers/operator.js';

export function redisAvailable(): boolean {
  const probe = spawnSync('redis-server', ['--version'], { encoding: 'utf8' });
  if (probe.error !== undefined) {
    console.warn('\n*** redis-server is not installed: the shared-state tests are SKIPPED. Install the Debian package `redis-server` (apt-get install -y redis-server). ***\n');
    return false;
  }
  return true;
}


export interface RedisServer {
  readonly url: string;
  readonly port: number;
  /** Stops the server (SIGKILL: like a crash). */
  kill(): Promise<void>;
  /** Starts it again on the same port; `args` are more redis-server options (`['--databases', '1']`). */
  start(args?: readonly string[]): Promise<void>;
  close(): Promise<void>;
}

export async function startRedisServer(): Promise<RedisServer> {
  const port = await freePort();
  let child: ChildProcess | null = null;
  const start = async (args: readonly string[] = []): Promise<void> => {
    child = spawn('redis-server', ['--port', String(port), '--bind', '127.0.0.1', '--save', '', '--appendonly', 'no', '--protected-mode', 'no', ...args], { stdio: 'ignore' });
    const deadline = Date.now() + 10_000;
    for (;;) {
      const probe = new Redis({ port, host: '127.0.0.1', lazyConnect: true, maxRetriesPerRequest: 0, retryStrategy: () => null });
      probe.on('error', () => undefined);
      try {
        await probe.connect();
        await probe.ping();
        probe.disconnect();
        return;
      } catch {
        probe.disconnect();
        if (Date.now() > deadline) throw new Error('redis-server did not start within 10 s');
        await new Promise((resolve) => setTimeout(resolve, 50));
      }
    }
  };
  const kill = async (): Promise<void> => {
    const running = child;
    child = null;
    if (running === null || running.exitCode !== null) return;
    await new Promise<void>((resolve) => {
      running.once('exit', () => resolve());
      running.kill('SIGKILL');
    });
  };
  await start();
  return { url: `redis://127.0.0.1:${port}`, port, kill, start: (args) => start(args), close: kill };
}
