/**
 * A start-up that fails part way closes what it had opened (found in stop 27, left then): a first
 * configuration that failed to build left the audit log and state files open and the Redis connections
 * up. The CLI exits then; code embedding `startAirlock` (tests, a host process) went on holding them.
 * Checked from the outside: the process's open file descriptors (/proc/self/fd) and Redis's client list.
 */
import { once } from 'node:events';
import { mkdirSync, readdirSync, readlinkSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import { createServer, type AddressInfo } from 'node:net';
import { Redis } from 'ioredis';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startAirlock } from '../../src/app.js';
import { buildConfig } from '../../src/config/load-config.js';
import { generateAgentToken } from '../../src/identity/agent-token.js';
import type { AirlockConfig } from '../../src/config/types.js';
import { freePort } from '../helpers/operator.js';
import { tempDir } from '../helpers/start-proxy.js';
import { redisAvailable, startRedisServer, type RedisServer } from '../support/redis-server.js';

/** The files under `dir` this process holds open. */
function openFilesUnder(dir: string): string[] {
  const open: string[] = [];
  for (const fd of readdirSync('/proc/self/fd')) {
    try {
      const target = readlinkSync(`/proc/self/fd/${fd}`);
      if (target.startsWith(dir)) open.push(target);
    } catch {
      // Closed between the listing and the read (the directory's own descriptor, for one).
    }
  }
  return open;
}

/** A valid config, then made unbuildable the way reload-failure-cleanup does (approvals removed after validation). */
function unbuildable(dataDir: string, extra: Record<string, unknown> = {}): AirlockConfig {
  const built = buildConfig({ listen: '127.0.0.1:0', data_dir: dataDir, services: {}, agents: {}, ...extra }, { baseDir: dataDir });
  if (built.config === null) throw new Error(JSON.stringify(built.problems));
  return { ...built.config, approvals: undefined } as unknown as AirlockConfig;
}

describe('a start-up that fails while the first configuration is built', () => {
  const dirs: string[] = [];

  afterAll(() => {
    for (const dir of dirs) rmSync(dir, { recursive: true, force: true });
  });

  it('leaves no file open: the audit log and the state file are closed again', async () => {
    const dataDir = tempDir();
    dirs.push(dataDir);
    const lines: string[] = [];
    await expect(startAirlock(unbuildable(dataDir), { env: {}, logDestination: { write: (line: string) => void lines.push(line) } })).rejects.toThrow();
    expect(openFilesUnder(dataDir)).toEqual([]);
    // And the same data_dir starts cleanly afterwards.
    const built = buildConfig({ listen: '127.0.0.1:0', data_dir: dataDir, services: {}, agents: {} }, { baseDir: dataDir });
    const airlock = await startAirlock(built.config as AirlockConfig, { env: {}, logDestination: { write: (line: string) => void lines.push(line) } });
    expect(openFilesUnder(dataDir).length).toBeGreaterThan(0);
    await airlock.close();
    expect(openFilesUnder(dataDir)).toEqual([]);
  });

  it('a listen address already taken: everything opened before it is closed too', async () => {
    const dataDir = tempDir();
    dirs.push(dataDir);
    const taken = createServer();
    taken.listen(0, '127.0.0.1');
    await once(taken, 'listening');
    const { port } = taken.address() as AddressInfo;
    try {
      const built = buildConfig({ listen: `127.0.0.1:${port}`, data_dir: dataDir, services: {}, agents: {} }, { baseDir: dataDir });
      await expect(startAirlock(built.config as AirlockConfig, { env: {}, logDestination: { write: () => undefined } })).rejects.toThrow(/cannot listen on/);
      expect(openFilesUnder(dataDir)).toEqual([]);
    } finally {
      taken.close();
    }
  });

  it('an admin address already taken: the agent listener bound before it is closed again, and the files', async () => {
    const dataDir = tempDir();
    dirs.push(dataDir);
    const taken = createServer();
    taken.listen(0, '127.0.0.1');
    await once(taken, 'listening');
    const agentPort = await freePort();
    const { port } = taken.address() as AddressInfo;
    try {
      const built = buildConfig(
        { listen: `127.0.0.1:${agentPort}`, data_dir: dataDir, admin: { listen: `127.0.0.1:${port}`, tokens: [generateAgentToken().hash] }, services: {}, agents: {} },
        { baseDir: dataDir },
      );
      if (built.config === null) throw new Error(JSON.stringify(built.problems));
      await expect(startAirlock(built.config, { env: {}, logDestination: { write: () => undefined } })).rejects.toThrow(/cannot listen on/);
      expect(openFilesUnder(dataDir)).toEqual([]);
      // The agent's port is free again: something else can listen on it.
      const again = createServer();
      again.listen(agentPort, '127.0.0.1');
      await once(again, 'listening');
      again.close();
    } finally {
      taken.close();
    }
  });

  it('a state file that cannot be read: the audit log opened before it is closed again', async () => {
    const dataDir = tempDir();
    dirs.push(dataDir);
    // A directory where state.jsonl should be: reading it fails (EISDIR).
    mkdirSync(join(dataDir, 'state.jsonl'));
    const built = buildConfig({ listen: '127.0.0.1:0', data_dir: dataDir, services: {}, agents: {} }, { baseDir: dataDir });
    await expect(startAirlock(built.config as AirlockConfig, { env: {}, logDestination: { write: () => undefined } })).rejects.toThrow();
    expect(openFilesUnder(dataDir)).toEqual([]);
  });

  describe.skipIf(!redisAvailable())('with shared state in Redis', () => {
    let redis: RedisServer;
    let observer: Redis;

    beforeAll(async () => {
      redis = await startRedisServer();
      observer = new Redis(redis.url);
    });

    afterAll(async () => {
      observer?.disconnect();
      await redis?.close();
    });

    async function clients(): Promise<number> {
      const list = (await observer.call('CLIENT', 'LIST')) as string;
      return list.trim().split('\n').length;
    }

    it('closes its Redis connections', async () => {
      const dataDir = tempDir();
      dirs.push(dataDir);
      const before = await clients();
      await expect(startAirlock(unbuildable(dataDir, { state: { type: 'redis', url: redis.url } }), { env: {}, logDestination: { write: () => undefined } })).rejects.toThrow();
      const deadline = Date.now() + 3_000;
      while ((await clients()) > before && Date.now() < deadline) await new Promise((resolve) => setTimeout(resolve, 50));
      expect(await clients()).toBe(before);
      expect(openFilesUnder(dataDir)).toEqual([]);
    });
  });
});
