/**
 * SIGHUP while `airlock serve` is still starting (found by review): serve listened for SIGHUP only once
 * the proxy was up, and node's default for the signal ends the process, so a reload asked for during
 * start-up (here: a credential store slow to answer the warm-up) killed it; the cluster primary passed a
 * SIGHUP on to workers still starting, and killed them. Now main.ts holds SIGHUP from its first line and
 * keeps a request made before serve listens; it is applied once serve has started (the file may have
 * changed after the proxy read it). The primary signals a worker only once it listens, and a worker
 * still starting gets the reload when it does.
 *
 * Spawns the built binary (`node dist/main.js serve`); the slow store is a real OAuth2 token endpoint
 * that holds its answers (test/support/oauth2-server.ts), so start-up waits out the warm-up.
 */
import { rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { generateAgentToken } from '../../src/identity/agent-token.js';
import { assertNoLeak } from '../helpers/assert-no-leak.js';
import { canary } from '../helpers/canary.js';
import { eventually, sleep } from '../helpers/operator.js';
import { sendRequest } from '../helpers/send-request.js';
import { spawnServe, type SpawnedServe } from '../helpers/spawn-serve.js';
import { tempDir } from '../helpers/start-proxy.js';
import { startOAuth2Server, type OAuth2Server } from '../support/oauth2-server.js';
import { redisAvailable, startRedisServer, type RedisServer } from '../support/redis-server.js';

const spawned: SpawnedServe[] = [];

function serve(configFile: string, env: Record<string, string>): SpawnedServe {
  const running = spawnServe(configFile, env);
  spawned.push(running);
  return running;
}

async function stopGroup(running: SpawnedServe): Promise<void> {
  const { child } = running;
  if (child.exitCode !== null || child.signalCode !== null || child.pid === undefined) return;
  try {
    process.kill(-child.pid, 'SIGTERM');
  } catch {
    return;
  }
  const timer = setTimeout(() => {
    try {
      process.kill(-(child.pid as number), 'SIGKILL');
    } catch {
      // gone
    }
  }, 5_000);
  await running.exited;
  clearTimeout(timer);
}

afterAll(async () => {
  await Promise.all(spawned.map((running) => stopGroup(running)));
});

describe('SIGHUP during start-up', () => {
  const clientId = `startup-client-${Date.now()}`;
  const clientSecret = canary('startup-client-secret');
  const agent = generateAgentToken();
  const dirs: string[] = [];
  let oauth2: OAuth2Server;
  let redis: RedisServer | null = null;

  beforeAll(async () => {
    // Held past the warm-up's wait (2 s), so start-up is as slow as it gets.
    oauth2 = await startOAuth2Server({ slowMs: 4_000 });
    oauth2.addClient({ clientId, clientSecret });
    oauth2.setMode('slow');
  });

  afterAll(async () => {
    await oauth2.close();
    await redis?.close();
    for (const dir of dirs) rmSync(dir, { recursive: true, force: true });
  });

  /** v1: only /v1/a is routed; v2 also routes /v1/b, under a scope the agent lacks. */
  function config(version: 1 | 2, extra: Record<string, unknown> = {}): string {
    const routes = [{ method: 'GET', path: '/v1/a', scope: 'a:read' }, ...(version === 2 ? [{ method: 'GET', path: '/v1/b', scope: 'b:read' }] : [])];
    return JSON.stringify({
      listen: '127.0.0.1:0',
      data_dir: './data',
      reload: { watch: false },
      // The polls below are denied (route_not_allowed) until the reload lands: thirty would suspend the agent.
      anomalies: { enabled: false },
      secrets: { oauth2: { crm: { token_url: oauth2.tokenUrl, client_id: 'env:STARTUP_CLIENT_ID', client_secret: 'env:STARTUP_CLIENT_SECRET', timeout: 10 } } },
      services: { crm: { upstream: 'http://127.0.0.1:9', credential: { secret: 'oauth2:crm', inject: 'bearer' }, routes } },
      agents: { bot: { tokens: [agent.hash], credentials: [{ service: 'crm', max_scope: ['a:read'] }] } },
      ...extra,
    });
  }

  const env = { STARTUP_CLIENT_ID: clientId, STARTUP_CLIENT_SECRET: clientSecret };

  /**
   * Both workers of a cluster listen, finished the reload (each asked by a SIGHUP of its own when
   * `asked`), and answer under the new config; no worker died on the way.
   */
  async function bothWorkersReloaded(airlock: SpawnedServe, asked: boolean): Promise<void> {
    const listening = await eventually('both workers to listen', () => {
      if (airlock.child.exitCode !== null) throw new Error(`the primary ended:\n${airlock.err()}`);
      const lines = airlock.logs().filter((l) => l['msg'] === 'airlock listening');
      return lines.length >= 2 ? lines : undefined;
    }, 20_000);
    const url = (listening[0] as Record<string, unknown>)['url'] as string;
    if (asked) await eventually('both workers to be asked to reload', () => airlock.logs().filter((l) => l['msg'] === 'config reload requested' && l['reason'] === 'SIGHUP').length >= 2, 10_000);
    await eventually('both workers to finish reloading', () => airlock.logs().filter((l) => String(l['msg']).startsWith('config reloaded')).length >= 2, 10_000);
    // Several requests, so both workers (the kernel spreads connections) are likely asked; each answers v2.
    for (let i = 0; i < 6; i++) expect(await code(url)).toBe('scope_denied');
    expect(airlock.err()).not.toMatch(/worker \d+ exited/);
  }

  async function code(url: string): Promise<string | undefined> {
    const response = await sendRequest(`${url}/crm/v1/b`, { headers: { authorization: `Bearer ${agent.token}` } });
    return (JSON.parse(response.text) as { code?: string }).code;
  }

  it('one process: survives the SIGHUP, starts, and then applies the reload', async () => {
    const dir = tempDir('airlock-startup-hup-');
    dirs.push(dir);
    const file = join(dir, 'airlock.yaml');
    writeFileSync(file, config(1));
    const requestsBefore = oauth2.tokenRequests.length;
    const airlock = serve(file, env);
    // The warm-up has asked the token endpoint, which holds its answer: Airlock is starting.
    await eventually('the warm-up to ask the token endpoint', () => oauth2.tokenRequests.length > requestsBefore, 10_000);
    expect(airlock.err()).not.toContain('Airlock is listening');
    writeFileSync(file, config(2));
    airlock.child.kill('SIGHUP');

    const url = await eventually(
      'Airlock to start',
      async () => {
        if (airlock.child.exitCode !== null || airlock.child.signalCode !== null) throw new Error(`airlock serve ended on the SIGHUP (${String((await airlock.exited).signal)}):\n${airlock.err()}`);
        return /Airlock is listening on (http:\/\/\S+)/.exec(airlock.err())?.[1];
      },
      15_000,
    );
    expect(airlock.err()).toContain('SIGHUP received while Airlock is starting: the config is reloaded as soon as it has started.');
    await eventually('the reload asked for during start-up', () => airlock.logs().some((l) => l['msg'] === 'config reload requested' && l['reason'] === 'SIGHUP'), 10_000);
    // The reload warms the new generation's credentials up too (the token endpoint still holds its answers).
    await eventually('the reload to finish', () => airlock.logs().some((l) => String(l['msg']).startsWith('config reloaded')), 10_000);
    await eventually('the config read after the SIGHUP to be in force', async () => (await code(url)) === 'scope_denied', 10_000);

    airlock.child.kill('SIGTERM');
    expect((await airlock.exited).code, airlock.err()).toBe(0);
    assertNoLeak([clientSecret, agent.token], [
      { name: 'stdout', text: airlock.out() },
      { name: 'stderr', text: airlock.err() },
    ]);
  }, 40_000);

  it.skipIf(!redisAvailable())('a cluster: no worker dies of a SIGHUP sent while they start, and every worker reloads once it listens', async () => {
    redis = await startRedisServer();
    const dir = tempDir('airlock-startup-hup-cluster-');
    dirs.push(dir);
    const file = join(dir, 'airlock.yaml');
    const extra = { workers: 2, state: { type: 'redis', url: redis.url } };
    writeFileSync(file, config(1, extra));
    const requestsBefore = oauth2.tokenRequests.length;
    const airlock = serve(file, env);
    await eventually('a worker\'s warm-up to ask the token endpoint', () => oauth2.tokenRequests.length > requestsBefore, 15_000);
    // Give the second worker a moment to reach its own warm-up (its token fetch may wait on the first's).
    await sleep(300);
    expect(airlock.logs().filter((l) => l['msg'] === 'airlock listening')).toHaveLength(0);
    writeFileSync(file, config(2, extra));
    airlock.child.kill('SIGHUP');

    await bothWorkersReloaded(airlock, true);

    process.kill(-(airlock.child.pid as number), 'SIGTERM');
    expect((await airlock.exited).code, airlock.err()).toBe(0);
    assertNoLeak([clientSecret, agent.token], [
      { name: 'stdout', text: airlock.out() },
      { name: 'stderr', text: airlock.err() },
    ]);
  }, 60_000);

  it.skipIf(!redisAvailable())('a cluster: a SIGHUP the moment the workers are forked (before their code runs) is held for them too', async () => {
    redis ??= await startRedisServer();
    const dir = tempDir('airlock-startup-hup-fork-');
    dirs.push(dir);
    const file = join(dir, 'airlock.yaml');
    const extra = { workers: 2, state: { type: 'redis', url: redis.url } };
    writeFileSync(file, config(1, extra));
    const airlock = serve(file, env);
    // The primary says this right after forking: the workers' node is still booting.
    await eventually('the primary to fork its workers', () => airlock.err().includes('Airlock cluster: 2 workers'), 15_000, 1);
    writeFileSync(file, config(2, extra));
    airlock.child.kill('SIGHUP');

    await bothWorkersReloaded(airlock, false);

    process.kill(-(airlock.child.pid as number), 'SIGTERM');
    expect((await airlock.exited).code, airlock.err()).toBe(0);
  }, 60_000);
});
