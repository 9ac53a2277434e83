/**
 * Stages that usually know their answer at once return it, not a promise (run-pipeline.ts awaits only
 * a promise: each await is a suspension and a microtask per request). Checked here: the in-memory rate
 * limit, and a cached credential, answer synchronously, refusals included; a shared limiter and a cache
 * miss still answer with a promise, with the same outcome.
 */
import { describe, expect, it } from 'vitest';
import { formatProblem } from '../../src/config/config-problem.js';
import { buildConfig } from '../../src/config/load-config.js';
import { CredentialCache } from '../../src/credentials/credential-cache.js';
import { Credential } from '../../src/credentials/credential.js';
import { AirlockError } from '../../src/errors.js';
import { generateAgentToken } from '../../src/identity/agent-token.js';
import { checkRateLimit } from '../../src/pipeline/check-rate-limit.js';
import { compilePolicy, type GrantPolicy } from '../../src/policy/compile-policy.js';
import { ConcurrencyGate, type RateLimiter } from '../../src/policy/rate-limiter.js';
import { MemoryRateLimiter } from '../../src/state/memory-rate-limiter.js';
import { canary } from '../helpers/canary.js';

function grantWith(rate: Record<string, number>): GrantPolicy {
  const agent = generateAgentToken();
  const built = buildConfig(
    {
      listen: '127.0.0.1:0',
      data_dir: '/tmp',
      services: { api: { upstream: 'http://127.0.0.1:9', credential: { secret: 'env:UNUSED' }, routes: [{ method: 'GET', path: '/*', scope: 'api:read' }] } },
      agents: { bot: { tokens: [agent.hash], credentials: [{ service: 'api', max_scope: ['*'], rate }] } },
    },
    { baseDir: '/tmp' },
  );
  if (built.config === null) throw new Error(built.problems.map((p) => formatProblem(p, null)).join('\n'));
  return compilePolicy(built.config).agentByName.get('bot')?.grants.get('api') as GrantPolicy;
}

function refusal(run: () => unknown): AirlockError | null {
  try {
    run();
    return null;
  } catch (error) {
    return error as AirlockError;
  }
}

describe('answers known at once are not promises', () => {
  it('the in-memory rate limit admits and refuses synchronously', () => {
    const grant = grantWith({ requests: 2, per: 60 });
    const limiter = new MemoryRateLimiter();
    const gate = new ConcurrencyGate();
    for (let i = 0; i < 2; i++) expect(typeof checkRateLimit(limiter, gate, 'bot', grant)).toBe('function');
    const refused = refusal(() => checkRateLimit(limiter, gate, 'bot', grant));
    expect(refused).toBeInstanceOf(AirlockError);
    expect(refused?.code).toBe('rate_limited');
    expect(refused?.headers?.['retry-after']).toMatch(/^\d+$/);
  });

  // Found by review: the elapsed time went negative and drained the bucket an hour deep.
  it('a clock stepped back an hour neither drains nor fills the in-memory bucket', () => {
    let now = 10_000_000;
    const limiter = new MemoryRateLimiter(() => now);
    const shape = { capacity: 2, refillPerMs: 1 / 1000 };
    expect(limiter.take('k', shape)).toMatchObject({ allowed: true });
    now -= 3_600_000;
    expect(limiter.take('k', shape)).toMatchObject({ allowed: true });
    expect(limiter.take('k', shape)).toMatchObject({ allowed: false });
    now += 1_000;
    expect(limiter.take('k', shape), 'a second later, one token has come back').toMatchObject({ allowed: true });
  });

  it('the concurrency limit holds a slot until it is released, synchronously', () => {
    const grant = grantWith({ requests: 1000, per: 1, concurrency: 1 });
    const limiter = new MemoryRateLimiter();
    const gate = new ConcurrencyGate();
    const release = checkRateLimit(limiter, gate, 'bot', grant);
    if (typeof release !== 'function') throw new Error('expected a release function, not a promise');
    expect(refusal(() => checkRateLimit(limiter, gate, 'bot', grant))?.message).toMatch(/already has 1 requests in flight/);
    release();
    expect(typeof checkRateLimit(limiter, gate, 'bot', grant)).toBe('function');
  });

  it('a shared limiter (a promise) gives the same decisions through a promise', async () => {
    const grant = grantWith({ requests: 1, per: 60 });
    const memory = new MemoryRateLimiter();
    const shared: RateLimiter = { take: (key, shape) => Promise.resolve(memory.take(key, shape)) };
    const gate = new ConcurrencyGate();
    const first = checkRateLimit(shared, gate, 'bot', grant);
    expect(first).toBeInstanceOf(Promise);
    expect(typeof (await first)).toBe('function');
    await expect(checkRateLimit(shared, gate, 'bot', grant)).rejects.toMatchObject({ code: 'rate_limited' });
  });

  it('a cached credential comes back as is; a miss, and a source that fails, through a promise', async () => {
    const value = canary('answer-at-once');
    let fetches = 0;
    let failing = false;
    const cache = new CredentialCache(
      async (ref) => {
        fetches++;
        if (failing) throw new Error('the store is down (injected by the test)');
        return new Credential(ref, value, '1');
      },
      () => ({ ttlMs: 60_000, maxStalenessMs: 60_000 }),
    );
    const miss = cache.get('env:KEY');
    expect(miss).toBeInstanceOf(Promise);
    const loaded = await miss;
    const hit = cache.get('env:KEY');
    expect(hit).toBe(loaded);
    expect(fetches).toBe(1);
    failing = true;
    const failed = cache.get('env:OTHER');
    expect(failed).toBeInstanceOf(Promise);
    await expect(failed).rejects.toMatchObject({ code: 'credential_unavailable' });
    // Failing again moments later: refused at once, without asking the store, still as a rejected
    // promise (never a throw) and as the 503 the agent gets.
    const asked = fetches;
    const again = cache.get('env:OTHER');
    expect(again).toBeInstanceOf(Promise);
    await expect(again).rejects.toMatchObject({ code: 'credential_unavailable' });
    expect(fetches).toBe(asked);
  });
});
