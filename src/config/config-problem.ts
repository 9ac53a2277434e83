/**
 * A problem found in a config: where (the YAML path, and line:column when loaded from a file), what,
 * and what to do. Errors stop Airlock from starting; warnings are printed, and `check --strict`
 * fails on them too.
 */

import { maskKeyShapes } from '../redaction/key-patterns.js';

export type ProblemPath = ReadonlyArray<string | number>;

export interface ConfigProblem {
  readonly severity: 'error' | 'warning';
  readonly path: ProblemPath;
  readonly message: string;
  /** A warning that `check --strict` treats as an error. */
  readonly strict?: boolean;
  readonly line?: number;
  readonly column?: number;
}

export function formatPath(path: ProblemPath): string {
  let out = '';
  for (const part of path) {
    if (typeof part === 'number') out += `[${part}]`;
    else if (/^[A-Za-z_][A-Za-z0-9_-]*$/.test(part)) out += out === '' ? part : `.${part}`;
    else out += `[${JSON.stringify(part)}]`;
  }
  return out === '' ? '(top level)' : out;
}

const KEY_LIKE = '[a value that looks like a key]';

/**
 * The problem with whatever in its message or path looks like a key masked (key-patterns.ts
 * maskKeyShapes): problems quote what the operator wrote (an unknown key's name, a value that "is not a
 * URL", a YAML alias), they reach the terminal and, on a reload, the log, and a key pasted into the
 * wrong place is not yet one the log's scrub knows (found by review). Places (line, column) stay.
 */
export function sayableProblem(problem: ConfigProblem): ConfigProblem {
  const message = maskKeyShapes(problem.message, KEY_LIKE);
  const path = problem.path.map((part) => (typeof part === 'string' ? maskKeyShapes(part, KEY_LIKE) : part));
  return message === problem.message && path.every((part, i) => part === problem.path[i]) ? problem : { ...problem, message, path };
}

export function formatProblem(unchecked: ConfigProblem, file: string | null): string {
  const problem = sayableProblem(unchecked);
  const where = file === null ? '' : problem.line === undefined ? `${file}: ` : `${file}:${problem.line}:${problem.column ?? 1}: `;
  return `${where}${problem.severity} at ${formatPath(problem.path)}: ${problem.message}`;
}
