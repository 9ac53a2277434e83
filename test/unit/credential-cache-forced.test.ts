/**
 * Forced fetches back off while an upstream refuses every new value (CredentialCache.refresh with a
 * minimum age, as forward-with-rotation.ts calls it after a 401 with retry_on). A source that mints a
 * value when forced, like a Vault lease or an OAuth2 token, is the one this protects: each forced fetch
 * is a new lease. Run on a fake clock against a source that counts what it is asked for.
 */
import { describe, expect, it } from 'vitest';
import { CredentialCache } from '../../src/credentials/credential-cache.js';
import { Credential } from '../../src/credentials/credential.js';
import { canary } from '../helpers/canary.js';

const REF = 'vault:database/creds/app#password';
const MIN_AGE_MS = 2_000;

function leasingSource(leaseMs = 0): { cache: CredentialCache; forcedAt: number[]; advance: (ms: number) => void; now: () => number } {
  let clock = 0;
  const forcedAt: number[] = [];
  let current = new Credential(REF, canary('lease-0'), '0');
  const cache = new CredentialCache(
    async (_ref, options) => {
      if (options.forced === true) {
        forcedAt.push(clock);
        clock += leaseMs;
        current = new Credential(REF, canary(`lease-${forcedAt.length}`), String(forcedAt.length));
      }
      return current;
    },
    () => ({ ttlMs: 3_600_000, maxStalenessMs: 3_600_000 }),
    { now: () => clock },
  );
  return { cache, forcedAt, advance: (ms) => (clock += ms), now: () => clock };
}

/** An upstream that refuses every value: a refresh after each refused request, one every `everyMs`, for `forMs`. */
async function refuseEverything(source: ReturnType<typeof leasingSource>, forMs: number, everyMs = 500): Promise<void> {
  for (const end = source.now() + forMs; source.now() < end; source.advance(everyMs)) await source.cache.refresh(REF, MIN_AGE_MS);
}

describe('forced fetches while an upstream refuses every value', () => {
  it('back off from one every few seconds to one every 5 minutes at most', async () => {
    const source = leasingSource();
    await source.cache.get(REF);
    await refuseEverything(source, 20 * 60_000);
    const gaps = source.forcedAt.slice(1).map((at, i) => at - (source.forcedAt[i] as number));
    // Without the backoff: one lease every 2-2.5 s, some 500 in these 20 minutes.
    expect(source.forcedAt.length).toBeGreaterThanOrEqual(8);
    expect(source.forcedAt.length).toBeLessThanOrEqual(14);
    expect(gaps[0]).toBeLessThan(3 * MIN_AGE_MS);
    for (let i = 1; i < gaps.length; i++) expect(gaps[i]).toBeGreaterThanOrEqual(gaps[i - 1] as number);
    expect(Math.max(...gaps)).toBeGreaterThanOrEqual(5 * 60_000);
    expect(Math.max(...gaps)).toBeLessThanOrEqual(5 * 60_000 + MIN_AGE_MS + 500);
  });

  it('also when the refusals come seconds apart (an agent that waits after each 401)', async () => {
    const source = leasingSource();
    await source.cache.get(REF);
    await refuseEverything(source, 20 * 60_000, 5_000);
    // Without the backoff: one lease per refusal, 240.
    expect(source.forcedAt.length).toBeLessThanOrEqual(14);
  });

  it('starts over once the upstream has taken a value for a while: a genuine rotation a minute later forces at once', async () => {
    const source = leasingSource();
    await source.cache.get(REF);
    await refuseEverything(source, 20 * 60_000);
    const before = source.forcedAt.length;
    // The upstream accepts the current lease for a minute (no refusals), then that lease is revoked.
    source.advance(60_000);
    const revokedAt = source.now();
    await refuseEverything(source, 1_000);
    expect(source.forcedAt.slice(before)).toEqual([revokedAt]);
  });

  it('times the wait from when a slow new lease arrived: a request refused with the old one just after takes the new one', async () => {
    const source = leasingSource(3_000);
    await source.cache.get(REF);
    const fresh = await source.cache.refresh(REF, MIN_AGE_MS);
    source.advance(100);
    expect((await source.cache.refresh(REF, MIN_AGE_MS)).generation).toBe(fresh.generation);
    expect(source.forcedAt).toEqual([0]);
  });

  it('starts over after a quiet spell: the next refusal forces at once, and the one after waits only the minimum again', async () => {
    const source = leasingSource();
    await source.cache.get(REF);
    await refuseEverything(source, 3 * 60_000);
    const before = source.forcedAt.length;
    source.advance(15 * 60_000);
    const quietEnd = source.now();
    await refuseEverything(source, 10_000);
    const after = source.forcedAt.slice(before);
    expect(after[0]).toBe(quietEnd);
    expect((after[1] as number) - (after[0] as number)).toBeLessThan(3 * MIN_AGE_MS);
  });

  it('an operator refresh (no minimum age) always forces, even in the middle of a backoff', async () => {
    const source = leasingSource();
    await source.cache.get(REF);
    await refuseEverything(source, 2 * 60_000);
    const before = source.forcedAt.length;
    await source.cache.refresh(REF);
    await source.cache.refresh(REF);
    expect(source.forcedAt.length).toBe(before + 2);
  });

  it('a refusal of a value replaced moments ago takes the current value instead of forcing another', async () => {
    const source = leasingSource();
    const first = await source.cache.get(REF);
    const rotated = await source.cache.refresh(REF, MIN_AGE_MS);
    expect(rotated.generation).toBe('1');
    expect(rotated.sameValueAs(first)).toBe(false);
    source.advance(100);
    // A request still in flight with the old value gets its 401 now: it is replayed with lease 1, no lease 2.
    expect((await source.cache.refresh(REF, MIN_AGE_MS)).generation).toBe('1');
    expect(source.forcedAt).toEqual([0]);
  });
});

describe('what the source is asked for', () => {
  it('{} for a miss and a refresh ahead; forced with the value to replace on a refusal; current between forced fetches; forced for an operator', async () => {
    let clock = 0;
    const asked: string[] = [];
    let n = 0;
    const cache = new CredentialCache(
      async (_ref, options) => {
        asked.push(options.forced === true ? `forced, replacing ${options.replacing?.generation ?? 'none'}` : options.current === true ? 'current' : 'plain');
        n++;
        return new Credential(REF, canary(`asked-${n}`), String(n));
      },
      () => ({ ttlMs: 60_000, maxStalenessMs: 60_000 }),
      { now: () => clock },
    );
    await cache.get(REF); // a miss
    clock += 50_000; // past 3/4 of its fresh life: refreshed ahead, in the background
    await cache.get(REF);
    await cache.reload(REF); // waits for that background fetch, then fetches once more, unforced
    await cache.refresh(REF, MIN_AGE_MS); // the first refusal forces, replacing the value in use
    clock += 500;
    await cache.refresh(REF, MIN_AGE_MS); // within the wait: the value in use
    await cache.refresh(REF); // an operator's refresh
    expect(asked).toEqual(['plain', 'plain', 'plain', 'forced, replacing 3', 'current', 'forced, replacing 5']);
  });
});

// Found by an ops walkthrough: an operator's rotate refused while the store was down left the reference
// failing (admin API, airlock_credential_failing, `status` exit 2) until refresh-ahead, 3/4 of its ttl
// later, while requests were served its fresh value and the store was long back.
describe('a forced fetch that failed while the value is fresh', () => {
  function flakySource(): { cache: CredentialCache; asked: string[]; setDown: (down: boolean) => void; advance: (ms: number) => void } {
    let clock = 0;
    let down = false;
    const asked: string[] = [];
    const cache = new CredentialCache(
      async (_ref, options) => {
        asked.push(options.forced === true ? 'forced' : 'plain');
        if (down) throw new Error('store down');
        return new Credential(REF, canary(`flaky-${asked.length}`), String(asked.length));
      },
      () => ({ ttlMs: 300_000, maxStalenessMs: 900_000 }),
      { now: () => clock },
    );
    return { cache, asked, setDown: (value) => (down = value), advance: (ms) => (clock += ms) };
  }
  const failing = (cache: CredentialCache): boolean | undefined => cache.status().find((s) => s.ref === REF)?.failing;

  it('is fetched again by the next request once its backoff is over, and stops failing', async () => {
    const source = flakySource();
    await source.cache.get(REF);
    source.setDown(true);
    await source.cache.refresh(REF).catch(() => null);
    expect(failing(source.cache)).toBe(true);
    source.setDown(false);
    // Within the backoff (0.5 s after the first failure) a request takes the fresh value and asks nothing.
    source.advance(100);
    expect(source.cache.get(REF)).toBeInstanceOf(Credential);
    expect(source.asked).toEqual(['plain', 'forced']);
    source.advance(500);
    expect(source.cache.get(REF)).toBeInstanceOf(Credential);
    await new Promise((resolve) => setImmediate(resolve));
    expect(source.asked).toEqual(['plain', 'forced', 'plain']);
    expect(failing(source.cache)).toBe(false);
  });

  it('is asked again by retryIfDue (the broker sweep, without traffic) only once its backoff is over', async () => {
    const source = flakySource();
    await source.cache.get(REF);
    source.setDown(true);
    await source.cache.refresh(REF).catch(() => null);
    source.setDown(false);
    expect(await source.cache.retryIfDue(REF)).toBeNull();
    expect(source.asked).toEqual(['plain', 'forced']);
    source.advance(600);
    expect(await source.cache.retryIfDue(REF)).toBeInstanceOf(Credential);
    expect(failing(source.cache)).toBe(false);
    // Nothing failing: nothing to ask.
    expect(await source.cache.retryIfDue(REF)).toBeNull();
    expect(source.asked).toEqual(['plain', 'forced', 'plain']);
  });

  it('leaves a reference that never had a value to requests (a rejected OAuth2 client is not retried every 30 s)', async () => {
    const source = flakySource();
    source.setDown(true);
    await expect(source.cache.get(REF)).rejects.toThrow();
    source.advance(60_000);
    expect(await source.cache.retryIfDue(REF)).toBeNull();
    expect(source.asked).toEqual(['plain']);
  });
});
