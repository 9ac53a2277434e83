/**
 * The composition root: everything Airlock runs is built here from a validated config and handed
 * down. No globals, no import-time side effects; tests start as many proxies as they like, each with
 * its own environment, log destination and clock.
 */
import { once } from 'node:events';
import type { Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import type { Logger } from 'pino';
import type { Pool } from 'undici';
import type { AirlockConfig } from './config/types.js';
import { parseListen } from './config/schema.js';
import { createCredentialBroker, type CredentialBroker } from './credentials/credential-broker.js';
import { createAdminServer, type AdminChange } from './admin/admin-api.js';
import { adminDirectory } from './admin/authenticate-admin.js';
import { join } from 'node:path';
import { JwtVerifier } from './identity/jwt-verifier.js';
import { ApprovalBroker } from './policy/approval-broker.js';
import { createApprovalNotifier } from './policy/approval-webhook.js';
import { KillSwitch } from './policy/kill-switch.js';
import { AnomalyDetector, type AnomalyEvent } from './policy/anomaly-detector.js';
import { ConcurrencyGate } from './policy/rate-limiter.js';
import { createAnomalyResponder, DETECTOR_IDENTITY } from './policy/respond-to-anomaly.js';
import { MemoryRateLimiter } from './state/memory-rate-limiter.js';
import { FileStateBackend } from './state/file-backend.js';
import { GovernanceState } from './state/governance-state.js';
import { createListener } from './ingress/create-listener.js';
import { AuditLog } from './observability/audit-log.js';
import { createLogger, type LogDestination } from './observability/logger.js';
import { createTracing } from './observability/tracing.js';
import { allCredentialPlans, allSecretRefs, compilePolicy, type Policy } from './policy/compile-policy.js';
import type { ProxyRuntime } from './pipeline/proxy-runtime.js';
import { createRawRefusalHandler, createRequestHandler, newRecord } from './pipeline/run-pipeline.js';
import { auditRequest } from './pipeline/record-outcome.js';
import type { ListenerBinding } from './pipeline/select-service.js';
import { SecretCatalog } from './redaction/secret-catalog.js';
import { createMetrics, type Metrics } from './observability/metrics.js';
import { createOriginPool } from './upstream/origin-pool.js';

/** Reported in spans (service.version) and the admin API. */
export const AIRLOCK_VERSION = '0.1.0';

export interface AirlockOptions {
  /** The environment env: references read (main.ts passes process.env). */
  readonly env: Readonly<Record<string, string | undefined>>;
  readonly logDestination: LogDestination;
  readonly now?: () => Date;
}

export interface RunningAirlock {
  /** http://host:port of the shared agent listener. */
  readonly url: string;
  /** http://host:port of each service that has its own listener. */
  readonly serviceUrls: Readonly<Record<string, string>>;
  /** http://host:port of the admin API, or null when admin is not configured. */
  readonly adminUrl: string | null;
  readonly policy: Policy;
  readonly logger: Logger;
  readonly metrics: Metrics;
  close(): Promise<void>;
}

/**
 * Resolve every configured secret once, so the request guard and the "service"/"all" redaction scopes
 * know them before their first use. A secret that is not available yet is not an error here: requests
 * that need it get 503 until it is, and the catalogue learns it then.
 */
async function warmCatalog(secrets: CredentialBroker, refs: readonly string[], logger: Logger): Promise<void> {
  const attempts = refs.map((ref) => secrets.resolve(ref).then(
    () => null,
    () => ref,
  ));
  // A slow or down store must not hold start-up: what is not known after a moment is learnt on first use.
  const settled = await Promise.race([Promise.all(attempts), new Promise<null>((resolve) => setTimeout(() => resolve(null), WARM_UP_WAIT_MS).unref())]);
  const missing = settled === null ? null : settled.filter((ref): ref is string => ref !== null);
  if (missing === null) logger.warn('some credential stores are slow to answer; Airlock started anyway and will fetch on first use');
  else if (missing.length > 0) logger.warn({ credentials: missing }, 'some credentials are not available yet; requests that need them get 503 until they are');
}

const WARM_UP_WAIT_MS = 2_000;

interface BoundListener {
  server: Server;
  url: string;
}

async function listen(server: Server, address: string): Promise<string> {
  const parsed = parseListen(address);
  if (parsed === null) throw new Error(`invalid listen address ${address}`);
  server.listen(parsed.port, parsed.host);
  await Promise.race([
    once(server, 'listening'),
    once(server, 'error').then(([error]) => {
      const code = (error as NodeJS.ErrnoException).code;
      const hint = code === 'EADDRINUSE' ? 'another process uses this port; stop it or change the address in the config' : (error as Error).message;
      throw new Error(`cannot listen on ${address}: ${hint}`);
    }),
  ]);
  const bound = server.address() as AddressInfo;
  const host = bound.family === 'IPv6' ? `[${bound.address}]` : bound.address;
  return `http://${host}:${bound.port}`;
}

export async function startAirlock(config: AirlockConfig, options: AirlockOptions): Promise<RunningAirlock> {
  const catalog = new SecretCatalog();
  const logger = createLogger(config.log.level, options.logDestination, catalog);
  const metrics = createMetrics();
  const policy = compilePolicy(config);

  const pools = new Map<string, Pool>();
  for (const service of policy.services) pools.set(service.name, createOriginPool(service.config, service.upstream));

  const secrets = createCredentialBroker(config, {
    env: options.env,
    catalog,
    logger,
    plans: allCredentialPlans(policy),
    onCacheEvent: (event) => metrics.credentialCache.inc({ result: event }),
  });
  await warmCatalog(secrets, allSecretRefs(policy), logger);

  const audit = new AuditLog({
    file: config.audit.file,
    secrets: catalog,
    onFailure: config.audit.on_failure,
    maxBytes: config.audit.max_bytes,
    keep: config.audit.keep,
    webhook: config.audit.webhook ?? null,
    logger,
    onWriteFailure: () => metrics.auditWriteFailures.inc(),
  });
  await audit.open();

  const now = options.now ?? (() => new Date());
  const tracing = createTracing({ telemetry: config.telemetry, env: options.env, version: AIRLOCK_VERSION });
  metrics.bind({
    credentials: () => secrets.status(),
    approvalsPending: () => approvals.pendingCount(),
    sessionsActive: () => state.sessions().length,
    pools: () => [...pools].map(([service, pool]) => ({ service, stats: pool.stats })),
  });
  const state = new GovernanceState(new FileStateBackend(join(config.data_dir, 'state.jsonl')), () => now().getTime());
  await state.start();
  // The console's address: admin.public_url, else the admin listener as bound (known after listening).
  let boundAdminUrl: string | null = null;
  const consoleUrl = (): string | null => (config.admin === null ? null : (config.admin.public_url ?? boundAdminUrl));
  const approvalLink = (id: string): string | null => {
    const base = consoleUrl();
    return base === null ? null : `${base.replace(/\/$/, '')}/#approval-${id}`;
  };
  const approvals = new ApprovalBroker(state, {
    maxPending: config.approvals.max_pending,
    consoleUrl,
    notify: createApprovalNotifier(config.approvals.webhook, logger, approvalLink),
    now: () => now().getTime(),
  });

  const anomalies = new AnomalyDetector(config.anomalies);
  // Anomaly events go into the audit trail like admin changes: who (the detector), why (the evidence).
  const auditAnomaly = async (event: AnomalyEvent): Promise<void> => {
    const record = newRecord(runtime, null, undefined);
    Object.assign(record, {
      agent: event.agent,
      service: event.service,
      route: `anomaly:${event.rule}`,
      decision: event.action === 'suspend' ? 'deny' : 'allow',
      actor: DETECTOR_IDENTITY,
      reason: `${event.summary} (${event.id}, action ${event.action})`,
    });
    await auditRequest(runtime, record, performance.now());
  };

  const runtime: ProxyRuntime = Object.freeze({
    policy,
    pools,
    secrets,
    catalog,
    metrics,
    audit,
    logger,
    state,
    jwt: new JwtVerifier(Object.values(config.agents), () => now().getTime()),
    approvals,
    killSwitch: new KillSwitch(state),
    rateLimiter: new MemoryRateLimiter(() => now().getTime()),
    concurrency: new ConcurrencyGate(),
    anomalies,
    respondToAnomaly: createAnomalyResponder({
      state,
      logger,
      counter: metrics.anomalies,
      webhook: config.anomalies.webhook ?? null,
      audit: (event: AnomalyEvent) => auditAnomaly(event),
    }),
    tracing,
    limits: Object.freeze({ maxHeaders: config.limits.max_headers, maxBodyBytes: config.limits.max_body_bytes, maxApprovalBodyBytes: config.approvals.max_body_bytes }),
    now,
  });

  const onRefusal = createRawRefusalHandler(runtime);
  const bindings: Array<{ address: string; binding: ListenerBinding; service: string | null }> = [{ address: config.listen, binding: { kind: 'shared' }, service: null }];
  for (const service of policy.services) {
    if (service.config.listen !== undefined) bindings.push({ address: service.config.listen, binding: { kind: 'service', service }, service: service.name });
  }

  const listeners: BoundListener[] = [];
  const serviceUrls: Record<string, string> = {};
  let url = '';
  let adminUrl: string | null = null;
  try {
    for (const entry of bindings) {
      const server = createListener(config.limits, { onRequest: createRequestHandler(runtime, entry.binding), onRefusal });
      const bound = await listen(server, entry.address);
      listeners.push({ server, url: bound });
      if (entry.service === null) url = bound;
      else serviceUrls[entry.service] = bound;
    }
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
      const server = createAdminServer({
        directory: adminDirectory(config.admin.tokens),
        metrics: metrics.registry,
        broker: secrets,
        audit,
        catalog,
        logger,
        policy,
        state,
        approvals,
        anomalies,
        auditChange,
        now: () => now().getTime(),
      });
      adminUrl = await listen(server, config.admin.listen);
      listeners.push({ server, url: adminUrl });
      // A wildcard bind is reachable on loopback at least; public_url is the way to say more.
      boundAdminUrl = adminUrl.replace('//0.0.0.0:', '//127.0.0.1:').replace('//[::]:', '//[::1]:');
    }
  } catch (error) {
    await Promise.all(listeners.map((l) => closeServer(l.server, 0)));
    await Promise.all([...pools.values()].map((p) => p.destroy()));
    await secrets.close();
    await state.close();
    await audit.close();
    throw error;
  }

  logger.info({ url, services: serviceUrls, admin: adminUrl, agents: policy.agentByName.size }, 'airlock listening');

  let closing: Promise<void> | null = null;
  return {
    url,
    serviceUrls: Object.freeze(serviceUrls),
    adminUrl,
    policy,
    logger,
    metrics,
    close() {
      closing ??= (async () => {
        await Promise.all(listeners.map((l) => closeServer(l.server, 2_000)));
        await Promise.all([...pools.values()].map((p) => p.destroy()));
        await secrets.close();
        await state.close();
        await audit.close();
        await tracing.shutdown();
        logger.info('airlock stopped');
      })();
      return closing;
    },
  };
}

/** Stop accepting, let in-flight responses finish up to the deadline, then cut what is left. */
async function closeServer(server: Server, deadlineMs: number): Promise<void> {
  if (!server.listening) return;
  const closed = new Promise<void>((resolve) => server.close(() => resolve()));
  server.closeIdleConnections();
  const timer = setTimeout(() => server.closeAllConnections(), deadlineMs);
  await closed;
  clearTimeout(timer);
}
