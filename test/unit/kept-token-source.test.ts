/**
 * The OAuth2 token kept in this process (kept-token-source.ts): a `current` fetch takes the last token
 * minted while it has 5 s or more to live; forced and ordinary fetches always mint, and pass their
 * options on. The inner source here stands in for the token endpoint: it counts mints, records the
 * options it was given, and hands out unique canary tokens.
 */
import { describe, expect, it } from 'vitest';
import { Credential } from '../../src/credentials/credential.js';
import { createKeptTokenSource } from '../../src/credentials/kept-token-source.js';
import type { FetchOptions, SecretSource } from '../../src/credentials/secret-source.js';
import { assertNoLeak } from '../helpers/assert-no-leak.js';
import { canary } from '../helpers/canary.js';

function mintingSource(lifeMs: number | null, clock: () => number) {
  const minted: string[] = [];
  const asked: Array<FetchOptions | undefined> = [];
  const source: SecretSource = {
    async fetchSecret(_name, ref, options) {
      asked.push(options);
      const token = canary(`kept-token-${minted.length}`);
      minted.push(token);
      return new Credential(ref, token, `issued ${minted.length}`, lifeMs === null ? null : clock() + lifeMs);
    },
  };
  return { source, minted, asked };
}

describe('createKeptTokenSource', () => {
  it('hands back the last token as current while it has life left, and mints once it has not', async () => {
    let now = 1_000_000;
    const inner = mintingSource(60_000, () => now);
    const kept = createKeptTokenSource(inner.source, () => now);
    // Nothing kept yet: even a current fetch mints.
    const first = await kept.fetchSecret('crm', 'oauth2:crm', { current: true });
    expect(inner.minted).toHaveLength(1);
    now += 30_000;
    expect((await kept.fetchSecret('crm', 'oauth2:crm', { current: true })).sameValueAs(first)).toBe(true);
    expect(inner.minted).toHaveLength(1);
    // Under 5 s to live: not handed out as current.
    now += 25_001;
    const next = await kept.fetchSecret('crm', 'oauth2:crm', { current: true });
    expect(next.sameValueAs(first)).toBe(false);
    expect(inner.minted).toHaveLength(2);
    assertNoLeak(inner.minted, [{ name: 'generations', text: JSON.stringify([first.generation, next.generation]) }]);
  });

  it('mints on every ordinary fetch, so refreshing ahead of expiry still brings a new token', async () => {
    const now = 5_000_000;
    const inner = mintingSource(60_000, () => now);
    const kept = createKeptTokenSource(inner.source, () => now);
    const a = await kept.fetchSecret('crm', 'oauth2:crm');
    const b = await kept.fetchSecret('crm', 'oauth2:crm');
    expect(inner.minted).toHaveLength(2);
    expect(a.sameValueAs(b)).toBe(false);
    // The current token is the newest one.
    expect((await kept.fetchSecret('crm', 'oauth2:crm', { current: true })).sameValueAs(b)).toBe(true);
  });

  it('a forced fetch mints, passes its options to the source, and what it minted becomes current', async () => {
    const now = 9_000_000;
    const inner = mintingSource(60_000, () => now);
    const kept = createKeptTokenSource(inner.source, () => now);
    const old = await kept.fetchSecret('crm', 'oauth2:crm');
    const forced = { forced: true, replacing: old };
    const replaced = await kept.fetchSecret('crm', 'oauth2:crm', forced);
    expect(inner.minted).toHaveLength(2);
    expect(replaced.sameValueAs(old)).toBe(false);
    expect(inner.asked).toEqual([undefined, forced]);
    expect((await kept.fetchSecret('crm', 'oauth2:crm', { current: true })).sameValueAs(replaced)).toBe(true);
    // Nothing held by the caller (an operator's rotate before any use): mints too.
    await kept.fetchSecret('crm', 'oauth2:crm', { forced: true, replacing: null });
    expect(inner.minted).toHaveLength(3);
  });

  it('keeps a token without expires_in as current until it is replaced, each reference apart', async () => {
    const now = 0;
    const inner = mintingSource(null, () => now);
    const kept = createKeptTokenSource(inner.source, () => now);
    const crm = await kept.fetchSecret('crm', 'oauth2:crm');
    const erp = await kept.fetchSecret('erp', 'oauth2:erp');
    expect((await kept.fetchSecret('crm', 'oauth2:crm', { current: true })).sameValueAs(crm)).toBe(true);
    expect((await kept.fetchSecret('erp', 'oauth2:erp', { current: true })).sameValueAs(erp)).toBe(true);
    expect(inner.minted).toHaveLength(2);
  });
});
