/**
 * A restriction made while Redis is unreachable outlives every Airlock process (found by review: it
 * lived only in the memory of the processes holding it, so if they all stopped before Redis was back it
 * was lost, and the revoked agent worked again after a restart; a fail-open). Each process now also
 * keeps what the store has not taken in data_dir/unsaved-restrictions/ (main.jsonl, or w<N>.jsonl per
 * cluster worker), and every process starting on that data_dir enforces what it finds there at once and
 * writes it to the store, removing the file once all of it is saved.
 *
 * The cluster case runs the built binary (`node dist/main.js serve`, workers: 2) over a real
 * redis-server that the test kills and starts again (empty: no persistence, so only what Airlock writes
 * back comes back). The single-process cases start Airlock in this process.
 */
import { existsSync, mkdirSync, readdirSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { Redis } from 'ioredis';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { generateAgentToken } from '../../src/identity/agent-token.js';
import { assertNoLeak } from '../helpers/assert-no-leak.js';
import { canary } from '../helpers/canary.js';
import { adminClient, eventually, freePort, sleep } from '../helpers/operator.js';
import { sendRequest, type Problem, type SentResponse } from '../helpers/send-request.js';
import { spawnServe, type SpawnedServe } from '../helpers/spawn-serve.js';
import { startProxy, tempDir, type ProxyFixture } from '../helpers/start-proxy.js';
import { startUpstream, type Upstream } from '../helpers/start-upstream.js';
import { redisAvailable, startRedisServer, type RedisServer } from '../support/redis-server.js';

const haveRedis = redisAvailable();

const spawned: SpawnedServe[] = [];
const dirs: string[] = [];

function scratch(prefix: string): string {
  const dir = tempDir(prefix);
  dirs.push(dir);
  return dir;
}

/** SIGKILL to the process group: the primary and every worker stop at once, as in a node crash. */
async function killGroup(running: SpawnedServe): Promise<void> {
  const pid = running.child.pid;
  if (pid === undefined || !running.isRunning()) return;
  try {
    process.kill(-pid, 'SIGKILL');
  } catch {
    return;
  }
  await running.exited;
}

afterAll(async () => {
  await Promise.all(spawned.map((running) => killGroup(running)));
  for (const dir of dirs) rmSync(dir, { recursive: true, force: true });
});

/** The kept files in a data_dir, by name, with their text and mode. */
function keptFiles(dataDir: string): Array<{ name: string; text: string; mode: number }> {
  const dir = join(dataDir, 'unsaved-restrictions');
  if (!existsSync(dir)) return [];
  return readdirSync(dir)
    .filter((name) => name.endsWith('.jsonl'))
    .sort()
    .map((name) => ({ name, text: readFileSync(join(dir, name), 'utf8'), mode: statSync(join(dir, name)).mode & 0o777 }));
}

function revocationsIn(text: string): Array<{ kind: string; target: string; reason: string }> {
  return text
    .split('\n')
    .filter((line) => line !== '')
    .map((line) => JSON.parse(line) as { type: string; revocation?: { kind: string; target: string; reason: string } })
    .filter((event) => event.type === 'revocation.added')
    .map((event) => event.revocation as { kind: string; target: string; reason: string });
}

/** A plain client of the test's Redis, as an operator's redis-cli would be. */
async function revocationsInRedis(url: string, prefix: string): Promise<Record<string, string>> {
  const client = new Redis(url, { lazyConnect: true, maxRetriesPerRequest: 1 });
  try {
    await client.connect();
    return await client.hgetall(`${prefix}revocations`);
  } finally {
    client.disconnect();
  }
}

/** One agent call on a fresh connection (node:cluster hands each to a worker in turn); null when nothing answered. */
async function call(url: string, token: string): Promise<SentResponse | null> {
  return sendRequest(`${url}/api/v1/items`, { headers: { authorization: `Bearer ${token}` }, timeoutMs: 5_000 }).catch(() => null);
}

function policy(upstream: Upstream, agents: Record<string, string>): Record<string, unknown> {
  return {
    // Polling a revoked agent is a burst of 401s: the anomaly detector would suspend it on its own.
    anomalies: { enabled: false },
    services: { api: { upstream: upstream.url, credential: { secret: 'env:KEPT_KEY', inject: 'bearer' }, routes: [{ method: 'GET', path: '/v1/items', scope: 'items:read' }] } },
    agents: Object.fromEntries(Object.entries(agents).map(([name, hash]) => [name, { tokens: [hash], credentials: [{ service: 'api', max_scope: ['items:read'] }] }])),
  };
}

describe.skipIf(!haveRedis)('a revocation made while Redis is down outlives every Airlock process (workers: 2, the real binary)', () => {
  const key = canary('kept-restriction');
  const bot = generateAgentToken();
  const oncall = generateAgentToken();
  const seen: string[] = [];
  let redis: RedisServer;
  let upstream: Upstream;
  let dir: string;
  let configFile: string;
  let agentUrl: string;
  let adminUrl: string;
  const prefix = `kept-${Date.now()}:`;

  beforeAll(async () => {
    redis = await startRedisServer();
    upstream = await startUpstream();
    dir = scratch('airlock-kept-cluster-');
    const [agentPort, adminPort] = [await freePort(), await freePort()];
    agentUrl = `http://127.0.0.1:${agentPort}`;
    adminUrl = `http://127.0.0.1:${adminPort}`;
    configFile = join(dir, 'airlock.yaml');
    const config = {
      listen: `127.0.0.1:${agentPort}`,
      data_dir: './data',
      workers: 2,
      // Long enough that nothing is refused for staleness here: every refusal below is the revocation's.
      state: { type: 'redis', url: redis.url, prefix, stale_after: 60 },
      admin: { listen: `127.0.0.1:${adminPort}`, tokens: [{ name: 'oncall', hash: oncall.hash }] },
      shutdown_timeout: 5,
      reload: { watch: false },
      ...policy(upstream, { bot: bot.hash }),
    };
    writeFileSync(configFile, `${JSON.stringify(config, null, 2)}\n`, { mode: 0o600 });
  });

  afterAll(async () => {
    await upstream?.close();
    await redis?.close();
  });

  function serve(): SpawnedServe {
    const running = spawnServe(configFile, { KEPT_KEY: key }, { cwd: dir });
    spawned.push(running);
    return running;
  }

  async function bothWorkersListening(running: SpawnedServe, timeoutMs: number): Promise<void> {
    await eventually('both workers to listen', () => {
      if (!running.isRunning()) throw new Error(`the primary ended:\n${running.err()}`);
      return running.logs().filter((l) => l['msg'] === 'airlock listening').length >= 2;
    }, timeoutMs, 50);
  }

  /** Eight calls, each on a new connection, so both workers answer some. */
  async function statuses(): Promise<Array<number | null>> {
    const answers: Array<SentResponse | null> = [];
    for (let i = 0; i < 8; i++) answers.push(await call(agentUrl, bot.token));
    seen.push(...answers.map((a) => a?.text ?? ''));
    return answers.map((a) => a?.status ?? null);
  }

  it('revoked during the outage, every process killed, a new cluster refuses the agent, writes the revocation to Redis, and removes the files', async () => {
    const dataDir = join(dir, 'data');
    const first = serve();
    await bothWorkersListening(first, 20_000);
    expect(await statuses()).toEqual(new Array(8).fill(200));

    await redis.kill();
    // Both workers' connections see the close (a SIGKILLed redis resets them at once).
    await sleep(300);
    const admin = adminClient(() => adminUrl, oncall.token);
    const revoked = await admin.call('POST', '/v1/agents/bot/revoke', { reason: 'outage drill' });
    seen.push(...admin.seen);
    expect(revoked.status, revoked.text).toBe(200);
    expect(revoked.json<{ propagation?: string }>().propagation).toContain('pending');
    expect(await statuses()).toEqual(new Array(8).fill(401));

    // Each worker keeps it in a file of its own (the one that took the call before answering; the other
    // once the primary has relayed it): private, whole lines, and nothing secret in them.
    const kept = await eventually('both workers to keep the revocation on disk', () => {
      const files = keptFiles(dataDir);
      return files.length === 2 && files.every((f) => revocationsIn(f.text).length === 1) ? files : undefined;
    }, 5_000, 50);
    expect(kept.map((f) => f.name)).toEqual(['w1.jsonl', 'w2.jsonl']);
    for (const file of kept) {
      expect(file.mode).toBe(0o600);
      expect(revocationsIn(file.text)).toEqual([expect.objectContaining({ kind: 'agent', target: 'bot', reason: 'outage drill' })]);
    }
    expect(statSync(join(dataDir, 'unsaved-restrictions')).mode & 0o777).toBe(0o700);
    assertNoLeak([key, bot.token, oncall.token], kept.map((f) => ({ name: f.name, text: f.text })));

    // Every Airlock process stops before Redis is back (a node crash).
    await killGroup(first);
    expect(keptFiles(dataDir).map((f) => f.name)).toEqual(['w1.jsonl', 'w2.jsonl']);

    // A new cluster on the same data_dir while Redis is still down: no worker can start (each refuses
    // without Redis and is restarted by the primary), so nothing serves the agent.
    const second = serve();
    await eventually('a worker to refuse to start without Redis', () => /worker \d exited/.test(second.err()), 10_000, 50);
    for (const status of await statuses()) expect(status).not.toBe(200);
    expect(second.logs().filter((l) => l['msg'] === 'airlock listening')).toHaveLength(0);
    expect(second.err()).toContain('cannot reach Redis');
    // The workers that could not start left the files as they were.
    expect(keptFiles(dataDir).map((f) => f.name)).toEqual(['w1.jsonl', 'w2.jsonl']);

    // Redis back, empty: the workers start, enforce the kept revocation before serving, and write it to Redis.
    await redis.start();
    await bothWorkersListening(second, 30_000);
    expect(await statuses()).toEqual(new Array(8).fill(401));
    const refusal = (await call(agentUrl, bot.token)) as SentResponse;
    expect(refusal.json<Problem>().code).toBe('unauthenticated');
    // The kept revocation is the one enforced: the agent reads that it was revoked, Redis (below) has who and why.
    expect(refusal.json<Problem>().detail).toContain('Agent bot was revoked;');
    expect(refusal.text).not.toContain('outage drill');
    const inRedis = await eventually('the revocation in Redis', async () => {
      const all = await revocationsInRedis(redis.url, prefix);
      return all['agent\u0000bot'] === undefined ? undefined : all;
    }, 5_000, 50);
    expect(JSON.parse(inRedis['agent\u0000bot'] as string)).toMatchObject({ kind: 'agent', target: 'bot', reason: 'outage drill', by: 'oncall' });
    expect(second.logs().some((l) => String(l['msg']).startsWith('restrictions kept on disk while the state store could not take them'))).toBe(true);

    // Everything in the files is in Redis: they are gone.
    await eventually('the kept files removed', () => keptFiles(dataDir).length === 0, 5_000, 50);

    // A second, fresh replica (its own data_dir, nothing kept there) learns it from Redis alone.
    const fresh = await startProxy({ state: { type: 'redis', url: redis.url, prefix }, ...policy(upstream, { bot: bot.hash }) }, { env: { KEPT_KEY: key } });
    try {
      const answer = await call(fresh.url, bot.token);
      seen.push(answer?.text ?? '');
      expect(answer?.status).toBe(401);
      expect(answer?.json<Problem>().code).toBe('unauthenticated');
    } finally {
      await fresh.close();
    }

    await killGroup(second);
    assertNoLeak([key, bot.token, oncall.token], [
      { name: 'first stdout', text: first.out() },
      { name: 'first stderr', text: first.err() },
      { name: 'second stdout', text: second.out() },
      { name: 'second stderr', text: second.err() },
      { name: 'answers', text: seen.join('\n') },
    ]);
  }, 120_000);
});

describe.skipIf(!haveRedis)('unsaved-restriction files in one process', () => {
  const key = canary('kept-single');
  const bot = generateAgentToken();
  const other = generateAgentToken();
  const oncall = generateAgentToken();
  const proxies: ProxyFixture[] = [];
  let redis: RedisServer;
  let upstream: Upstream;

  beforeAll(async () => {
    redis = await startRedisServer();
    upstream = await startUpstream();
  });

  afterAll(async () => {
    await Promise.all(proxies.map((proxy) => proxy.close().catch(() => undefined)));
    await upstream?.close();
    await redis?.close();
  });

  async function start(dataDir: string, prefix: string): Promise<ProxyFixture> {
    const proxy = await startProxy(
      {
        state: { type: 'redis', url: redis.url, prefix, stale_after: 60 },
        admin: { listen: '127.0.0.1:0', tokens: [{ name: 'oncall', hash: oncall.hash }] },
        ...policy(upstream, { bot: bot.hash, other: other.hash }),
      },
      { env: { KEPT_KEY: key }, dataDir },
    );
    proxies.push(proxy);
    return proxy;
  }

  it("a stale file of a worker that no longer exists (its last line torn) is enforced from the first request, written to Redis, and removed", async () => {
    const dataDir = scratch('airlock-kept-stale-');
    const keptDir = join(dataDir, 'unsaved-restrictions');
    mkdirSync(keptDir, { mode: 0o700 });
    const revocation = { type: 'revocation.added', revocation: { kind: 'agent', target: 'bot', reason: 'revoked by a worker that died', by: 'oncall', at: Date.now() - 60_000 } };
    // Worker 5 of an earlier `workers: 5`, which died mid-write (a crash can tear only a hand-made or
    // damaged file: Airlock renames whole files into place, but the reader does not count on that).
    writeFileSync(join(keptDir, 'w5.jsonl'), `${JSON.stringify(revocation)}\n{"type":"revocation.added","revocation":{"kind":"ag`, { mode: 0o600 });
    writeFileSync(join(keptDir, 'w5.jsonl.0123456789ab.tmp'), '{"type":"revo', { mode: 0o600 });
    writeFileSync(join(keptDir, 'w5.jsonl.tmp'), '{"type":"revo', { mode: 0o600 }); // as earlier versions named it
    const prefix = `kept-stale-${Date.now()}:`;

    const proxy = await start(dataDir, prefix);
    const refused = await call(proxy.url, bot.token);
    expect(refused?.status).toBe(401);
    expect(refused?.json<Problem>().detail).toContain('Agent bot was revoked;');
    const record = await eventually('the refusal record', () => proxy.auditRecords().find((r) => r.request_id === refused?.headers['x-airlock-request-id']), 5_000, 20);
    expect(record.reason).toBe('Agent bot was revoked (by oncall: revoked by a worker that died)');
    expect((await call(proxy.url, other.token))?.status).toBe(200);
    expect(proxy.logRecords().some((l) => String(l['msg']).startsWith('the last line of an unsaved-restrictions file is torn') && l['file'] === join(keptDir, 'w5.jsonl') && l['line'] === 2)).toBe(true);
    const inRedis = await revocationsInRedis(redis.url, prefix);
    expect(JSON.parse(inRedis['agent\u0000bot'] as string)).toMatchObject({ reason: 'revoked by a worker that died' });
    await eventually('the stale file removed', () => readdirSync(keptDir).length === 0, 3_000, 20);
    await proxy.close();
  });

  it("a file that cannot be written lets nothing in: the revocation holds, an error line says what to do, and it is kept once the disk allows", async () => {
    const dataDir = scratch('airlock-kept-blocked-');
    const keptDir = join(dataDir, 'unsaved-restrictions');
    const prefix = `kept-blocked-${Date.now()}:`;
    const proxy = await start(dataDir, prefix);
    expect((await call(proxy.url, bot.token))?.status).toBe(200);
    // A file where the directory must be: nothing can be written there (root ignores permissions).
    writeFileSync(keptDir, 'in the way');
    await redis.kill();
    try {
      await sleep(200);
      const admin = adminClient(() => proxy.airlock.adminUrl as string, oncall.token);
      const revoked = await admin.call('POST', '/v1/agents/bot/revoke', { reason: 'while the disk was blocked' });
      expect(revoked.status, revoked.text).toBe(200);
      expect(revoked.json<{ propagation?: string }>().propagation).toContain('pending');
      // Fail closed: the restriction holds in memory whatever the disk does.
      expect((await call(proxy.url, bot.token))?.status).toBe(401);
      const error = proxy.logRecords().find((l) => String(l['msg']).startsWith(`cannot write ${join(keptDir, 'main.jsonl')}`));
      expect(error?.['level']).toBe('error');
      expect(String(error?.['msg'])).toContain('Make data_dir writable');
      // The disk frees up: the retry keeps it, privately, without anything else happening.
      rmSync(keptDir);
      await eventually('the revocation kept on disk', () => keptFiles(dataDir).length === 1, 5_000, 50);
      const [file] = keptFiles(dataDir);
      expect(file?.name).toBe('main.jsonl');
      expect(file?.mode).toBe(0o600);
      expect(statSync(keptDir).mode & 0o777).toBe(0o700);
      expect(revocationsIn(file?.text ?? '')).toEqual([expect.objectContaining({ kind: 'agent', target: 'bot' })]);
      // The line follows the write that made the file (log lines are batched; seen to lag it under load).
      await eventually('the line saying so', () => proxy.logRecords().some((l) => l['msg'] === 'unsaved restrictions are kept on disk again'), 5_000, 20);
    } finally {
      await redis.start();
    }
    // Redis back: written there, and the file goes.
    await eventually('the revocation in Redis', async () => (await revocationsInRedis(redis.url, prefix))['agent\u0000bot'] !== undefined, 10_000, 100);
    await eventually('the kept file removed', () => keptFiles(dataDir).length === 0, 5_000, 50);
    expect((await call(proxy.url, bot.token))?.status).toBe(401);
    await proxy.close();
    assertNoLeak([key, bot.token, other.token, oncall.token], [{ name: 'logs', text: proxy.logLines.join('') }]);
  });

  it('a kept file that cannot be read stops start-up with a message that says what to do', async () => {
    const dataDir = scratch('airlock-kept-unreadable-');
    // A directory where a kept file is: reading it fails (EISDIR) whoever Airlock runs as.
    mkdirSync(join(dataDir, 'unsaved-restrictions', 'main.jsonl'), { recursive: true, mode: 0o700 });
    const configFile = join(dataDir, 'airlock.yaml');
    const config = { listen: '127.0.0.1:0', data_dir: '.', state: { type: 'redis', url: redis.url, prefix: `kept-unreadable-${Date.now()}:` }, ...policy(upstream, { bot: bot.hash }) };
    writeFileSync(configFile, JSON.stringify(config), { mode: 0o600 });
    const running = spawnServe(configFile, { KEPT_KEY: key });
    spawned.push(running);
    await eventually('airlock serve to refuse to start', () => !running.isRunning(), 10_000, 50);
    expect((await running.exited).code).toBe(1);
    expect(running.err()).toContain(`cannot read ${join(dataDir, 'unsaved-restrictions', 'main.jsonl')} (EISDIR)`);
    expect(running.err()).toContain('starting without them could let a revoked agent in');
    expect(running.err()).not.toContain('Airlock is listening');
  }, 20_000);
});
