/**
 * How many processes `workers` means: `auto` is one per core the process may use. Read by the cluster's
 * primary (how many to fork) and by each process (whose unsaved-restriction files may belong to a live
 * worker), so it lives with the config, not with the CLI.
 */
import { availableParallelism } from 'node:os';

export function workerCount(workers: number | 'auto'): number {
  return workers === 'auto' ? availableParallelism() : workers;
}
