/**
 * `airlock audit verify [FILE...]`: checks the audit hash chain and names the first bad line. With no
 * file, the config's audit file and its rotated predecessors (oldest first) are verified as one chain
 * (and each worker's as another: see below).
 *
 * A hash chain proves every link, not its two ends. The start: a log whose first record chains to
 * GENESIS is whole from its beginning; with `--complete` (implied for the configured files while fewer
 * rotated copies exist than `audit.keep`, so none can have been rotated away) anything else means its
 * first lines were deleted. The end: lines cut from the tail leave an intact shorter chain, so
 * `--head HASH` (the `audit_head` of the admin API's /v1/health, or the last record the webhook copy
 * received, kept where the log's writer cannot reach) must be the hash of one of its records: the last,
 * or one before it when the log grew since the head was kept.
 *
 * With `workers` above 1 each worker writes its own file (audit.w<N>.jsonl, run-cluster.ts), each its own
 * chain with one writer. With no file given, verify finds every chain next to the configured file (the
 * file itself, every audit.w<N>.jsonl, and w1..wN for a numeric `workers`), each with its rotated copies,
 * and checks and reports each one: before, it read audit.jsonl alone, and said OK for a stale single-
 * process log while the workers' logs were broken (found by review).
 * Exit 0 when intact, 3 when intact but a gap is recorded (airlock:audit-gap), 2 when broken (any
 * chain), 1 on a usage or read error. `--gaps-known-until TIME`: gaps recorded up to TIME are still
 * listed, marked known, and exit 3 is for the ones after it (found by the ops walkthrough: one crash
 * kept a job that alerts on any non-zero exit firing until the rotated copies holding it were gone).
 */
import { existsSync, readdirSync, readFileSync } from 'node:fs';
import { basename, dirname, extname } from 'node:path';
import { parseArgs } from 'node:util';
import { fileAccessProblem } from '../config/file-access-problem.js';
import { GENESIS, verifyChain } from '../observability/audit-chain.js';
import { escapeRegExp } from '../redaction/key-patterns.js';
import { UsageError, type CliIo } from './cli-io.js';
import { loadConfigOrReport } from './locate-config.js';
import { workerAuditPath } from './run-cluster.js';

const USAGE = 'usage: airlock audit verify [FILE...]   (oldest first; default: the configured audit file and its rotated copies, and every worker\'s)  [--config FILE] [--complete] [--head HASH] [--gaps-known-until TIME]';

/** One hash chain: its files oldest first; `label` names it when there are several. */
interface Chain {
  readonly label: string;
  readonly paths: readonly string[];
  readonly complete: boolean;
  /** Said when its newest file cannot be read because it does not exist. */
  readonly whenMissing?: string;
}

type Outcome = { readonly result: 'ok' | 'gaps' | 'broken'; readonly text: string } | { readonly result: 'unreadable'; readonly text: string };

export async function auditCommand(io: CliIo): Promise<number> {
  const { values, positionals } = parseArgs({
    args: [...io.args],
    options: { config: { type: 'string' }, complete: { type: 'boolean', default: false }, head: { type: 'string' }, 'gaps-known-until': { type: 'string' } },
    allowPositionals: true,
  });
  const [action, ...files] = positionals;
  if (action !== 'verify') throw new UsageError(USAGE);
  const head = values.head?.toLowerCase();
  // Not repeated: what is typed where a hash goes may be a key (run-cli.ts).
  if (head !== undefined && !/^[0-9a-f]{16,64}$/.test(head)) throw new UsageError(`--head takes a record hash (16 to 64 hex digits); what was given is not one (not repeated here: it may be a key).\n${USAGE}`);
  const knownText = values['gaps-known-until'];
  // With its offset (a time without one is read in this machine's zone), and not ahead of now: a typo of
  // next year would silence every gap to come (found by review).
  const knownUntil = knownText === undefined ? -Infinity : /(?:Z|[+-]\d\d:?\d\d)$/i.test(knownText) ? Date.parse(knownText) : Number.NaN;
  if (Number.isNaN(knownUntil)) throw new UsageError(`--gaps-known-until takes a time with its offset, e.g. 2026-11-29T06:00:00Z (the time of the gap record you last looked at).\n${USAGE}`);
  if (knownUntil > Date.now() + 60_000) throw new UsageError(`--gaps-known-until ${knownText} is in the future, which would hide gaps not yet recorded; give the time of the last gap you looked at.\n${USAGE}`);
  let chains: Chain[];
  if (files.length > 0) {
    chains = [{ label: files[files.length - 1] as string, paths: files, complete: values.complete }];
  } else {
    const loaded = loadConfigOrReport(io, values.config, 'operator', 'Where the audit log is (data_dir, audit) cannot be read from it; fix it, or name the files: airlock audit verify FILE... (oldest first; with workers, one chain per worker, audit.w1.jsonl, ...).');
    if (loaded === null) return 1;
    const { file, keep } = loaded.config.audit;
    chains = configuredChains(file, loaded.config.workers, keep, values.complete);
    // One process writes now (workers: 1): --head is that chain's, whatever worker files an earlier run
    // with more workers left behind (found by review: the README's workflow became a usage error).
    if (head !== undefined && loaded.config.workers === 1) chains = chains.filter((c) => c.label === basename(file));
  }
  if (chains.length === 1) {
    const outcome = checkChain(chains[0] as Chain, head, knownUntil);
    (outcome.result === 'unreadable' ? io.stderr : io.stdout).write(`${outcome.text}\n`);
    return EXIT[outcome.result];
  }
  if (head !== undefined) {
    throw new UsageError(
      `--head is a record hash of one chain, and there are ${chains.length} here (one per worker: ${chains.map((c) => c.label).join(', ')}); give the files of the one it belongs to, oldest first, e.g.  airlock audit verify ${[...(chains[1] as Chain).paths].join(' ')} --head HASH\n${USAGE}`,
    );
  }
  io.stdout.write(`${chains.length} audit hash chains, one per process that wrote them (with workers above 1, each worker writes its own file):\n`);
  const broken: string[] = [];
  const unreadable: string[] = [];
  const gapped: string[] = [];
  for (const chain of chains) {
    const outcome = checkChain(chain, head, knownUntil);
    if (outcome.result === 'unreadable') {
      unreadable.push(chain.label);
      io.stderr.write(`${chain.label}: ${outcome.text}\n`);
      io.stdout.write(`  ${chain.label}: NOT CHECKED (it cannot be read; see stderr)\n`);
      continue;
    }
    if (outcome.result === 'broken') broken.push(chain.label);
    if (outcome.result === 'gaps') gapped.push(chain.label);
    io.stdout.write(`  ${chain.label}: ${outcome.text.replaceAll('\n', '\n  ')}\n`);
  }
  if (broken.length > 0) {
    io.stdout.write(`BROKEN: ${broken.length} of ${chains.length} chains (${broken.join(', ')}).\n`);
    return 2;
  }
  if (unreadable.length > 0) {
    io.stdout.write(`NOT VERIFIED: ${unreadable.length} of ${chains.length} chains could not be read (${unreadable.join(', ')}); the others are intact.\n`);
    return 1;
  }
  if (gapped.length > 0) {
    io.stdout.write(`GAPS: all ${chains.length} chains are intact, and ${gapped.length} record that records are missing (${gapped.join(', ')}).\n`);
    return EXIT.gaps;
  }
  io.stdout.write(`OK: all ${chains.length} chains are intact.\n`);
  return 0;
}

/**
 * 3: intact, but Airlock recorded that records are missing (airlock:audit-gap), so a job that checks
 * only the exit code sees it (found by review: it was 0).
 */
const EXIT = { ok: 0, gaps: 3, broken: 2, unreadable: 1 } as const;

/**
 * The chains next to the configured audit file: the file itself (when it exists, when `workers` is 1,
 * or when there is nothing else), every worker's audit.w<N>.jsonl found, and w1..wN for a numeric
 * `workers` above 1 (a worker's whole log removed is then a file that cannot be read, not a chain
 * missing from the report). Each comes with its rotated copies, oldest first.
 */
function configuredChains(base: string, workers: number | 'auto', keep: number, completeFlag: boolean): Chain[] {
  const ext = extname(base);
  const stem = basename(base, ext);
  const pattern = new RegExp(`^${escapeRegExp(stem)}\\.w([1-9][0-9]{0,5})${escapeRegExp(ext)}(?:\\.[1-9][0-9]*)?$`);
  const ids = new Set<number>();
  let names: string[] = [];
  try {
    names = readdirSync(dirname(base));
  } catch {
    // No data_dir yet: the configured file alone, which then cannot be read, as before.
  }
  for (const name of names) {
    const id = pattern.exec(name)?.[1];
    if (id !== undefined) ids.add(Number(id));
  }
  const configured = typeof workers === 'number' && workers > 1 ? workers : 0;
  for (let id = 1; id <= configured; id++) ids.add(id);
  const chain = (file: string, label: string, whenMissing?: string): Chain => {
    const rotated: string[] = [];
    for (let n = 1; n <= 1000 && existsSync(`${file}.${n}`); n++) rotated.unshift(`${file}.${n}`);
    // Fewer copies than `keep`: rotation has never dropped one, so the log must start at its beginning.
    return { label, paths: [...rotated, file], complete: completeFlag || (keep >= 1 && rotated.length < keep), ...(whenMissing === undefined ? {} : { whenMissing }) };
  };
  const chains: Chain[] = [];
  if (ids.size === 0 || workers === 1 || existsSync(base) || existsSync(`${base}.1`)) chains.push(chain(base, basename(base)));
  for (const id of [...ids].sort((a, b) => a - b)) {
    const file = workerAuditPath(base, String(id));
    const whenMissing =
      id <= configured
        ? `worker ${id} of workers: ${configured} has written no audit log there: it has not run since \`workers\` was raised, or its log was removed`
        : `worker ${id}'s rotated copies are there but its current file is not: it was removed, or a rotation is under way (run verify again)`;
    chains.push(chain(file, basename(file), whenMissing));
  }
  return chains;
}

/** Verifies one chain and its two ends; the text is the line to print (stderr when unreadable). */
function checkChain(chain: Chain, head: string | undefined, knownUntil: number): Outcome {
  const { paths, complete } = chain;
  const inputs: Array<{ name: string; text: string }> = [];
  for (const path of paths) {
    try {
      inputs.push({ name: path, text: readFileSync(path, 'utf8') });
    } catch (error) {
      const missing = (error as NodeJS.ErrnoException).code === 'ENOENT' && chain.whenMissing !== undefined;
      return { result: 'unreadable', text: missing ? `cannot read ${path}: it does not exist (${chain.whenMissing})` : fileAccessProblem(path, error) };
    }
  }
  const verdict = verifyChain(inputs, head);
  if (!verdict.ok) return { result: 'broken', text: `BROKEN at ${verdict.file} line ${verdict.line}: ${verdict.problem}. The ${verdict.records} records before it verify.` };
  const first = paths[0] as string;
  const last = paths[paths.length - 1] as string;
  // Airlock writes airlock:start before it takes a request, so a log it wrote is never empty (found by
  // review: a log truncated to nothing verified as "OK: 0 records ... from the beginning").
  if (complete && verdict.records === 0) {
    return { result: 'broken', text: `BROKEN: ${last} holds no records, but the log should start at its beginning: Airlock writes an airlock:start record before its first request, so its lines were deleted (or this is not a log Airlock wrote).` };
  }
  if (complete && verdict.records > 0 && verdict.firstPrev !== GENESIS) {
    return {
      result: 'broken',
      text: `BROKEN at ${first} line 1: the first record follows a record (hash ${verdict.firstPrev.slice(0, 16)}...) that is in none of these files, but the log should start at its beginning: its first lines were deleted, or an older rotated file is missing (pass it first).`,
    };
  }
  // A head kept earlier must be in the chain: the log keeps growing after it (found by review: only the
  // very last record was accepted, so yesterday's head always read as "cut off"). Missing, the records up
  // to it were cut off, or rewritten: a chain recomputed after an edit before the head no longer holds it.
  const sought = verdict.sought ?? null;
  if (head !== undefined && sought === null) {
    return {
      result: 'broken',
      text: `BROKEN: no record of ${paths.join(', ')} has the expected head ${head.slice(0, 16)}... (the last is ${verdict.lastHash.slice(0, 16)}...): the records up to it were cut off or rewritten, or these files do not reach it (pass the rotated copies that hold it, oldest first).`,
    };
  }
  const start = verdict.firstPrev === GENESIS ? 'from the beginning of the log' : `from a record that follows hash ${verdict.firstPrev.slice(0, 16)}... (${paths.length === 1 ? 'a file before this one' : 'a file before these'}, not given here)`;
  const after = sought === null ? 0 : verdict.records - sought.record;
  const anchored = sought === null ? '' : after === 0 ? ', the expected head' : `; the expected head is record ${sought.record} (${sought.file} line ${sought.line}), and ${after} record${after === 1 ? ' was' : 's were'} written after it`;
  const gaps = recordedGaps(inputs, knownUntil);
  return {
    result: gaps.unknown === 0 ? 'ok' : 'gaps',
    text: `OK: ${verdict.records} record${verdict.records === 1 ? '' : 's'} in ${paths.length} file${paths.length === 1 ? '' : 's'}, the hash chain is intact ${start} to the last hash ${verdict.lastHash.slice(0, 16)}...${anchored}.${gaps.text}`,
  };
}

/**
 * The airlock:audit-gap records of an intact chain, one line each: records Airlock could not write
 * (a full or failing disk) are missing, and the chain says so rather than hiding it (audit-log.ts).
 */
function recordedGaps(inputs: ReadonlyArray<{ name: string; text: string }>, knownUntil: number): { text: string; unknown: number } {
  const found: string[] = [];
  let unknown = 0;
  for (const { name, text } of inputs) {
    let line = 0;
    for (const raw of text.split('\n')) {
      line++;
      if (!raw.includes('"route":"airlock:audit-gap"')) continue;
      const record = JSON.parse(raw) as { time?: unknown; reason?: unknown };
      const known = Date.parse(String(record.time)) <= knownUntil;
      if (!known) unknown++;
      found.push(`\n  ${known ? 'GAP (known)' : 'GAP'} at ${name} line ${line} (${String(record.time)}): ${String(record.reason)}`);
    }
  }
  if (found.length === 0) return { text: '', unknown };
  const known = found.length - unknown;
  return {
    text: `\nRecords are missing: ${found.length} gap${found.length === 1 ? '' : 's'} recorded by Airlock where records may be missing (an audit outage, or a run that ended without airlock:stop; each gap's reason says which; the chain itself is intact)${known === 0 ? '' : `; ${known} up to --gaps-known-until`}.${found.join('')}`,
    unknown,
  };
}
