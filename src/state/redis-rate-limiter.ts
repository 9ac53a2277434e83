/**
 * Token buckets in Redis, shared by every replica: one Lua script per take, so refill and spend are
 * atomic, timed by Redis's own clock (replicas' clocks may differ). While Redis is unreachable the
 * replica falls back to its own in-memory buckets for up to `stale_after`, then refuses (fail closed).
 */
import type { Redis } from 'ioredis';
import { AirlockError } from '../errors.js';
import type { BucketShape, RateDecision, RateLimiter } from '../policy/rate-limiter.js';
import { MemoryRateLimiter } from './memory-rate-limiter.js';

const TAKE = `
local now_parts = redis.call('TIME')
local now = tonumber(now_parts[1]) * 1000 + math.floor(tonumber(now_parts[2]) / 1000)
local capacity = tonumber(ARGV[1])
local refill = tonumber(ARGV[2])
local bucket = redis.call('HMGET', KEYS[1], 't', 'u')
local tokens = tonumber(bucket[1]) or capacity
local updated = tonumber(bucket[2]) or now
tokens = math.min(capacity, tokens + math.max(0, now - updated) * refill)
local allowed = 0
local retry = 0
if tokens >= 1 then
  tokens = tokens - 1
  allowed = 1
else
  retry = math.ceil((1 - tokens) / refill)
end
redis.call('HSET', KEYS[1], 't', tostring(tokens), 'u', tostring(now))
-- Kept until the bucket is full again, at most ~31,700 years: Redis takes 1e17 and more (a large burst
-- refilled slowly) written as 1e+17, which it refuses, and every request of the grant was refused.
redis.call('PEXPIRE', KEYS[1], math.min(math.ceil(capacity / refill) + 1000, 1e15))
return {allowed, retry}
`;

export class RedisRateLimiter implements RateLimiter {
  readonly #client: Redis;
  readonly #prefix: string;
  readonly #fallback: MemoryRateLimiter;
  readonly #downSince: () => number | null;
  readonly #staleAfterMs: number;
  readonly #now: () => number;

  constructor(client: Redis, options: { prefix: string; staleAfterMs: number; downSince: () => number | null; now?: () => number }) {
    this.#client = client;
    this.#prefix = options.prefix;
    this.#staleAfterMs = options.staleAfterMs;
    this.#downSince = options.downSince;
    this.#now = options.now ?? Date.now;
    this.#fallback = new MemoryRateLimiter(this.#now);
    client.defineCommand('airlockTakeToken', { numberOfKeys: 1, lua: TAKE });
  }

  async take(key: string, shape: BucketShape): Promise<RateDecision> {
    try {
      const [allowed, retry] = (await (this.#client as unknown as { airlockTakeToken(k: string, c: number, r: number): Promise<[number, number]> }).airlockTakeToken(
        `${this.#prefix}rate:${key}`,
        shape.capacity,
        shape.refillPerMs,
      )) as [number, number];
      return { allowed: allowed === 1, retryAfterMs: retry };
    } catch (error) {
      // Redis answered with an error (OOM, READONLY after a failover, BUSY): it is up but cannot keep the
      // shared count, and a per-replica count would let N replicas allow N times the rate. Refuse.
      if ((error as { name?: unknown }).name === 'ReplyError') {
        throw new AirlockError('state_unavailable', 'Rate limits are shared through Redis, which refused to update them; requests that need them are refused until it can.', { cause: error });
      }
      // Unreachable: the in-memory count bridges the outage up to state.stale_after.
      const since = this.#downSince() ?? this.#now();
      if (this.#now() - since > this.#staleAfterMs) {
        throw new AirlockError('state_unavailable', 'Rate limits are shared through Redis, which has been unreachable longer than state.stale_after; requests that need them are refused until it is back.', { cause: error });
      }
      return this.#fallback.take(key, shape);
    }
  }
}
