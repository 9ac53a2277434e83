/**
 * The cache in front of every secret source (an lru-cache, bounded in entries).
 *
 * - fresh: a value younger than its TTL (and, for expiring values such as OAuth2 tokens and Vault
 *   leases, short of its expiry minus a skew) is served from memory;
 * - refresh ahead: past 3/4 of its fresh life a value is refetched in the background, so a steady
 *   stream of requests never waits on the source and a rotated secret arrives within its TTL;
 * - single flight: one fetch per reference at a time, whatever the number of waiting requests;
 * - forced: `refresh` asks the source for a new value (a new Vault lease, a new OAuth2 token), not the
 *   one it keeps; an ordinary fetch under way is not taken for it;
 * - last known good: while the source fails, the last value is served up to `max_staleness` after it
 *   was fetched (never past its own expiry), retried with exponential backoff in the background; not
 *   when the source answers that the value was withdrawn (CredentialWithdrawn): that is dropped at once;
 * - fail closed: past that, or with no value at all, the request gets 503 credential_unavailable, and
 *   a failing source is not asked again before its backoff ends (no retry storm).
 * `status()` exposes health and staleness per reference (for the admin API and metrics), never values.
 */
import { LRUCache } from 'lru-cache';
import { AirlockError, operatorReason } from '../errors.js';
import { EXPIRY_MARGIN_MS, type Credential } from './credential.js';
import { CredentialWithdrawn, type FetchOptions } from './secret-source.js';

export interface CachePolicy {
  /** Fresh life of a fetched value, ms. */
  readonly ttlMs: number;
  /** How long after its fetch a value may be served while the source fails, ms. */
  readonly maxStalenessMs: number;
}

export interface CredentialStatus {
  readonly ref: string;
  readonly state: 'fresh' | 'stale' | 'expired' | 'missing';
  readonly generation: string | null;
  readonly fetchedAt: string | null;
  readonly ageSeconds: number | null;
  /** Seconds until the value is refetched (fresh) or stops being served (stale). */
  readonly servableForSeconds: number | null;
  readonly failing: boolean;
  readonly consecutiveFailures: number;
  /** For operators (the admin API): the reason the agent is not told when there is one (errors.ts OperatorReason), else the detail. */
  readonly lastError: string | null;
}

/** The last value fetched for a reference, when, and how its store has answered since. */
export interface LastGood {
  readonly credential: Credential;
  readonly fetchedAt: number;
  readonly lastError: AirlockError | null;
  readonly failures: number;
  readonly retryAfter: number;
}

interface Entry {
  credential: Credential | null;
  fetchedAt: number;
  refreshAt: number;
  freshUntil: number;
  usableUntil: number;
  lastError: AirlockError | null;
  failures: number;
  retryAfter: number;
  /** The source answered that the value is gone (CredentialWithdrawn): no value from elsewhere replaces that. */
  withdrawn?: boolean;
}

const REFRESH_AHEAD = 0.75;
const BACKOFF_BASE_MS = 500;
const BACKOFF_MAX_MS = 30_000;
const MAX_ENTRIES = 10_000;
/**
 * The longest wait between two forced fetches of one reference while an upstream keeps refusing every
 * new value (see `refresh`): a Vault lease or an OAuth2 token every 5 minutes at most, from one every
 * few seconds at first.
 */
const FORCED_MAX_INTERVAL_MS = 5 * 60_000;
/**
 * Refusals closer together than this are one spell of refusing, over which the wait between forced
 * fetches doubles; a refusal after a longer quiet spell (the upstream took the value meanwhile, or
 * traffic stopped) starts over at the minimum wait, so a genuine rotation later is not held back.
 */
const REFUSAL_SPELL_GAP_MS = 30_000;

/** The last forced fetch of a reference, and how long to wait before forcing another. */
interface Forced {
  readonly at: number;
  readonly interval: number;
}

export type SecretFetcher = (ref: string, options: FetchOptions) => Promise<Credential>;

interface Flight {
  readonly promise: Promise<Credential>;
  readonly forced: boolean;
  /** Whether its failure counts as a `refresh_failure`: not for a health recheck, until a request joins it. */
  readonly tally: { counted: boolean };
}

/** The entry of a value fetched at `fetchedAt` (here, or by the cache it was taken from), under `policy`. */
function fetchedEntry(credential: Credential, fetchedAt: number, policy: CachePolicy): Entry {
  // The margin takes at most half of what is left of a short-lived value, so it is fresh for a while
  // rather than never (found by review: a token of 10 s after its skew was fetched for every request).
  const expiry = credential.expiresAt === null ? Infinity : Math.max(credential.expiresAt - EXPIRY_MARGIN_MS, fetchedAt + (credential.expiresAt - fetchedAt) / 2);
  const freshUntil = Math.min(fetchedAt + policy.ttlMs, expiry);
  return {
    credential,
    fetchedAt,
    refreshAt: fetchedAt + Math.max(0, freshUntil - fetchedAt) * REFRESH_AHEAD,
    freshUntil,
    usableUntil: Math.min(fetchedAt + policy.maxStalenessMs, credential.expiresAt ?? Infinity),
    lastError: null,
    failures: 0,
    retryAfter: 0,
  };
}

export class CredentialCache {
  readonly #fetch: SecretFetcher;
  readonly #policyOf: (ref: string) => CachePolicy;
  readonly #now: () => number;
  readonly #entries = new LRUCache<string, Entry>({ max: MAX_ENTRIES });
  /** Values taken from another cache (seed), until reseed settles them. */
  readonly #seeded = new Map<string, Credential>();
  readonly #inflight = new Map<string, Flight>();
  readonly #unchangedAt = new LRUCache<string, number>({ max: MAX_ENTRIES });
  readonly #forced = new LRUCache<string, Forced>({ max: MAX_ENTRIES });
  /** When a refresh with a minimum age (an upstream's refusal) last asked, per reference. */
  readonly #refusedAt = new LRUCache<string, number>({ max: MAX_ENTRIES });
  readonly #onBackgroundError: (ref: string, error: AirlockError) => void;
  readonly #onEvent: (event: 'hit' | 'stale' | 'miss' | 'refresh_failure') => void;

  constructor(
    fetch: SecretFetcher,
    policyOf: (ref: string) => CachePolicy,
    options: { now?: () => number; onBackgroundError?: (ref: string, error: AirlockError) => void; onEvent?: (event: 'hit' | 'stale' | 'miss' | 'refresh_failure') => void } = {},
  ) {
    this.#fetch = fetch;
    this.#policyOf = policyOf;
    this.#now = options.now ?? Date.now;
    this.#onBackgroundError = options.onBackgroundError ?? (() => undefined);
    this.#onEvent = options.onEvent ?? (() => undefined);
  }

  /**
   * The value to inject now: fresh, or last known good within its staleness bound, or 503. A cached value
   * is returned as it is, not in a promise: the request path waits for nothing on a hit.
   */
  get(ref: string): Credential | Promise<Credential> {
    const now = this.#now();
    const entry = this.#entries.get(ref);
    if (entry?.credential != null) {
      if (now < entry.freshUntil) {
        // Past refresh-ahead, or a fetch failed since this value came (a forced one: an operator's
        // rotate while the store was down) and its backoff is over: without this, the reference stayed
        // failing until refresh-ahead, 3/4 of its ttl later, however soon the store was back (found by
        // an ops walkthrough: false alerts and `status` exit 2 for minutes).
        if (now >= entry.refreshAt || (entry.lastError !== null && now >= entry.retryAfter)) this.#background(ref, entry, now);
        this.#onEvent('hit');
        return entry.credential;
      }
      if (now < entry.usableUntil) {
        this.#background(ref, entry, now);
        this.#onEvent('stale');
        return entry.credential;
      }
    }
    this.#onEvent('miss');
    // No usable value: wait for the source, unless it failed moments ago (then fail fast).
    if (entry !== undefined && entry.lastError !== null && now < entry.retryAfter && !this.#inflight.has(ref)) {
      return Promise.reject(this.#unavailable(ref, entry));
    }
    return this.#load(ref, false);
  }

  /**
   * Reads a reference again for its health alone when its last fetch failed, it still holds a value,
   * and its backoff is over: the broker's sweep, for stores asked only with backoff (a failure is recorded and not counted, as
   * with `recheck`). The value, or null when nothing was due or the read failed.
   */
  async retryIfDue(ref: string): Promise<Credential | null> {
    const entry = this.#entries.peek(ref);
    // Only a reference that holds a value (a refresh failed, not the first fetch, and not withdrawn): one
    // refused outright (an OAuth2 client the provider rejects, a secret that is not there) is asked again
    // by requests only, as before, not every 30 s without traffic (found by review: each retry would send
    // a rejected client secret to the identity provider).
    if (entry === undefined || entry.credential === null || entry.lastError === null || this.#inflight.has(ref) || this.#now() < entry.retryAfter) return null;
    return this.recheck(ref);
  }

  /**
   * Reads a reference again for its health alone (credential-broker.ts follows file: secrets this way
   * without traffic): the value, or null when the read failed or another was under way. A failure is
   * recorded on the entry (`status()`), but not counted as a `refresh_failure` event, which counts what
   * requests and refreshes met (found by review: a file: secret not yet set counted one every 2 s with
   * no traffic at all, and an alert on that rate fired on the shipped config until every secret was set).
   */
  async recheck(ref: string): Promise<Credential | null> {
    if (this.#inflight.has(ref)) return null;
    try {
      return await this.#load(ref, false, false, true);
    } catch {
      return null;
    }
  }

  /**
   * Fetches again now (after a 401, or an operator's rotate), forcing the source to replace a value it
   * keeps (a Vault lease, a shared OAuth2 token); joins a forced fetch already under way. Unlike `get`, a
   * failure is reported even when a last known good value could still be served: the caller asked for
   * a new value, and the old one is not it.
   */
  async refresh(ref: string, minAgeMs = 0): Promise<Credential> {
    const existing = this.#entries.get(ref);
    const now = this.#now();
    const spell = minAgeMs > 0 && now - (this.#refusedAt.get(ref) ?? -Infinity) < REFUSAL_SPELL_GAP_MS;
    if (minAgeMs > 0) this.#refusedAt.set(ref, now);
    // A forced refetch that found nothing new is not repeated for minAgeMs: an upstream that keeps
    // refusing a key that has not rotated costs one fetch every few seconds, not one per request.
    if (minAgeMs > 0 && existing?.credential != null && existing.lastError === null && now - (this.#unchangedAt.get(ref) ?? -Infinity) < minAgeMs) return existing.credential;
    // A source that mints a value when forced (a lease, a token) always finds something new, so the check
    // above never holds for it: within the interval of a forced fetch, ask for the current value instead
    // (FetchOptions.current: a source that would mint one hands back the one it minted last). A request
    // refused with the replaced value is then replayed with the new one.
    const next = minAgeMs > 0 ? this.#nextForced(ref, now, minAgeMs, spell) : { at: now, interval: 0 };
    const forced = next !== null;
    const credential = await this.#load(ref, forced, !forced);
    if (existing?.credential != null && credential.sameValueAs(existing.credential)) this.#unchangedAt.set(ref, this.#now());
    else this.#unchangedAt.delete(ref);
    // A successful fetch clears lastError; one left set means this fetch failed and served the old value.
    const lastError = this.#entries.get(ref)?.lastError ?? null;
    if (lastError !== null) throw lastError;
    // Timed from when the new value arrived: a slow lease (seconds for some Vault engines) must not
    // leave requests refused with the value it replaced forcing another one.
    if (next !== null) this.#forced.set(ref, { at: this.#now(), interval: next.interval });
    return credential;
  }

  /**
   * Whether a refresh asked for with `minAgeMs` may force the source now, and if so the wait before the
   * next forced fetch (null: not yet; take the current value). An upstream that refuses every value (an
   * account disabled, credentials it has not learned yet, such as new AWS keys for their first seconds)
   * asks again as soon as the wait ends: within one spell of refusals (`spell`: the refusal before this one
   * came less than REFUSAL_SPELL_GAP_MS ago) each forced fetch doubles the wait, up to
   * FORCED_MAX_INTERVAL_MS, so a Vault lease source costs a handful of leases, not one every few seconds
   * for as long as the upstream refuses. The first refusal after a quiet spell starts over at `minAgeMs`.
   * An operator's refresh (no `minAgeMs`) always forces.
   */
  #nextForced(ref: string, now: number, minAgeMs: number, spell: boolean): Forced | null {
    const last = this.#forced.get(ref);
    if (last === undefined) return { at: now, interval: minAgeMs };
    // Even after a quiet spell, a value forced moments ago (an operator's rotate) is the one to take.
    const wait = spell ? Math.max(minAgeMs, last.interval) : minAgeMs;
    if (now - last.at < wait) return null;
    return { at: now, interval: spell ? Math.min(FORCED_MAX_INTERVAL_MS, 2 * wait) : minAgeMs };
  }

  /**
   * Fetches the source's current value now, without forcing it, after any fetch already under way (whose
   * answer may predate a change the caller knows of: another field of a lease that was just replaced).
   */
  async reload(ref: string): Promise<Credential> {
    await this.#inflight.get(ref)?.promise.catch(() => undefined);
    return this.#load(ref, false);
  }

  /**
   * Stops serving the value held for `ref`, its health kept: the store said otherwise than through a
   * fetch that the value is dead (a Vault lease that Vault revoked, found at its renewal). The next
   * request waits for a fetch, and gets 503 if that fails: there is no last known good to fall back on.
   */
  discard(ref: string): void {
    const entry = this.#entries.peek(ref);
    if (entry !== undefined) entry.credential = null;
  }

  status(): CredentialStatus[] {
    const now = this.#now();
    const out: CredentialStatus[] = [];
    for (const [ref, entry] of this.#entries.entries()) {
      const credential = entry.credential;
      const state = credential === null ? 'missing' : now < entry.freshUntil ? 'fresh' : now < entry.usableUntil ? 'stale' : 'expired';
      out.push({
        ref,
        state,
        generation: credential?.generation ?? null,
        fetchedAt: credential === null ? null : new Date(entry.fetchedAt).toISOString(),
        ageSeconds: credential === null ? null : Math.round((now - entry.fetchedAt) / 1000),
        servableForSeconds: credential === null ? null : Math.max(0, Math.round(((state === 'fresh' ? entry.freshUntil : entry.usableUntil) - now) / 1000)),
        failing: entry.lastError !== null,
        consecutiveFailures: entry.failures,
        lastError: entry.lastError === null ? null : (operatorReason(entry.lastError) ?? entry.lastError.detail),
      });
    }
    return out.sort((a, b) => a.ref.localeCompare(b.ref));
  }

  /** The last value fetched for `ref` and when, if one is held (withdrawn values are not). */
  lastGood(ref: string): LastGood | null {
    const entry = this.#entries.peek(ref);
    return entry?.credential == null ? null : { credential: entry.credential, fetchedAt: entry.fetchedAt, lastError: entry.lastError, failures: entry.failures, retryAfter: entry.retryAfter };
  }

  /**
   * Takes a value another cache fetched (a previous configuration's) as if fetched here at `fetchedAt`,
   * under this cache's policy: it is served while that policy's bounds, counted from then, allow, and
   * refreshed in the background as any value is. Nothing is taken over a value this cache holds.
   */
  seed(ref: string, credential: Credential, fetchedAt: number, health: Partial<Pick<LastGood, 'lastError' | 'failures' | 'retryAfter'>> = {}): void {
    if (this.#entries.has(ref)) return;
    this.#seeded.set(ref, credential);
    const entry = fetchedEntry(credential, fetchedAt, this.#policyOf(ref));
    // The store's failures go on with the value (found by review: a reload while the store was down
    // reset them, and status called the store healthy while requests got 503).
    entry.lastError = health.lastError ?? null;
    entry.failures = health.failures ?? 0;
    entry.retryAfter = health.retryAfter ?? 0;
    this.#entries.set(ref, entry);
  }

  /**
   * Settles a value taken from another cache (seed) against that cache's value now (`last`): the newer
   * of the two by fetch time is kept, so an operator's rotate there wins over a refresh made here before
   * it, and a fetch here after it wins over it (found by review: a refresh the new cache made during the
   * build, or a passing failure it met, kept the old value over a rotate). Gone there (withdrawn), the
   * value is dropped here and the next request asks the store (fail closed).
   */
  reseed(ref: string, last: (Pick<LastGood, 'credential' | 'fetchedAt'> & Partial<LastGood>) | null): void {
    const seeded = this.#seeded.get(ref);
    this.#seeded.delete(ref);
    const entry = this.#entries.peek(ref);
    if (last === null) {
      if (seeded !== undefined) this.#entries.delete(ref);
      return;
    }
    // This cache's own store said the value is gone: that stands (found by review: the previous
    // broker, which never asked again, still held it, and it was taken back).
    if (entry?.withdrawn === true) return;
    if (entry?.credential != null && entry.fetchedAt >= last.fetchedAt) return;
    this.#entries.delete(ref);
    this.seed(ref, last.credential, last.fetchedAt, last);
    this.#seeded.delete(ref);
  }

  #background(ref: string, entry: Entry, now: number): void {
    if (this.#inflight.has(ref) || now < entry.retryAfter) return;
    this.#load(ref, false).catch((error: unknown) => this.#onBackgroundError(ref, error as AirlockError));
  }

  /**
   * `current`: not forced, and the value in use is wanted rather than a new one (FetchOptions).
   * `recheck`: for its health alone, a failure not counted (see recheck), unless a request joins it
   * (found by review: a request that met a failure by joining a recheck's fetch was not counted).
   */
  #load(ref: string, forced: boolean, current = false, recheck = false): Promise<Credential> {
    const running = this.#inflight.get(ref);
    if (running !== undefined && (running.forced || !forced)) {
      if (!recheck) running.tally.counted = true;
      return running.promise;
    }
    if (running !== undefined) {
      // An ordinary fetch under way may bring back the very value a forced one is to replace: wait for
      // it, then force (still one fetch per reference at a time; later forced callers join that one).
      return running.promise.catch(() => undefined).then(() => this.#load(ref, true));
    }
    const tally = { counted: !recheck };
    const promise = this.#fetchAndStore(ref, forced, current, tally).finally(() => this.#inflight.delete(ref));
    this.#inflight.set(ref, { promise, forced, tally });
    return promise;
  }

  async #fetchAndStore(ref: string, forced: boolean, current: boolean, tally: { readonly counted: boolean }): Promise<Credential> {
    const policy = this.#policyOf(ref);
    const startedAt = this.#now();
    try {
      const credential = await this.#fetch(ref, forced ? { forced: true, replacing: this.#entries.get(ref)?.credential ?? null } : current ? { current: true } : {});
      const now = this.#now();
      // A value fetched later than this one began was settled in meanwhile (reseed, at a reload's switch:
      // an operator's rotate): this answer may predate it, and does not replace it (found by review).
      const settled = this.#entries.peek(ref);
      if (!forced && settled?.credential != null && settled.fetchedAt > startedAt) return settled.credential;
      this.#entries.set(ref, fetchedEntry(credential, now, policy));
      return credential;
    } catch (error) {
      const failure =
        error instanceof AirlockError ? error : new AirlockError('credential_unavailable', `The credential ${ref} could not be fetched from its source; the request was not sent.`, { cause: error });
      if (tally.counted) this.#onEvent('refresh_failure');
      const now = this.#now();
      const previous = this.#entries.get(ref);
      const failures = (previous?.failures ?? 0) + 1;
      const entry: Entry = previous ?? { credential: null, fetchedAt: 0, refreshAt: 0, freshUntil: 0, usableUntil: 0, lastError: null, failures: 0, retryAfter: 0 };
      entry.lastError = failure;
      entry.failures = failures;
      // The store said the value is gone (secret-source.ts): nothing is served as last known good.
      if (error instanceof CredentialWithdrawn) {
        entry.credential = null;
        entry.withdrawn = true;
      }
      entry.retryAfter = now + Math.min(BACKOFF_MAX_MS, BACKOFF_BASE_MS * 2 ** (failures - 1));
      this.#entries.set(ref, entry);
      // A last known good value still inside its staleness bound keeps serving.
      if (entry.credential !== null && now < entry.usableUntil) return entry.credential;
      throw this.#unavailable(ref, entry);
    }
  }

  #unavailable(ref: string, entry: Entry): AirlockError {
    const last = entry.lastError;
    const stale = entry.credential !== null ? ' and the last value fetched is older than its max_staleness' : '';
    if (last !== null && last.code === 'credential_unavailable') {
      return entry.credential === null ? last : new AirlockError('credential_unavailable', `${last.detail}${stale ? ` (the source keeps failing${stale})` : ''}`, { cause: last });
    }
    return new AirlockError('credential_unavailable', `The credential ${ref} is unavailable: its source is failing${stale}.`, { cause: last });
  }
}
