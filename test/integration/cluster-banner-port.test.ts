/**
 * Found by review: with `workers: N` and a listener on port 0 (the port chosen at start-up), the
 * cluster's banner said `http://127.0.0.1:0`, which no agent can reach; only the workers' JSON log lines
 * held the port. The primary now says where the first worker listens once it does.
 */
import { rmSync } from 'node:fs';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { generateAgentToken } from '../../src/identity/agent-token.js';
import { eventually, writeConfigFile } from '../helpers/operator.js';
import { sendRequest } from '../helpers/send-request.js';
import { spawnServe, type SpawnedServe } from '../helpers/spawn-serve.js';
import { tempDir } from '../helpers/start-proxy.js';
import { redisAvailable, startRedisServer, type RedisServer } from '../support/redis-server.js';

describe.skipIf(!redisAvailable())('cluster banner with listeners on port 0', () => {
  const oncall = generateAgentToken();
  let redis: RedisServer;
  let dir: string;
  let airlock: SpawnedServe;

  beforeAll(async () => {
    redis = await startRedisServer();
    dir = tempDir('airlock-cluster-banner-');
    const file = writeConfigFile(dir, {
      listen: '127.0.0.1:0',
      data_dir: './data',
      workers: 2,
      state: { type: 'redis', url: redis.url, prefix: `banner-${process.pid}:` },
      admin: { listen: '127.0.0.1:0', tokens: [oncall.hash] },
      shutdown_timeout: 2,
      reload: { watch: false },
      services: {},
      agents: {},
    });
    airlock = spawnServe(file, {});
  });

  afterAll(async () => {
    if (airlock?.isRunning() === true && airlock.child.pid !== undefined) {
      process.kill(-airlock.child.pid, 'SIGTERM');
      await airlock.exited;
    }
    await redis?.close();
    rmSync(dir, { recursive: true, force: true });
  });

  it('says the ports the workers listen on, not :0', async () => {
    const line = await eventually('the listening line', () => /^Airlock cluster: listening on (http:\/\/127\.0\.0\.1:(\d+)), admin (http:\/\/127\.0\.0\.1:(\d+))$/m.exec(airlock.err()) ?? undefined, 20_000, 50);
    const [, url, port, adminUrl, adminPort] = line;
    expect(Number(port)).toBeGreaterThan(0);
    expect(Number(adminPort)).toBeGreaterThan(0);
    expect(airlock.err().match(/^Airlock cluster: listening on /gm)).toHaveLength(1);
    const logged = airlock.logs().filter((l) => l['msg'] === 'airlock listening');
    expect(logged.map((l) => [l['url'], l['admin']])).toContainEqual([url, adminUrl]);
    expect((await sendRequest(`${url as string}/_airlock/health`)).status).toBe(200);
  });
});
