/**
 * Cluster mode (workers: N | auto): the primary forks N worker processes that each run the proxy on the
 * same ports (node:cluster shares the listening sockets), restarts a worker that dies (with backoff),
 * passes SIGHUP (reload) on, and on SIGTERM asks every worker to drain and waits for them. Workers
 * share governance state and rate limits through Redis (config validation requires state type redis);
 * each writes its own audit file (audit.w<N>.jsonl), so each hash chain has one writer.
 *
 * Restrictions made while Redis is unreachable (a revocation, a session ended) hold at once only on the
 * worker that took the admin call, which queues them for Redis (governance-state.ts). The primary relays
 * them to the other workers over the cluster IPC (serveRestrictionRelay), so the kill switch holds on
 * every worker during an outage, and lives on in them if the first one dies before Redis is back. Each
 * worker also keeps them in data_dir (w<N>.jsonl, state/unsaved-restriction-files.ts), so they survive
 * every worker, and the primary, stopping: the next worker to start enforces and writes them.
 */
import cluster, { type Worker } from 'node:cluster';
import { basename, dirname, extname, join } from 'node:path';
import type { AirlockConfig } from '../config/types.js';
import { serveClusterMetrics, type PrimaryChannel } from '../observability/cluster-metrics.js';
import type { CliIo } from './cli-io.js';

/** The audit file of one worker: audit.jsonl -> audit.w2.jsonl. */
export function workerAuditFile(config: AirlockConfig, workerId: string): AirlockConfig {
  return Object.freeze({ ...config, audit: Object.freeze({ ...config.audit, file: workerAuditPath(config.audit.file, workerId) }) });
}

/** audit.jsonl -> audit.w2.jsonl; `airlock audit verify` finds the workers' files by this name. */
export function workerAuditPath(file: string, workerId: string): string {
  const ext = extname(file);
  return join(dirname(file), `${basename(file, ext)}.w${workerId}${ext}`);
}

export async function runClusterPrimary(io: CliIo, config: AirlockConfig, count: number): Promise<number> {
  let stopping = false;
  const failures = new Map<string, number>();
  const workers = new Map<string, Worker>();
  const restarts = new Set<NodeJS.Timeout>();
  // Workers that have started listening, and those still starting that a reload was asked of meanwhile.
  // A worker is signalled only once it listens: before its main.ts installs a SIGHUP handler, node's
  // default for the signal ends it (found by review: a reload during start-up killed the workers). One
  // still starting may have read the file before the change, so it gets its SIGHUP when it listens.
  const listening = new Set<string>();
  const reloadOnListening = new Set<string>();
  const fork = (id: string): void => {
    const worker = cluster.fork({ AIRLOCK_WORKER_ID: id });
    workers.set(id, worker);
    listening.delete(id);
    reloadOnListening.delete(id);
    worker.on('exit', (code, signal) => {
      if (workers.get(id) === worker) {
        workers.delete(id);
        listening.delete(id);
        reloadOnListening.delete(id);
      }
      if (stopping) return;
      const n = (failures.get(id) ?? 0) + 1;
      failures.set(id, n);
      const delay = Math.min(30_000, 500 * 2 ** (n - 1));
      io.stderr.write(`worker ${id} exited (${signal ?? `code ${code}`}); restarting it in ${delay} ms\n`);
      // Not unref'd: with every worker down at once (found by review: two killed together) it is the only
      // thing keeping the primary alive, which otherwise exited instead of restarting them. Cleared on stop.
      const restart = setTimeout(() => {
        restarts.delete(restart);
        if (!stopping) fork(id);
      }, delay);
      restarts.add(restart);
    });
    worker.on('listening', () => {
      failures.set(id, 0);
      // 'listening' comes once per listener (agent, admin, a service's own): the first one counts.
      if (listening.has(id)) return;
      listening.add(id);
      if (reloadOnListening.delete(id) && !stopping) worker.process.kill('SIGHUP');
    });
    // A Worker emits 'error' when a send fails or the fork itself does: unheard, it ended the primary and
    // with it every worker. 'exit' (above) restarts a worker that is gone.
    worker.on('error', (error) => io.stderr.write(`worker ${id}: ${error.message}\n`));
  };
  // A port 0 is chosen when the first worker listens (node's cluster gives every worker that same port):
  // the banner below can only say :0, so the first worker's addresses are said once it has them (found
  // by review: the banner's http://127.0.0.1:0 was all an operator saw).
  const choosesPort = [config.listen, config.admin?.listen].some((listen) => listen !== undefined && /:0$/.test(listen));
  let portsSaid = false;
  const onListening = (_from: Worker, message: unknown): void => {
    if (!isListeningMessage(message) || !choosesPort || portsSaid) return;
    portsSaid = true;
    io.stderr.write(`Airlock cluster: listening on ${message.url}${message.admin === null ? '' : `, admin ${message.admin}`}\n`);
  };
  cluster.on('message', onListening);
  // Any worker answering /metrics asks here for the sum over all workers.
  const stopMetrics = serveClusterMetrics();
  const stopRelay = serveRestrictionRelay();
  for (let i = 1; i <= count; i++) fork(String(i));
  io.stderr.write(`Airlock cluster: ${count} workers on ${config.tls === null ? 'http' : 'https'}://${config.listen}${config.admin === null ? '' : `, admin ${config.admin.tls === undefined ? 'http' : 'https'}://${config.admin.listen}`}${io.pid === undefined ? '' : `  (pid ${io.pid}; \`kill -HUP ${io.pid}\` reloads every worker)`}\n`);
  const stopReload = io.onReloadRequested?.(() => {
    for (const [id, worker] of workers) {
      if (listening.has(id)) worker.process.kill('SIGHUP');
      else reloadOnListening.add(id);
    }
  });
  const signal = await io.stopRequested;
  stopping = true;
  for (const restart of restarts) clearTimeout(restart);
  stopReload?.();
  io.stderr.write(`${signal} received: asking ${workers.size} workers to drain (up to ${config.shutdown_timeout} s)\n`);
  const exits = [...workers.values()].map((worker) => new Promise<void>((resolve) => worker.once('exit', () => resolve())));
  for (const worker of workers.values()) worker.process.kill('SIGTERM');
  // A second stop signal is passed on: each worker cuts what it is still draining, and audits it.
  void io.stopNow?.().then((again) => {
    io.stderr.write(`${again} received again: the workers cut their requests in flight now\n`);
    for (const worker of workers.values()) worker.process.kill('SIGTERM');
  });
  const hard = setTimeout(() => {
    for (const worker of workers.values()) worker.process.kill('SIGKILL');
  }, (config.shutdown_timeout + 5) * 1000);
  await Promise.all(exits);
  clearTimeout(hard);
  stopMetrics();
  stopRelay();
  cluster.off('message', onListening);
  return 0;
}

export const LISTENING_MESSAGE = 'airlock:listening';

/** What a worker sends the primary once it listens: its agent and admin URLs, ports chosen. */
export function listeningMessage(url: string, admin: string | null): { type: typeof LISTENING_MESSAGE; url: string; admin: string | null } {
  return { type: LISTENING_MESSAGE, url, admin };
}

function isListeningMessage(message: unknown): message is ReturnType<typeof listeningMessage> {
  if (typeof message !== 'object' || message === null) return false;
  const m = message as Record<string, unknown>;
  return m['type'] === LISTENING_MESSAGE && typeof m['url'] === 'string' && (m['admin'] === null || typeof m['admin'] === 'string');
}

/** The IPC message a worker sends with a restriction it could not write to Redis, and the primary passes on. */
export const RESTRICTION_MESSAGE = 'airlock:cluster-restriction';
/** Only events that take access away travel this way: one that grants must be kept in Redis first. */
const RELAYED_EVENTS: ReadonlySet<string> = new Set(['revocation.added', 'session.ended']);

export interface RestrictionMessage {
  readonly type: typeof RESTRICTION_MESSAGE;
  /** A governance event (governance-records.ts) of a type in RELAYED_EVENTS. */
  readonly event: { readonly type: string } & Record<string, unknown>;
}

export function isRestrictionMessage(message: unknown): message is RestrictionMessage {
  if (typeof message !== 'object' || message === null) return false;
  const { type, event } = message as { type?: unknown; event?: unknown };
  return type === RESTRICTION_MESSAGE && typeof event === 'object' && event !== null && RELAYED_EVENTS.has(String((event as { type?: unknown }).type));
}

/**
 * In the primary: every restriction a worker sends is passed on to every other worker still connected.
 * The sender is left out (it holds the restriction already), so nothing echoes. Nothing is kept here:
 * a worker forked later loads the state from Redis (and what the workers still keep in data_dir), and
 * replaying an old revocation to it could undo a restore made since. Returns how to stop.
 */
export function serveRestrictionRelay(): () => void {
  const onMessage = (from: Worker, message: unknown): void => {
    if (!isRestrictionMessage(message)) return;
    const relayed: RestrictionMessage = { type: RESTRICTION_MESSAGE, event: message.event };
    for (const worker of Object.values(cluster.workers ?? {})) {
      // With a callback, a send on a channel closing under it reports there instead of emitting 'error'.
      if (worker !== undefined && worker !== from && worker.isConnected()) worker.send(relayed, () => undefined);
    }
  };
  cluster.on('message', onMessage);
  return () => cluster.off('message', onMessage);
}

/**
 * In a worker: the two ends the governance state needs (wired in app.ts to GovernanceState.onUnsaved
 * and GovernanceState.adopt): `publish` sends a restriction it could not write to Redis to the primary;
 * `onRelayed` hears those other workers sent. Returns null outside a cluster.
 */
export function restrictionChannel(primary: PrimaryChannel | undefined): {
  publish(event: RestrictionMessage['event']): void;
  onRelayed(listener: (event: RestrictionMessage['event']) => void): () => void;
} | null {
  if (primary === undefined) return null;
  return {
    publish(event) {
      if (RELAYED_EVENTS.has(event.type)) primary.send({ type: RESTRICTION_MESSAGE, event });
    },
    onRelayed(listener) {
      return primary.onMessage((message) => {
        if (isRestrictionMessage(message)) listener(message.event);
      });
    },
  };
}
