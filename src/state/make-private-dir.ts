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
import { lstatSync, mkdirSync, statSync } from 'node:fs';
import { dirname, resolve } from 'node:path';

export function makePrivateDir(dir: string): void {
  for (const path of missingDirs(dir)) {
    try {
      mkdirSync(path, { mode: 0o700 });
    } catch (error) {
      // Made meanwhile (another worker starting at the same time): as good as made here, if it is a
      // directory; a file that appeared there is not.
      if ((error as NodeJS.ErrnoException).code !== 'EEXIST' || !statSync(path).isDirectory()) throw error;
    }
  }
}

/**
 * The directories `mkdir -p dir` would make, outermost first (none when dir is a directory); throws, as
 * mkdir would fail (EEXIST, ENOTDIR), when a file or a link to nothing is in the way. Reads only.
 */
export function missingDirs(dir: string): string[] {
  const missing: string[] = [];
  for (let current = resolve(dir); ; ) {
    const found = statSync(current, { throwIfNoEntry: false });
    if (found !== undefined) {
      // As mkdir -p: afterwards the path is a directory, or this failed (EEXIST for the path itself).
      if (!found.isDirectory()) throw Object.assign(new Error(`${current} exists and is not a directory`), { code: missing.length === 0 ? 'EEXIST' : 'ENOTDIR', path: current });
      break;
    }
    // stat follows links: a link to nothing reads as missing, but mkdir cannot make a directory there.
    if (lstatSync(current, { throwIfNoEntry: false })?.isSymbolicLink() === true) {
      throw Object.assign(new Error(`${current} is a symbolic link to nothing, so no directory can be made there`), { code: 'EEXIST', path: current });
    }
    missing.push(current);
    const parent = dirname(current);
    if (parent === current) break;
    current = parent;
  }
  return missing.reverse();
}
