/**
 * Redis restarting with fewer databases than state.url names (`databases 1` for `redis://host/5`), while
 * Airlock runs. ioredis sends SELECT again as each connection reopens, reports Redis's refusal ("ERR DB
 * index is out of range") only as an 'error' event, and stays connected to database 0: found by review,
 * the replica reloaded its shared state from database 0 (empty, or another application's), counted
 * itself fresh, and wrote its records there, with nothing in the log. Revocations kept in database 5
 * were no longer enforced.
 *
 * Now the refusal is said once, naming the database and what to do; the replica counts as cut off from
 * Redis (503 state_unavailable after state.stale_after, /_airlock/ready 503), writes nothing to
 * database 0, and is served again once Redis has the database back. The start-time case is
 * redis-database-refused.test.ts.
 */
import { Redis } from 'ioredis';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { generateAgentToken } from '../../src/identity/agent-token.js';
import { assertNoLeak, responsesSurface } from '../helpers/assert-no-leak.js';
import { canary } from '../helpers/canary.js';
import { eventually } from '../helpers/operator.js';
import { sendRequest, type Problem, type SentResponse } from '../helpers/send-request.js';
import { startProxy } from '../helpers/start-proxy.js';
import { startUpstream, type Upstream } from '../helpers/start-upstream.js';
import { redisAvailable, startRedisServer, type RedisServer } from '../support/redis-server.js';

describe.skipIf(!redisAvailable())('Redis restarted without the database state.url names', () => {
  const agent = generateAgentToken();
  const apiKey = canary('db-reconnect-key');
  let redis: RedisServer;
  let upstream: Upstream;

  beforeAll(async () => {
    redis = await startRedisServer();
    upstream = await startUpstream();
  });

  afterAll(async () => {
    await upstream?.close();
    await redis?.close();
  });

  it('is said once with what to do, fails closed after stale_after without touching database 0, and serves again once the database is back', async () => {
    const proxy = await startProxy(
      {
        state: { type: 'redis', url: `redis://127.0.0.1:${redis.port}/5`, prefix: 'dbre:', stale_after: 1 },
        services: { api: { upstream: upstream.url, credential: { secret: 'env:API_KEY', inject: 'bearer' }, routes: [{ method: 'GET', path: '/v1/*', scope: 'r' }] } },
        agents: { bot: { tokens: [agent.hash], credentials: [{ service: 'api', max_scope: ['r'] }] } },
      },
      { env: { API_KEY: apiKey } },
    );
    const seen: SentResponse[] = [];
    const call = async (): Promise<SentResponse> => {
      const response = await sendRequest(`${proxy.url}/api/v1/things`, { headers: { authorization: `Bearer ${agent.token}` } });
      seen.push(response);
      return response;
    };
    const ready = async (): Promise<number> => {
      const response = await sendRequest(`${proxy.url}/_airlock/ready`);
      seen.push(response);
      return response.status;
    };
    const logs = (): Array<{ level: string; msg: string }> => proxy.logLines.map((line) => JSON.parse(line) as { level: string; msg: string });
    const refusal = (): Array<{ level: string; msg: string }> => logs().filter((line) => line.msg.includes('database 5'));
    try {
      expect((await call()).status).toBe(200);

      await redis.kill();
      await redis.start(['--databases', '1']);

      // Said at once, as an error, naming the database and what to do.
      const said = await eventually('the refusal to be logged', () => refusal()[0], 8_000);
      expect(said.level).toBe('error');
      expect(said.msg).toContain('Redis refused database 5');
      expect(said.msg).toContain('databases');
      expect(said.msg).toContain('state.url');
      expect(said.msg).toContain('503 state_unavailable');

      // Cut off: past stale_after (1 s), requests are refused and the replica is not ready.
      const refused = await eventually('requests to be refused', async () => {
        const response = await call();
        return response.status === 503 ? response : undefined;
      }, 8_000);
      const problem = refused.json<Problem>();
      expect(problem.code).toBe('state_unavailable');
      expect(await ready()).toBe(503);

      // Database 0 was never used in its place: no record, no liveness probe of this replica there.
      const zero = new Redis(`redis://127.0.0.1:${redis.port}/0`);
      try {
        expect(await zero.keys('dbre:*')).toEqual([]);
      } finally {
        zero.disconnect();
      }
      // Said once for the spell, not at every reconnection attempt.
      await new Promise((resolve) => setTimeout(resolve, 2_000));
      expect(refusal()).toHaveLength(1);

      // Redis with its databases again: the replica reloads and serves.
      await redis.kill();
      await redis.start();
      await eventually('requests to be served again', async () => ((await call()).status === 200 ? true : undefined), 10_000);
      expect(await ready()).toBe(200);
      expect(logs().some((line) => line.msg === 'shared state reloaded from redis')).toBe(true);
      const five = new Redis(`redis://127.0.0.1:${redis.port}/5`);
      try {
        expect(await five.keys('dbre:alive:*')).not.toEqual([]);
      } finally {
        five.disconnect();
      }
      assertNoLeak([apiKey, agent.token], [responsesSurface(seen), { name: 'log', text: proxy.logLines.join('\n') }, { name: 'audit', text: proxy.auditText() }]);
    } finally {
      await proxy.close();
    }
  }, 60_000);
});
