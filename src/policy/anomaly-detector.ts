/**
 * Anomaly detection: each agent is watched against its own baseline, per service.
 *
 * Baselines: an exponentially weighted moving average (EWMA, time constant BASELINE_SECONDS) of the
 * request rate and of the response bytes per second, the routes and scopes used, the client address of
 * each task session. Per-second counters in fixed rings give the recent windows. Rules:
 *   rate_spike         requests in the window > factor x baseline (and >= min_requests), after warm-up
 *   volume_spike       response bytes in the window > factor x baseline (and >= min_bytes), after warm-up
 *   new_route/new_scope a route or scope used for the first time, after warm-up
 *   denial_burst       Airlock's own refusals of what the policy does not give (PROBING_CODES), and of
 *                      targets servers read differently (`probing`), in the window >= count: probing
 *                      (no warm-up needed)
 *   off_hours          a call outside the configured usual hours
 *   new_client_address a task session used from a second client address
 * Every structure is bounded (rings of fixed size, sets capped, LRU of sessions, a ring of events) so
 * a flood cannot grow memory; a rule raises at most one event per agent, service and cooldown.
 *
 * Two moments: `screen` runs the rules that need only the request (all but volume_spike and
 * denial_burst) on an allowed request before it is forwarded, so `action: suspend` stops the very
 * request that tripped one; `observe` runs the rest once the request has its answer, and every rule for a
 * request that was refused before the screen (a denial is known only then).
 */
import { isIP } from 'node:net';
import { LRUCache } from 'lru-cache';
import type { AnomaliesSpec } from '../config/schema.js';
import type { DeepReadonly } from '../config/types.js';

export type AnomalyRule = 'rate_spike' | 'volume_spike' | 'new_route' | 'new_scope' | 'denial_burst' | 'off_hours' | 'new_client_address';

export interface AnomalyEvent {
  readonly id: string;
  readonly at: number;
  readonly rule: AnomalyRule;
  readonly action: 'alert' | 'suspend';
  readonly agent: string;
  readonly service: string | null;
  /** What was seen against what was expected, in words and numbers: never request content. */
  readonly evidence: Readonly<Record<string, string | number>>;
  readonly summary: string;
}

/** What is known of a request before it is forwarded. */
export interface RequestSample {
  readonly at: number;
  readonly agent: string;
  readonly service: string | null;
  readonly route: string | null;
  readonly scope: string | null;
  readonly session: string | null;
  readonly client: string | null;
  /** The request's audit id and trace id: the event names the request that raised it (joined in dashboards). */
  readonly requestId?: string;
  readonly traceId?: string | null;
}

/** A request with its answer. `screened`: `screen` already saw it, so its request rules are not run again. */
export interface Observation extends RequestSample {
  /** The audit record's code: what Airlock refused the request for, or null when the upstream answered. */
  readonly code: string | null;
  readonly responseBytes: number;
  readonly screened?: boolean;
  /**
   * Refused as probing whatever its code (errors.ts AirlockError.probing): a path servers read in
   * different ways, answered 400 invalid_request. Other 400s (a malformed mint body, a body cut short, a
   * shape Airlock does not take) are a client's mistakes as often as a prober's, and stay uncounted.
   */
  readonly probing?: boolean;
}

const BASELINE_SECONDS = 3600;
const MAX_KNOWN = 1000;
const MAX_EVENTS = 1000;
/**
 * What probing is: asking for what the policy does not give (a token it does not know, a route, scope,
 * service or method it does not allow, a call without the session it needs). Not the upstream's own
 * 401/403/404 (found by review: an upstream key that expired made every agent using it look like a
 * prober, and the default action suspended them all), nor a human's decision on an approval.
 */
const PROBING_CODES: ReadonlySet<string> = new Set(['unauthenticated', 'route_not_allowed', 'scope_denied', 'session_required', 'unknown_service', 'method_not_allowed']);

/**
 * Per-second counters over the last `size` seconds (the rule's window, whole seconds, at most an hour
 * by the config schema): a ring sized to the window, so memory follows the configured windows.
 */
class SecondRing {
  readonly #counts: Float64Array;
  #lastSecond = -1;
  /**
   * The sum of the slots, kept as they change: summing a 3,600-slot window on every request was a walk
   * of the whole ring per observation. Amounts are whole numbers (requests, bytes), so it stays exact.
   */
  #total = 0;

  constructor(size: number) {
    this.#counts = new Float64Array(size);
  }

  add(second: number, amount: number): void {
    this.#advance(second);
    const slot = second % this.#counts.length;
    this.#counts[slot] = (this.#counts[slot] as number) + amount;
    this.#total += amount;
  }

  /** Forgets every count (an admin restored the agent: the counts were judged). */
  clear(): void {
    this.#counts.fill(0);
    this.#total = 0;
  }

  /** The total over the whole window ending at `second`. */
  sum(second: number): number {
    this.#advance(second);
    return this.#total;
  }

  #advance(second: number): void {
    if (this.#lastSecond < 0) this.#lastSecond = second;
    if (second < this.#lastSecond) {
      // The wall clock was stepped back (NTP, a restored VM). Only seconds past the newest one seen
      // expire counts, so kept at the newest, nothing would expire until the clock caught up again (found
      // by review: after an hour's step, an hour of ordinary traffic added up as one window, and the
      // default denial_burst suspended an agent that was denied once every 10 s). Going on from the
      // earlier second instead, every slot is cleared within one window: a count lives no longer than
      // it should, though one may leave early.
      this.#lastSecond = second;
      return;
    }
    if (second === this.#lastSecond) return;
    const size = this.#counts.length;
    if (second - this.#lastSecond >= size) {
      this.#counts.fill(0);
      this.#total = 0;
    } else {
      for (let s = this.#lastSecond + 1; s <= second; s++) {
        const slot = s % size;
        this.#total -= this.#counts[slot] as number;
        this.#counts[slot] = 0;
      }
    }
    this.#lastSecond = second;
  }
}

/** An EWMA of a per-second quantity, updated lazily (empty seconds decay it in closed form). */
class RateBaseline {
  #value = 0;
  #second = -1;
  #pending = 0;

  add(second: number, amount: number): void {
    this.#roll(second);
    this.#pending += amount;
  }

  /** The baseline per second, not counting the current second. */
  perSecond(second: number): number {
    this.#roll(second);
    return this.#value;
  }

  #roll(second: number): void {
    if (this.#second < 0) {
      this.#second = second;
      return;
    }
    // A clock stepped back: this second goes on with the pending one, rather than holding every
    // count until the clock has caught up and then adding them up as if they came in one second.
    if (second < this.#second) this.#second = second;
    if (second <= this.#second) return;
    const alpha = 1 / BASELINE_SECONDS;
    // The finished second contributes its count; the empty seconds after it decay the average.
    this.#value += alpha * (this.#pending - this.#value);
    const empty = second - this.#second - 1;
    if (empty > 0) this.#value *= (1 - alpha) ** empty;
    this.#pending = 0;
    this.#second = second;
  }
}

interface Subject {
  readonly since: number;
  requests: number;
  /**
   * Past the warm-up, for good: with the wall clock stepped back, `at - since` fell under the warm-up
   * again and the baseline rules (a suspend among them) were silent until the clock had caught up
   * (found by review).
   */
  warm: boolean;
  readonly requestRing: SecondRing;
  readonly bytesRing: SecondRing;
  readonly requestBaseline: RateBaseline;
  readonly bytesBaseline: RateBaseline;
  readonly routes: Set<string>;
  readonly scopes: Set<string>;
}

export class AnomalyDetector {
  #spec: DeepReadonly<AnomaliesSpec>;
  readonly #subjects = new LRUCache<string, Subject>({ max: 10_000 });
  readonly #denials = new LRUCache<string, SecondRing>({ max: 10_000 });
  // Bounded by count through maxSize rather than max: lru-cache preallocates `max` slots up front
  // (a 100,000-entry cache cost ~3 MiB and ~20 ms of start-up before holding anything).
  readonly #sessionAddress = new LRUCache<string, string>({ maxSize: 100_000, sizeCalculation: () => 1 });
  readonly #lastRaised = new LRUCache<string, number>({ maxSize: 100_000, sizeCalculation: () => 1 });
  readonly #events: AnomalyEvent[] = [];
  #sequence = 0;

  #usualHours: HoursWindow | null;

  constructor(spec: DeepReadonly<AnomaliesSpec>) {
    this.#spec = spec;
    this.#usualHours = spec.off_hours === undefined ? null : parseHours(spec.off_hours.hours);
  }

  get enabled(): boolean {
    return this.#spec.enabled;
  }

  /** The most recent events, newest last (bounded). */
  events(): readonly AnomalyEvent[] {
    return this.#events;
  }

  /**
   * New settings from a reload, keeping what was learnt (found by review: a reload that changed any
   * anomalies key, a webhook URL, built a new detector, and denial counts, baselines, cooldowns and
   * session addresses started again from nothing). Counters kept over a window that changed size
   * start again, as their seconds no longer fit.
   */
  reconfigure(spec: DeepReadonly<AnomaliesSpec>): void {
    const before = this.#spec;
    this.#spec = spec;
    this.#usualHours = spec.off_hours === undefined ? null : parseHours(spec.off_hours.hours);
    if (before.denial_burst.window !== spec.denial_burst.window) this.#denials.clear();
    if (before.rate_spike.window !== spec.rate_spike.window || before.volume_spike.window !== spec.volume_spike.window) this.#subjects.clear();
  }

  /**
   * An agent restored by an admin starts with no denials counted and no cooldown running (found by
   * review: the 401s it got while suspended stayed counted, and the cooldown of the suspension kept a
   * new burst of probing from suspending it again for up to `cooldown`). Its request and byte windows
   * start again too (found by review: with the cooldown gone, the spike that suspended it was still in
   * the window, and the restored agent's next request suspended it again for that same spike). The
   * baselines, routes and scopes it has learnt are kept.
   */
  forgive(agent: string): void {
    this.#denials.delete(agent);
    const prefix = `${agent}\u0000`;
    for (const key of [...this.#lastRaised.keys()]) if (key.startsWith(prefix)) this.#lastRaised.delete(key);
    for (const [key, subject] of this.#subjects.entries()) {
      if (!key.startsWith(prefix)) continue;
      subject.requestRing.clear();
      subject.bytesRing.clear();
    }
  }

  /** A session narrowed from `parent` counts as first used where its parent was (new_client_address). */
  adoptFirstAddress(child: string, parent: string): void {
    const first = this.#sessionAddress.get(parent);
    if (first !== undefined) this.#sessionAddress.set(child, first);
  }

  /**
   * The request rules, on an allowed request before it is forwarded: what they raise is answered (and a
   * `suspend` acted on) before the upstream is asked.
   */
  screen(sample: RequestSample): AnomalyEvent[] {
    if (!this.#spec.enabled) return [];
    const raised: AnomalyEvent[] = [];
    this.#requestRules(raised, sample);
    return raised;
  }

  observe(sample: Observation): AnomalyEvent[] {
    if (!this.#spec.enabled) return [];
    const raised: AnomalyEvent[] = [];
    const second = Math.floor(sample.at / 1000);
    const spec = this.#spec;

    // Probing: denials across the agent's services, no baseline needed.
    if (sample.code !== null && (PROBING_CODES.has(sample.code) || sample.probing === true)) {
      let ring = this.#denials.get(sample.agent);
      if (ring === undefined) {
        ring = new SecondRing(spec.denial_burst.window);
        this.#denials.set(sample.agent, ring);
      }
      ring.add(second, 1);
      const denials = ring.sum(second);
      if (denials >= spec.denial_burst.count) {
        // The denial that crossed the threshold says what kind of probing it is (a count per code over
        // the window would be a ring per code and agent).
        const last = sample.route === null ? sample.code : `${sample.code} on ${sample.route}`;
        this.#raise(
          raised,
          sample,
          'denial_burst',
          spec.denial_burst.action,
          null,
          { denials, window_s: spec.denial_burst.window, threshold: spec.denial_burst.count, last_code: sample.code, ...(sample.route === null ? {} : { last_route: sample.route }) },
          `${denials} requests refused by policy in ${spec.denial_burst.window} s (threshold ${spec.denial_burst.count}), the last ${last}: probing`,
        );
      }
    }

    const subject = sample.screened === true ? this.#subjectOf(sample) : this.#requestRules(raised, sample);
    if (subject === null) return raised;
    // Warm by the requests before this one, as the request rules count it.
    if (!subject.warm) subject.warm = subject.requests > spec.warmup.requests && sample.at - subject.since >= spec.warmup.seconds * 1000;
    const warm = subject.warm;
    const baselineBytes = subject.bytesBaseline.perSecond(second);
    subject.bytesRing.add(second, sample.responseBytes);
    subject.bytesBaseline.add(second, sample.responseBytes);
    if (warm) {
      const volume = spec.volume_spike;
      const bytes = subject.bytesRing.sum(second);
      const expectedBytes = baselineBytes * volume.window;
      if (bytes >= volume.min_bytes && bytes > volume.factor * expectedBytes) {
        this.#raise(raised, sample, 'volume_spike', volume.action, sample.service, { bytes, window_s: volume.window, baseline_bytes: Math.round(expectedBytes), factor: volume.factor }, `${bytes} response bytes in ${volume.window} s against a baseline of ${Math.round(expectedBytes)}: exfiltration?`);
      }
    }
    return raised;
  }

  /**
   * off_hours, new_client_address, rate_spike, new_route and new_scope; the request is counted here.
   * Returns the agent's record for the service (null for a request to no service).
   */
  #requestRules(raised: AnomalyEvent[], sample: RequestSample): Subject | null {
    const second = Math.floor(sample.at / 1000);
    const spec = this.#spec;
    if (spec.off_hours !== undefined && this.#usualHours !== null && !withinWindow(sample.at, this.#usualHours, spec.off_hours.utc_offset_minutes)) {
      this.#raise(raised, sample, 'off_hours', spec.off_hours.action, sample.service, { usual_hours: spec.off_hours.hours, utc_offset_minutes: spec.off_hours.utc_offset_minutes }, `a call at ${new Date(sample.at).toISOString()}, outside the usual hours ${spec.off_hours.hours}`);
    }

    if (sample.session !== null && sample.client !== null) {
      const client = plainAddress(sample.client);
      const first = this.#sessionAddress.get(sample.session);
      if (first === undefined) this.#sessionAddress.set(sample.session, client);
      else if (first !== client) {
        this.#raise(raised, sample, 'new_client_address', spec.new_client_address.action, sample.service, { session: sample.session, first_address: first, new_address: client }, `session ${sample.session} first used from ${first}, now from ${client}`);
      }
    }

    const subject = this.#subjectOf(sample);
    if (subject === null) return null;
    if (!subject.warm) subject.warm = subject.requests >= spec.warmup.requests && sample.at - subject.since >= spec.warmup.seconds * 1000;
    const warm = subject.warm;
    const baselineRate = subject.requestBaseline.perSecond(second);
    subject.requests++;
    subject.requestRing.add(second, 1);
    subject.requestBaseline.add(second, 1);

    if (warm) {
      const rule = spec.rate_spike;
      const recent = subject.requestRing.sum(second);
      const expected = baselineRate * rule.window;
      if (recent >= rule.min_requests && recent > rule.factor * expected) {
        this.#raise(raised, sample, 'rate_spike', rule.action, sample.service, { requests: recent, window_s: rule.window, baseline: Math.round(expected * 100) / 100, factor: rule.factor }, `${recent} requests in ${rule.window} s against a baseline of ${expected.toFixed(2)}`);
      }
    }
    if (sample.route !== null && !subject.routes.has(sample.route)) {
      if (warm) this.#raise(raised, sample, 'new_route', spec.new_route.action, sample.service, { route: sample.route }, `first use of route ${sample.route} after the warm-up`);
      if (subject.routes.size < MAX_KNOWN) subject.routes.add(sample.route);
    }
    if (sample.scope !== null && !subject.scopes.has(sample.scope)) {
      if (warm) this.#raise(raised, sample, 'new_scope', spec.new_scope.action, sample.service, { scope: sample.scope }, `first use of scope ${sample.scope} after the warm-up`);
      if (subject.scopes.size < MAX_KNOWN) subject.scopes.add(sample.scope);
    }
    return subject;
  }

  /** The agent's record for the service, made on first sight (null for a request to no service). */
  #subjectOf(sample: RequestSample): Subject | null {
    if (sample.service === null) return null;
    const key = `${sample.agent}\u0000${sample.service}`;
    let subject = this.#subjects.get(key);
    if (subject === undefined) {
      const spec = this.#spec;
      subject = {
        since: sample.at,
        requests: 0,
        warm: false,
        requestRing: new SecondRing(spec.rate_spike.window),
        bytesRing: new SecondRing(spec.volume_spike.window),
        requestBaseline: new RateBaseline(),
        bytesBaseline: new RateBaseline(),
        routes: new Set(),
        scopes: new Set(),
      };
      this.#subjects.set(key, subject);
    }
    return subject;
  }

  /** Records an event unless the same agent, service and rule raised one within the cooldown. */
  #raise(raised: AnomalyEvent[], sample: RequestSample, rule: AnomalyRule, action: 'alert' | 'suspend', service: string | null, evidence: Record<string, string | number>, summary: string): void {
    const key = `${sample.agent}\u0000${service ?? ''}\u0000${rule}`;
    const last = this.#lastRaised.get(key);
    // Measured either way: after the wall clock was stepped back further than the cooldown, the rule
    // would otherwise stay silent until the clock had caught up (found by review: an hour's step held
    // every event of a rule that had just raised, a suspension among them, for an hour).
    if (last !== undefined && Math.abs(sample.at - last) < this.#spec.cooldown * 1000) return;
    this.#lastRaised.set(key, sample.at);
    // Found by the observability walkthrough: an event could not be joined to the request that raised it.
    if (sample.requestId !== undefined) evidence['request_id'] = sample.requestId;
    if (sample.traceId !== undefined && sample.traceId !== null) evidence['trace_id'] = sample.traceId;
    const event: AnomalyEvent = { id: `anm_${(++this.#sequence).toString(36)}_${Math.floor(sample.at / 1000).toString(36)}`, at: sample.at, rule, action, agent: sample.agent, service, evidence, summary };
    this.#events.push(event);
    if (this.#events.length > MAX_EVENTS) this.#events.shift();
    raised.push(event);
  }
}

/**
 * An IPv4 address as a dual-stack listener reports it (::ffff:a.b.c.d, RFC 4291 2.5.5.2) and as an IPv4
 * listener does (a.b.c.d) is one address (found by review: a session used through `listen: "[::]:7700"`
 * and a service listener on an IPv4 address raised new_client_address, and `suspend` revoked the agent).
 */
function plainAddress(address: string): string {
  return address.startsWith('::ffff:') && isIP(address.slice(7)) === 4 ? address.slice(7) : address;
}

/** Whether a time falls within HH:MM-HH:MM (which may wrap midnight) at a fixed UTC offset. */
export function withinHours(at: number, hours: string, offsetMinutes: number): boolean {
  return withinWindow(at, parseHours(hours), offsetMinutes);
}

/** HH:MM-HH:MM as minutes of the day; parsed once per config, not per request. */
interface HoursWindow {
  readonly start: number;
  readonly end: number;
}

function parseHours(hours: string): HoursWindow {
  const [from, to] = hours.split('-') as [string, string];
  const minutes = (text: string): number => Number(text.slice(0, 2)) * 60 + Number(text.slice(3, 5));
  return { start: minutes(from), end: minutes(to) };
}

function withinWindow(at: number, { start, end }: HoursWindow, offsetMinutes: number): boolean {
  const local = (((Math.floor(at / 60_000) + offsetMinutes) % 1440) + 1440) % 1440;
  return start <= end ? local >= start && local < end : local >= start || local < end;
}
