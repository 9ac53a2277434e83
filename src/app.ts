/**
 * The composition root: everything Airlock runs is built here from a validated config and handed
 * down. No globals, no import-time side effects; tests start as many proxies as they like, each with
 * its own environment, log destination and clock.
 *
 * Two lifetimes:
 *  - durable parts live as long as the process: listeners, the audit log, governance state (and its
 *    Redis connection), metrics, the secret catalogue, rate buckets, the kill switch;
 *  - a generation is what a config compiles to: policy, upstream pools, the credential broker, JWT
 *    verification, the approval broker, tracing. A reload builds a new generation from a validated
 *    config and swaps it in at once; requests already running finish on the old one, which is closed
 *    when its last request ends. What only a restart can change (listen addresses, data_dir, audit,
 *    state, workers, limits) keeps its running value, and the rest of the new config applies.
 */
import { once, setMaxListeners } from 'node:events';
import { accessSync, constants } from 'node:fs';
import type { Server } from 'node:http';
import type { Server as HttpsServer } from 'node:https';
import type { AddressInfo } from 'node:net';
import { join } from 'node:path';
import type { Logger } from 'pino';
import type { Registry } from 'prom-client';
import type { Pool } from 'undici';
import { createAdminServer, type AdminChange, type AdminContext, type SharedStateView } from './admin/admin-api.js';
import { adminDirectory } from './admin/authenticate-admin.js';
import { adminHostNames } from './admin/check-admin-host.js';
import { workerCount } from './config/worker-count.js';
import { parseListen, type AdminSpec, type ListenerTlsSpec } from './config/schema.js';
import type { AirlockConfig, DeepReadonly, ServiceConfig } from './config/types.js';
import { createCredentialBroker, type CredentialBroker } from './credentials/credential-broker.js';
import { loadMasterKey } from './credentials/master-key.js';
import { TokenHashes } from './identity/token-hashes.js';
import { JwtVerifier } from './identity/jwt-verifier.js';
import { createListener } from './ingress/create-listener.js';
import { readTlsIdentity, type TlsIdentity } from './ingress/tls-identity.js';
import { AirlockError } from './errors.js';
import { AuditLog } from './observability/audit-log.js';
import { IsoTime } from './observability/iso-time.js';
import { createLogging, type LogDestination, type RequestLog } from './observability/logger.js';
import { createMetrics, type Metrics, type ProcessStats } from './observability/metrics.js';
import { createTracing, type Tracing } from './observability/tracing.js';
import { AnomalyDetector, type AnomalyEvent } from './policy/anomaly-detector.js';
import { ApprovalBroker } from './policy/approval-broker.js';
import { createApprovalNotifier } from './policy/approval-webhook.js';
import { allCredentialPlans, allSecretRefs, compilePolicy, identifierRefs, storeLoginRefs, type Policy } from './policy/compile-policy.js';
import { KillSwitch } from './policy/kill-switch.js';
import { compileRateLimitFields } from './policy/rate-limit-fields.js';
import { ConcurrencyGate, type RateLimiter } from './policy/rate-limiter.js';
import { createAnomalyResponder, DETECTOR_IDENTITY } from './policy/respond-to-anomaly.js';
import type { ProxyRuntime } from './pipeline/proxy-runtime.js';
import { auditRequest } from './pipeline/record-outcome.js';
import { createClientAddressResolver } from './ingress/resolve-client-address.js';
import { createRawRefusalHandler, createRequestHandler, newRecord } from './pipeline/run-pipeline.js';
import type { ListenerBinding } from './pipeline/select-service.js';
import { SecretCatalog, type GuardScope } from './redaction/secret-catalog.js';
import { FileStateBackend } from './state/file-backend.js';
import type { GovernanceEvent, Revocation } from './state/governance-records.js';
import { GovernanceState } from './state/governance-state.js';
import { MemoryRateLimiter } from './state/memory-rate-limiter.js';
import type { RedisStateBackend } from './state/redis-backend.js';
import { RedisRateLimiter } from './state/redis-rate-limiter.js';
import { otherWorkerOwners, restrictionFileOwner, UnsavedRestrictionFiles } from './state/unsaved-restriction-files.js';
import { ConnectionGate } from './upstream/connection-gate.js';
import { createOriginPool } from './upstream/origin-pool.js';
import { cgiHeaderName } from './upstream/outbound-request.js';
import { environmentProblems } from './config/assess-environment.js';
import { makePrivateDir } from './state/make-private-dir.js';
import { managedSecretIn } from './pipeline/guard-request-secrets.js';
import { parserReadsMalformedNames } from './ingress/parser-leniency.js';

/** Reported in spans (service.version) and the admin API. */
export const AIRLOCK_VERSION = '0.1.0';

export interface AirlockOptions {
  /** The environment env: references read (main.ts passes process.env). */
  readonly env: Readonly<Record<string, string | undefined>>;
  readonly logDestination: LogDestination;
  readonly now?: () => Date;
  /** node's own flags (process.execArgv), checked with the environment at start-up. */
  readonly nodeFlags?: readonly string[];
  /** This process's CPU, memory and event-loop figures for /metrics (main.ts reads them from `process`). */
  readonly processStats?: () => ProcessStats;
  /** The version of node's HTTP parser (process.versions.llhttp); unknown, header names are checked as on llhttp 8 (parser-leniency.ts). */
  readonly httpParser?: string;
  /** Under `workers`: builds the /metrics text of the whole cluster from this worker's registry. */
  readonly clusterMetrics?: (registry: Registry) => () => Promise<string>;
  /**
   * Under `workers`: passes restrictions this worker could not write to Redis to the other workers, and
   * hears theirs (run-cluster.ts restrictionChannel).
   */
  readonly clusterRestrictions?: {
    publish(event: GovernanceEvent): void;
    /** What arrives is checked by GovernanceState.adopt, not trusted. */
    onRelayed(listener: (event: unknown) => void): () => void;
  } | null;
}

/** `restartNeeded`: the changed settings only a restart applies (keepRestartOnly), kept as they run. */
export type ReloadResult = { readonly ok: true; readonly restartNeeded?: readonly string[] } | { readonly ok: false; readonly reason: string };

export interface RunningAirlock {
  /** http://host:port of the shared agent listener. */
  readonly url: string;
  /** http://host:port of each service that has its own listener. */
  readonly serviceUrls: Readonly<Record<string, string>>;
  /** http://host:port of the admin API, or null when admin is not configured. */
  readonly adminUrl: string | null;
  /** The policy in force (after reloads, the latest). */
  readonly policy: Policy;
  /** The lockdown in force (`revoke all`), kept across restarts, or null. */
  lockdown(): Revocation | null;
  readonly logger: Logger;
  readonly metrics: Metrics;
  /** Swaps in a new, already validated config; what only a restart could apply keeps its running value. */
  reload(config: AirlockConfig): Promise<ReloadResult>;
  /**
   * Stops accepting, lets requests in flight finish up to `deadlineMs` (default shutdown_timeout), then
   * closes everything. Called again while closing with 0, it cuts the requests still in flight now.
   */
  close(deadlineMs?: number): Promise<void>;
  /** shutdown_timeout in force (a reload may have changed it), in seconds. */
  shutdownTimeout(): number;
  /** False while the audit log cannot be written (its last write failed). */
  auditWritable(): boolean;
}

/** Requests in flight across every generation: shutdown writes airlock:stop after their records. */
class InflightRequests {
  #count = 0;
  #idle: Array<() => void> = [];

  enter(): void {
    this.#count++;
  }

  leave(): void {
    if (--this.#count === 0) for (const resolve of this.#idle.splice(0)) resolve();
  }

  /** Resolves when no request is in flight, or after timeoutMs (a pipeline stuck past its cut). */
  settled(timeoutMs: number): Promise<void> {
    if (this.#count === 0) return Promise.resolve();
    return new Promise((resolve) => {
      const timer = setTimeout(resolve, timeoutMs);
      this.#idle.push(() => {
        clearTimeout(timer);
        resolve();
      });
    });
  }
}

interface Durable {
  readonly inflight: InflightRequests;
  readonly tokenHashes: TokenHashes;
  /** Epoch milliseconds: Date.now, or the test's clock. */
  readonly nowMs: () => number;
  readonly isoTime: IsoTime;
  readonly env: AirlockOptions['env'];
  readonly catalog: SecretCatalog;
  readonly logger: Logger;
  readonly requestLog: RequestLog;
  readonly metrics: Metrics;
  readonly metricsText: () => Promise<string>;
  readonly redis: RedisStateBackend | null;
  readonly audit: AuditLog;
  readonly state: GovernanceState;
  readonly killSwitch: KillSwitch;
  readonly rateLimiter: RateLimiter;
  readonly concurrency: ConcurrencyGate;
  readonly staleAfterMs: number;
  /** node's HTTP parser reads malformed header names (llhttp 8): the pipeline checks them (parser-leniency.ts). */
  readonly checkHeaderNames: boolean;
  /** Set once the admin listener is bound: where the console is, for links. */
  boundAdminUrl: string | null;
  /** Set when shutdown cuts the connections still open (its deadline, or a second stop signal). */
  cutForStop: boolean;
  /**
   * Fired with cutForStop: every generation's broker gives up the fetches under way (credential-broker.ts
   * BrokerOptions.cut), so a request waiting for a credential then is answered 503 before the connections
   * close. Such a request is not yet a LiveExchange, which refuseWaiting answers.
   */
  readonly cut: AbortController;
  readonly anomalies: AnomalyDetector;
  anomaliesSpec: string;
}

interface Generation {
  readonly config: AirlockConfig;
  readonly policy: Policy;
  readonly pools: ReadonlyMap<string, Pool>;
  readonly secrets: CredentialBroker;
  readonly approvals: ApprovalBroker;
  readonly tracing: Tracing;
  readonly runtime: ProxyRuntime;
  readonly admin: AdminContext | null;
  /** The certificate and key the agent listeners present (config tls), read again by each reload. */
  readonly tls: TlsIdentity | null;
  /** The admin listener's (admin.tls), likewise. */
  readonly adminTls: TlsIdentity | null;
  inflight: number;
  retired: boolean;
  closed: Promise<void> | null;
}

/**
 * data_dir as a directory Airlock can use, made (0700) if it is missing: the audit log, the state and
 * the secrets each made it on their own and failed with a bare errno ("EEXIST: file already exists,
 * mkdir") when a file was in its way, after `airlock check` had passed.
 */
function prepareDataDir(dir: string): void {
  try {
    // As mkdir -p: afterwards dir is a directory, or this threw (EEXIST when a file is there).
    makePrivateDir(dir);
  } catch (error) {
    const code = (error as NodeJS.ErrnoException).code;
    const why =
      code === 'EEXIST' || code === 'ENOTDIR'
        ? 'a file or a broken symbolic link is in the way (it or a parent is not a directory)'
        : code === 'EROFS'
          ? 'it would be on a read-only file system (in a container, mount a writable volume there)'
          : code === 'EACCES'
          ? 'this user may not create it there'
          : code === 'ENOENT'
            ? 'the file system there does not let directories be made (such as /proc or /sys)'
            : (error as Error).message;
    throw new Error(`data_dir ${dir} cannot be made: ${why}; set data_dir to a directory Airlock can write`);
  }
  // Made, or there already, but perhaps not writable: said here in these words rather than as the raw
  // EROFS or EACCES of the first file opened in it (found by the ops walkthrough).
  try {
    accessSync(dir, constants.W_OK | constants.X_OK);
  } catch (error) {
    const code = (error as NodeJS.ErrnoException).code;
    const why = code === 'EROFS' ? 'is on a read-only file system (in a container, mount a writable volume there)' : 'exists and this user may not write in it; fix its owner or mode';
    throw new Error(`data_dir ${dir} ${why}; or set data_dir to a directory Airlock can write`);
  }
}

/**
 * Connections the kernel queues for accept (capped by net.core.somaxconn). node's default, 511,
 * overflowed under a burst (a fleet of agents reconnecting at once, the 10,000-connection test) while
 * the event loop was busy: with SYN cookies the client then believes it is connected, and Airlock never
 * sees that connection until it sends, which flaked the test one run in four or five.
 */
const LISTEN_BACKLOG = 4096;

async function listen(server: Server, address: string, setting: string, logger: Logger, scheme: 'http' | 'https' = 'http'): Promise<string> {
  const parsed = parseListen(address);
  if (parsed === null) throw new Error(`invalid listen address ${address}`);
  server.listen({ port: parsed.port, host: parsed.host, backlog: LISTEN_BACKLOG });
  try {
    // events.once rejects with the 'error' event's error (EADDRINUSE, ENOTFOUND, ...). Raced against a
    // once('error') before, that rejection won, and the hints below were never shown.
    await once(server, 'listening');
  } catch (error) {
    const code = (error as NodeJS.ErrnoException).code;
    const hint =
      code === 'EADDRINUSE'
        ? `another process uses this port; stop it or change ${setting} in the config`
        : code === 'ENOTFOUND' || code === 'EAI_AGAIN'
          ? 'the host name does not resolve on this machine; use an IP address such as 127.0.0.1 or a name it resolves'
          : code === 'EADDRNOTAVAIL'
            ? 'no network interface of this machine has that address; use one it has, such as 127.0.0.1'
            : code === 'EACCES'
              ? 'ports below 1024 need privileges; use a higher port'
              : (error as Error).message;
    // The setting is named (found by the ops walkthrough: three settings take an address, and the
    // message did not say which one clashed).
    throw new Error(`cannot listen on ${address} (${setting}): ${hint}`);
  }
  // Once listening, nothing would hear a later error, which would end the process: an accept that fails
  // (ENOBUFS, ENOMEM) is logged, and listening goes on.
  server.on('error', (error) => logger.error({ err: error, listen: address }, 'the listener reported an error'));
  const bound = server.address() as AddressInfo;
  const host = bound.family === 'IPv6' ? `[${bound.address}]` : bound.address;
  return `${scheme}://${host}:${bound.port}`;
}

/**
 * The listeners' certificate and key, or the reason they cannot be served (start-up stops, a reload
 * keeps the running ones). Warnings (a certificate near its end, a key other users can read) are
 * logged at each start and reload, where an operator who never runs `check` sees them.
 */
function loadTlsIdentity(spec: DeepReadonly<ListenerTlsSpec>, nowMs: number, logger: Logger, setting: 'tls' | 'admin.tls'): TlsIdentity {
  const { identity, problems } = readTlsIdentity(spec, nowMs, { key: true, clients: setting === 'admin.tls' ? 'operators (the CLI, browsers, scrapers)' : 'agents' });
  for (const problem of problems) {
    if (problem.severity === 'warning') logger.warn({ setting: `${setting}.${problem.field}` }, problem.message);
  }
  if (identity === null) throw new Error(`${setting}: ${problems.map((problem) => `${problem.field}: ${problem.message}`).join('; ')}`);
  return identity;
}

/**
 * Resolve every configured secret once, so the request guard and the "service"/"all" redaction scopes
 * know them before their first use. A secret that is not available yet is not an error here: requests
 * that need it get 503 until it is, and the catalogue learns it then.
 */
async function warmCatalog(secrets: CredentialBroker, refs: readonly string[], logger: Logger): Promise<void> {
  // async: resolve answers a cached value at once, a promise otherwise, and may throw; each attempt is
  // one promise of "learnt" (null) or the reference that is not available yet.
  const attempts = refs.map(async (ref) => {
    try {
      await secrets.resolve(ref);
      return null;
    } catch {
      return ref;
    }
  });
  // A slow or down store must not hold start-up: what is not known after a moment is learnt on first use.
  // The timer is cleared once the attempts settle: left to run, it kept this generation's broker (and
  // its caches) alive for its 2 s after every reload (found by a test of many reloads: 0.6-0.9 MB each).
  let timer: NodeJS.Timeout | undefined;
  const settled = await Promise.race([Promise.all(attempts), new Promise<null>((resolve) => (timer = setTimeout(() => resolve(null), WARM_UP_WAIT_MS).unref()))]);
  clearTimeout(timer);
  const missing = settled === null ? null : settled.filter((ref): ref is string => ref !== null);
  if (missing === null) logger.warn('some credential stores are slow to answer; Airlock started anyway and will fetch on first use');
  else if (missing.length > 0) logger.warn({ credentials: missing }, 'some credentials are not available yet; requests that need them get 503 until they are');
}

const WARM_UP_WAIT_MS = 2_000;

/** The key replicas seal shared OAuth2 tokens with; without one, tokens are not shared (only fetches serialized). */
function sharedMasterKey(dataDir: string, env: Readonly<Record<string, string | undefined>>, logger: Logger): Buffer | null {
  try {
    const key = loadMasterKey({ dataDir, env, create: false });
    if (key === null) logger.warn('no master key (AIRLOCK_MASTER_KEY): replicas will not share OAuth2 tokens through Redis, only take turns fetching them');
    return key;
  } catch (error) {
    logger.warn({ err: error }, 'the master key cannot be read: OAuth2 tokens are not shared through Redis');
    return null;
  }
}

/**
 * `after` with the settings only a restart can change kept as they run, and the names of those that
 * differ: the rest of the file applies. One list, so a setting named as waiting for a restart is also
 * the one kept. A whole file was refused before, so a restart-only edit left pending (limits, an admin
 * block added) silently kept every later save out too, a scope or token removed among them (found by a
 * fresh-user walkthrough). A service's own listener stays bound to its name (a service removed answers
 * 404 there); a new service's `listen` waits for the restart (it is reached by its prefix until then);
 * an admin block removed keeps its listener with no token admitted; one added waits for the restart.
 */
/**
 * A reloaded admin block on the running listener: its address, and HTTPS on or off, wait for a restart
 * as the agent listeners' do; a new certificate or min_version applies.
 */
function keptAdminTls(before: DeepReadonly<AdminSpec>, after: DeepReadonly<AdminSpec>): DeepReadonly<AdminSpec> {
  const { tls: _wanted, ...rest } = after;
  let tls = (before.tls === undefined) === (after.tls === undefined) ? after.tls : before.tls;
  // Asking for client certificates is the server's setting, not its certificate's: on or off waits too;
  // a new client CA file applies.
  if (tls !== undefined && tls === after.tls && (before.tls?.client_ca_file === undefined) !== (after.tls?.client_ca_file === undefined)) {
    const { client_ca_file: _asked, ...certificate } = tls;
    tls = before.tls?.client_ca_file === undefined ? certificate : { ...certificate, client_ca_file: before.tls.client_ca_file };
  }
  return { ...rest, listen: before.listen, ...(tls === undefined ? {} : { tls }) };
}

function keepRestartOnly(before: AirlockConfig, after: AirlockConfig): { config: AirlockConfig; changed: string[] } {
  const changed: string[] = [];
  const differs = (name: string, running: unknown, wanted: unknown): void => {
    if (JSON.stringify(running) !== JSON.stringify(wanted)) changed.push(name);
  };
  const listens = (c: AirlockConfig): Record<string, string | undefined> => Object.fromEntries(Object.values(c.services).map((s) => [s.name, s.listen]).filter(([, l]) => l !== undefined));
  differs('listen', before.listen, after.listen);
  differs('services.*.listen', listens(before), listens(after));
  differs('admin.listen', before.admin?.listen ?? null, after.admin?.listen ?? null);
  differs('data_dir', before.data_dir, after.data_dir);
  differs('audit', before.audit, after.audit);
  differs('state', before.state, after.state);
  differs('workers', before.workers, after.workers);
  differs('limits', before.limits, after.limits);
  // HTTPS on or off changes what the listeners are; a new certificate or min_version is applied live.
  differs('tls (on or off)', before.tls === null, after.tls === null);
  differs('admin.tls (on or off)', before.admin?.tls === undefined, after.admin?.tls === undefined);
  differs('admin.tls.client_ca_file (on or off)', before.admin?.tls?.client_ca_file === undefined, after.admin?.tls?.client_ca_file === undefined);
  if (changed.length === 0) return { config: after, changed };
  const services: Record<string, ServiceConfig> = {};
  for (const [name, service] of Object.entries(after.services)) {
    const running = before.services[name]?.listen;
    const { listen: _waits, ...rest } = service;
    services[name] = Object.freeze(running === undefined ? rest : { ...rest, listen: running });
  }
  const admin = before.admin === null ? null : after.admin === null ? { ...before.admin, tokens: [] } : keptAdminTls(before.admin, after.admin);
  const config = Object.freeze({
    ...after,
    listen: before.listen,
    data_dir: before.data_dir,
    audit: before.audit,
    state: before.state,
    workers: before.workers,
    limits: before.limits,
    tls: (before.tls === null) === (after.tls === null) ? after.tls : before.tls,
    admin: admin === null ? null : Object.freeze(admin),
    services: Object.freeze(services),
  });
  return { config, changed };
}

/** What a generation being built owns so far: closed again when building it fails. */
interface GenerationParts {
  pools?: ReadonlyMap<string, Pool>;
  secrets?: CredentialBroker;
  tracing?: Tracing;
}

/**
 * A generation from a config, or, when building it fails, nothing left behind (found by review: a
 * reload that failed after its broker had taken Vault leases left them renewed for ever and never
 * revoked, with its pools and token timers, once per failed save of the file).
 */
async function buildGeneration(config: AirlockConfig, durable: Durable, previous: Generation | null): Promise<Generation> {
  const parts: GenerationParts = {};
  try {
    return await assembleGeneration(config, durable, previous, parts);
  } catch (error) {
    const steps: Array<() => Promise<unknown>> = [
      () => Promise.all([...(parts.pools?.values() ?? [])].map((pool) => pool.destroy())),
      () => parts.secrets?.close() ?? Promise.resolve(),
      () => (parts.tracing === undefined || parts.tracing === previous?.tracing ? Promise.resolve() : parts.tracing.shutdown()),
    ];
    for (const step of steps) await step().catch((cleanup: unknown) => durable.logger.warn({ err: cleanup }, 'closing what a configuration that failed to build had opened failed'));
    throw error;
  }
}

/**
 * Tracing for a config, its callbacks made here rather than in assembleGeneration: a tracer outlives the
 * generation that made it (kept while the telemetry config is unchanged), and closures made there would
 * keep that generation, its broker and the values it cached, alive with it (found by review).
 */
function tracingFor(config: AirlockConfig, durable: Durable): Promise<Tracing> {
  const { logger, catalog, metrics } = durable;
  // Each cause said at most once a minute (a collector that is down fails every batch, twice a second);
  // per cause, so a queue that fills after a first export timed out is still said (found on a loaded CI
  // run: the timeout's line came first, and the queue-full line was held back for the minute).
  const warnedAt = new Map<string, number>();
  return createTracing({
    telemetry: config.telemetry,
    env: durable.env,
    version: AIRLOCK_VERSION,
    onEnvProblem: (message) => logger.warn(message),
    scrub: (text) => catalog.scrub(text),
    onExportFailure(spans, error) {
      metrics.spansDropped.inc(spans);
      // The error's own words may hold the collector's URL, userinfo and all: its name and code only.
      const cause = error instanceof Error ? `${error.name}${(error as { code?: unknown }).code === undefined ? '' : ` (${String((error as { code?: unknown }).code)})`}` : 'unknown';
      const now = performance.now();
      if (now - (warnedAt.get(cause) ?? -Infinity) < 60_000) return;
      warnedAt.set(cause, now);
      logger.warn(
        { spans, cause },
        cause === 'ExportQueueFull'
          ? 'spans are dropped: 2,048 were already waiting for the OTLP collector, which is slower than the traffic (airlock_trace_spans_dropped_total counts them; said at most once a minute). Requests are not affected: check the collector, or lower telemetry.sampling'
          : 'the OTLP collector did not take a batch of spans; they are dropped (airlock_trace_spans_dropped_total counts them; said at most once a minute). Requests are not affected: check telemetry.otlp.endpoint and the collector',
      );
    },
  });
}

async function assembleGeneration(config: AirlockConfig, durable: Durable, previous: Generation | null, parts: GenerationParts): Promise<Generation> {
  const { nowMs, logger, metrics, catalog, state, audit, redis } = durable;
  const policy = compilePolicy(config);
  const tls = config.tls === null ? null : loadTlsIdentity(config.tls, nowMs(), logger, 'tls');
  const adminTls = config.admin?.tls === undefined || config.admin === null ? null : loadTlsIdentity(config.admin.tls, nowMs(), logger, 'admin.tls');
  // Before anything that holds resources: the keys are parsed here (the schema checked them too).
  const jwt = new JwtVerifier(Object.values(config.agents), nowMs);
  const pools = new Map<string, Pool>();
  parts.pools = pools;
  for (const service of policy.services) pools.set(service.name, createOriginPool(service.config, service.upstream));
  // A service whose upstream and max_connections a reload left as they were keeps its gate: the
  // requests still running on the old generation's pool count against the same max_connections
  // (found by review: during a reload the upstream saw up to twice as many at once). A loop, not a
  // callback: a closure naming `previous` would put it in this function's shared context, which the
  // runtime's closures keep, and every generation would keep the one before (reload-memory.test.ts).
  const gates = new Map<string, ConnectionGate>();
  for (const service of policy.services) {
    const before = previous?.policy.serviceByName.get(service.name);
    const kept = before !== undefined && before.upstream.origin === service.upstream.origin && before.config.max_connections === service.config.max_connections ? previous?.runtime.gates.get(service.name) : undefined;
    gates.set(service.name, kept ?? new ConnectionGate(service.config.max_connections));
  }

  const secrets = createCredentialBroker(config, {
    env: durable.env,
    // The proxy's one clock: cache ages, staleness and leases read the same time as sessions and audit.
    now: nowMs,
    catalog,
    logger,
    plans: allCredentialPlans(policy),
    onCacheEvent: (event) => metrics.credentialCache.inc({ result: event }),
    cut: durable.cut.signal,
    // The last good values go on across a reload (a store down at that moment must not turn them into 503s).
    ...(previous === null ? {} : { previous: { broker: previous.secrets, config: previous.config } }),
    // Only with OAuth2 clients to share tokens of (found by an ops walkthrough: every Redis replica
    // warned of a master key it had no use for).
    ...(redis === null || config.state.type !== 'redis' || Object.keys(config.secrets.oauth2).length === 0
      ? {}
      : { sharedTokens: { redis: redis.client, prefix: config.state.prefix, masterKey: sharedMasterKey(config.data_dir, durable.env, logger) } }),
  });
  parts.secrets = secrets;
  await warmCatalog(secrets, allSecretRefs(policy), logger);

  const sameTelemetry = previous !== null && JSON.stringify(previous.config.telemetry) === JSON.stringify(config.telemetry);
  const tracing = sameTelemetry ? previous.tracing : await tracingFor(config, durable);
  parts.tracing = tracing;

  // The console's address: admin.public_url, else the admin listener as bound. None when no token can
  // sign in to it: an admin block removed by a reload keeps its listener until the restart, admitting
  // nobody (keepRestartOnly), and a link there would send approvers to a console that refuses them.
  const consoleUrl = (): string | null => (config.admin === null || config.admin.tokens.length === 0 ? null : (config.admin.public_url ?? durable.boundAdminUrl));
  const approvals = new ApprovalBroker(state, {
    maxPending: config.approvals.max_pending,
    maxPendingPerAgent: config.approvals.max_pending_per_agent,
    consoleUrl,
    notify: createApprovalNotifier(
      config.approvals.webhook,
      logger,
      (id) => {
        const base = consoleUrl();
        return base === null ? null : `${base.replace(/\/$/, '')}/#approval-${id}`;
      },
      (text) => catalog.scrub(text),
    ),
    // The catalogue outlives generations: the scrub knows every value learnt, whichever config asked.
    preview: { bytes: config.approvals.preview_bytes, scrub: (text) => catalog.scrub(text) },
    now: nowMs,
  });

  const generation: Generation = {
    config,
    policy,
    pools,
    secrets,
    approvals,
    tracing,
    runtime: null as unknown as ProxyRuntime,
    admin: null,
    tls,
    adminTls,
    inflight: 0,
    retired: false,
    closed: null,
  };

  const mintRate = config.limits.session_mint_rate;
  // Anomaly events and admin changes go into the audit trail: who, what, why.
  const auditAnomaly = async (event: AnomalyEvent): Promise<void> => {
    const record = newRecord(runtime, null, undefined);
    Object.assign(record, {
      agent: event.agent,
      service: event.service,
      route: `anomaly:${event.rule}`,
      decision: event.action === 'suspend' ? 'deny' : 'allow',
      actor: DETECTOR_IDENTITY,
      reason: `${event.summary} (${event.id}, action ${event.action}${typeof event.evidence['request_id'] === 'string' ? `, raised by request ${event.evidence['request_id']}` : ''})`,
      // The trace of the request that raised it, so the record joins that trace in a dashboard.
      trace_id: typeof event.evidence['trace_id'] === 'string' ? event.evidence['trace_id'] : null,
    });
    await auditRequest(runtime, record, performance.now());
  };

  const exempt = identifierRefs(config, policy);
  const guard: GuardScope = { key: `guard|${[...exempt].sort().join('|')}`, exempt };
  // One reading of the shared state for /_airlock/ready and the admin API's /v1/health, stale as
  // checkStateFresh refuses requests (found by review: `airlock status` said ok while readiness said
  // 503 and every request was refused 503 state_unavailable).
  const sharedState = (): SharedStateView => {
    const since = state.unreachableSince;
    return {
      type: redis === null ? 'memory' : 'redis',
      unreachableSince: since,
      stale: since !== null && nowMs() - since > durable.staleAfterMs,
      staleAfterSeconds: redis === null ? null : durable.staleAfterMs / 1000,
    };
  };
  const runtime: ProxyRuntime = Object.freeze({
    policy,
    pools,
    gates,
    secrets,
    catalog,
    guard,
    metrics,
    audit,
    logger,
    requestLog: durable.requestLog,
    state,
    jwt,
    tokenHashes: durable.tokenHashes,
    approvals,
    killSwitch: durable.killSwitch,
    rateLimiter: durable.rateLimiter,
    concurrency: durable.concurrency,
    sessionMints: previous?.runtime.sessionMints ?? new ConcurrencyGate(),
    anomalies: durable.anomalies,
    respondToAnomaly: createAnomalyResponder({ state, logger, counter: metrics.anomalies, webhook: config.anomalies.webhook ?? null, scrub: (text) => catalog.scrub(text), audit: auditAnomaly }),
    tracing,
    limits: Object.freeze({
      maxHeaders: config.limits.max_headers,
      checkHeaderNames: durable.checkHeaderNames,
      maxBodyBytes: config.limits.max_body_bytes,
      maxApprovalBodyBytes: config.approvals.max_body_bytes,
      // As the request's names are read (cgiHeaderName): a name configured as x_tenant never matched
      // the x-tenant every sent spelling is read as, so it was neither bound nor shown (found by review).
      approvalHeaders: Object.freeze([...new Set(config.approvals.bind_headers.map((name) => cgiHeaderName(name.toLowerCase())))]),
      maxSessionsPerAgent: config.limits.max_sessions_per_agent,
      sessionMintBucket: Object.freeze({ capacity: mintRate.burst ?? mintRate.requests, refillPerMs: mintRate.requests / (mintRate.per * 1000) }),
      sessionMintRate: Object.freeze({ requests: mintRate.requests, per: mintRate.per, fields: compileRateLimitFields('session_mint_rate', mintRate) }),
      stateStaleAfterMs: durable.staleAfterMs,
    }),
    cutForStop: () => durable.cutForStop,
    readiness: () => {
      const checks: Record<string, string> = {};
      let ready = true;
      checks['audit'] = audit.healthy ? 'writable' : config.audit.on_failure === 'log' ? 'failing (on_failure: log)' : 'failing';
      if (!audit.healthy && config.audit.on_failure === 'refuse') ready = false;
      // States and counts only: /_airlock/ready answers anyone who reaches the agent listener, with no
      // token, and it named the failing credential references and how long Redis had been down (found
      // by review). The admin API names the credentials and their errors (/v1/credentials); the log
      // says when Redis was lost and when it is back (redis-backend.ts).
      const shared = sharedState();
      checks['state'] = shared.type === 'memory' ? 'embedded' : shared.unreachableSince === null ? 'redis reachable' : 'redis unreachable';
      if (shared.stale) ready = false;
      let failing = 0;
      for (const credential of secrets.status()) if (credential.failing) failing++;
      checks['credentials'] = failing === 0 ? 'ok' : `failing (${failing})`;
      return { ready, checks };
    },
    inflight: {
      enter() {
        generation.inflight++;
        durable.inflight.enter();
      },
      leave() {
        generation.inflight--;
        durable.inflight.leave();
        if (generation.retired && generation.inflight === 0) void closeGeneration(generation, durable, false);
      },
    },
    nowMs,
    isoTime: durable.isoTime,
    clientAddress: createClientAddressResolver(config.trusted_proxies),
  });
  (generation as { runtime: ProxyRuntime }).runtime = runtime;

  if (config.admin !== null) {
    const auditChange = async (change: AdminChange): Promise<void> => {
      const record = newRecord(runtime, change.method, undefined);
      Object.assign(record, {
        agent: change.agent,
        session: change.session,
        service: change.service,
        credential: change.credential,
        approval: change.approval,
        path: change.path,
        route: change.route,
        decision: 'allow',
        status: change.status,
        actor: change.actor,
        reason: change.reason,
      });
      if (!(await auditRequest(runtime, record, performance.now()))) throw new Error('the audit log cannot be written; the change was made but not audited');
    };
    (generation as { admin: AdminContext | null }).admin = {
      directory: adminDirectory(config.admin.tokens),
      hosts: adminHostNames(config.admin.hosts, config.admin.public_url, parseListen(config.admin.listen)?.host ?? ''),
      metrics: metrics.registry,
      metricsText: durable.metricsText,
      broker: secrets,
      audit,
      catalog,
      logger,
      policy,
      refreshable: new Set([...allSecretRefs(policy), ...storeLoginRefs(config)]),
      guard,
      state,
      approvals,
      anomalies: durable.anomalies,
      auditChange,
      now: nowMs,
      certificate: tls === null ? null : { subject: tls.subject, names: tls.names, notAfter: tls.notAfter },
      adminCertificate: adminTls === null ? null : { subject: adminTls.subject, names: adminTls.names, notAfter: adminTls.notAfter },
      sharedState,
    };
  }
  return generation;
}

/**
 * Closes what a generation owns (pools, the broker's timers and leases, tracing if not shared). A
 * retired generation has no request left, so its pools close gracefully; at shutdown, after the
 * deadline, whatever is still open upstream is destroyed.
 */
function closeGeneration(generation: Generation, durable: Durable, shutdownTracing: boolean, destroyPools = false): Promise<void> {
  generation.closed ??= (async () => {
    // Callers do not wait for this (a generation retires when its last request ends): a rejection left
    // unhandled would end the process, so whatever fails is logged here.
    // Each step runs whatever the one before did (a pool that fails to close must not keep Vault leases
    // from being revoked).
    const steps: Array<[string, () => Promise<unknown>]> = [
      ['its upstream pools', () => Promise.all([...generation.pools.values()].map((pool) => (destroyPools ? pool.destroy() : pool.close().catch(() => pool.destroy()))))],
      ['its credential stores', () => generation.secrets.close()],
      ['its tracing', () => (shutdownTracing ? generation.tracing.shutdown() : Promise.resolve())],
    ];
    for (const [what, step] of steps) {
      try {
        await step();
      } catch (error) {
        durable.logger.warn({ err: error }, `closing ${what} of a previous configuration failed; its connections may linger until they time out`);
      }
    }
    durable.logger.debug('a previous configuration generation was closed');
  })();
  return generation.closed;
}

export async function startAirlock(config: AirlockConfig, options: AirlockOptions): Promise<RunningAirlock> {
  const unsafe = environmentProblems({ env: options.env, ...(options.nodeFlags === undefined ? {} : { nodeFlags: options.nodeFlags }), usesRedis: config.state.type === 'redis' });
  if (unsafe.length > 0) throw new Error(`the environment would expose credentials or skip checks, so Airlock does not start:\n  - ${unsafe.join('\n  - ')}`);
  const clock = options.now;
  // No Date per call unless a test brings its own clock (several reads per request).
  const nowMs = clock === undefined ? Date.now : () => clock().getTime();
  const catalog = new SecretCatalog();
  const { logger, requestLog } = createLogging(config.log.level, options.logDestination, catalog, config.log.requests);
  const metrics = createMetrics();

  // Loaded only when configured: the Redis client is ~20 MiB of resident memory a single replica never uses.
  const redisModule = config.state.type === 'redis' ? await import('./state/redis-backend.js') : null;
  const redis = redisModule !== null && config.state.type === 'redis' ? new redisModule.RedisStateBackend({ url: config.state.url, prefix: config.state.prefix, logger, now: nowMs }) : null;
  // What start-up has opened, closed again (the last first) when a later step fails (found in stop 27:
  // a first configuration that failed to build left the audit log, the state store and the Redis
  // connection open; the CLI exits then, but code embedding startAirlock went on holding them).
  const opened: Array<() => Promise<void> | void> = [];
  const unwind = async (error: unknown): Promise<never> => {
    for (const close of opened.reverse()) {
      await Promise.resolve()
        .then(close)
        .catch((cleanup: unknown) => logger.warn({ err: cleanup }, 'start-up failed, and closing what it had opened failed too'));
    }
    throw error;
  };
  if (redis !== null) {
    await redis.connect().catch(async (error: unknown) => {
      await redis.close();
      throw new Error(`cannot reach Redis at ${config.state.type === 'redis' && redisModule !== null ? redisModule.redisEndpoint(config.state.url) : ''}: ${(error as Error).message}; start it or fix state.url`);
    });
    opened.push(() => redis.close());
  }
  return startOpened(config, options, { nowMs, catalog, logger, requestLog, metrics, redis }, opened).catch(unwind);
}

/**
 * Durable.cut: every generation's broker listens on it, and a reload while long streams keep older
 * generations open can leave more than node's 10 (its warning would be noise: each broker removes its
 * listener when it closes).
 */
function cutController(): AbortController {
  const controller = new AbortController();
  setMaxListeners(0, controller.signal);
  return controller;
}

/** What startAirlock has made before the data directory is touched. */
interface EarlyParts {
  readonly nowMs: () => number;
  readonly catalog: SecretCatalog;
  readonly logger: Logger;
  readonly requestLog: RequestLog;
  readonly metrics: Metrics;
  readonly redis: RedisStateBackend | null;
}

/** The rest of start-up; each thing opened is added to `opened`, for startAirlock to close on a failure. */
async function startOpened(config: AirlockConfig, options: AirlockOptions, early: EarlyParts, opened: Array<() => Promise<void> | void>): Promise<RunningAirlock> {
  const { nowMs, catalog, logger, requestLog, metrics, redis } = early;
  prepareDataDir(config.data_dir);
  const gapTime = new IsoTime();
  const audit = new AuditLog({
    file: config.audit.file,
    secrets: catalog,
    onFailure: config.audit.on_failure,
    maxBytes: config.audit.max_bytes,
    keep: config.audit.keep,
    webhook: config.audit.webhook ?? null,
    logger,
    onWriteFailure: () => metrics.auditWriteFailures.inc(),
    onWebhookDrop: (count) => metrics.auditWebhookDropped.inc(count),
    now: nowMs,
    gapRecord: (reason) => Object.assign(newRecord({ nowMs, isoTime: gapTime }, null, undefined), { route: 'airlock:audit-gap', decision: 'allow' as const, actor: 'airlock', reason }),
  });
  try {
    await audit.open();
  } catch (error) {
    const code = (error as NodeJS.ErrnoException).code;
    const why = code === 'EROFS' ? 'it is on a read-only file system' : code === 'EACCES' ? 'this user may not write it or make it' : (error as Error).message;
    throw new Error(`the audit log ${config.audit.file} cannot be opened: ${why}; set audit.file to a path Airlock can write (\`npx airlock check\` probes it)`, { cause: error });
  }
  opened.push(() => audit.close());
  // Restrictions the store cannot take yet are kept in data_dir too, one file per worker (a single
  // process is "main"), and whatever a stopped process left there is enforced again at start.
  const restrictionOwner = restrictionFileOwner(options.clusterRestrictions == null ? undefined : options.env['AIRLOCK_WORKER_ID']);
  const unsavedRestrictions = new UnsavedRestrictionFiles({
    dir: join(config.data_dir, 'unsaved-restrictions'),
    owner: restrictionOwner,
    liveOwners: otherWorkerOwners(restrictionOwner, workerCount(config.workers)),
    logger,
  });
  const state = new GovernanceState(redis ?? new FileStateBackend(join(config.data_dir, 'state.jsonl')), nowMs, logger, unsavedRestrictions);
  opened.push(() => state.close());
  await state.start();
  // Under workers, a restriction one worker could not write to Redis holds on every worker (run-cluster.ts).
  const restrictions = options.clusterRestrictions ?? null;
  let stopRelay = (): void => undefined;
  if (restrictions !== null) {
    state.onUnsaved((event) => restrictions.publish(event));
    const stopHearing = restrictions.onRelayed((event) => state.adopt(event));
    stopRelay = () => void stopHearing();
    opened.push(stopRelay);
  }
  const staleAfterMs = config.state.type === 'redis' ? config.state.stale_after * 1000 : Infinity;

  const durable: Durable = {
    checkHeaderNames: parserReadsMalformedNames(options.httpParser),
    inflight: new InflightRequests(),
    tokenHashes: new TokenHashes(),
    nowMs,
    isoTime: new IsoTime(),
    env: options.env,
    catalog,
    logger,
    requestLog,
    metrics,
    metricsText: options.clusterMetrics?.(metrics.registry) ?? (() => metrics.registry.metrics()),
    redis,
    audit,
    state,
    killSwitch: new KillSwitch(state),
    rateLimiter:
      redis === null || config.state.type !== 'redis'
        ? new MemoryRateLimiter(nowMs)
        : new RedisRateLimiter(redis.client, { prefix: config.state.prefix, staleAfterMs, downSince: () => redis.downSince, now: nowMs }),
    concurrency: new ConcurrencyGate(),
    staleAfterMs,
    boundAdminUrl: null,
    cutForStop: false,
    cut: cutController(),
    anomalies: new AnomalyDetector(config.anomalies),
    anomaliesSpec: JSON.stringify(config.anomalies),
  };

  // A restored agent starts again with no denials counted and no cooldown (anomaly-detector.ts forgive).
  state.onEvent((event) => {
    if (event.type === 'revocation.lifted' && event.kind === 'agent') durable.anomalies.forgive(event.target);
  });
  let current = await buildGeneration(config, durable, null);
  opened.push(() => closeGeneration(current, durable, true, true));
  const currentRuntime = (): ProxyRuntime => current.runtime;
  const agentListeners: Array<{ listener: string; server: Server }> = [];
  metrics.bind({
    agentConnections: () => Promise.all(agentListeners.map(({ listener, server }) => openConnections(listener, server))),
    ...(options.processStats === undefined ? {} : { process: options.processStats }),
    tlsCertificates: () => [...(current.tls === null ? [] : [{ listener: 'agent' as const, ...current.tls }]), ...(current.adminTls === null ? [] : [{ listener: 'admin' as const, ...current.adminTls }])],
    credentials: () => current.secrets.status(),
    approvalsPending: () => current.approvals.pendingCount(),
    sessionsActive: () => state.sessions().length,
    // Requests past max_connections wait in the service's gate, not in undici's queue (connection-gate.ts).
    pools: () => [...current.pools].map(([service, pool]) => {
      const stats = pool.stats;
      return { service, stats: { connected: stats.connected, free: stats.free, pending: stats.pending, running: stats.running, queued: stats.queued + (current.runtime.gates.get(service)?.waiting ?? 0) } };
    }),
  });

  const onRefusal = createRawRefusalHandler(currentRuntime);
  const heldSecret = (text: string): string | null => managedSecretIn(currentRuntime(), text);
  const bindings: Array<{ address: string; binding: ListenerBinding; service: string | null }> = [{ address: config.listen, binding: { kind: 'shared' }, service: null }];
  for (const service of current.policy.services) {
    if (service.config.listen !== undefined) bindings.push({ address: service.config.listen, binding: { kind: 'service', name: service.name }, service: service.name });
  }

  const listeners: Server[] = [];
  const serviceUrls: Record<string, string> = {};
  let url = '';
  let adminUrl: string | null = null;
  let adminListener: Server | null = null;
  opened.push(() => Promise.all(listeners.map((server) => closeServer(server, 0))).then(() => undefined));
  for (const entry of bindings) {
    const server = createListener(config.limits, { onRequest: createRequestHandler(currentRuntime, entry.binding), onRefusal, onTlsFailure: (reason) => metrics.tlsHandshakeFailures.inc({ listener: 'agent', reason }), heldSecret }, current.tls);
    const bound = await listen(server, entry.address, entry.service === null ? 'listen' : `services.${entry.service}.listen`, logger, current.tls === null ? 'http' : 'https');
    listeners.push(server);
    agentListeners.push({ listener: entry.service ?? 'shared', server });
    if (entry.service === null) url = bound;
    else serviceUrls[entry.service] = bound;
  }
  if (config.admin !== null) {
    const server = createAdminServer(() => current.admin as AdminContext, current.adminTls, (reason) => metrics.tlsHandshakeFailures.inc({ listener: 'admin', reason }));
    adminUrl = await listen(server, config.admin.listen, 'admin.listen', logger, current.adminTls === null ? 'http' : 'https');
    listeners.push(server);
    adminListener = server;
    // A wildcard bind is reachable on loopback at least; admin.public_url is the way to say more.
    durable.boundAdminUrl = adminUrl.replace('//0.0.0.0:', '//127.0.0.1:').replace('//[::]:', '//[::1]:');
  }

  logger.info({ url, services: serviceUrls, admin: adminUrl, agents: current.policy.agentByName.size, ...(current.tls === null ? {} : { tls: tlsSummary(current.tls) }), ...(current.adminTls === null ? {} : { admin_tls: tlsSummary(current.adminTls) }) }, 'airlock listening');
  // Revocations outlive restarts: a lockdown kept from before refuses every request, while the process
  // looks healthy (found by review: nothing at start-up said so).
  const lockdown = state.revocation('all', '*');
  if (lockdown !== null) {
    logger.warn({ by: lockdown.by, at: new Date(lockdown.at).toISOString(), reason: lockdown.reason }, 'a lockdown is in force: every request is refused (503 locked_down) until an admin lifts it (npx airlock restore all)');
  }
  // The first record is Airlock's own start: it also proves the log writable before any request is
  // forwarded (a log that cannot be written is marked broken, so the first request is refused).
  await lifecycleRecord(current.runtime, 'airlock:start', `Airlock ${AIRLOCK_VERSION} started on ${url}`);

  let closing: Promise<void> | null = null;
  return {
    url,
    serviceUrls: Object.freeze(serviceUrls),
    adminUrl,
    get policy() {
      return current.policy;
    },
    lockdown() {
      return state.revocation('all', '*');
    },
    logger,
    metrics,
    async reload(next) {
      if (closing !== null) return { ok: false, reason: 'Airlock is shutting down' };
      // Measured against what start-up bound, not the last reload's result: a partial reload's kept values
      // are those, and a second reload compared with the first forgot a removed service's listener still
      // bound (found by review: the service re-added without `listen` was said to need no restart).
      const { config: applied, changed } = keepRestartOnly(config, next);
      let fresh: Generation;
      try {
        fresh = await buildGeneration(applied, durable, current);
      } catch (error) {
        metrics.reloads.inc({ result: 'invalid' });
        logger.error({ err: error }, 'config reload failed; the running config stays');
        return { ok: false, reason: (error as Error).message };
      }
      // A stop began while this was built (a slow store holds a build for up to 2 s): close() has closed,
      // or is closing, the running generation, and one switched in now would never be closed, its
      // leases never revoked, its airlock:reload written after airlock:stop (found by review).
      if (closing !== null) {
        await closeGeneration(fresh, durable, fresh.tracing !== current.tracing, true);
        return { ok: false, reason: 'Airlock is shutting down' };
      }
      // New connections get the certificate read by this reload (a renewal); open ones keep theirs. Before
      // the switch: a context node refuses leaves the whole running generation in force (found by review:
      // it threw after the switch, with the new config in force and the reload reported failed).
      const secured: Array<{ servers: Server[]; from: TlsIdentity | null; to: TlsIdentity | null; setting: string }> = [
        { servers: agentListeners.map(({ server }) => server), from: current.tls, to: fresh.tls, setting: 'tls' },
        { servers: adminListener === null ? [] : [adminListener], from: current.adminTls, to: fresh.adminTls, setting: 'admin.tls' },
      ];
      for (const [index, { servers, to, setting }] of secured.entries()) {
        if (to === null) continue;
        try {
          for (const server of servers) (server as HttpsServer).setSecureContext(to.contextOptions());
        } catch (error) {
          for (const { servers: done, from } of secured.slice(0, index + 1)) if (from !== null) for (const server of done) (server as HttpsServer).setSecureContext(from.contextOptions());
          void closeGeneration(fresh, durable, fresh.tracing !== current.tracing);
          metrics.reloads.inc({ result: 'invalid' });
          logger.error({ err: error, setting }, "config reload failed: node's TLS refused the certificate; the running config and certificate stay");
          return { ok: false, reason: `${setting}: ${(error as Error).message}` };
        }
      }
      // Nothing awaited between these and the switch: what the running broker learnt while this one was
      // built (a rotate, a withdrawal) is what the new one starts from.
      fresh.secrets.adoptLatest();
      // The detector outlives configurations: new settings, what it learnt kept (anomaly-detector.ts).
      const anomaliesSpec = JSON.stringify(next.anomalies);
      if (anomaliesSpec !== durable.anomaliesSpec) {
        durable.anomalies.reconfigure(next.anomalies);
        durable.anomaliesSpec = anomaliesSpec;
      }
      const previous = current;
      current = fresh;
      if (fresh.tls !== null && fresh.tls.fingerprint !== previous.tls?.fingerprint) logger.info({ tls: tlsSummary(fresh.tls) }, 'the agent listeners now present a new certificate');
      if (adminListener !== null && fresh.adminTls !== null && fresh.adminTls.fingerprint !== previous.adminTls?.fingerprint) logger.info({ admin_tls: tlsSummary(fresh.adminTls) }, 'the admin listener now presents a new certificate');
      logger.level = next.log.level;
      durable.requestLog.lines = next.log.requests;
      previous.retired = true;
      if (previous.inflight === 0) void closeGeneration(previous, durable, previous.tracing !== fresh.tracing);
      metrics.reloads.inc({ result: changed.length === 0 ? 'success' : 'partial' });
      logger.info({ services: fresh.policy.services.length, agents: fresh.policy.agentByName.size }, 'config reloaded; requests in flight finish on the previous one');
      const waiting = changed.length === 0 ? '' : `; ${changed.join(', ')} changed too, which only a restart applies: until then the running values stay`;
      if (changed.length > 0) logger.warn({ changed }, `config reloaded except ${changed.join(', ')}: only a restart applies those, and until then the running values stay`);
      await lifecycleRecord(fresh.runtime, 'airlock:reload', `configuration reloaded: ${fresh.policy.services.length} services, ${fresh.policy.agentByName.size} agents${waiting}`);
      return changed.length === 0 ? { ok: true } : { ok: true, restartNeeded: changed };
    },
    shutdownTimeout() {
      return current.config.shutdown_timeout;
    },
    auditWritable() {
      return audit.healthy;
    },
    close(deadlineMs) {
      /**
       * The cut, once: requests still waiting for their upstream's answer are answered 503
       * shutting_down (they were sent upstream: the detail says so), then every connection closed.
       */
      const cutForStop = (): void => {
        if (durable.cutForStop) return;
        durable.cutForStop = true;
        durable.killSwitch.refuseWaiting(
          // Sent upstream, as a headers timeout's is: the openai and anthropic SDKs would send it again
          // (found by an ops walkthrough); stripe-node retries with its idempotency key, which is safe.
          new AirlockError('shutting_down', 'Airlock is stopping, and this request was still waiting for its upstream when its time to finish ran out (shutdown_timeout). It had been sent upstream, so it may have taken effect there; check before retrying a request that changes something.', {
            headers: { 'x-should-retry': 'false' },
          }),
        );
        durable.cut.abort();
        // A moment for those answers to go out (the sweep then closes their connections), then the rest.
        setTimeout(() => {
          for (const server of listeners) server.closeAllConnections();
        }, REFUSALS_GO_OUT_MS);
      };
      if (closing !== null) {
        // A second, hurried stop (SIGTERM again): what is still open is cut now. Each cut request's
        // record is still written, and airlock:stop after them (the close under way waits for them).
        if (deadlineMs === 0) cutForStop();
        return closing;
      }
      closing = (async () => {
        const deadline = deadlineMs ?? current.config.shutdown_timeout * 1000;
        logger.info({ deadline_ms: deadline }, 'stopping: no new connections; requests in flight may finish');
        await Promise.all(listeners.map((server) => closeServer(server, deadline, cutForStop)));
        // Requests cut at the deadline still finish their bookkeeping (audit record, metrics): let them,
        // briefly, so airlock:stop is the last record and none reaches a closed log.
        await durable.inflight.settled(2_000);
        await lifecycleRecord(current.runtime, 'airlock:stop', 'Airlock stopped');
        await closeGeneration(current, durable, true, true);
        stopRelay();
        await state.close();
        await audit.close();
        logger.info('airlock stopped');
      })();
      return closing;
    },
  };
}

/** What the log says of the certificate served: never the key. */
function tlsSummary(identity: TlsIdentity): { subject: string; names: string; expires: string } {
  return { subject: identity.subject, names: identity.names, expires: new Date(identity.notAfter).toISOString() };
}

/** An audit record of Airlock's own lifecycle (start, reload, stop), with actor "airlock". */
async function lifecycleRecord(runtime: ProxyRuntime, route: string, reason: string): Promise<void> {
  const record = newRecord(runtime, null, undefined);
  Object.assign(record, { route, decision: 'allow', actor: 'airlock', reason });
  await auditRequest(runtime, record, performance.now());
}

/** One listener's open connections (idle keep-alive ones included), for airlock_agent_connections. */
function openConnections(listener: string, server: Server): Promise<{ listener: string; open: number }> {
  return new Promise((resolve) => {
    server.getConnections((error, open) => resolve({ listener, open: error === null ? open : 0 }));
  });
}

/** Stop accepting, let in-flight responses finish up to the deadline, then cut what is left. */
/** How long shutdown's 503 shutting_down answers get to go out before every connection is closed. */
const REFUSALS_GO_OUT_MS = 300;

/** `cut` closes what is still open at the deadline (every connection, by default). */
async function closeServer(server: Server, deadlineMs: number, cut: () => void = () => server.closeAllConnections()): Promise<void> {
  if (!server.listening) return;
  const closed = new Promise<void>((resolve) => server.close(() => resolve()));
  // A keep-alive connection goes idle when its last response ends: close it then, not after
  // keep_alive_timeout (close() itself only closes the connections idle at the time it is called).
  server.closeIdleConnections();
  const sweep = setInterval(() => server.closeIdleConnections(), 50);
  const timer = setTimeout(cut, deadlineMs);
  await closed;
  clearInterval(sweep);
  clearTimeout(timer);
}
