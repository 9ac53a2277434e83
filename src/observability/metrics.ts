/**
 * Prometheus metrics (prom-client), one registry per Airlock instance (never the global default
 * registry, so tests run many proxies in one process). Label sets are bounded: service names and route
 * templates from config, credential references from config, decision and code from closed sets; never
 * raw paths, agents' input, or values. Gauges that describe live state are read when scraped.
 */
import { Counter, Gauge, Histogram, Registry } from 'prom-client';
import type { AnomalyRule } from '../policy/anomaly-detector.js';
import { HotCounter, HotHistogram, type CounterChild, type HistogramChild } from './hot-metrics.js';

export type CacheEvent = 'hit' | 'stale' | 'miss' | 'refresh_failure';

/** What the gauges read at scrape time; bound once the runtime exists. */
export interface LiveSources {
  credentials(): ReadonlyArray<{ ref: string; ageSeconds: number | null; failing: boolean; state: string }>;
  approvalsPending(): number;
  sessionsActive(): number;
  pools(): ReadonlyArray<{ service: string; stats: { connected: number; free: number; pending: number; queued: number; running: number } }>;
  /** Open agent connections per listener ("shared", or the service of its own listener), idle ones included. */
  agentConnections?: () => Promise<ReadonlyArray<{ listener: string; open: number }>>;
  /** This process's own figures (main.ts reads them; absent in tests that build Airlock in-process). */
  process?: () => ProcessStats;
  /** The certificate the agent listeners present: its subject, and when it stops being valid (ms since the epoch); null without tls. */
  /** The certificates served: the agent listeners' (tls) and the admin API's (admin.tls), each when configured. */
  tlsCertificates?: () => ReadonlyArray<{ readonly listener: 'agent' | 'admin'; readonly subject: string; readonly notAfter: number }>;
}

/** What the process_* and nodejs_* gauges report, read when scraped. */
export interface ProcessStats {
  readonly cpuSeconds: number;
  readonly residentBytes: number;
  readonly heapUsedBytes: number;
  readonly startTimeSeconds: number;
  /** Share of the time since the last scrape the event loop was busy, 0 to 1 (perf_hooks eventLoopUtilization). */
  readonly eventLoopUtilization: number;
}

export interface Metrics {
  readonly registry: Registry;
  readonly credentialCache: Counter<'result'>;
  /** Secrets and key shapes replaced in upstream responses (headers, body, trailers), by service. */
  readonly redactions: Counter<'service'>;
  readonly auditWriteFailures: Counter;
  /** Records left out of the audit.webhook copy because its queue overflowed (the file has them). */
  readonly auditWebhookDropped: Counter;
  readonly anomalies: Counter<'rule' | 'action'>;
  /** Spans the OTLP collector did not take (down, refusing, or slower than 5 s): dropped. */
  readonly spansDropped: Counter;
  readonly reloads: Counter<'result'>;
  /** TLS handshakes the agent listeners failed (tls), by reason: version, certificate, reset, cipher, timeout, other. */
  readonly tlsHandshakeFailures: Counter<'listener' | 'reason'>;
  /** One finished request: its count and its duration, through children bound once per label set. */
  countRequest(service: string, route: string, decision: 'allow' | 'deny', code: string, seconds: number): void;
  /**
   * The upstream exchange of one forwarded request, through children bound once per service: its
   * duration, and its answer's status class (0 when it gave none: cut before its status line).
   */
  observeUpstream(service: string, seconds: number, status: number): void;
  bind(sources: LiveSources): void;
}

// Up to 600 s: LLM completions and event streams run for minutes (timeouts.body is 300 s, the SDKs wait
// 600 s); ending at 60 s put every one of them in +Inf (found by the observability walkthrough).
const DURATION_BUCKETS = [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600];

export function createMetrics(): Metrics {
  const registry = new Registry();
  let sources: LiveSources | null = null;
  const registers = [registry];

  new Gauge({
    name: 'airlock_credential_age_seconds',
    // The same on every worker (shared state, or one answer per reference): not summed across a cluster.
    aggregator: 'max',
    help: 'Age of the cached value of each credential reference (how stale it is).',
    labelNames: ['ref'],
    registers,
    collect() {
      this.reset();
      for (const c of sources?.credentials() ?? []) if (c.ageSeconds !== null) this.set({ ref: c.ref }, c.ageSeconds);
    },
  });
  new Gauge({
    name: 'airlock_credential_failing',
    // The same on every worker (shared state, or one answer per reference): not summed across a cluster.
    aggregator: 'max',
    help: '1 when the last fetch of a credential reference from its source failed.',
    labelNames: ['ref'],
    registers,
    collect() {
      this.reset();
      for (const c of sources?.credentials() ?? []) this.set({ ref: c.ref }, c.failing ? 1 : 0);
    },
  });
  new Gauge({
    name: 'airlock_approvals_pending',
    // The same on every worker (shared state, or one answer per reference): not summed across a cluster.
    aggregator: 'max',
    help: 'Approvals waiting for a human decision.',
    registers,
    collect() {
      this.set(sources?.approvalsPending() ?? 0);
    },
  });
  new Gauge({
    name: 'airlock_sessions_active',
    // The same on every worker (shared state, or one answer per reference): not summed across a cluster.
    aggregator: 'max',
    help: 'Live task sessions.',
    registers,
    collect() {
      this.set(sources?.sessionsActive() ?? 0);
    },
  });
  new Gauge({
    name: 'airlock_upstream_connections',
    help: 'Upstream connection pool use by service and state (undici pool stats).',
    labelNames: ['service', 'state'],
    registers,
    collect() {
      this.reset();
      for (const { service, stats } of sources?.pools() ?? []) {
        for (const state of ['connected', 'free', 'pending', 'queued', 'running'] as const) this.set({ service, state }, stats[state]);
      }
    },
  });

  // Envoy's downstream_cx_active: idle keep-alive and slow clients hold connections (and file
  // descriptors) that no request counter shows, up to limits.headers_timeout each.
  new Gauge({
    name: 'airlock_agent_connections',
    help: 'Open agent connections by listener (shared, or the service of its own listener), idle ones included.',
    labelNames: ['listener'],
    registers,
    async collect() {
      const counts = (await sources?.agentConnections?.()) ?? [];
      this.reset();
      for (const { listener, open } of counts) this.set({ listener }, open);
    },
  });

  // cert-manager's certmanager_certificate_expiration_timestamp_seconds, for the same alert: renew
  // before agents start refusing the handshake. Absent without tls: a gauge without labels always has a
  // sample (prom-client's reset puts 0 back), and 0 made `expiry - time() < 7d` fire on every plain-HTTP
  // Airlock (found by a README walkthrough), so the series carries the certificate's subject.
  new Gauge({
    name: 'airlock_tls_certificate_expiry_timestamp_seconds',
    aggregator: 'min',
    help: 'When a served certificate expires (Unix time; alert on it minus time()), by listener (agent: tls, admin: admin.tls) and subject. Absent without tls and admin.tls.',
    labelNames: ['listener', 'subject'],
    registers,
    collect() {
      this.reset();
      for (const certificate of sources?.tlsCertificates?.() ?? []) this.set({ listener: certificate.listener, subject: certificate.subject }, Math.floor(certificate.notAfter / 1000));
    },
  });

  // Found by the observability walkthrough: no process or runtime series, so memory and event-loop
  // saturation could not be alerted on. Read at scrape time only (no timer, unlike prom-client's
  // collectDefaultMetrics, whose event-loop monitor runs for the life of the process). Under `workers`
  // the cluster's /metrics sums memory and CPU, and averages the event loop's utilization.
  const processGauge = (name: string, help: string, aggregator: 'sum' | 'min' | 'average', read: (stats: ProcessStats) => number): void => {
    new Gauge({
      name,
      help,
      aggregator,
      registers,
      collect() {
        const stats = sources?.process?.();
        if (stats === undefined) this.reset();
        else this.set(read(stats));
      },
    });
  };
  new Counter({
    name: 'process_cpu_seconds_total',
    help: 'User and system CPU time of the process, in seconds.',
    registers,
    collect() {
      const stats = sources?.process?.();
      this.reset();
      if (stats !== undefined) this.inc(stats.cpuSeconds);
    },
  });
  processGauge('process_resident_memory_bytes', 'Resident memory of the process, in bytes.', 'sum', (p) => p.residentBytes);
  processGauge('process_start_time_seconds', 'When the process started, in seconds since the Unix epoch.', 'min', (p) => p.startTimeSeconds);
  processGauge('nodejs_heap_used_bytes', 'V8 heap in use, in bytes.', 'sum', (p) => p.heapUsedBytes);
  processGauge('nodejs_eventloop_utilization_ratio', 'Share of the time since the last scrape the event loop was busy (0 to 1).', 'average', (p) => p.eventLoopUtilization);

  // The three metrics every request touches (hot-metrics.ts says why they are not prom-client's own).
  const requests = new HotCounter({
    name: 'airlock_requests_total',
    help: 'Requests by service, route template, decision and error code ("none" when the upstream answered).',
    labelNames: ['service', 'route', 'decision', 'code'],
    registers,
  });
  const requestDuration = new HotHistogram({
    name: 'airlock_request_duration_seconds',
    help: 'Time from the request arriving to its last response byte, by service and route template.',
    labelNames: ['service', 'route'],
    buckets: DURATION_BUCKETS,
    registers,
  });
  const upstreamDuration = new HotHistogram({
    name: 'airlock_upstream_duration_seconds',
    help: 'Time spent on the upstream exchange (dispatch to last byte relayed), by service.',
    labelNames: ['service'],
    buckets: DURATION_BUCKETS,
    registers,
  });
  // Found by the observability walkthrough: an upstream's own 4xx and 5xx reached airlock_requests_total
  // as code "none", the same series as its 200s, so no upstream error rate could be drawn (an expired
  // key's 401s among them). By class, so the label set stays six per service.
  const upstreamResponses = new HotCounter({
    name: 'airlock_upstream_responses_total',
    help: 'Answers from upstreams to forwarded requests, by service and status class (1xx-5xx; "none" when cut before a status line).',
    labelNames: ['service', 'status_class'],
    registers,
  });
  // Label sets are bounded by the config (services x route templates x codes). Found by the label
  // strings themselves, one Map per label, rather than by a key joined per request: building and hashing
  // that key was most of a request's metrics cost (npm run profile). The strings are the config's own
  // (service names, route templates) and the code list's, so their hashes are computed once.
  const bound = new Map<string, Map<string, Map<string, ByDecision>>>();
  const upstreamBound = new Map<string, UpstreamChildren>();

  return {
    registry,
    countRequest(service, route, decision, code, seconds) {
      const byDecision = entryOf(entryOf(entryOf(bound, service, byRoute), route, byCode), code, noDecisions);
      let children = byDecision[decision];
      if (children === null || children === undefined) {
        children = { count: requests.labels(service, route, decision, code), duration: requestDuration.labels(service, route) };
        byDecision[decision] = children;
      }
      children.count.inc();
      children.duration.observe(seconds);
    },
    observeUpstream(service, seconds, status) {
      let children = upstreamBound.get(service);
      if (children === undefined) {
        children = { duration: upstreamDuration.labels(service), byClass: STATUS_CLASSES.map((label) => upstreamResponses.labels(service, label)) };
        upstreamBound.set(service, children);
      }
      children.duration.observe(seconds);
      const statusClass = Math.floor(status / 100);
      (children.byClass[statusClass >= 1 && statusClass <= 5 ? statusClass : 0] as CounterChild).inc();
    },
    credentialCache: new Counter({
      name: 'airlock_credential_cache_total',
      help: 'Credential lookups: hit (fresh), stale (last known good served), miss (fetched), refresh_failure.',
      labelNames: ['result'],
      registers,
    }),
    redactions: new Counter({
      name: 'airlock_redactions_total',
      help: 'Secrets and key shapes replaced in upstream responses before they reached the agent.',
      labelNames: ['service'],
      registers,
    }),
    auditWriteFailures: new Counter({ name: 'airlock_audit_write_failures_total', help: 'Audit writes, or single records, that failed (a failed write refuses new requests until one succeeds, unless audit.on_failure is log).', registers }),
    auditWebhookDropped: new Counter({ name: 'airlock_audit_webhook_dropped_total', help: 'Audit records missing from the audit.webhook copy: dropped while it was 1,000 records behind, or in a batch it refused or could not be sent (they are in the audit file).', registers }),
    reloads: zeroed(new Counter({ name: 'airlock_config_reloads_total', help: 'Configuration reloads, by result (success; partial: applied but for settings only a restart applies; invalid: the running config stays).', labelNames: ['result'], registers }), [
      { result: 'success' },
      { result: 'partial' },
      { result: 'invalid' },
    ]),
    // Found by the TLS walkthrough: a handshake refused (a client below min_version, one that does not
    // trust the certificate) left no trace, so raising min_version showed nobody which agents broke.
    tlsHandshakeFailures: new Counter({
      name: 'airlock_tls_handshake_failures_total',
      help: 'TLS handshakes that failed, by listener (agent: tls, admin: admin.tls) and reason: version (below min_version), certificate (the client refused ours with an alert), reset (the client closed mid-handshake, as node clients do when they do not trust the certificate), cipher, timeout (none within the headers deadline), other.',
      labelNames: ['listener', 'reason'],
      registers,
    }),
    spansDropped: new Counter({ name: 'airlock_trace_spans_dropped_total', help: 'Spans dropped before the OTLP collector took them: it was down, refused them or took longer than 5 s, or 2,048 spans were already waiting for it. They are not retried.', registers }),
    anomalies: zeroed(
      new Counter({ name: 'airlock_anomalies_total', help: 'Anomaly events raised, by rule and action (alert or suspend).', labelNames: ['rule', 'action'], registers }),
      ANOMALY_RULES.flatMap((rule) => [{ rule, action: 'alert' }, { rule, action: 'suspend' }]),
    ),
    bind(live) {
      sources = live;
    },
  };
}

/**
 * A counter with its known label sets at 0 from the start (found by the observability walkthrough: a
 * series born at 1 makes `increase(...) > 0` miss its first event on every replica).
 */
function zeroed<T extends string>(counter: Counter<T>, labelSets: ReadonlyArray<Partial<Record<T, string>>>): Counter<T> {
  for (const labels of labelSets) counter.inc(labels, 0);
  return counter;
}

/** The anomaly detector's rules: every one of AnomalyRule (the compiler checks the list is whole). */
const ANOMALY_RULES = Object.keys({ rate_spike: 1, volume_spike: 1, new_route: 1, new_scope: 1, denial_burst: 1, off_hours: 1, new_client_address: 1 } satisfies Record<AnomalyRule, 1>) as AnomalyRule[];

/** Index = the status's hundreds digit; 0 for no status. */
const STATUS_CLASSES = ['none', '1xx', '2xx', '3xx', '4xx', '5xx'] as const;

interface UpstreamChildren {
  readonly duration: HistogramChild;
  readonly byClass: readonly CounterChild[];
}

interface RequestChildren {
  readonly count: CounterChild;
  readonly duration: HistogramChild;
}

type ByDecision = Record<'allow' | 'deny', RequestChildren | null>;

function byRoute(): Map<string, Map<string, ByDecision>> {
  return new Map();
}

function byCode(): Map<string, ByDecision> {
  return new Map();
}

function noDecisions(): ByDecision {
  return { allow: null, deny: null };
}

/** The entry under `key`, made by `make` on first use. */
function entryOf<V>(map: Map<string, V>, key: string, make: () => V): V {
  let value = map.get(key);
  if (value === undefined) {
    value = make();
    map.set(key, value);
  }
  return value;
}
