/**
 * Found by an ops walkthrough on a fresh machine: `airlock serve` with `state: {type: redis}` and Redis
 * not there said only "cannot reach Redis at …: Connection is closed.", the same for nothing listening,
 * a host name that does not resolve, and a Redis that refused the password (ioredis rejects connect()
 * with that text and reports the cause in an 'error' event). The operator must learn which it was, and
 * what to do, without the password of state.url in the output.
 */
import { Redis } from 'ioredis';
import { rmSync } from 'node:fs';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { assertNoLeak } from '../helpers/assert-no-leak.js';
import { canary } from '../helpers/canary.js';
import { freePort, runCliCapture, writeConfigFile } from '../helpers/operator.js';
import { tempDir } from '../helpers/start-proxy.js';
import { redisAvailable, startRedisServer, type RedisServer } from '../support/redis-server.js';

const password = canary('redis-password').replace(/[^A-Za-z0-9]/g, '');
const seen: string[] = [];
let dir: string;

beforeAll(() => {
  dir = tempDir('airlock-serve-redis-');
});

afterAll(() => {
  rmSync(dir, { recursive: true, force: true });
  assertNoLeak([password], seen.map((text, i) => ({ name: `output ${i}`, text })));
});

async function serve(url: string): Promise<{ code: number; stderr: string }> {
  const file = writeConfigFile(dir, { listen: '127.0.0.1:0', data_dir: 'data', state: { type: 'redis', url }, services: {}, agents: {} }, `redis-${Math.random().toString(36).slice(2)}.yaml`);
  return runCliCapture(['serve', '--config', file], {}, seen);
}

describe('airlock serve when Redis cannot be used', () => {
  it('nothing listens at state.url: says so, and to start Redis there or fix state.url', async () => {
    const port = await freePort();
    const run = await serve(`redis://:${password}@127.0.0.1:${port}`);
    expect(run.code).toBe(1);
    expect(run.stderr).toContain(`cannot reach Redis at redis://127.0.0.1:${port}:`);
    expect(run.stderr).toContain('nothing accepts connections at that address (ECONNREFUSED)');
    expect(run.stderr).toContain('start it or fix state.url');
    expect(run.stderr).not.toContain('Connection is closed');
  });

  // Found by review: the URL was printed with a pattern that cut its user info at the first "@".
  it('a password holding a raw "@", or given as ?password=, is not printed: only scheme, host, port and database', async () => {
    const port = await freePort();
    const [head, tail] = [password.slice(0, 12), password.slice(12)];
    const raw = await serve(`redis://:${head}@${tail}@127.0.0.1:${port}/2`);
    expect(raw.code).toBe(1);
    expect(raw.stderr).toContain(`cannot reach Redis at redis://127.0.0.1:${port}/2:`);
    expect(raw.stderr).not.toContain(tail);
    const query = await serve(`redis://127.0.0.1:${port}/0?password=${password}`);
    expect(query.code).toBe(1);
    expect(query.stderr).toContain(`cannot reach Redis at redis://127.0.0.1:${port}/0:`);
  });

  it("state.url's host name does not resolve: says so", async () => {
    const run = await serve('redis://airlock-no-such-host.invalid:6379');
    expect(run.code).toBe(1);
    expect(run.stderr).toContain('its host name does not resolve (ENOTFOUND)');
    expect(run.stderr).not.toContain('Connection is closed');
  });

  describe.skipIf(!redisAvailable())('a Redis that asks for a password', () => {
    let redis: RedisServer;

    beforeAll(async () => {
      redis = await startRedisServer();
      const admin = new Redis(redis.url);
      await admin.config('SET', 'requirepass', password);
      admin.disconnect();
    });

    afterAll(async () => {
      await redis.close();
    });

    it('state.url without one: says Redis wants a password and how to give it', async () => {
      const run = await serve(redis.url);
      expect(run.code).toBe(1);
      expect(run.stderr).toContain('Redis answered, and wants a password state.url does not give (NOAUTH)');
      expect(run.stderr).toContain('redis://:PASSWORD@HOST:PORT');
    });

    it('a wrong password: says Redis refused it, without printing it', async () => {
      const run = await serve(`redis://:wrong${password}@127.0.0.1:${redis.port}`);
      expect(run.code).toBe(1);
      expect(run.stderr).toContain('Redis answered, and refused the user name or password in state.url (WRONGPASS)');
      expect(run.stderr).not.toContain('Connection is closed');
    });
  });
});
