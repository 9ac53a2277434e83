/**
 * Which earlier values of a reference the catalogue keeps scrubbing. Found by review: only the current
 * value and two before it were kept, so an OAuth2 token replaced early by three forced refreshes (a
 * retry_on status an agent can provoke), though still good upstream for an hour, was no longer masked.
 */
import { randomBytes } from 'node:crypto';
import { describe, expect, it } from 'vitest';
import { Credential } from '../../src/credentials/credential.js';
import { SecretCatalog } from '../../src/redaction/secret-catalog.js';
import { canary } from '../helpers/canary.js';

const HOUR = 3_600_000;

function masked(catalog: SecretCatalog, value: string): boolean {
  return !catalog.scrub(`echo ${value} end`).includes(value);
}

describe('SecretCatalog retention', () => {
  it('a value without an expiry: the current one and the two before it', () => {
    const catalog = new SecretCatalog();
    const values = [1, 2, 3, 4].map((n) => canary(`static-${n}`));
    for (const value of values) catalog.remember(new Credential('env:KEY', value));
    expect(values.map((v) => masked(catalog, v))).toEqual([false, true, true, true]);
  });

  it('an expiring value replaced early is kept until its expiry, then dropped at the next change', () => {
    let now = 1_000_000;
    const catalog = new SecretCatalog({ now: () => now });
    const tokens = [1, 2, 3, 4, 5].map((n) => canary(`token-${n}`));
    for (const token of tokens) {
      catalog.remember(new Credential('oauth2:crm', token, null, now + HOUR));
      now += 4_000;
    }
    expect(tokens.map((t) => masked(catalog, t))).toEqual([true, true, true, true, true]);
    now += HOUR;
    const next = canary('token-6');
    catalog.remember(new Credential('oauth2:crm', next, null, now + HOUR));
    // Expired now: kept only as the two before the current value.
    expect([...tokens, next].map((t) => masked(catalog, t))).toEqual([false, false, false, true, true, true]);
  });

  // Found by review: the first expiry stuck, so a lease renewed (same value, later end) and then
  // replaced early was forgotten at its first expiry while still good upstream.
  it('a value seen again with a later expiry (a renewed lease) is kept until the later one', () => {
    let now = 1_000_000;
    const catalog = new SecretCatalog({ now: () => now });
    const lease = canary('lease-renewed');
    catalog.remember(new Credential('vault-lease:db#password', lease, null, now + HOUR));
    catalog.remember(new Credential('vault-lease:db#password', lease, null, now + 3 * HOUR));
    now += 2 * HOUR;
    const later = [1, 2, 3].map((n) => canary(`lease-next-${n}`));
    for (const value of later) catalog.remember(new Credential('vault-lease:db#password', value, null, now + HOUR));
    expect(masked(catalog, lease)).toBe(true);
  });

  it('keeps at most 32 values of one reference, the newest', () => {
    const now = 1_000_000;
    const catalog = new SecretCatalog({ now: () => now });
    // Random from their first character past the vendor prefix, as access tokens are: canaries whose
    // labels prefix each other ("many-3", "many-30") would share heads and mask pieces of each other.
    const tokens = Array.from({ length: 40 }, () => `ya29.${randomBytes(24).toString('base64url')}`);
    for (const token of tokens) catalog.remember(new Credential('oauth2:crm', token, null, now + HOUR));
    const kept = tokens.map((t) => masked(catalog, t));
    expect(kept.slice(0, 8).every((k) => !k)).toBe(true);
    expect(kept.slice(8).every((k) => k)).toBe(true);
  });
});
