/**
 * `mkdir -p` with mode 0700 for what Airlock writes (data_dir, the audit log's directory, the state
 * and secrets files' directories), one level at a time.
 *
 * Not `mkdirSync(dir, { recursive: true })`: when the kernel answers ENOENT for a directory whose
 * parent exists (a path under /proc or /sys), node's recursive mkdir makes the parent, finds it
 * there, and tries the child again, for ever, synchronously: `airlock serve` with data_dir under
 * /proc spun at full CPU and did not even hear SIGTERM. Here the walk is bounded by the path's depth
 * and that answer is an error like any other.
 */
import { mkdirSync, statSync } from 'node:fs';
import { dirname, resolve } from 'node:path';

export function makePrivateDir(dir: string): void {
  const missing: string[] = [];
  for (let current = resolve(dir); ; ) {
    try {
      statSync(current);
      break;
    } catch (error) {
      if ((error as NodeJS.ErrnoException).code !== 'ENOENT') throw error;
    }
    missing.push(current);
    const parent = dirname(current);
    if (parent === current) break;
    current = parent;
  }
  for (const path of missing.reverse()) {
    try {
      mkdirSync(path, { mode: 0o700 });
    } catch (error) {
      // Made meanwhile (another worker starting at the same time): as good as made here.
      if ((error as NodeJS.ErrnoException).code !== 'EEXIST') throw error;
    }
  }
}
