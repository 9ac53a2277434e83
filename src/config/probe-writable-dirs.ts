/**
 * What `airlock check` asks of the file system, reading only: can Airlock make (or use) data_dir and the
 * audit log's directory? A config that validated could still fail `airlock serve` at its first step
 * with "data_dir ... cannot be made"; check now says so first, with the same advice.
 */
import { accessSync, constants, statSync, type Stats } from 'node:fs';
import { dirname } from 'node:path';
import { missingDirs } from '../state/make-private-dir.js';
import type { ConfigProblem, ProblemPath } from './config-problem.js';
import type { AirlockConfig } from './types.js';

export function unwritableDirProblems(config: AirlockConfig): ConfigProblem[] {
  const problems: ConfigProblem[] = [];
  const dataDir = dirProblem(config.data_dir);
  if (dataDir !== null) problems.push(problem(['data_dir'], `data_dir ${config.data_dir} ${dataDir}; set data_dir to a directory Airlock can write`));
  const audit = config.audit.file;
  // /dev/null or a FIFO to a collector: written as it is, never rotated, so its directory is not Airlock's.
  const existing = statOrNothing(audit);
  // Not one of those: serve cannot open it (EISDIR). `file: ""` or "." names data_dir itself (found by review).
  if (existing?.isDirectory() === true) {
    problems.push(problem(['audit', 'file'], `the audit log ${audit} is a directory; set audit.file to a file, such as audit.jsonl (relative to data_dir)`));
    return problems;
  }
  if (existing !== undefined && !existing.isFile()) return problems;
  const auditDir = dirname(audit);
  if (auditDir !== config.data_dir) {
    const why = dirProblem(auditDir);
    if (why !== null) problems.push(problem(['audit', 'file'], `the audit log's directory ${auditDir} ${why}; set audit.file to a path Airlock can write`));
  }
  const auditRefused = existing === undefined ? null : accessError(audit, constants.W_OK);
  if (auditRefused === 'EROFS') problems.push(problem(['audit', 'file'], `the audit log ${audit} is on a read-only file system; set audit.file to a path on a writable one`));
  else if (auditRefused !== null) problems.push(problem(['audit', 'file'], `the audit log ${audit} exists and this user may not write it; fix its owner or mode, or set audit.file elsewhere`));
  return problems;
}

function problem(path: ProblemPath, message: string): ConfigProblem {
  return { severity: 'error', path, message };
}

/** Why Airlock could not make or write `dir` (as makePrivateDir would be asked to), or null. */
function dirProblem(dir: string): string | null {
  let missing: string[];
  try {
    missing = missingDirs(dir);
  } catch {
    return 'cannot be made: a file or a broken symbolic link is in the way (it or a parent is not a directory)';
  }
  const nearest = missing.length === 0 ? dir : dirname(missing[0] as string);
  const refused = accessError(nearest);
  if (refused === null) return null;
  // Found by the ops walkthrough: a read-only mount was reported as this user's permission, and owner
  // or mode cannot fix it.
  if (refused === 'EROFS') return missing.length === 0 ? 'is on a read-only file system (in a container, mount a writable volume there)' : `cannot be made: ${nearest} is on a read-only file system (in a container, mount a writable volume there)`;
  return missing.length === 0 ? 'exists and this user may not write in it' : `cannot be made: this user may not create directories in ${nearest}`;
}

/** ENOTDIR (a file where a parent directory should be) reads as nothing there; dirProblem says why. */
function statOrNothing(path: string): Stats | undefined {
  try {
    return statSync(path, { throwIfNoEntry: false });
  } catch {
    return undefined;
  }
}

/**
 * Why `path` may not be written (EROFS, EACCES, ...), or null when it may. A directory needs write and
 * search (x) permission to make files in it; a file only write permission
 * (found by a walkthrough: W_OK | X_OK on the audit log refused every existing 0600 log, since a file
 * has no x bit, so `check` failed once Airlock had run).
 */
function accessError(path: string, mode: number = constants.W_OK | constants.X_OK): string | null {
  try {
    accessSync(path, mode);
    return null;
  } catch (error) {
    return (error as NodeJS.ErrnoException).code ?? 'EACCES';
  }
}
