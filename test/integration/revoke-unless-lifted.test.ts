/**
 * Writing back a revocation queued during an outage is one step in Redis (found by review): the replica
 * read the store's lifts, then wrote its queue, and a lift another replica made between the two was
 * overwritten, the agent revoked again everywhere. The write now checks the lift in the same script
 * (redis-backend.ts REVOKE_UNLESS_LIFTED); this drives it on a real redis-server through the backend,
 * with a second backend as the other replica (the one that lifts, and that hears what is written).
 */
import { Redis } from 'ioredis';
import { pino } from 'pino';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { GovernanceEvent, Revocation } from '../../src/state/governance-records.js';
import { LIFT_MARGIN_MS } from '../../src/state/governance-state.js';
import { RedisStateBackend } from '../../src/state/redis-backend.js';
import { eventually } from '../helpers/operator.js';
import { redisAvailable, startRedisServer, type RedisServer } from '../support/redis-server.js';

const PREFIX = 'revoke-unless-lifted:';
const T = 1_800_000_000_000;

describe.skipIf(!redisAvailable())('a revocation written back after an outage, against a lift in the store', () => {
  let redis: RedisServer;
  let inspect: Redis;
  let replica: RedisStateBackend;
  let other: RedisStateBackend;
  const heard: GovernanceEvent[] = [];

  beforeAll(async () => {
    redis = await startRedisServer();
    inspect = new Redis(redis.url);
    const logger = pino({ level: 'silent' });
    replica = new RedisStateBackend({ url: redis.url, prefix: PREFIX, logger });
    other = new RedisStateBackend({ url: redis.url, prefix: PREFIX, logger });
    await replica.connect();
    await other.connect();
    other.subscribe((event) => heard.push(event));
  });

  afterAll(async () => {
    await replica?.close();
    await other?.close();
    inspect?.disconnect();
    await redis?.close();
  });

  const revocation = (target: string, kind: Revocation['kind'] = 'agent'): Extract<GovernanceEvent, { type: 'revocation.added' }> => ({
    type: 'revocation.added',
    revocation: { kind, target, reason: 'queued while cut off', by: 'oncall', at: T },
  });
  const lift = (target: string, at: number): GovernanceEvent => ({ type: 'revocation.lifted', kind: 'agent', target, by: 'oncall', at });
  const stored = (target: string, kind = 'agent'): Promise<string | null> => inspect.hget(`${PREFIX}revocations`, `${kind}\u0000${target}`);

  it('with no lift in the store: written, and the other replica hears it', async () => {
    expect(await replica.appendUnlessLifted(revocation('never-lifted'), LIFT_MARGIN_MS)).toBe(true);
    expect(JSON.parse((await stored('never-lifted')) ?? 'null')).toMatchObject({ kind: 'agent', target: 'never-lifted', at: T });
    await eventually('the other replica hears the revocation', () => heard.some((e) => e.type === 'revocation.added' && e.revocation.target === 'never-lifted'));
  });

  it(`lifted more than ${LIFT_MARGIN_MS} ms after it: not written, the lift kept, nothing published`, async () => {
    await other.append(lift('lifted-later', T + LIFT_MARGIN_MS + 1));
    expect(await replica.appendUnlessLifted(revocation('lifted-later'), LIFT_MARGIN_MS)).toBe(false);
    expect(await stored('lifted-later')).toBeNull();
    expect(await inspect.hget(`${PREFIX}lifted`, 'agent\u0000lifted-later')).not.toBeNull();
    // What the other replica heard after the lift is published in order: a later marker shows nothing came between.
    await replica.append(revocation('marker'));
    await eventually('the other replica hears the marker', () => heard.some((e) => e.type === 'revocation.added' && e.revocation.target === 'marker'));
    expect(heard.some((e) => e.type === 'revocation.added' && e.revocation.target === 'lifted-later')).toBe(false);
  });

  it(`lifted up to ${LIFT_MARGIN_MS} ms after it (two replicas' clocks): the revocation stands, the lift's tombstone goes`, async () => {
    await other.append(lift('lifted-close', T + LIFT_MARGIN_MS));
    expect(await replica.appendUnlessLifted(revocation('lifted-close'), LIFT_MARGIN_MS)).toBe(true);
    expect(await stored('lifted-close')).not.toBeNull();
    expect(await inspect.hget(`${PREFIX}lifted`, 'agent\u0000lifted-close')).toBeNull();
  });

  it('a lift record that cannot be read does not stop the revocation (fail closed)', async () => {
    await inspect.hset(`${PREFIX}lifted`, 'agent\u0000garbled', '{"at": "not a number"');
    expect(await replica.appendUnlessLifted(revocation('garbled'), LIFT_MARGIN_MS)).toBe(true);
    expect(await stored('garbled')).not.toBeNull();
  });

  it("a session's revocation deletes the session's record, and no other key", async () => {
    await inspect.set(`${PREFIX}session:s-1`, '{"id":"s-1"}');
    await inspect.set(`${PREFIX}session:agent-named-s-2`, '{"id":"x"}');
    expect(await replica.appendUnlessLifted(revocation('s-1', 'session'), LIFT_MARGIN_MS)).toBe(true);
    expect(await replica.appendUnlessLifted(revocation('agent-named-s-2'), LIFT_MARGIN_MS)).toBe(true);
    expect(await inspect.exists(`${PREFIX}session:s-1`)).toBe(0);
    expect(await inspect.exists(`${PREFIX}session:agent-named-s-2`)).toBe(1);
    expect(await stored('s-1', 'session')).not.toBeNull();
  });
});
