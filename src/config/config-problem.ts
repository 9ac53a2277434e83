/**
 * A problem found in a config: where (the YAML path, and line:column when loaded from a file), what,
 * and what to do. Errors stop Airlock from starting; warnings are printed, and `check --strict`
 * fails on them too.
 */

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

export function formatProblem(problem: ConfigProblem, file: string | null): string {
  const where = file === null ? '' : problem.line === undefined ? `${file}: ` : `${file}:${problem.line}:${problem.column ?? 1}: `;
  return `${where}${problem.severity} at ${formatPath(problem.path)}: ${problem.message}`;
}
