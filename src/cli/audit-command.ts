/**
 * `airlock audit verify [FILE...]`: checks the audit hash chain and names the first bad line. With no
 * file, the config's audit file and its rotated predecessors (oldest first) are verified as one chain.
 * Exit 0 when intact, 2 when broken, 1 on a usage or read error.
 */
import { existsSync, readFileSync } from 'node:fs';
import { parseArgs } from 'node:util';
import { verifyChain } from '../observability/audit-chain.js';
import { UsageError, type CliIo } from './cli-io.js';
import { loadConfigOrReport } from './locate-config.js';

const USAGE = 'usage: airlock audit verify [FILE...]   (oldest first; default: the configured audit file and its rotated copies)  [--config FILE]';

export async function auditCommand(io: CliIo): Promise<number> {
  const { values, positionals } = parseArgs({ args: [...io.args], options: { config: { type: 'string' } }, allowPositionals: true });
  const [action, ...files] = positionals;
  if (action !== 'verify') throw new UsageError(USAGE);
  let paths = files;
  if (paths.length === 0) {
    const loaded = loadConfigOrReport(io, values.config);
    if (loaded === null) return 1;
    const base = loaded.config.audit.file;
    const rotated: string[] = [];
    for (let n = 1; n <= 1000 && existsSync(`${base}.${n}`); n++) rotated.unshift(`${base}.${n}`);
    paths = [...rotated, base];
  }
  const inputs: Array<{ name: string; text: string }> = [];
  for (const path of paths) {
    try {
      inputs.push({ name: path, text: readFileSync(path, 'utf8') });
    } catch (error) {
      io.stderr.write(`cannot read ${path}: ${(error as Error).message}\n`);
      return 1;
    }
  }
  const verdict = verifyChain(inputs);
  if (verdict.ok) {
    io.stdout.write(`OK: ${verdict.records} record${verdict.records === 1 ? '' : 's'} in ${paths.length} file${paths.length === 1 ? '' : 's'}, the hash chain is intact (last hash ${verdict.lastHash.slice(0, 16)}...).\n`);
    return 0;
  }
  io.stdout.write(`BROKEN at ${verdict.file} line ${verdict.line}: ${verdict.problem}. The ${verdict.records} records before it verify.\n`);
  return 2;
}
