/**
 * The RateLimit-Policy and RateLimit response fields of draft-ietf-httpapi-ratelimit-headers (-11, the
 * structured-field form: each a List of Items, RFC 9651 3.1), compiled once per limit at start-up so a
 * 429 only fills in its seconds. They go on Airlock's own 429 rate_limited answers, not on allowed
 * responses (draft section 6.2 leaves that to the server; README, Rate limits, says why).
 *
 * A token bucket of `requests` per `per`, bursts of `burst`, is said as the policy "<name>";q=<requests>;
 * w=<per> (draft 3.1: q the quota, w its window in whole seconds), with the vendor parameter
 * airlock-burst=<bucket size> when q is not that size (draft 3.1 allows vendor-prefixed parameters, and
 * names "acme-burst" as its example). A `concurrency` is a second policy, "<name>/concurrency";q=<n>;
 * qu="concurrent-requests" (draft 3.1.2), with no window.
 */

/** RFC 9651 3.3.1: an Integer has at most 15 digits. */
const LARGEST_SF_INTEGER = 999_999_999_999_999;

export interface RateLimitFields {
  /** The RateLimit-Policy value: every policy of the limit, the same on every answer (draft 3: SHOULD remain consistent). */
  readonly policy: string;
  /** The token bucket's policy name as an sf-string, which a RateLimit item starts with. */
  readonly bucketItem: string;
  /** The RateLimit value of a refusal by the concurrency gate (only a grant with `concurrency` has one). */
  readonly concurrencyRefused: string;
}

export interface RateLimitTerms {
  readonly requests: number;
  /** Seconds; may be a fraction (`500ms`). */
  readonly per: number;
  readonly burst?: number | undefined;
  readonly concurrency?: number | undefined;
}

/** `name`: the service a grant's `rate` is on, or the limits key (`session_mint_rate`). */
export function compileRateLimitFields(name: string, terms: RateLimitTerms): RateLimitFields {
  const bucketItem = sfString(name);
  // w is a whole number of seconds (draft 3.1.3: no sub-second precision). A period that is not one is
  // said over the next whole second, its quota scaled down to a whole number: 1 per 500 ms is q=2;w=1.
  // The epsilon keeps a quotient like 7 / 0.7 (9.999999999999998 in floating point) from losing one.
  const window = Math.ceil(terms.per);
  const quota = Number.isInteger(terms.per) ? terms.requests : Math.floor((terms.requests * window) / terms.per + 1e-9);
  let policy = `${bucketItem};q=${sfInteger(quota)};w=${window}`;
  // The bucket's size whenever q does not say it: a burst of its own, or a quota scaled up to a whole
  // second (found by review: 1 per 500 ms read q=2;w=1 alone, and a client that sent two at once had the
  // second refused).
  const capacity = terms.burst ?? terms.requests;
  if (sfInteger(capacity) !== sfInteger(quota)) policy += `;airlock-burst=${sfInteger(capacity)}`;
  const concurrencyItem = sfString(`${name}/concurrency`);
  if (terms.concurrency !== undefined) policy += `, ${concurrencyItem};q=${sfInteger(terms.concurrency)};qu="concurrent-requests"`;
  // No t: when a request in flight ends is not known (t is optional, draft 4.1). Sent only by a grant
  // with rate.concurrency, whose gate is the one to refuse.
  const concurrencyRefused = `${concurrencyItem};r=0`;
  return Object.freeze({ policy, bucketItem, concurrencyRefused });
}

function sfInteger(value: number): number {
  return Math.min(value, LARGEST_SF_INTEGER);
}

/** RFC 9651 4.1.6: printable ASCII in double quotes, with `"` and `\` escaped (names are plainer still: config/schema.ts). */
function sfString(text: string): string {
  return `"${text.replace(/[\\"]/g, (character) => `\\${character}`)}"`;
}
