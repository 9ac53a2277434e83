/**
 * Rate limits: a token bucket per agent and service (a grant's `rate`), and a concurrency gate. The
 * bucket lives behind this interface so that replicas can share it (Redis, scale-out); the embedded
 * default keeps it in memory. The gate counts requests in flight on this replica.
 */

export interface BucketShape {
  /** Tokens the bucket holds when full (the burst). */
  readonly capacity: number;
  /** Tokens added per millisecond. */
  readonly refillPerMs: number;
}

export interface RateDecision {
  readonly allowed: boolean;
  /** When refused: how long until one token is back. */
  readonly retryAfterMs: number;
}

export interface RateLimiter {
  /**
   * The in-memory limiter answers at once; a shared one (Redis) after a round trip, with a native
   * Promise (the request path tells the two apart with `instanceof Promise`).
   */
  take(key: string, shape: BucketShape): RateDecision | Promise<RateDecision>;
}

export class ConcurrencyGate {
  readonly #inFlight = new Map<string, number>();

  /** Returns a release function, or null when the limit is reached. */
  enter(key: string, limit: number): (() => void) | null {
    const current = this.#inFlight.get(key) ?? 0;
    if (current >= limit) return null;
    this.#inFlight.set(key, current + 1);
    let released = false;
    return () => {
      if (released) return;
      released = true;
      const left = (this.#inFlight.get(key) ?? 1) - 1;
      if (left <= 0) this.#inFlight.delete(key);
      else this.#inFlight.set(key, left);
    };
  }
}
