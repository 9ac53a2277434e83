/**
 * Token buckets in memory (the embedded default), bounded: at most one bucket per agent and service,
 * held in an LRU so a config with many of them cannot grow without end.
 */
import { LRUCache } from 'lru-cache';
import type { BucketShape, RateDecision, RateLimiter } from '../policy/rate-limiter.js';

const ALLOWED: RateDecision = Object.freeze({ allowed: true, retryAfterMs: 0 });

interface Bucket {
  tokens: number;
  updatedAt: number;
}

export class MemoryRateLimiter implements RateLimiter {
  // Bounded by count through maxSize rather than max, which would preallocate all 100,000 slots.
  readonly #buckets = new LRUCache<string, Bucket>({ maxSize: 100_000, sizeCalculation: () => 1 });
  readonly #now: () => number;

  constructor(now: () => number = Date.now) {
    this.#now = now;
  }

  /** Synchronous: the request path awaits nothing for a limit kept in this process. */
  take(key: string, shape: BucketShape): RateDecision {
    const now = this.#now();
    let bucket = this.#buckets.get(key);
    if (bucket === undefined) {
      bucket = { tokens: shape.capacity, updatedAt: now };
      this.#buckets.set(key, bucket);
    }
    // A clock stepped back (NTP) adds nothing and takes nothing, as the Redis script's max(0, ...) does
    // (found by review: an hour's step back drained the bucket an hour deep and locked the agent out).
    bucket.tokens = Math.min(shape.capacity, bucket.tokens + Math.max(0, now - bucket.updatedAt) * shape.refillPerMs);
    bucket.updatedAt = now;
    if (bucket.tokens >= 1) {
      bucket.tokens -= 1;
      return ALLOWED;
    }
    return { allowed: false, retryAfterMs: Math.ceil((1 - bucket.tokens) / shape.refillPerMs) };
  }
}
