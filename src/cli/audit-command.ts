/**
 * `airlock audit verify [FILE...]`: checks the audit hash chain and names the first bad line. With no
 * file, the config's audit file and its rotated predecessors (oldest first) are verified as one chain.
 *
 * A hash chain proves every link, not its two ends. The start: a log whose first record chains to
 * GENESIS is whole from its beginning; with `--complete` (implied for the configured files while fewer
 * rotated copies exist than `audit.keep`, so none can have been rotated away) anything else means its
 * first lines were deleted. The end: lines cut from the tail leave an intact shorter chain, so
 * `--head HASH` (the `audit_head` of the admin API's /v1/health, or the last record the webhook copy
 * received, kept where the log's writer cannot reach) must be the last record's hash.
 * Exit 0 when intact, 2 when broken, 1 on a usage or read error.
 */
import { existsSync, readFileSync } from 'node:fs';
import { parseArgs } from 'node:util';
import { GENESIS, verifyChain } from '../observability/audit-chain.js';
import { UsageError, type CliIo } from './cli-io.js';
import { loadConfigOrReport } from './locate-config.js';

const USAGE = 'usage: airlock audit verify [FILE...]   (oldest first; default: the configured audit file and its rotated copies)  [--config FILE] [--complete] [--head HASH]';

export async function auditCommand(io: CliIo): Promise<number> {
  const { values, positionals } = parseArgs({
    args: [...io.args],
    options: { config: { type: 'string' }, complete: { type: 'boolean', default: false }, head: { type: 'string' } },
    allowPositionals: true,
  });
  const [action, ...files] = positionals;
  if (action !== 'verify') throw new UsageError(USAGE);
  const head = values.head?.toLowerCase();
  if (head !== undefined && !/^[0-9a-f]{16,64}$/.test(head)) throw new UsageError(`--head takes a record hash (16 to 64 hex digits), not ${JSON.stringify(values.head)}.\n${USAGE}`);
  let paths = files;
  let complete = values.complete;
  if (paths.length === 0) {
    const loaded = loadConfigOrReport(io, values.config);
    if (loaded === null) return 1;
    const { file: base, keep } = loaded.config.audit;
    const rotated: string[] = [];
    for (let n = 1; n <= 1000 && existsSync(`${base}.${n}`); n++) rotated.unshift(`${base}.${n}`);
    paths = [...rotated, base];
    // Fewer copies than `keep`: rotation has never dropped one, so the log must start at its beginning.
    if (keep >= 1 && rotated.length < keep) complete = true;
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
  if (!verdict.ok) {
    io.stdout.write(`BROKEN at ${verdict.file} line ${verdict.line}: ${verdict.problem}. The ${verdict.records} records before it verify.\n`);
    return 2;
  }
  const first = paths[0] as string;
  const last = paths[paths.length - 1] as string;
  if (complete && verdict.records > 0 && verdict.firstPrev !== GENESIS) {
    io.stdout.write(
      `BROKEN at ${first} line 1: the first record follows a record (hash ${verdict.firstPrev.slice(0, 16)}...) that is in none of these files, but the log should start at its beginning: its first lines were deleted, or an older rotated file is missing (pass it first).\n`,
    );
    return 2;
  }
  if (head !== undefined && !verdict.lastHash.startsWith(head)) {
    io.stdout.write(
      `BROKEN at the end of ${last}: the last record's hash is ${verdict.lastHash.slice(0, 16)}..., not the expected head ${head.slice(0, 16)}...: records after it were cut off (or these are not the latest files).\n`,
    );
    return 2;
  }
  const start = verdict.firstPrev === GENESIS ? 'from the beginning of the log' : `from a record that follows hash ${verdict.firstPrev.slice(0, 16)}... (an earlier file not given here)`;
  io.stdout.write(
    `OK: ${verdict.records} record${verdict.records === 1 ? '' : 's'} in ${paths.length} file${paths.length === 1 ? '' : 's'}, the hash chain is intact ${start} to the last hash ${verdict.lastHash.slice(0, 16)}...${head === undefined ? '' : ', the expected head'}.\n`,
  );
  return 0;
}
