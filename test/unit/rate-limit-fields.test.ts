/**
 * The RateLimit-Policy value compiled for a limit at start-up (draft-ietf-httpapi-ratelimit-headers,
 * structured-field form): q and w as whole numbers whatever `per` is, a bucket size (burst, default
 * requests) other than q as airlock-burst, a concurrency as a second policy, and every Integer within RFC 9651's 15 digits.
 */
import { describe, expect, it } from 'vitest';
import { compileRateLimitFields, type RateLimitTerms } from '../../src/policy/rate-limit-fields.js';

describe('compileRateLimitFields', () => {
  it.each<[string, RateLimitTerms, string]>([
    ['whole seconds: as configured', { requests: 60, per: 60 }, '"llm";q=60;w=60'],
    ['a burst equal to requests says nothing more', { requests: 5, per: 1, burst: 5 }, '"llm";q=5;w=1'],
    ['a burst of its own: airlock-burst', { requests: 60, per: 60, burst: 20 }, '"llm";q=60;w=60;airlock-burst=20'],
    // A quota scaled to a whole second is no longer the bucket's size: airlock-burst says that size, as a
    // client reading q=2;w=1 alone would send two at once and have the second refused (found by review).
    ['500 ms: scaled to a whole second, the bucket of one said', { requests: 1, per: 0.5 }, '"llm";q=2;w=1;airlock-burst=1'],
    ['1.5 s: over 2 s, rounded down', { requests: 3, per: 1.5 }, '"llm";q=4;w=2;airlock-burst=3'],
    ['0.7 s: floating point does not cost a request', { requests: 7, per: 0.7 }, '"llm";q=10;w=1;airlock-burst=7'],
    ['500 ms with a burst as large as the scaled quota: nothing more', { requests: 1, per: 0.5, burst: 2 }, '"llm";q=2;w=1'],
    ['500 ms with a burst of its own', { requests: 1, per: 0.5, burst: 5 }, '"llm";q=2;w=1;airlock-burst=5'],
    ['a quota past 15 digits is capped', { requests: 1e17, per: 1 }, '"llm";q=999999999999999;w=1'],
    ['a year', { requests: 1, per: 366 * 86_400 }, '"llm";q=1;w=31622400'],
    ['concurrency: a second policy, no window', { requests: 10, per: 1, concurrency: 4 }, '"llm";q=10;w=1, "llm/concurrency";q=4;qu="concurrent-requests"'],
  ])('%s', (_, terms, policy) => {
    expect(compileRateLimitFields('llm', terms).policy).toBe(policy);
  });

  it('names the bucket for RateLimit, and the concurrency refusal in full', () => {
    expect(compileRateLimitFields('session_mint_rate', { requests: 600, per: 60, burst: 100 })).toEqual({
      policy: '"session_mint_rate";q=600;w=60;airlock-burst=100',
      bucketItem: '"session_mint_rate"',
      concurrencyRefused: '"session_mint_rate/concurrency";r=0',
    });
    expect(compileRateLimitFields('llm', { requests: 1, per: 1, concurrency: 2 }).concurrencyRefused).toBe('"llm/concurrency";r=0');
  });

  it('every value is a List of sf-string Items with Integer or String parameters (RFC 9651)', () => {
    const item = /^"[\x20-\x21\x23-\x5b\x5d-\x7e]*"(;[a-z*][a-z0-9_.*-]*=(\d{1,15}|"[\x20-\x21\x23-\x5b\x5d-\x7e]*"))*$/;
    for (const terms of [{ requests: 1, per: 0.001 }, { requests: 3, per: 7, burst: 9, concurrency: 1 }, { requests: 2 ** 60, per: 1, burst: 2 ** 60 }]) {
      for (const member of compileRateLimitFields('a-service_1', terms).policy.split(', ')) expect(member).toMatch(item);
    }
  });
});
