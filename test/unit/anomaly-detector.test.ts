/**
 * The anomaly detector (issue 7), driven directly with synthetic timestamps: no sleeping, hours of
 * traffic in milliseconds. A steady agent raises nothing; after the warm-up a burst, a first-time route
 * or scope and a volume spike each raise the right event with its evidence; a denial storm, calls
 * outside the usual hours and a session seen from a second address raise without a warm-up. The
 * thresholds and actions come from config (built through the real schema, defaults included); a rule
 * raises at most once per agent, service and cooldown; `enabled: false` raises nothing; and a flood of
 * distinct agents, sessions, addresses and routes keeps every structure bounded; flooded past its cap,
 * each cache keeps exactly its newest entries and forgets the older ones.
 */
import { tmpdir } from 'node:os';
import { describe, expect, it } from 'vitest';
import { formatProblem } from '../../src/config/config-problem.js';
import { buildConfig } from '../../src/config/load-config.js';
import { AnomalyDetector, withinHours, type AnomalyEvent, type Observation } from '../../src/policy/anomaly-detector.js';

/** Monday 6 January 2025, 12:00 UTC: inside "08:00-20:00". */
const NOON = Date.UTC(2025, 0, 6, 12, 0, 0);
const HOUR = 3_600_000;
const MINUTE = 60_000;
/** The baselines are EWMAs with a one-hour time constant (anomaly-detector.ts). */
const BASELINE_SECONDS = 3600;

/** A detector from an `anomalies:` block validated by the real config schema (defaults filled in). */
function detector(anomalies: Record<string, unknown> = {}): AnomalyDetector {
  const built = buildConfig({ anomalies }, { baseDir: tmpdir() });
  if (built.config === null) throw new Error(`invalid anomalies config:\n${built.problems.map((p) => formatProblem(p, null)).join('\n')}`);
  return new AnomalyDetector(built.config.anomalies);
}

function sample(at: number, overrides: Partial<Observation> = {}): Observation {
  return { at, agent: 'steady-bot', service: 'llm', route: '/v1/chat', scope: 'chat:write', session: null, client: '10.0.0.7', code: null, responseBytes: 600, ...overrides };
}

interface Feed {
  readonly events: AnomalyEvent[];
  /** Time of the last observation. */
  readonly end: number;
}

const STEADY_ROUTES = [
  { route: '/v1/chat', scope: 'chat:write' },
  { route: '/v1/models/:model', scope: 'models:read' },
  { route: '/v1/embeddings', scope: 'chat:write' },
];

/**
 * One request every `everyMs` for `durationMs`, cycling over the same three routes and two scopes,
 * small responses of 400-800 bytes, one task session from one address, and a denial now and then.
 */
function steady(d: AnomalyDetector, from: number, durationMs: number, options: { everyMs?: number; agent?: string; service?: string } = {}): Feed {
  const every = options.everyMs ?? 2000;
  const events: AnomalyEvent[] = [];
  let at = from;
  for (let i = 0; at < from + durationMs; i++, at = from + i * every) {
    const { route, scope } = STEADY_ROUTES[i % STEADY_ROUTES.length] as { route: string; scope: string };
    events.push(
      ...d.observe(
        sample(at, {
          agent: options.agent ?? 'steady-bot',
          service: options.service ?? 'llm',
          route,
          scope,
          session: 'ses_steady',
          responseBytes: 400 + ((i * 37) % 400),
          // A typo'd model now and then: one 404 in ten minutes is not probing.
          code: i % 300 === 299 ? 'route_not_allowed' : null,
        }),
      ),
    );
  }
  return { events, end: at - every };
}

/** The EWMA of a per-second rate `rate` that started at 0, after `seconds` (the baseline's model). */
function ewma(rate: number, seconds: number): number {
  return rate * (1 - Math.exp(-seconds / BASELINE_SECONDS));
}

function only(events: readonly AnomalyEvent[], rule: AnomalyEvent['rule']): AnomalyEvent[] {
  return events.filter((e) => e.rule === rule);
}

describe('a steady agent', () => {
  it('1 request every 2 s for 2 hours, same routes, small responses: nothing raised (defaults, usual hours set)', () => {
    const d = detector({ off_hours: { hours: '08:00-20:00' } });
    const feed = steady(d, NOON, 2 * HOUR);
    expect(feed.events).toEqual([]);
    expect(d.events()).toEqual([]);
  });

  it('several steady agents on several services raise nothing either', () => {
    const d = detector();
    const events: AnomalyEvent[] = [];
    for (const agent of ['a1', 'a2', 'a3']) for (const service of ['llm', 'crm']) events.push(...steady(d, NOON, HOUR + 10 * MINUTE, { agent, service, everyMs: 5000 }).events);
    expect(events).toEqual([]);
  });
});

describe('rate_spike', () => {
  it('after the warm-up, 200 requests in 10 s raise rate_spike once, with evidence', () => {
    const d = detector();
    const feed = steady(d, NOON, 2 * HOUR);
    const raised: AnomalyEvent[] = [];
    const start = feed.end + 2000;
    for (let i = 0; i < 200; i++) raised.push(...d.observe(sample(start + i * 50, { route: '/v1/chat', scope: 'chat:write' })));
    const spikes = only(raised, 'rate_spike');
    expect(spikes).toHaveLength(1); // the cooldown (60 s) holds the rest back
    expect(raised.filter((e) => e.rule !== 'rate_spike')).toEqual([]);
    const [spike] = spikes as [AnomalyEvent];
    expect(spike).toMatchObject({ rule: 'rate_spike', action: 'alert', agent: 'steady-bot', service: 'llm' });
    expect(spike.id).toMatch(/^anm_/);
    const evidence = spike.evidence as { requests: number; window_s: number; baseline: number; factor: number };
    expect(evidence.window_s).toBe(60);
    expect(evidence.factor).toBe(5);
    // The baseline is the requests expected in the window: the EWMA of 0.5/s after 2 h, times 60 s.
    const model = ewma(0.5, 2 * 3600) * 60;
    expect(evidence.baseline).toBeGreaterThan(model * 0.9);
    expect(evidence.baseline).toBeLessThan(model * 1.1);
    expect(evidence.requests).toBeGreaterThan(5 * evidence.baseline);
    expect(evidence.requests).toBeGreaterThanOrEqual(20);
    expect(spike.summary).toContain(String(evidence.requests));
    expect(d.events()).toContainEqual(spike);
  });

  /** Two detectors with the same history: 2 h steady, then a minute of silence (an empty window). */
  function twins(anomalies: Record<string, unknown>, everyMs = 2000): { a: AnomalyDetector; b: AnomalyDetector; at: number } {
    const a = detector(anomalies);
    const b = detector(anomalies);
    const end = steady(a, NOON, 2 * HOUR, { everyMs }).end;
    steady(b, NOON, 2 * HOUR, { everyMs });
    return { a, b, at: end + 61_000 };
  }

  /** Requests all in one second until rate_spike fires; returns how many it took and the event. */
  function burstUntilSpike(d: AnomalyDetector, at: number, limit: number): { count: number; event: AnomalyEvent } {
    for (let count = 1; count <= limit; count++) {
      const spike = only(d.observe(sample(at + count)), 'rate_spike')[0];
      if (spike !== undefined) return { count, event: spike };
    }
    throw new Error(`no rate_spike within ${limit} requests`);
  }

  it.each([5, 8])('factor %i from config: a burst just over factor × baseline fires, one request fewer does not', (factor) => {
    const { a, b, at } = twins({ rate_spike: { factor } });
    const { count, event } = burstUntilSpike(a, at, 1000);
    const evidence = event.evidence as { requests: number; baseline: number; factor: number };
    expect(evidence.factor).toBe(factor);
    expect(evidence.requests).toBe(count); // the window holds the burst alone
    // Over the threshold, and the request before was not (baseline is rounded to 0.01 in the evidence).
    expect(count).toBeGreaterThan(factor * evidence.baseline - 0.05);
    expect(count - 1).toBeLessThanOrEqual(factor * evidence.baseline + 0.05);
    const model = ewma(0.5, 2 * 3600) * Math.exp(-61 / BASELINE_SECONDS) * 60;
    expect(evidence.baseline).toBeGreaterThan(model * 0.9);
    expect(evidence.baseline).toBeLessThan(model * 1.1);

    // The twin with the same history: one request fewer raises nothing; the next one does.
    const under: AnomalyEvent[] = [];
    for (let i = 1; i < count; i++) under.push(...b.observe(sample(at + i)));
    expect(under).toEqual([]);
    expect(only(b.observe(sample(at + count)), 'rate_spike')).toHaveLength(1);
  });

  it.each([20, 50])('min_requests %i from config: with a low baseline the burst fires exactly at min_requests', (minRequests) => {
    // 1 request a minute for 2 h: the baseline is under one request a minute, factor × it under 5.
    const { a, b, at } = twins({ rate_spike: { min_requests: minRequests } }, 60_000);
    const { count, event } = burstUntilSpike(a, at, 1000);
    expect(count).toBe(minRequests);
    expect((event.evidence as { baseline: number }).baseline).toBeLessThan(1);
    const under: AnomalyEvent[] = [];
    for (let i = 1; i < minRequests; i++) under.push(...b.observe(sample(at + i)));
    expect(under).toEqual([]);
  });

  it('the action comes from config (suspend)', () => {
    const { a, at } = twins({ rate_spike: { action: 'suspend' } });
    expect(burstUntilSpike(a, at, 1000).event.action).toBe('suspend');
  });

  it('no rate_spike before the warm-up, however big the burst', () => {
    const d = detector();
    const raised: AnomalyEvent[] = [];
    for (let i = 0; i < 500; i++) raised.push(...d.observe(sample(NOON + i * 10)));
    expect(raised).toEqual([]);
  });
});

describe('new_route and new_scope', () => {
  it('after the warm-up, a first-time route raises new_route; a first-time scope raises new_scope too', () => {
    const d = detector();
    const feed = steady(d, NOON, 2 * HOUR);
    let at = feed.end + 2000;
    // A new route under a scope already used: new_route only.
    const first = d.observe(sample(at, { route: '/v1/files/*', scope: 'chat:write' }));
    expect(first).toHaveLength(1);
    expect(first[0]).toMatchObject({ rule: 'new_route', action: 'alert', agent: 'steady-bot', service: 'llm', evidence: { route: '/v1/files/*' } });
    // Used again: no longer new.
    at += 2000;
    expect(d.observe(sample(at, { route: '/v1/files/*', scope: 'chat:write' }))).toEqual([]);
    // Past the cooldown, a new route with a new scope: both.
    at += 61_000;
    const second = d.observe(sample(at, { route: '/v1/fine-tunes', scope: 'tuning:write' }));
    expect(second.map((e) => e.rule).sort()).toEqual(['new_route', 'new_scope']);
    expect(only(second, 'new_scope')[0]).toMatchObject({ evidence: { scope: 'tuning:write' }, service: 'llm' });
    expect(only(second, 'new_route')[0]?.summary).toContain('/v1/fine-tunes');
  });

  it('actions from config', () => {
    const d = detector({ new_route: { action: 'suspend' }, new_scope: { action: 'alert' } });
    const feed = steady(d, NOON, 2 * HOUR);
    const raised = d.observe(sample(feed.end + 2000, { route: '/v1/admin', scope: 'admin:write' }));
    expect(only(raised, 'new_route')[0]?.action).toBe('suspend');
    expect(only(raised, 'new_scope')[0]?.action).toBe('alert');
  });

  it('not before the warm-up: both the request count and the time must be reached', () => {
    // Enough requests (150 > 100) but only 5 minutes: routes and scopes are learnt, nothing raised.
    const busy = detector();
    const raised: AnomalyEvent[] = [];
    for (let i = 0; i < 150; i++) raised.push(...busy.observe(sample(NOON + i * 2000, { route: `/v1/r${i % 7}`, scope: `s:${i % 5}` })));
    raised.push(...busy.observe(sample(NOON + 150 * 2000, { route: '/v1/brand-new', scope: 'brand:new' })));
    expect(raised).toEqual([]);

    // Enough time (> 1 h) but only 40 requests.
    const idle = detector();
    for (let i = 0; i < 40; i++) raised.push(...idle.observe(sample(NOON + i * 2 * MINUTE)));
    raised.push(...idle.observe(sample(NOON + 80 * MINUTE + 1000, { route: '/v1/brand-new', scope: 'brand:new' })));
    expect(raised).toEqual([]);

    // Routes first seen during the warm-up are known afterwards.
    const learnt = detector({ warmup: { requests: 10, seconds: 60 } });
    for (let i = 0; i < 10; i++) raised.push(...learnt.observe(sample(NOON + i * 1000, { route: `/v1/r${i}` })));
    expect(raised).toEqual([]);
    expect(learnt.observe(sample(NOON + 120_000, { route: '/v1/r3' }))).toEqual([]);
    expect(only(learnt.observe(sample(NOON + 121_000, { route: '/v1/r99' })), 'new_route')).toHaveLength(1);
  });

  it('warm-up thresholds from config: {requests: 10, seconds: 60}', () => {
    const d = detector({ warmup: { requests: 10, seconds: 60 } });
    for (let i = 0; i < 10; i++) expect(d.observe(sample(NOON + i * 7000))).toEqual([]);
    // 10 requests and 63 s: warm.
    expect(only(d.observe(sample(NOON + 63_000, { route: '/v1/new' })), 'new_route')).toHaveLength(1);
  });
});

describe('denial_burst', () => {
  it('30 denials (403/404) within 60 s raise denial_burst (suspend by default) without any warm-up', () => {
    const d = detector();
    const raised: AnomalyEvent[] = [];
    for (let i = 0; i < 29; i++) {
      raised.push(...d.observe(sample(NOON + i * 500, { code: i % 2 === 0 ? 'scope_denied' : 'route_not_allowed', route: null, scope: null })));
      // Other failures are not probing: limits, the upstream's own answers (code null: an upstream 401 or
      // 404 is the upstream's), a human's decision on an approval.
      for (const code of ['rate_limited', 'upstream_unreachable', null, 'approval_denied', 'approval_timeout']) raised.push(...d.observe(sample(NOON + i * 500 + 1, { code })));
    }
    expect(raised).toEqual([]);
    const storm = d.observe(sample(NOON + 29 * 500, { code: 'scope_denied' }));
    expect(storm).toHaveLength(1);
    expect(storm[0]).toMatchObject({ rule: 'denial_burst', action: 'suspend', agent: 'steady-bot', service: null, evidence: { denials: 30, window_s: 60, threshold: 30, last_code: 'scope_denied', last_route: '/v1/chat' } });
    expect(storm[0]?.summary).toBe('30 requests refused by policy in 60 s (threshold 30), the last scope_denied on /v1/chat: probing');
  });

  it('unknown tokens, services and methods count too; denials on several services add up for the agent', () => {
    const d = detector({ denial_burst: { count: 8, window: 60 } });
    const raised: AnomalyEvent[] = [];
    const codes = ['unauthenticated', 'method_not_allowed', 'session_required', 'unknown_service'];
    for (let i = 0; i < 7; i++) raised.push(...d.observe(sample(NOON + i * 1000, { code: codes[i % 4] as string, service: i % 2 === 0 ? 'llm' : 'crm' })));
    expect(raised).toEqual([]);
    expect(only(d.observe(sample(NOON + 7000, { code: 'scope_denied', service: 'crm' })), 'denial_burst')).toHaveLength(1);
    // Another agent's denials are its own.
    expect(d.observe(sample(NOON + 8000, { code: 'scope_denied', agent: 'other-bot' }))).toEqual([]);
  });

  // Found by review: a path refused as probing (400 before authentication) was never counted.
  it('a 400 invalid_request counts when refused as probing (a path servers read differently), and only then', () => {
    const d = detector({ denial_burst: { count: 5, window: 60 } });
    const raised: AnomalyEvent[] = [];
    // A malformed mint body, a body cut short, a refused shape: a client's mistakes as often as a prober's.
    for (let i = 0; i < 10; i++) raised.push(...d.observe(sample(NOON + i * 1000, { code: 'invalid_request', service: null, route: null })));
    expect(raised).toEqual([]);
    for (let i = 0; i < 4; i++) raised.push(...d.observe(sample(NOON + 10_000 + i * 1000, { code: 'invalid_request', service: null, route: null, probing: true })));
    expect(raised).toEqual([]);
    const fired = d.observe(sample(NOON + 14_000, { code: 'invalid_request', service: null, route: null, probing: true }));
    expect(fired).toHaveLength(1);
    expect(fired[0]).toMatchObject({ rule: 'denial_burst', service: null, evidence: { denials: 5, last_code: 'invalid_request' } });
    expect(fired[0]?.summary).toBe('5 requests refused by policy in 60 s (threshold 5), the last invalid_request: probing');
  });

  it('count and window from config: 5 in 10 s fire; denials spread wider than the window do not', () => {
    const d = detector({ denial_burst: { count: 5, window: 10, action: 'alert' } });
    const raised: AnomalyEvent[] = [];
    // One denial every 3 s for 10 minutes: never more than 4 in any 10 s.
    for (let i = 0; i < 200; i++) raised.push(...d.observe(sample(NOON + i * 3000, { code: 'scope_denied' })));
    expect(raised).toEqual([]);
    const at = NOON + 200 * 3000 + 60_000;
    for (let i = 0; i < 4; i++) raised.push(...d.observe(sample(at + i * 2000, { code: 'scope_denied' })));
    expect(raised).toEqual([]);
    const fired = d.observe(sample(at + 8000, { code: 'scope_denied' }));
    expect(fired).toHaveLength(1);
    expect(fired[0]).toMatchObject({ rule: 'denial_burst', action: 'alert', evidence: { denials: 5, window_s: 10, threshold: 5 } });
  });

  // Windows are counted in per-second rings sized to the window, so the schema takes whole seconds up
  // to an hour and says so, rather than a window the detector would silently misread.
  it('refuses a fractional window and a window over an hour in config, naming the rule', () => {
    for (const [window, message] of [
      [1.5, 'whole number of seconds'],
      [7200, 'at most 3600 s'],
    ] as const) {
      for (const rule of ['denial_burst', 'rate_spike', 'volume_spike']) {
        const built = buildConfig({ anomalies: { [rule]: { window } } }, { baseDir: tmpdir() });
        expect(built.config).toBeNull();
        const text = built.problems.map((p) => formatProblem(p, null)).join('\n');
        expect(text).toContain(`anomalies.${rule}.window`);
        expect(text).toContain(message);
      }
    }
  });

  it('a one-hour window counts denials spread over the hour', () => {
    const d = detector({ denial_burst: { count: 3, window: 3600, action: 'alert' } });
    const raised: AnomalyEvent[] = [];
    for (const minutes of [0, 30, 59]) raised.push(...d.observe(sample(NOON + minutes * MINUTE, { code: 'scope_denied' })));
    expect(only(raised, 'denial_burst')).toHaveLength(1);
    // ...and forgets a denial once it is more than an hour old.
    const later = detector({ denial_burst: { count: 3, window: 3600, action: 'alert' } });
    const none: AnomalyEvent[] = [];
    for (const minutes of [0, 30, 61]) none.push(...later.observe(sample(NOON + minutes * MINUTE, { code: 'scope_denied' })));
    expect(only(none, 'denial_burst')).toHaveLength(0);
  });
});

describe('volume_spike', () => {
  it('after the warm-up, a 5 MB response against a baseline of small ones raises volume_spike', () => {
    const d = detector();
    const feed = steady(d, NOON, 2 * HOUR);
    const raised = d.observe(sample(feed.end + 2000, { responseBytes: 5 * 1024 * 1024 }));
    expect(raised).toHaveLength(1);
    const [event] = raised as [AnomalyEvent];
    expect(event).toMatchObject({ rule: 'volume_spike', action: 'alert', agent: 'steady-bot', service: 'llm' });
    const evidence = event.evidence as { bytes: number; window_s: number; baseline_bytes: number; factor: number };
    expect(evidence.window_s).toBe(300);
    expect(evidence.factor).toBe(10);
    expect(evidence.bytes).toBeGreaterThan(5 * 1024 * 1024);
    // About 0.43 requests/s × 600 B × 300 s of small answers.
    const model = ewma(0.5 * 600, 2 * 3600) * 300;
    expect(evidence.baseline_bytes).toBeGreaterThan(model * 0.8);
    expect(evidence.baseline_bytes).toBeLessThan(model * 1.2);
    expect(evidence.bytes).toBeGreaterThan(10 * evidence.baseline_bytes);
    expect(event.summary).toContain('exfiltration');
  });

  it('min_bytes and action from config: under min_bytes nothing, over it the event', () => {
    const d = detector({ volume_spike: { min_bytes: 10 * 1024 * 1024, action: 'suspend' } });
    const feed = steady(d, NOON, 2 * HOUR);
    expect(d.observe(sample(feed.end + 2000, { responseBytes: 5 * 1024 * 1024 }))).toEqual([]);
    const raised = d.observe(sample(feed.end + 4000, { responseBytes: 6 * 1024 * 1024 }));
    expect(raised).toHaveLength(1);
    expect(raised[0]).toMatchObject({ rule: 'volume_spike', action: 'suspend' });
  });

  it('factor from config: a volume under factor × baseline does not fire', () => {
    // 20 KB answers every 2 s: ~2.6 MB expected in 300 s; factor 10 puts the threshold near 26 MB.
    const d = detector({ volume_spike: { factor: 10, min_bytes: 1024 } });
    const events: AnomalyEvent[] = [];
    let at = NOON;
    for (; at < NOON + 2 * HOUR; at += 2000) events.push(...d.observe(sample(at, { responseBytes: 20_000 })));
    expect(events).toEqual([]);
    expect(d.observe(sample(at, { responseBytes: 8 * 1024 * 1024 }))).toEqual([]);
    expect(only(d.observe(sample(at + 2000, { responseBytes: 24 * 1024 * 1024 })), 'volume_spike')).toHaveLength(1);
  });

  it('no volume_spike before the warm-up', () => {
    const d = detector();
    expect(d.observe(sample(NOON, { responseBytes: 50 * 1024 * 1024 }))).toEqual([]);
  });
});

describe('off_hours', () => {
  const at = (hh: number, mm = 0): number => Date.UTC(2025, 0, 6, hh, mm, 0);

  it('hours "08:00-20:00": a call at 03:00 UTC raises off_hours, one at 12:00 does not; no warm-up needed', () => {
    const d = detector({ off_hours: { hours: '08:00-20:00' } });
    expect(d.observe(sample(at(12)))).toEqual([]);
    const raised = d.observe(sample(at(3), { agent: 'night-owl' }));
    expect(raised).toHaveLength(1);
    expect(raised[0]).toMatchObject({ rule: 'off_hours', action: 'alert', agent: 'night-owl', service: 'llm', evidence: { usual_hours: '08:00-20:00', utc_offset_minutes: 0 } });
    expect(raised[0]?.summary).toContain('2025-01-06T03:00:00.000Z');
  });

  it('the boundaries: 08:00 is inside, 20:00 is outside', () => {
    const d = detector({ off_hours: { hours: '08:00-20:00', action: 'suspend' } });
    expect(d.observe(sample(at(8), { agent: 'b1' }))).toEqual([]);
    expect(d.observe(sample(at(19, 59), { agent: 'b2' }))).toEqual([]);
    expect(d.observe(sample(at(20), { agent: 'b3' }))[0]).toMatchObject({ rule: 'off_hours', action: 'suspend' });
    expect(d.observe(sample(at(7, 59), { agent: 'b4' }))[0]?.rule).toBe('off_hours');
  });

  it('utc_offset_minutes is honoured (+120: 07:00 UTC is 09:00 local; -300: 12:00 UTC is 07:00 local)', () => {
    const east = detector({ off_hours: { hours: '08:00-20:00', utc_offset_minutes: 120 } });
    expect(east.observe(sample(at(7), { agent: 'e1' }))).toEqual([]);
    expect(east.observe(sample(at(19), { agent: 'e2' }))[0]?.rule).toBe('off_hours');
    const west = detector({ off_hours: { hours: '08:00-20:00', utc_offset_minutes: -300 } });
    expect(west.observe(sample(at(12), { agent: 'w1' }))[0]).toMatchObject({ rule: 'off_hours', evidence: { utc_offset_minutes: -300 } });
    expect(west.observe(sample(at(14), { agent: 'w2' }))).toEqual([]);
    // 02:00 UTC is 21:00 the day before, local: outside.
    expect(west.observe(sample(at(2), { agent: 'w3' }))[0]?.rule).toBe('off_hours');
  });

  it('a range that wraps midnight ("22:00-06:00") works', () => {
    const d = detector({ off_hours: { hours: '22:00-06:00' } });
    expect(d.observe(sample(at(23), { agent: 'n1' }))).toEqual([]);
    expect(d.observe(sample(at(3), { agent: 'n2' }))).toEqual([]);
    expect(d.observe(sample(at(22), { agent: 'n3' }))).toEqual([]);
    expect(d.observe(sample(at(12), { agent: 'n4' }))[0]?.rule).toBe('off_hours');
    expect(d.observe(sample(at(6), { agent: 'n5' }))[0]?.rule).toBe('off_hours');
  });

  it.each([
    ['08:00-20:00', 0, 3, false],
    ['08:00-20:00', 0, 12, true],
    ['08:00-20:00', 120, 7, true],
    ['08:00-20:00', 120, 19, false],
    ['08:00-20:00', -300, 12, false],
    ['08:00-20:00', -300, 14, true],
    ['22:00-06:00', 0, 23, true],
    ['22:00-06:00', 0, 5, true],
    ['22:00-06:00', 0, 6, false],
    ['22:00-06:00', 60, 5, false],
    ['22:00-06:00', -60, 22, false],
    ['22:00-06:00', -60, 23, true],
  ] as const)('withinHours(%s, offset %i, %i:00 UTC) = %s', (hours, offset, hour, expected) => {
    expect(withinHours(at(hour), hours, offset)).toBe(expected);
  });

  it('absent by default: no off_hours event at 03:00', () => {
    expect(detector().observe(sample(at(3)))).toEqual([]);
  });
});

describe('new_client_address', () => {
  it('a task session used from a second client address raises new_client_address with both addresses', () => {
    const d = detector();
    for (let i = 0; i < 20; i++) expect(d.observe(sample(NOON + i * 1000, { session: 'ses_a', client: '10.0.0.7' }))).toEqual([]);
    // Another session from another address is not an anomaly.
    expect(d.observe(sample(NOON + 21_000, { session: 'ses_b', client: '10.0.0.9' }))).toEqual([]);
    const raised = d.observe(sample(NOON + 22_000, { session: 'ses_a', client: '203.0.113.50' }));
    expect(raised).toHaveLength(1);
    expect(raised[0]).toMatchObject({
      rule: 'new_client_address',
      action: 'alert',
      agent: 'steady-bot',
      service: 'llm',
      evidence: { session: 'ses_a', first_address: '10.0.0.7', new_address: '203.0.113.50' },
    });
  });

  it('action from config; calls without a session are not tracked', () => {
    const d = detector({ new_client_address: { action: 'suspend' } });
    expect(d.observe(sample(NOON, { session: null, client: '10.0.0.1' }))).toEqual([]);
    expect(d.observe(sample(NOON + 1000, { session: null, client: '10.0.0.2' }))).toEqual([]);
    d.observe(sample(NOON + 2000, { session: 'ses_x', client: '10.0.0.1' }));
    expect(d.observe(sample(NOON + 3000, { session: 'ses_x', client: '10.0.0.2' }))[0]).toMatchObject({ rule: 'new_client_address', action: 'suspend' });
  });
});

describe('cooldown', () => {
  it('a rule raises at most once per agent and service in the cooldown (default 60 s), then again', () => {
    const d = detector({ denial_burst: { count: 5, window: 60 } });
    const raised: AnomalyEvent[] = [];
    // A denial every 500 ms for 50 s: over the threshold from the 5th on.
    for (let i = 0; i < 100; i++) raised.push(...d.observe(sample(NOON + i * 500, { code: 'scope_denied' })));
    expect(only(raised, 'denial_burst')).toHaveLength(1);
    const first = only(raised, 'denial_burst')[0] as AnomalyEvent;
    // Still probing past the cooldown: a second event.
    const later: AnomalyEvent[] = [];
    for (let i = 100; i < 140; i++) later.push(...d.observe(sample(NOON + i * 500, { code: 'scope_denied' })));
    const second = only(later, 'denial_burst');
    expect(second).toHaveLength(1);
    expect((second[0] as AnomalyEvent).at - first.at).toBeGreaterThanOrEqual(60_000);
    expect(second[0]?.id).not.toBe(first.id);
  });

  it('cooldown from config (300 s); other agents, other services and other rules are not held back', () => {
    const d = detector({ cooldown: 300, off_hours: { hours: '08:00-20:00' } });
    const night = Date.UTC(2025, 0, 6, 2, 0, 0);
    const raised: AnomalyEvent[] = [];
    for (let s = 0; s < 299; s += 10) raised.push(...d.observe(sample(night + s * 1000)));
    expect(only(raised, 'off_hours')).toHaveLength(1);
    // The same agent on another service, another agent: their own events.
    expect(only(d.observe(sample(night + 100_000, { service: 'crm' })), 'off_hours')).toHaveLength(1);
    expect(only(d.observe(sample(night + 100_000, { agent: 'other-bot' })), 'off_hours')).toHaveLength(1);
    // Another rule for the same agent and service: not held back by off_hours' cooldown.
    expect(d.observe(sample(night + 200_000, { session: 's1', client: '10.1.1.1' })).map((e) => e.rule)).toEqual([]);
    expect(d.observe(sample(night + 201_000, { session: 's1', client: '10.1.1.2' })).map((e) => e.rule)).toEqual(['new_client_address']);
    // Past 300 s: off_hours again.
    expect(only(d.observe(sample(night + 300_000)), 'off_hours')).toHaveLength(1);
  });
});

describe('enabled: false', () => {
  it('raises nothing, whatever the traffic', () => {
    const d = detector({ enabled: false, warmup: { requests: 0, seconds: 1 }, off_hours: { hours: '08:00-20:00' } });
    expect(d.enabled).toBe(false);
    const raised: AnomalyEvent[] = [];
    raised.push(...steady(d, NOON, 10 * MINUTE).events);
    for (let i = 0; i < 300; i++) {
      raised.push(...d.observe(sample(Date.UTC(2025, 0, 6, 3) + i * 10, { code: 'scope_denied', route: `/v1/r${i}`, scope: `s:${i}`, responseBytes: 10 * 1024 * 1024, session: 'ses', client: `10.0.0.${i % 250}` })));
    }
    expect(raised).toEqual([]);
    expect(d.events()).toEqual([]);
  });
});

describe('bounded memory', () => {
  /**
   * 200,000 observations with 10,000 distinct agents, sessions, client addresses and routes, all past
   * the warm-up (requests: 0), denials among them, so every map and ring the detector keeps fills up
   * and events are raised far more than the ring keeps.
   */
  function flood(d: AnomalyDetector): { raised: number; last: AnomalyEvent | undefined } {
    let raised = 0;
    let last: AnomalyEvent | undefined;
    const start = Date.UTC(2025, 0, 6, 3, 0, 0);
    for (let i = 0; i < 200_000; i++) {
      const n = i % 10_000;
      const events = d.observe({
        at: start + i * 10,
        agent: `agent-${n}`,
        service: i % 2 === 0 ? 'llm' : 'crm',
        route: `/v1/r/${(i * 7919) % 10_000}`,
        scope: `scope:${(i * 31) % 10_000}`,
        session: `ses_${(i * 13) % 10_000}`,
        client: `10.${(i >> 16) & 255}.${(i >> 8) & 255}.${i & 255}`,
        code: i % 3 === 0 ? 'scope_denied' : null,
        responseBytes: 200 + (i % 5000),
      });
      raised += events.length;
      if (events.length > 0) last = events.at(-1);
    }
    return { raised, last };
  }

  let measured: { heapMb: number; arrayBuffersMb: number } | null = null;

  function measure(): { heapMb: number; arrayBuffersMb: number } {
    if (measured !== null) return measured;
    const before = process.memoryUsage();
    const d = detector({ warmup: { requests: 0, seconds: 1 } });
    const { raised, last } = flood(d);
    const after = process.memoryUsage();
    expect(raised).toBeGreaterThan(10_000);
    // The events ring keeps the newest 1000.
    expect(d.events().length).toBeLessThanOrEqual(1000);
    expect(d.events().length).toBe(1000);
    expect(d.events().at(-1)).toBe(last);
    measured = { heapMb: (after.heapUsed - before.heapUsed) / 1e6, arrayBuffersMb: (after.arrayBuffers - before.arrayBuffers) / 1e6 };
    return measured;
  }

  it('a flood of 200,000 observations (10,000 agents, sessions, addresses, routes): the events ring stays at 1000, the heap within 200 MB', () => {
    const { heapMb } = measure();
    expect(heapMb).toBeLessThan(200);
  });

  // The rings are sized to the configured windows (60 s and 300 s by default) and live outside the JS
  // heap (ArrayBuffers), so they are bounded separately.
  it('the same flood: memory outside the heap (the per-second rings) stays within 200 MB too', () => {
    const { arrayBuffersMb } = measure();
    expect(arrayBuffersMb).toBeLessThan(200);
  });
});

/**
 * Each cache the detector keeps is an LRU with a fixed cap: baselines per agent and service (10,000),
 * denial rings per agent (10,000), first client address per session (100,000) and the last event per
 * agent, service and rule for the cooldown (100,000). The detector offers no count of their entries, so
 * each test floods far past one cap and shows the cap by what the detector still remembers: the newest
 * `cap` keys are kept, the one just before them is forgotten.
 */
describe('caches past their caps', () => {
  const NIGHT = Date.UTC(2025, 0, 6, 3, 0, 0);

  it('baselines per agent and service (cap 10,000): after 30,000 subjects only the newest 10,000 are remembered', () => {
    const cap = 10_000;
    const d = detector({ warmup: { requests: 1, seconds: 0.001 } });
    // One request each: past the warm-up at the next request, with /v1/chat known.
    let raised = 0;
    for (let i = 0; i < 3 * cap; i++) raised += d.observe(sample(NOON + i, { agent: `agent-${i}` })).length;
    expect(raised).toBe(0);
    const later = NOON + 3 * cap + 1000;
    // The oldest of the newest 10,000 still has its baseline: a first-time route after the warm-up.
    expect(d.observe(sample(later, { agent: `agent-${2 * cap}`, route: '/v1/new' })).map((e) => e.rule)).toEqual(['new_route']);
    // The one before it was evicted: its baseline starts over, in warm-up, so nothing is new.
    expect(d.observe(sample(later, { agent: `agent-${2 * cap - 1}`, route: '/v1/new' }))).toEqual([]);
    expect(d.observe(sample(later, { agent: 'agent-0', route: '/v1/new' }))).toEqual([]);
  });

  it('denial rings per agent (cap 10,000): after 30,000 agents only the newest 10,000 keep their count', () => {
    const cap = 10_000;
    const d = detector({ denial_burst: { count: 2, window: 60, action: 'alert' } });
    const denied = (at: number, agent: string): AnomalyEvent[] => d.observe(sample(at, { agent, service: null, route: null, scope: null, code: 'scope_denied' }));
    // One denial each within a second; the second denial of a remembered agent is a burst of 2.
    let raised = 0;
    for (let i = 0; i < 3 * cap; i++) raised += denied(NOON + Math.floor(i / 100), `agent-${i}`).length;
    expect(raised).toBe(0);
    const later = NOON + 1000;
    expect(denied(later, `agent-${2 * cap}`).map((e) => e.rule)).toEqual(['denial_burst']);
    expect(denied(later, `agent-${2 * cap - 1}`)).toEqual([]);
    expect(denied(later, 'agent-0')).toEqual([]);
  });

  it('first client address per session (cap 100,000): after 300,000 sessions only the newest 100,000 are remembered', () => {
    const cap = 100_000;
    const d = detector();
    const used = (at: number, session: string, client: string): AnomalyEvent[] => d.observe(sample(at, { service: null, route: null, scope: null, session, client }));
    let raised = 0;
    for (let i = 0; i < 3 * cap; i++) raised += used(NOON, `ses_${i}`, '10.0.0.1').length;
    expect(raised).toBe(0);
    expect(used(NOON + 1000, `ses_${2 * cap}`, '10.0.0.2').map((e) => e.rule)).toEqual(['new_client_address']);
    // Evicted: the second address is taken for the first.
    expect(used(NOON + 1000, `ses_${2 * cap - 1}`, '10.0.0.2')).toEqual([]);
    expect(used(NOON + 1000, 'ses_0', '10.0.0.2')).toEqual([]);
  });

  it('cooldowns per agent, service and rule (cap 100,000): after 150,000 only the newest 100,000 hold an event back', () => {
    const cap = 100_000;
    // Half as far again past the cap: every call here raises an event, the costly path.
    const flood = cap + cap / 2;
    const d = detector({ cooldown: 3600, off_hours: { hours: '08:00-20:00' } });
    const call = (at: number, agent: string): AnomalyEvent[] => d.observe(sample(at, { agent, service: null, route: null, scope: null }));
    let raised = 0;
    for (let i = 0; i < flood; i++) raised += call(NIGHT, `agent-${i}`).length;
    expect(raised).toBe(flood);
    // The events ring is bounded as well.
    expect(d.events()).toHaveLength(1000);
    // Within the hour's cooldown: held back while its last event is remembered, raised again once evicted.
    expect(call(NIGHT + MINUTE, `agent-${flood - cap}`)).toEqual([]);
    expect(call(NIGHT + MINUTE, `agent-${flood - cap - 1}`).map((e) => e.rule)).toEqual(['off_hours']);
    expect(call(NIGHT + MINUTE, 'agent-0').map((e) => e.rule)).toEqual(['off_hours']);
  });
});

describe('screen before forwarding, observe after the answer', () => {
  /** Feeds a request either all at once (observe) or in two moments (screen, then observe screened). */
  function feed(d: AnomalyDetector, twoMoments: boolean, observation: Observation): AnomalyEvent[] {
    if (!twoMoments) return d.observe(observation);
    return [...d.screen(observation), ...d.observe({ ...observation, screened: true })];
  }

  /** 2 h steady, then a burst, a new route and scope, one large answer, a second address and denials. */
  function history(twoMoments: boolean): string[] {
    const d = detector({ volume_spike: { min_bytes: 100_000 }, denial_burst: { count: 5 }, off_hours: { hours: '08:00-20:00' } });
    const raised: AnomalyEvent[] = [];
    let at = NOON;
    for (let i = 0; i < 3600; i++, at += 2000) raised.push(...feed(d, twoMoments, sample(at, { session: 'ses_a', responseBytes: 500 + (i % 7) })));
    for (let i = 0; i < 200; i++) raised.push(...feed(d, twoMoments, sample(at + i, { session: 'ses_a' })));
    raised.push(...feed(d, twoMoments, sample(at + 300, { route: '/v1/files/:id', scope: 'files:read', session: 'ses_a' })));
    raised.push(...feed(d, twoMoments, sample(at + 400, { responseBytes: 5_000_000, session: 'ses_a' })));
    raised.push(...feed(d, twoMoments, sample(at + 500, { session: 'ses_a', client: '10.9.9.9' })));
    for (let i = 0; i < 5; i++) raised.push(...feed(d, twoMoments, sample(at + 600 + i, { code: 'scope_denied', route: null, scope: null })));
    raised.push(...feed(d, twoMoments, sample(NOON + 10 * HOUR, {})));
    return raised.map((event) => `${event.rule} ${JSON.stringify(event.evidence)}`).sort();
  }

  it('a request screened and then observed raises what one observed at once raises, and is counted once', () => {
    const once = history(false);
    expect(once.map((line) => line.split(' ')[0])).toEqual(['denial_burst', 'new_client_address', 'new_route', 'new_scope', 'off_hours', 'rate_spike', 'volume_spike']);
    // Same evidence, counts included: the rate and volume windows saw each request once.
    expect(history(true)).toEqual(once);
  });

  it('screen runs the request rules only: a denial or a large answer is seen once answered', () => {
    const d = detector({ warmup: { requests: 1, seconds: 1 }, volume_spike: { min_bytes: 1000 }, denial_burst: { count: 1 } });
    feed(d, true, sample(NOON));
    const later = sample(NOON + 2000, { route: '/v1/new', code: 'scope_denied', responseBytes: 50_000 });
    expect(d.screen(later).map((e) => e.rule)).toEqual(['new_route']);
    expect(d.observe({ ...later, screened: true }).map((e) => e.rule).sort()).toEqual(['denial_burst', 'volume_spike']);
  });

  it('switched off, screen raises nothing', () => {
    const d = detector({ enabled: false, off_hours: { hours: '08:00-20:00' } });
    expect(d.screen(sample(Date.UTC(2025, 0, 6, 3, 0, 0)))).toEqual([]);
  });
});

// Found by review: the per-second rings only expired seconds as the clock moved past the newest one
// they had seen, so after the wall clock was stepped back (NTP, a VM restored from a snapshot) every
// count stayed in the window until the clock had caught up again: for an hour's step, an hour of an
// agent's ordinary traffic and occasional denials added up as if it had come within one window.
describe('a wall clock stepped back', () => {
  it('an hour back: one denial every 10 s (6 a minute) for 10 minutes is not a denial burst (30 in 60 s)', () => {
    const d = detector();
    expect(d.observe(sample(NOON, { code: 'scope_denied' }))).toEqual([]);
    const stepped = NOON + 10_000 - HOUR;
    const raised: AnomalyEvent[] = [];
    for (let i = 0; i < 60; i++) raised.push(...d.observe(sample(stepped + i * 10_000, { code: 'scope_denied' })));
    expect(only(raised, 'denial_burst')).toEqual([]);
    // The window still works once the clock has been stepped back: 30 within a minute are a burst.
    const burst: AnomalyEvent[] = [];
    for (let i = 0; i < 30; i++) burst.push(...d.observe(sample(stepped + 600_000 + i * 1000, { code: 'scope_denied' })));
    expect(only(burst, 'denial_burst')).toHaveLength(1);
  });

  it('an hour back: a rule that raised just before is not held back for the hour by its cooldown', () => {
    const d = detector({ denial_burst: { count: 5, window: 60, action: 'alert' } });
    const raised: AnomalyEvent[] = [];
    for (let i = 0; i < 5; i++) raised.push(...d.observe(sample(NOON + i * 1000, { code: 'scope_denied' })));
    expect(only(raised, 'denial_burst')).toHaveLength(1);
    // Past the cooldown (60 s) by the clock that stepped back an hour, a new burst is raised.
    const stepped = NOON + 5 * 60_000 - HOUR;
    const again: AnomalyEvent[] = [];
    for (let i = 0; i < 5; i++) again.push(...d.observe(sample(stepped + i * 1000, { code: 'scope_denied' })));
    expect(only(again, 'denial_burst')).toHaveLength(1);
  });

  it('an hour back: an agent past its warm-up stays warm, so a first-time route still raises new_route', () => {
    const d = detector();
    const warm = steady(d, NOON, 90 * MINUTE);
    expect(warm.events).toEqual([]);
    const fresh = d.observe(sample(warm.end + 2000 - HOUR, { route: '/v1/files/:id', scope: 'files:read' }));
    expect(fresh.map((event) => event.rule).sort()).toEqual(['new_route', 'new_scope']);
  });

  it('an hour back: a steady agent (1 request per 2 s) raises no rate_spike while the clock catches up', () => {
    const d = detector();
    const warm = steady(d, NOON, 2 * HOUR);
    expect(warm.events).toEqual([]);
    const after = steady(d, warm.end + 2000 - HOUR, 30 * MINUTE);
    expect(only(after.events, 'rate_spike')).toEqual([]);
  });
});
