/**
 * A revocation made on a replica cut off from Redis withdraws the approvals it covers there at once;
 * found by review: the withdrawals' `approval.expired` writes failed with the outage and were never
 * tried again (only the revocation was queued). Once the outage ended and the operator restored the
 * agent, a replica loading the store (a new one, or one restarting) took the approval back as Redis
 * held it, approved, and the agent's retry carrying its id went upstream. The withdrawals are now
 * queued with the revocation and written after it.
 *
 * Also: a queued withdrawal of an approval that another replica used meanwhile (it had not heard of the
 * revocation) is dropped on writing, not retried for ever ahead of every later restriction.
 *
 * Replica A reaches a real redis-server through a TCP relay the test partitions; B and C directly.
 */
import { existsSync } from 'node:fs';
import { join } from 'node:path';
import { Redis } from 'ioredis';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { generateAgentToken } from '../../src/identity/agent-token.js';
import { assertNoLeak } from '../helpers/assert-no-leak.js';
import { canary } from '../helpers/canary.js';
import { adminClient, eventually, type AdminClient } from '../helpers/operator.js';
import { sendRequest, type Problem, type SentResponse } from '../helpers/send-request.js';
import { startProxy, type ProxyFixture } from '../helpers/start-proxy.js';
import { echoHandler, startUpstream, type Upstream } from '../helpers/start-upstream.js';
import { redisAvailable, startRedisServer, type RedisServer } from '../support/redis-server.js';
import { cutOff, reconnect } from '../support/redis-partition.js';
import { startTcpRelay, type TcpRelay } from '../support/tcp-relay.js';

const PREFIX = 'withdraw-outage:';

describe.skipIf(!redisAvailable())('approvals withdrawn by a revocation made while the replica was cut off from Redis', () => {
  const payKey = canary('withdraw-outage-pay');
  const oncall = generateAgentToken();
  const agents = { restored: generateAgentToken(), raced: generateAgentToken() };
  const proxies: ProxyFixture[] = [];
  const seen: string[] = [];
  let redis: RedisServer;
  let inspect: Redis;
  let relay: TcpRelay;
  let pay: Upstream;
  let a: ProxyFixture;
  let b: ProxyFixture;
  let adminA: AdminClient;
  let adminB: AdminClient;

  function config(url: string): Record<string, unknown> {
    return {
      state: { type: 'redis', url, prefix: PREFIX, stale_after: 60 },
      admin: { listen: '127.0.0.1:0', tokens: [{ name: 'oncall', hash: oncall.hash }] },
      anomalies: { enabled: false },
      services: {
        pay: { upstream: pay.url, credential: { secret: 'env:PAY_KEY', inject: 'bearer' }, routes: [{ method: 'POST', path: '/v1/refunds', scope: 'refunds:write' }] },
      },
      agents: Object.fromEntries(
        Object.entries(agents).map(([name, token]) => [name, { tokens: [token.hash], credentials: [{ service: 'pay', max_scope: ['*'], require_approval: true, approval_mode: 'async', approval_timeout: 300 }] }]),
      ),
    };
  }

  async function startReplica(url: string): Promise<ProxyFixture> {
    const proxy = await startProxy(config(url), { env: { PAY_KEY: payKey } });
    proxies.push(proxy);
    return proxy;
  }

  async function refund(proxy: ProxyFixture, agent: keyof typeof agents, approval?: string): Promise<SentResponse> {
    const response = await sendRequest(`${proxy.url}/pay/v1/refunds`, {
      method: 'POST',
      headers: { authorization: `Bearer ${agents[agent].token}`, 'content-type': 'application/json', ...(approval === undefined ? {} : { 'x-airlock-approval': approval }) },
      body: '{"charge":"ch_1","amount":500}',
    });
    seen.push(`${response.status}\n${JSON.stringify(response.headers)}\n${response.text}`);
    return response;
  }

  async function statusOn(admin: AdminClient, id: string): Promise<string | undefined> {
    return (await admin.call('GET', '/v1/approvals')).json<{ approvals: { id: string; status: string }[] }>().approvals.find((approval) => approval.id === id)?.status;
  }

  /** An approval asked on B and approved there, once A has heard of it. */
  async function approvedApproval(agent: keyof typeof agents): Promise<string> {
    const asked = await refund(b, agent);
    expect(asked.status, asked.text).toBe(202);
    const id = asked.json<Problem & { approval_id: string }>().approval_id;
    const decided = await adminB.call('POST', `/v1/approvals/${id}/approve`, { reason: 'checked with the customer' });
    expect(decided.status, decided.text).toBe(200);
    await eventually('A hearing the approval', async () => (await statusOn(adminA, id)) === 'approved', 3_000);
    return id;
  }


  async function stored(id: string): Promise<Record<string, unknown> | null> {
    const raw = await inspect.get(`${PREFIX}approval:${id}`);
    return raw === null ? null : (JSON.parse(raw) as Record<string, unknown>);
  }

  const unsavedFile = (): string => join(a.dataDir, 'unsaved-restrictions', 'main.jsonl');



  beforeAll(async () => {
    redis = await startRedisServer();
    inspect = new Redis(redis.url, { lazyConnect: true, maxRetriesPerRequest: 1 });
    await inspect.connect();
    relay = await startTcpRelay(redis.port);
    pay = await startUpstream(echoHandler);
    a = await startReplica(relay.url);
    b = await startReplica(redis.url);
    adminA = adminClient(() => a.airlock.adminUrl as string, oncall.token);
    adminB = adminClient(() => b.airlock.adminUrl as string, oncall.token);
  });

  afterAll(async () => {
    await Promise.all(proxies.map((p) => p.close()));
    inspect?.disconnect();
    await relay?.close();
    await pay?.close();
    await redis?.close();
  });

  it('the withdrawal reaches Redis once A is back: after a restore, a replica started then refuses the approval', async () => {
    const id = await approvedApproval('restored');
    await cutOff(relay, a);

    const revoked = await adminA.call('POST', '/v1/agents/restored/revoke', { reason: 'leaked its token' });
    expect(revoked.status, revoked.text).toBe(200);
    expect(revoked.json<{ propagation?: string }>().propagation).toContain('pending');
    expect(await statusOn(adminA, id)).toBe('expired');

    await reconnect(relay, a);
    await eventually('the withdrawal in Redis', async () => (await stored(id))?.['status'] === 'expired', 5_000, 50);
    await eventually("A's unsaved-restrictions file removed", () => !existsSync(unsavedFile()), 3_000);

    const restored = await adminB.call('POST', '/v1/agents/restored/restore', { reason: 'token rotated' });
    expect(restored.status, restored.text).toBe(200);
    const c = await startReplica(redis.url);
    const before = pay.requests.length;
    const retried = await refund(c, 'restored', id);
    expect(retried.status, retried.text).toBe(403);
    expect(retried.json<Problem>().code).toBe('approval_timeout');
    // What was revoked, not who revoked it (the revoker's name is the operators').
    expect(retried.json<Problem>().detail).toBe(`Approval ${id} was withdrawn: agent restored was revoked; ask anew once access is restored.`);
    expect(pay.requests.length).toBe(before);
  });

  it('a withdrawal queued for an approval B used meanwhile is dropped on writing, and what A revokes next is kept at once', async () => {
    const id = await approvedApproval('raced');
    await cutOff(relay, a);
    const revoked = await adminA.call('POST', '/v1/agents/raced/revoke', { reason: 'suspicious refunds' });
    expect(revoked.json<{ propagation?: string }>().propagation).toContain('pending');

    // B has not heard of the revocation: the agent's retry there uses the approval (the partition's cost).
    const used = await refund(b, 'raced', id);
    expect(used.status, used.text).toBe(200);
    expect((await stored(id))?.['status']).toBe('consumed');

    await reconnect(relay, a);
    await eventually("A's unsaved-restrictions file removed", () => !existsSync(unsavedFile()), 5_000, 50);
    expect((await stored(id))?.['status']).toBe('consumed');
    expect(await inspect.hget(`${PREFIX}revocations`, 'agent\u0000raced')).not.toBeNull();
    await eventually('B refusing the agent', async () => (await refund(b, 'raced')).status === 401, 3_000);

    // The queue is empty: A's next restriction is written at once, not queued behind a stuck one.
    const next = await adminA.call('POST', '/v1/agents/restored/revoke', { reason: 'again' });
    expect(next.status, next.text).toBe(200);
    expect(next.json<{ propagation?: string }>().propagation ?? '').not.toContain('pending');
  });

  it('no credential or token reaches responses, logs, audit or admin output', () => {
    assertNoLeak([payKey, oncall.token, ...Object.values(agents).map((t) => t.token)], [
      { name: 'agent responses', text: seen.join('\n') },
      ...proxies.flatMap((p, i) => [
        { name: `replica ${i} logs`, text: p.logLines.join('\n') },
        { name: `replica ${i} audit`, text: p.auditText() },
      ]),
      { name: 'admin output', text: [...adminA.seen, ...adminB.seen].join('\n') },
    ]);
  });
});
