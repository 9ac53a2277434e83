/**
 * A value taken over from the previous configuration's cache (CredentialCache.seed, for a reload while
 * the store is down) is held to this cache's bounds counted from when it was fetched, not from the
 * reload: it is served fresh, then stale within max_staleness while the store fails, and refused past
 * it; and a value this cache already holds is never replaced by one handed over. On a fake clock.
 */
import { describe, expect, it } from 'vitest';
import { CredentialCache } from '../../src/credentials/credential-cache.js';
import { Credential } from '../../src/credentials/credential.js';
import { CredentialWithdrawn } from '../../src/credentials/secret-source.js';
import { AirlockError } from '../../src/errors.js';
import { canary } from '../helpers/canary.js';

const REF = 'vault:secret/stripe#api_key';

function downStore(): { cache: CredentialCache; advance: (ms: number) => void; fetches: () => number } {
  let clock = 1_000_000;
  let fetches = 0;
  const cache = new CredentialCache(
    async () => {
      fetches++;
      throw new AirlockError('credential_unavailable', 'Vault is down');
    },
    () => ({ ttlMs: 60_000, maxStalenessMs: 600_000 }),
    { now: () => clock },
  );
  return { cache, advance: (ms) => (clock += ms), fetches: () => fetches };
}

describe('a value handed over by the previous configuration', () => {
  it('is fresh, then stale, then refused, by its own fetch time', async () => {
    const store = downStore();
    const value = new Credential(REF, canary('seeded'), '3');
    store.cache.seed(REF, value, 1_000_000 - 30_000);
    expect(store.cache.get(REF)).toBe(value);
    store.advance(31_000);
    // Past its ttl (60 s after its fetch): still served, the store asked in the background.
    expect(store.cache.get(REF)).toBe(value);
    await Promise.resolve();
    expect(store.fetches()).toBe(1);
    store.advance(570_000);
    // Past max_staleness (600 s after its fetch, not after the hand-over).
    await expect(Promise.resolve().then(() => store.cache.get(REF))).rejects.toMatchObject({ code: 'credential_unavailable' });
  });

  // Found by review: a reload while the store was down reset its failures, and `airlock status` called
  // the expired value idle with a healthy store while requests got 503.
  it("carries the store's failures over, so the new cache still reports it failing", async () => {
    const before = downStore();
    before.cache.seed(REF, new Credential(REF, canary('failing-before'), '4'), 1_000_000 - 30_000);
    before.advance(700_000);
    await expect(Promise.resolve().then(() => before.cache.get(REF))).rejects.toMatchObject({ code: 'credential_unavailable' });
    expect(before.cache.status()[0]).toMatchObject({ state: 'expired', failing: true, consecutiveFailures: 1 });
    const last = before.cache.lastGood(REF);
    expect(last).not.toBeNull();
    const after = downStore();
    after.cache.seed(REF, last!.credential, last!.fetchedAt, last!);
    expect(after.cache.status()[0]).toMatchObject({ failing: true, consecutiveFailures: 1, lastError: 'Vault is down' });
  });

  it('one fetched past max_staleness is not served at all', async () => {
    const store = downStore();
    store.cache.seed(REF, new Credential(REF, canary('too-old'), '1'), 1_000_000 - 700_000);
    await expect(Promise.resolve().then(() => store.cache.get(REF))).rejects.toMatchObject({ code: 'credential_unavailable' });
  });

  it('does not replace a value the cache holds', async () => {
    let clock = 0;
    const own = new Credential(REF, canary('own'), '2');
    const cache = new CredentialCache(async () => own, () => ({ ttlMs: 60_000, maxStalenessMs: 600_000 }), { now: () => clock });
    expect(await cache.get(REF)).toBe(own);
    cache.seed(REF, new Credential(REF, canary('older'), '1'), -10);
    clock += 1;
    expect(cache.get(REF)).toBe(own);
  });

  // Found by review: values were taken when the new configuration's broker was built; a rotate or a
  // withdrawal that reached the running broker meanwhile was lost, and the old value came back.
  describe('settled again at the switch (reseed)', () => {
    function upStore(value: Credential): { cache: CredentialCache; fetches: () => number } {
      let fetches = 0;
      const cache = new CredentialCache(
        async () => {
          fetches++;
          return value;
        },
        () => ({ ttlMs: 60_000, maxStalenessMs: 600_000 }),
        { now: () => 1_000_000 },
      );
      return { cache, fetches: () => fetches };
    }

    it('a value rotated meanwhile is the one served', () => {
      const { cache, fetches } = upStore(new Credential(REF, canary('from-store'), '9'));
      const v1 = new Credential(REF, canary('v1'), '1');
      const v2 = new Credential(REF, canary('v2'), '2');
      cache.seed(REF, v1, 999_000);
      cache.reseed(REF, { credential: v2, fetchedAt: 999_500 });
      expect(cache.get(REF)).toBe(v2);
      expect(fetches()).toBe(0);
    });

    it('a value withdrawn meanwhile is not served: the store is asked', async () => {
      const fromStore = new Credential(REF, canary('from-store'), '9');
      const { cache, fetches } = upStore(fromStore);
      cache.seed(REF, new Credential(REF, canary('gone'), '1'), 999_000);
      cache.reseed(REF, null);
      expect(await cache.get(REF)).toBe(fromStore);
      expect(fetches()).toBe(1);
    });

    it('a value the previous broker learnt after a seed-less start is taken; one this cache fetched is kept', async () => {
      const own = new Credential(REF, canary('own'), '5');
      const { cache } = upStore(own);
      const learnt = new Credential(REF, canary('learnt'), '4');
      cache.reseed(REF, { credential: learnt, fetchedAt: 999_900 });
      expect(cache.get(REF)).toBe(learnt);
      const other = upStore(own);
      expect(await other.cache.get(REF)).toBe(own);
      other.cache.reseed(REF, { credential: learnt, fetchedAt: 999_900 });
      expect(other.cache.get(REF)).toBe(own);
    });
  });

  // Found by review of the first version of reseed: it kept what the new cache held whenever that cache
  // had refreshed the value itself or met a passing failure, and a fetch in flight at the switch landed
  // over the settled value afterwards.
  describe('the newer value by fetch time wins, whatever happened to the new cache meanwhile', () => {
    function controlled(): { cache: CredentialCache; advance: (ms: number) => void; answer: (value: Credential | Error) => void; fetches: () => number } {
      let clock = 1_000_000;
      let fetches = 0;
      let resolveNext: ((value: Credential | Error) => void) | null = null;
      const cache = new CredentialCache(
        () => {
          fetches++;
          return new Promise<Credential>((resolve, reject) => {
            resolveNext = (value) => (value instanceof Error ? reject(value) : resolve(value));
          });
        },
        () => ({ ttlMs: 60_000, maxStalenessMs: 600_000 }),
        { now: () => clock },
      );
      return {
        cache,
        advance: (ms) => (clock += ms),
        answer: (value) => {
          const resolve = resolveNext;
          resolveNext = null;
          resolve?.(value);
        },
        fetches: () => fetches,
      };
    }
    const tick = (): Promise<void> => new Promise((resolve) => setImmediate(resolve));

    it('a refresh the new cache made before an operator rotated there does not keep the old value', async () => {
      const store = controlled();
      const v1 = new Credential(REF, canary('v1'), '1');
      const v2 = new Credential(REF, canary('v2'), '2');
      store.cache.seed(REF, v1, 1_000_000 - 50_000);
      expect(store.cache.get(REF)).toBe(v1);
      // The store still had the old value: a new Credential of it, fetched here.
      const v1Again = new Credential(REF, canary('v1-again'), '1');
      store.answer(v1Again);
      await tick();
      expect(store.fetches()).toBe(1);
      expect(store.cache.get(REF)).toBe(v1Again);
      store.advance(1_000);
      store.cache.reseed(REF, { credential: v2, fetchedAt: 1_000_500 });
      expect(store.cache.get(REF)).toBe(v2);
    });

    it('after a passing failure here, a rotate there is taken, and a withdrawal there drops the value', async () => {
      for (const last of ['rotated', 'withdrawn'] as const) {
        const store = controlled();
        const v1 = new Credential(REF, canary('v1'), '1');
        const v2 = new Credential(REF, canary('v2'), '2');
        store.cache.seed(REF, v1, 1_000_000 - 50_000);
        expect(store.cache.get(REF)).toBe(v1);
        store.answer(new AirlockError('credential_unavailable', 'Vault hiccup'));
        await tick();
        store.advance(100);
        store.cache.reseed(REF, last === 'rotated' ? { credential: v2, fetchedAt: 1_000_050 } : null);
        if (last === 'rotated') expect(store.cache.get(REF)).toBe(v2);
        else expect(store.cache.get(REF)).toBeInstanceOf(Promise);
      }
    });

    // Found by review of 22d10a4: a withdrawal the new cache met itself was undone by the older value the
    // previous broker still held.
    it('a withdrawal this cache met itself stands against the older value taken over', async () => {
      const store = controlled();
      const v1 = new Credential(REF, canary('v1'), '1');
      store.cache.seed(REF, v1, 1_000_000 - 50_000);
      expect(store.cache.get(REF)).toBe(v1);
      store.answer(new CredentialWithdrawn('deleted in Vault'));
      await tick();
      store.cache.reseed(REF, { credential: v1, fetchedAt: 1_000_000 - 50_000 });
      await expect(Promise.resolve().then(() => store.cache.get(REF))).rejects.toMatchObject({ code: 'credential_unavailable' });
    });

    it('a fetch in flight at the switch, begun before the rotate, does not land over it', async () => {
      const store = controlled();
      const v1 = new Credential(REF, canary('v1'), '1');
      const v2 = new Credential(REF, canary('v2'), '2');
      store.cache.seed(REF, v1, 1_000_000 - 50_000);
      expect(store.cache.get(REF)).toBe(v1);
      store.advance(200);
      store.cache.reseed(REF, { credential: v2, fetchedAt: 1_000_100 });
      store.answer(v1);
      await tick();
      expect(store.cache.get(REF)).toBe(v2);
    });
  });
});
