/**
 * Cluster mode (workers: N | auto): the primary forks N worker processes that each run the proxy on the
 * same ports (node:cluster shares the listening sockets), restarts a worker that dies (with backoff),
 * passes SIGHUP (reload) on, and on SIGTERM asks every worker to drain and waits for them. Workers
 * share governance state and rate limits through Redis (config validation requires state type redis);
 * each writes its own audit file (audit.w<N>.jsonl), so each hash chain has one writer.
 */
import cluster, { type Worker } from 'node:cluster';
import { availableParallelism } from 'node:os';
import { basename, dirname, extname, join } from 'node:path';
import type { AirlockConfig } from '../config/types.js';
import { serveClusterMetrics } from '../observability/cluster-metrics.js';
import type { CliIo } from './cli-io.js';

export function workerCount(workers: number | 'auto'): number {
  return workers === 'auto' ? availableParallelism() : workers;
}

/** The audit file of one worker: audit.jsonl -> audit.w2.jsonl. */
export function workerAuditFile(config: AirlockConfig, workerId: string): AirlockConfig {
  const file = config.audit.file;
  const ext = extname(file);
  return Object.freeze({ ...config, audit: Object.freeze({ ...config.audit, file: join(dirname(file), `${basename(file, ext)}.w${workerId}${ext}`) }) });
}

export async function runClusterPrimary(io: CliIo, config: AirlockConfig, count: number): Promise<number> {
  let stopping = false;
  const failures = new Map<string, number>();
  const workers = new Map<string, Worker>();
  const restarts = new Set<NodeJS.Timeout>();
  const fork = (id: string): void => {
    const worker = cluster.fork({ AIRLOCK_WORKER_ID: id });
    workers.set(id, worker);
    worker.on('exit', (code, signal) => {
      workers.delete(id);
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
    worker.on('listening', () => failures.set(id, 0));
    // A Worker emits 'error' when a send fails or the fork itself does: unheard, it ended the primary and
    // with it every worker. 'exit' (above) restarts a worker that is gone.
    worker.on('error', (error) => io.stderr.write(`worker ${id}: ${error.message}\n`));
  };
  // Any worker answering /metrics asks here for the sum over all workers.
  const stopMetrics = serveClusterMetrics();
  for (let i = 1; i <= count; i++) fork(String(i));
  io.stderr.write(`Airlock cluster: ${count} workers on ${config.listen}${config.admin === null ? '' : `, admin ${config.admin.listen}`}\n`);
  const stopReload = io.onReloadRequested?.(() => {
    for (const worker of workers.values()) worker.process.kill('SIGHUP');
  });
  const signal = await io.stopRequested;
  stopping = true;
  for (const restart of restarts) clearTimeout(restart);
  stopReload?.();
  io.stderr.write(`${signal} received: asking ${workers.size} workers to drain (up to ${config.shutdown_timeout} s)\n`);
  const exits = [...workers.values()].map((worker) => new Promise<void>((resolve) => worker.once('exit', () => resolve())));
  for (const worker of workers.values()) worker.process.kill('SIGTERM');
  const hard = setTimeout(() => {
    for (const worker of workers.values()) worker.process.kill('SIGKILL');
  }, (config.shutdown_timeout + 5) * 1000);
  await Promise.all(exits);
  clearTimeout(hard);
  stopMetrics();
  return 0;
}
