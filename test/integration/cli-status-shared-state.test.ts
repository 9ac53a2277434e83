/**
 * `airlock status` and the admin API's /v1/health with state: {type: redis} and Redis gone. Found by
 * review: status said "ok" and exited 0 while Redis had been unreachable past state.stale_after, when
 * /_airlock/ready answered 503 and every request was refused 503 state_unavailable; /v1/health had no
 * word about the shared state at all.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { generateAgentToken } from '../../src/identity/agent-token.js';
import { assertNoLeak } from '../helpers/assert-no-leak.js';
import { canary } from '../helpers/canary.js';
import { adminClient, eventually, freePort, runCliCapture, writeConfigFile, type AdminClient } from '../helpers/operator.js';
import { sendRequest } from '../helpers/send-request.js';
import { startProxy, tempDir, type ProxyFixture } from '../helpers/start-proxy.js';
import { startUpstream, type Upstream } from '../helpers/start-upstream.js';
import { redisAvailable, startRedisServer, type RedisServer } from '../support/redis-server.js';

/** state.stale_after, whole seconds: the smallest allowed, so the test waits little. */
const STALE_AFTER_S = 1;

describe.skipIf(!redisAvailable())('airlock status with shared state in Redis', () => {
  const llmKey = canary('status-state-llm');
  const agent = generateAgentToken();
  const alice = generateAgentToken();
  const seen: string[] = [];
  let redis: RedisServer;
  let upstream: Upstream;
  let proxy: ProxyFixture;
  let admin: AdminClient;
  let cliConfig: string;

  beforeAll(async () => {
    redis = await startRedisServer();
    upstream = await startUpstream();
    const port = await freePort();
    proxy = await startProxy(
      {
        admin: { listen: `127.0.0.1:${port}`, tokens: [{ name: 'alice', hash: alice.hash }] },
        state: { type: 'redis', url: redis.url, prefix: `status-state-${process.pid}:`, stale_after: STALE_AFTER_S },
        services: { llm: { upstream: upstream.url, credential: { secret: 'env:STATUS_STATE_LLM_KEY' }, routes: [{ method: 'GET', path: '/v1/models', scope: 'models:read' }] } },
        agents: { bot: { tokens: [agent.hash], credentials: [{ service: 'llm', max_scope: ['models:read'] }] } },
      },
      { env: { STATUS_STATE_LLM_KEY: llmKey } },
    );
    admin = adminClient(() => `http://127.0.0.1:${port}`, alice.token);
    cliConfig = writeConfigFile(tempDir('airlock-status-state-cli-'), { admin: { listen: `127.0.0.1:${port}`, tokens: [alice.hash] } });
  });

  afterAll(async () => {
    await proxy?.close();
    await upstream?.close();
    await redis?.close();
    assertNoLeak([llmKey, agent.token, alice.token], [...seen, ...(admin?.seen ?? []), ...(proxy?.logLines ?? [])].map((text, i) => ({ name: `output ${i}`, text })));
  });

  async function status(...extra: string[]): Promise<{ code: number; stdout: string; stderr: string }> {
    return runCliCapture(['status', '--config', cliConfig, ...extra], { AIRLOCK_ADMIN_TOKEN: alice.token }, seen);
  }

  it('Redis reachable: /v1/health says so, and status shows it and exits 0', async () => {
    const health = await admin.call('GET', '/v1/health');
    expect(health.status, health.text).toBe(200);
    expect(health.json<Record<string, unknown>>()).toMatchObject({ status: 'ok', state: { type: 'redis', reachable: true, unreachable_since: null, stale: false, stale_after_seconds: STALE_AFTER_S } });
    const run = await status();
    expect(run.code, run.stdout + run.stderr).toBe(0);
    expect(run.stdout).toMatch(/^Airlock at admin 127\.0\.0\.1:\d+: ok\n/);
    expect(run.stdout).toContain('  state        redis, reachable\n');
  });

  it('Redis gone past stale_after: /v1/health is degraded with the state stale, status NEEDS ATTENTION and exits 2, as readiness and requests say', async () => {
    await redis.kill();
    // The proxy refuses once stale_after has passed: what status must then agree with.
    await eventually(
      'requests refused 503 state_unavailable',
      async () => {
        const refused = await sendRequest(`${proxy.url}/llm/v1/models`, { headers: { authorization: `Bearer ${agent.token}` } });
        seen.push(refused.text);
        return refused.status === 503 && refused.text.includes('state_unavailable');
      },
      15_000,
      100,
    );
    expect((await sendRequest(`${proxy.url}/_airlock/ready`)).status).toBe(503);
    const health = await admin.call('GET', '/v1/health');
    expect(health.status, health.text).toBe(200);
    const body = health.json<{ status: string; state: { type: string; reachable: boolean; unreachable_since: string | null; stale: boolean } }>();
    expect(body.status).toBe('degraded');
    expect(body.state).toMatchObject({ type: 'redis', reachable: false, stale: true });
    expect(Date.parse(body.state.unreachable_since ?? '')).toBeLessThanOrEqual(Date.now() - STALE_AFTER_S * 1000);
    const run = await status();
    expect(run.code, run.stdout + run.stderr).toBe(2);
    expect(run.stdout).toMatch(/^Airlock at admin 127\.0\.0\.1:\d+: NEEDS ATTENTION\n/);
    expect(run.stdout).toMatch(/\n {2}state {8}redis UNREACHABLE since \S+ \(past state\.stale_after, 1 s\): requests that need shared state are refused \(503 state_unavailable\) until Redis is back; check that Redis runs at state\.url\n/);
    const json = JSON.parse((await status('--json')).stdout) as { health: { state: { stale: boolean } } };
    expect(json.health.state.stale).toBe(true);
  });

  it('Redis back: the state is fresh again and status exits 0', async () => {
    await redis.start();
    const run = await eventually(
      'status ok again',
      async () => {
        const attempt = await status();
        return attempt.code === 0 ? attempt : undefined;
      },
      15_000,
      200,
    );
    expect(run.stdout).toContain('  state        redis, reachable\n');
  });
});

describe('airlock status with embedded state', () => {
  const alice = generateAgentToken();
  let proxy: ProxyFixture;
  let cliConfig: string;

  beforeAll(async () => {
    const port = await freePort();
    proxy = await startProxy({ admin: { listen: `127.0.0.1:${port}`, tokens: [{ name: 'alice', hash: alice.hash }] }, services: {}, agents: {} });
    cliConfig = writeConfigFile(tempDir('airlock-status-embedded-cli-'), { admin: { listen: `127.0.0.1:${port}`, tokens: [alice.hash] } });
  });

  afterAll(async () => {
    await proxy?.close();
  });

  it('/v1/health says memory, never stale, and status shows it', async () => {
    const run = await runCliCapture(['status', '--config', cliConfig, '--json'], { AIRLOCK_ADMIN_TOKEN: alice.token }, []);
    expect(run.code, run.stderr).toBe(0);
    expect((JSON.parse(run.stdout) as { health: { state: unknown } }).health.state).toEqual({ type: 'memory', reachable: true, unreachable_since: null, stale: false, stale_after_seconds: null });
    const text = await runCliCapture(['status', '--config', cliConfig], { AIRLOCK_ADMIN_TOKEN: alice.token }, []);
    expect(text.stdout).toContain('  state        embedded (data_dir/state.jsonl)\n');
  });
});
