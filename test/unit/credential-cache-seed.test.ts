/**
 * A value taken over from the previous configuration's cache (CredentialCache.seed, for a reload while
 * the store is down) is held to this cache's bounds counted from when it was fetched, not from the
 * reload: it is served fresh, then stale within max_staleness while the store fails, and refused past
 * it; and a value this cache already holds is never replaced by one handed over. On a fake clock.
 */
import { describe, expect, it } from 'vitest';
import { CredentialCache } from '../../src/credentials/credential-cache.js';
import { Credential } from '../../src/credentials/credential.js';
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
});
