/**
 * Stage 5d: the grant's rate limit (a token bucket per agent and service, shared by replicas through
 * the state backend) and concurrency limit (requests in flight, per replica). Over either: 429
 * rate_limited with Retry-After (RFC 9110 10.2.3) and the RateLimit-Policy and RateLimit fields of
 * draft-ietf-httpapi-ratelimit-headers (compiled per grant at start-up: rate-limit-fields.ts), nothing
 * forwarded. An allowed request gets neither field: its response is the upstream's, whose own
 * RateLimit fields pass untouched (README, Rate limits: the cost, and whose limit a field would be).
 */
import { AirlockError } from '../errors.js';
import type { GrantPolicy } from '../policy/compile-policy.js';
import type { RateLimitFields } from '../policy/rate-limit-fields.js';
import type { BucketShape, ConcurrencyGate, RateDecision, RateLimiter } from '../policy/rate-limiter.js';

const NOTHING_TO_RELEASE = (): void => undefined;

/**
 * Returns what to call when the request ends (the concurrency slot). Synchronous when the limiter is
 * (the in-memory one): the request path then waits for no promise here.
 */
export function checkRateLimit(limiter: RateLimiter, gate: ConcurrencyGate, agent: string, grant: GrantPolicy): (() => void) | Promise<() => void> {
  const rate = grant.config.rate;
  const bucket = grant.bucket;
  if (rate === undefined || bucket === null) return NOTHING_TO_RELEASE;
  // Compiled with the bucket (compile-policy.ts). Missing, it is a bug, and the request is refused (500)
  // rather than let through unlimited: what a 429 would say never decides whether the limit applies.
  const fields = grant.rateFields;
  if (fields === null) throw new Error(`the rate limit fields of agent ${agent}'s grant on ${grant.service} were not compiled`);
  // The concurrency gate first: a request refused there is not sent, so it must not spend a token, as
  // one the bucket refuses spends none (found by review: an agent retrying while its slots were busy
  // spent its rate on those refusals, and was then refused for the rate once a slot was free).
  const release = enterGate(gate, agent, grant, rate, fields);
  let decision: RateDecision | Promise<RateDecision>;
  try {
    decision = limiter.take(grant.rateKey, bucket);
  } catch (error) {
    release();
    throw error;
  }
  if (decision instanceof Promise) {
    return decision.then(
      (shared) => admit(shared, release, agent, grant, rate, bucket, fields),
      (error: unknown) => {
        release();
        throw error;
      },
    );
  }
  return admit(decision, release, agent, grant, rate, bucket, fields);
}

/**
 * An agent's task-session mints (limits.session_mint_rate), in the same limiter, so replicas sharing
 * Redis share the bucket. Each mint is a durable state write; without a bound an agent minting and
 * ending sessions in a loop kept the state store writing as fast as it could (found by review).
 */
export function checkMintRate(limiter: RateLimiter, agent: string, bucket: BucketShape, rate: MintRate): void | Promise<void> {
  // NUL cannot appear in a service name, so the key is apart from every grant's (compile-policy.ts).
  const decision = limiter.take(`${agent}\u0000\u0000session-mints`, bucket);
  if (decision instanceof Promise) return decision.then((shared) => admitMint(shared, agent, bucket, rate));
  admitMint(decision, agent, bucket, rate);
}

export interface MintRate {
  readonly requests: number;
  readonly per: number;
  /** What its 429 says of it (RateLimit-Policy, RateLimit), compiled at start-up. */
  readonly fields: RateLimitFields;
}

function admitMint(decision: RateDecision, agent: string, bucket: BucketShape, rate: MintRate): void {
  if (decision.allowed) return;
  throw overRate(decision, rate.fields, (seconds) => `Agent ${agent} is minting task sessions faster than ${rate.requests} per ${rate.per} s, bursts of ${bucket.capacity} (limits.session_mint_rate); retry in ${seconds} s, or reuse a session for more calls.`);
}

/**
 * 429 with Retry-After in whole seconds, at least 1 (RFC 9110 10.2.3: delay-seconds), which `detail`
 * repeats, and RateLimit: the bucket's policy has nothing left (r=0) for t = those same seconds. Until
 * the next token no more than r requests can pass, which is what t means (draft section 4.1.2), and the
 * draft wants a Retry-After no earlier than the end of t (section 6).
 */
function overRate(decision: RateDecision, fields: RateLimitFields, detail: (seconds: number) => string): AirlockError {
  const seconds = Math.max(1, Math.ceil(decision.retryAfterMs / 1000));
  return new AirlockError('rate_limited', detail(seconds), {
    headers: { 'retry-after': String(seconds), 'ratelimit-policy': fields.policy, ratelimit: `${fields.bucketItem};r=0;t=${seconds}` },
  });
}

/** A slot under `rate.concurrency` (none to take without one), or 429 when every slot is in use. */
function enterGate(gate: ConcurrencyGate, agent: string, grant: GrantPolicy, rate: NonNullable<GrantPolicy['config']['rate']>, fields: RateLimitFields): () => void {
  if (rate.concurrency === undefined) return NOTHING_TO_RELEASE;
  const release = gate.enter(grant.rateKey, rate.concurrency);
  if (release === null) {
    throw new AirlockError('rate_limited', `Agent ${agent} already has ${rate.concurrency} requests in flight on ${grant.service} (rate.concurrency); retry when one ends.`, {
      headers: { 'retry-after': '1', 'ratelimit-policy': fields.policy, ratelimit: fields.concurrencyRefused },
    });
  }
  return release;
}

/** The limiter's decision for a request that holds its slot; refused, the slot goes back. `rate`, `bucket` and `fields` are the grant's, known present. */
function admit(decision: RateDecision, release: () => void, agent: string, grant: GrantPolicy, rate: NonNullable<GrantPolicy['config']['rate']>, bucket: BucketShape, fields: RateLimitFields): () => void {
  if (decision.allowed) return release;
  release();
  throw overRate(decision, fields, (seconds) => `Agent ${agent} is over its rate on ${grant.service} (${rate.requests} per ${rate.per} s, bursts of ${bucket.capacity}); retry in ${seconds} s.`);
}
