/**
 * `airlock check [--config F] [--strict]`: every problem of the config with its YAML path and line,
 * exit 1 when there is an error (or, with --strict, a strict warning).
 */
import { parseArgs } from 'node:util';
import { formatProblem } from '../config/config-problem.js';
import { loadConfigFile } from '../config/load-config.js';
import type { CliIo } from './cli-io.js';
import { configPath } from './locate-config.js';

export async function checkCommand(io: CliIo): Promise<number> {
  const { values } = parseArgs({ args: [...io.args], options: { config: { type: 'string' }, strict: { type: 'boolean', default: false } }, allowPositionals: false });
  const file = configPath(io, values.config);
  const loaded = loadConfigFile(file);
  const failing = loaded.problems.filter((p) => p.severity === 'error' || (values.strict && p.strict === true));
  for (const problem of loaded.problems) {
    const shown = problem.severity === 'warning' && values.strict && problem.strict === true ? { ...problem, severity: 'error' as const } : problem;
    io.stderr.write(`${formatProblem(shown, file)}\n`);
  }
  if (failing.length > 0) {
    io.stderr.write(`\n${file}: ${failing.length} problem${failing.length === 1 ? '' : 's'} to fix.\n`);
    return 1;
  }
  const config = loaded.config;
  if (config === null) return 1;
  const count = (n: number, noun: string): string => `${n} ${noun}${n === 1 ? '' : 's'}`;
  const warnings = loaded.problems.length;
  io.stdout.write(
    `${file}: OK (${count(Object.keys(config.services).length, 'service')}, ${count(Object.keys(config.agents).length, 'agent')}${warnings > 0 ? `, ${count(warnings, 'warning')}` : ''})\n`,
  );
  return 0;
}
