/**
 * Found by review: state.url naming a database Redis does not have (`redis://host/99`, with the default
 * `databases 16`) started and served on database 0: ioredis sends SELECT as the connection opens, and
 * reports its refusal ("ERR DB index is out of range") only as an 'error' event, staying connected. Every
 * replica configured the same way would have shared database 0 with whatever else lives there. `serve`
 * now refuses to start, saying which database and what to do; one Redis has starts and uses it.
 */
import { Redis } from 'ioredis';
import { rmSync } from 'node:fs';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { generateAgentToken } from '../../src/identity/agent-token.js';
import { assertNoLeak } from '../helpers/assert-no-leak.js';
import { canary } from '../helpers/canary.js';
import { adminClient, freePort, runCliCapture, writeConfigFile } from '../helpers/operator.js';
import { startProxy, tempDir } from '../helpers/start-proxy.js';
import { redisAvailable, startRedisServer, type RedisServer } from '../support/redis-server.js';

const password = canary('redis-db-refused').replace(/[^A-Za-z0-9]/g, '');
const seen: string[] = [];

describe.skipIf(!redisAvailable())('state.url naming a Redis database', () => {
  let redis: RedisServer;
  let dir: string;

  beforeAll(async () => {
    dir = tempDir('airlock-redis-db-');
    redis = await startRedisServer();
    const admin = new Redis(redis.url);
    await admin.config('SET', 'requirepass', password);
    admin.disconnect();
  });

  afterAll(async () => {
    await redis?.close();
    rmSync(dir, { recursive: true, force: true });
    assertNoLeak([password], seen.map((text, i) => ({ name: `output ${i}`, text })));
  });

  it('one Redis does not have: serve refuses to start, naming the database and what to do', async () => {
    const file = writeConfigFile(dir, { listen: '127.0.0.1:0', data_dir: 'data', state: { type: 'redis', url: `redis://:${password}@127.0.0.1:${redis.port}/99` }, services: {}, agents: {} });
    const run = await runCliCapture(['serve', '--config', file], {}, seen);
    expect(run.code, run.stderr).toBe(1);
    expect(run.stderr).toContain(`cannot reach Redis at redis://127.0.0.1:${redis.port}/99:`);
    expect(run.stderr).toContain('Redis refused database 99 (ERR DB index is out of range)');
    expect(run.stderr).toContain('raise databases in the Redis config');
  });

  it('one Redis has: Airlock keeps its shared state there, not in database 0', async () => {
    const alice = generateAgentToken();
    const port = await freePort();
    const proxy = await startProxy({
      admin: { listen: `127.0.0.1:${port}`, tokens: [{ name: 'alice', hash: alice.hash }] },
      state: { type: 'redis', url: `redis://:${password}@127.0.0.1:${redis.port}/5`, prefix: 'db-test:' },
      services: {},
      agents: {},
    });
    try {
      const admin = adminClient(() => `http://127.0.0.1:${port}`, alice.token);
      const revoked = await admin.call('POST', '/v1/revocations', { kind: 'all', target: '*', reason: 'database test' });
      expect(revoked.status, revoked.text).toBe(200);
      seen.push(...admin.seen);
      const look = new Redis(`redis://:${password}@127.0.0.1:${redis.port}/5`);
      const zero = new Redis(`redis://:${password}@127.0.0.1:${redis.port}/0`);
      try {
        expect(await look.keys('db-test:*')).not.toEqual([]);
        expect(await zero.keys('db-test:*')).toEqual([]);
      } finally {
        look.disconnect();
        zero.disconnect();
      }
    } finally {
      await proxy.close();
    }
  });
});
