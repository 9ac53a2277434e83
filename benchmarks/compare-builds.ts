/**
 * npm run bench:compare -- <git ref>: this working tree's build against another commit's, side by side.
 *
 * Runs on this VM drift by 20% or more from one `npm run bench` to the next, so a change of a few
 * percent cannot be told from two separate runs. Here both builds run at once, with the same config, in
 * front of the same upstream, and take turns under the same wrk load, round after round (the order
 * alternates each round), so both see the machine in the same state. Reported per load and build:
 * rps, p50, p99 and CPU microseconds per request, as the median of the rounds and their range; and per
 * load, the median of each round's ratio of this tree to the other (paired by round, which cancels the
 * drift between rounds that the medians keep: the figure to read for a change of a few percent). At one
 * connection the upstream alone (direct) is measured too, for the added latency.
 *
 * The other commit is checked out in a temporary git worktree and built there (it shares this tree's
 * node_modules); the worktree is removed afterwards.
 * Environment: COMPARE_ROUNDS (default 3), BENCH_SECONDS (5) per measured run, BENCH_WARMUP (6) before
 * each build's first run of a load, COMPARE_LOADS (default unloaded,small,64k,1mb; c1000, /small at
 * 1,000 connections, paced, one request every 2 ms, and together, /small with both builds under 25
 * connections each at the same time, only when named) to pick loads, COMPARE_NODE_FLAGS (space-separated node flags for this tree's Airlock only, e.g.
 * "--max-semi-space-size=64"; with `-- HEAD` on a clean tree this measures the flags alone), and
 * COMPARE_CONFIG (JSON whose top-level keys replace those of this tree's Airlock config only, as
 * PROFILE_CONFIG does for npm run profile: '{"log":{"level":"warn"}}' with `-- HEAD` measures what the
 * per-request log line costs), and COMPARE_TRACING: "both" (both builds trace every request, sampling
 * 1.0, exported over OTLP/HTTP to a collector stand-in in this process, as npm run bench's
 * airlock+trace: a change to the traced path; the other commit must know `telemetry`) or "this" (this
 * tree's only: with `-- HEAD`, what tracing costs).
 */
import { execFileSync } from 'node:child_process';
import { mkdirSync, mkdtempSync, rmSync, symlinkSync, unlinkSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { generateAgentToken } from '../src/identity/agent-token.js';
import { airlockConfig } from './parts/airlock-config.js';
import { median } from './parts/bench-report.js';
import { cpuMicros, rssMiB } from './parts/process-stats.js';
import { runLoad, type LoadResult } from './parts/run-load.js';
import { startOtlpSink } from './parts/otlp-sink.js';
import { runPacedFor } from './parts/run-paced.js';
import { startAirlockProcess, startScript, type BenchProcess } from './parts/start-process.js';

const ROUNDS = Number(process.env['COMPARE_ROUNDS'] ?? 3);
const SECONDS = Number(process.env['BENCH_SECONDS'] ?? 5);
const WARMUP_SECONDS = Number(process.env['BENCH_WARMUP'] ?? 6);
const ALL_LOADS: ReadonlyArray<{ readonly name: string; readonly path: string; readonly connections: number; readonly onRequest?: true; readonly paced?: true; readonly together?: true }> = [
  { name: 'unloaded', path: '/small', connections: 1 },
  // One request every 2 ms, each on an idle proxy (parts/run-paced.ts), after the same wrk warm-up.
  { name: 'paced', path: '/small', connections: 1, paced: true, onRequest: true },
  { name: 'small', path: '/small', connections: 50 },
  { name: '64k', path: '/64k', connections: 50 },
  // As in npm run bench: 8 connections, as 1 MiB bodies saturate the machine with few.
  { name: '1mb', path: '/1mb', connections: 8 },
  // Memory under many waiting requests (npm run bench's 1,000-connection run); only when asked for.
  { name: 'c1000', path: '/small', connections: 1000, onRequest: true },
  // Both builds loaded at the same time, 25 connections each: the VM's drift falls on both at once, so
  // the per-round ratio of CPU per request is steadier than in turns; only when asked for.
  { name: 'together', path: '/small', connections: 25, onRequest: true, together: true },
];
const LOADS = selectedLoads(process.env['COMPARE_LOADS']);
const NODE_FLAGS = (process.env['COMPARE_NODE_FLAGS'] ?? '').split(/\s+/).filter((flag) => flag !== '');
const CONFIG_OVERRIDES = configOverrides(process.env['COMPARE_CONFIG']);
const TRACING = tracingWanted(process.env['COMPARE_TRACING']);
if (TRACING !== 'none' && 'telemetry' in CONFIG_OVERRIDES) {
  throw new Error('COMPARE_TRACING and a telemetry key in COMPARE_CONFIG both set tracing: give one of them');
}

function tracingWanted(text: string | undefined): 'none' | 'both' | 'this' {
  if (text === undefined || text === '') return 'none';
  if (text === 'both' || text === 'this') return text;
  throw new Error(`COMPARE_TRACING is "${text}": "both" traces both builds at sampling 1.0, "this" this tree's only; unset, neither`);
}

function configOverrides(text: string | undefined): Readonly<Record<string, unknown>> {
  if (text === undefined || text.trim() === '') return {};
  let parsed: unknown = null;
  try {
    parsed = JSON.parse(text);
  } catch {
    // Reported below with the shape it must have.
  }
  if (typeof parsed !== 'object' || parsed === null || Array.isArray(parsed)) {
    process.stderr.write(`COMPARE_CONFIG: give a JSON object of top-level config keys, e.g. '{"log":{"level":"warn"}}'; got ${text}\n`);
    process.exit(2);
  }
  return parsed as Record<string, unknown>;
}

function selectedLoads(list: string | undefined): typeof ALL_LOADS {
  if (list === undefined || list.trim() === '') return ALL_LOADS.filter((load) => load.onRequest !== true);
  const names = list.split(',').map((name) => name.trim());
  const unknown = names.filter((name) => !ALL_LOADS.some((load) => load.name === name));
  if (unknown.length > 0) {
    process.stderr.write(`COMPARE_LOADS: unknown load ${unknown.join(', ')}; the loads are ${ALL_LOADS.map((load) => load.name).join(', ')}\n`);
    process.exit(2);
  }
  return ALL_LOADS.filter((load) => names.includes(load.name));
}

interface Sample {
  readonly rps: number;
  readonly p50Ms: number;
  readonly p99Ms: number;
  readonly cpuUs: number | null;
  /** Resident memory right after the run. */
  readonly rssMiB: number | null;
}

interface Target {
  readonly name: string;
  readonly url: string;
  readonly pid: number | null;
  readonly headers: Record<string, string>;
}

function progress(message: string): void {
  process.stderr.write(`[compare ${new Date().toISOString().slice(11, 19)}] ${message}\n`);
}

async function sample(target: Target, path: string, connections: number, warmupSeconds: number, paced: boolean): Promise<Sample> {
  // wrk needs a thread per few hundred connections to keep 1,000 open.
  const threads = connections >= 1000 ? 2 : undefined;
  await runLoad({ url: `${target.url}${path}`, connections, seconds: warmupSeconds, headers: target.headers, ...(threads === undefined ? {} : { threads }) });
  const before = target.pid === null ? 0 : cpuMicros([target.pid]);
  const load: LoadResult & { late?: number } = await (paced ? runPacedFor : runLoad)({ url: `${target.url}${path}`, connections, seconds: SECONDS, headers: target.headers, ...(threads === undefined ? {} : { threads }) });
  const cpuUs = target.pid === null ? null : Math.round((cpuMicros([target.pid]) - before) / load.requests);
  // An answer slower than the pace sends the next request late: past 1%, the load is not the paced one asked for.
  if (load.late !== undefined && load.late > load.requests / 100) progress(`${target.name}: ${load.late} of ${load.requests} paced requests went after their slot (answers slower than the pace)`);
  if (load.errors > 0) throw new Error(`${target.name}: ${load.errors} errors under load; the comparison would measure the wrong thing`);
  return { rps: Math.round(load.rps), p50Ms: load.p50Ms, p99Ms: load.p99Ms, cpuUs, rssMiB: target.pid === null ? null : Math.round(rssMiB([target.pid])) };
}

function summary(values: readonly number[], digits: number): string {
  const show = (n: number): string => n.toFixed(digits);
  return values.length === 1 ? show(values[0] as number) : `${show(median(values))} (${show(Math.min(...values))}-${show(Math.max(...values))})`;
}

/** Checks out `ref` in a temporary worktree and builds it; returns its main.js and how to remove it. */
function buildRef(root: string, ref: string, work: string): { main: string; remove: () => void } {
  const tree = join(work, 'ref');
  execFileSync('git', ['-C', root, 'worktree', 'add', '--detach', tree, ref], { stdio: ['ignore', 'ignore', 'inherit'] });
  const modules = join(tree, 'node_modules');
  const remove = (): void => {
    // The link first: removing the worktree must never reach through it into this tree's packages.
    try {
      unlinkSync(modules);
    } catch {
      // Not created.
    }
    execFileSync('git', ['-C', root, 'worktree', 'remove', '--force', tree], { stdio: ['ignore', 'ignore', 'inherit'] });
  };
  try {
    symlinkSync(join(root, 'node_modules'), modules);
    execFileSync(process.execPath, [join(root, 'node_modules/typescript/bin/tsc'), '-p', join(tree, 'tsconfig.build.json')], { stdio: 'inherit' });
  } catch (error) {
    try {
      remove();
    } catch (cleanup) {
      process.stderr.write(`could not remove the worktree ${tree} (git worktree prune removes it): ${(cleanup as Error).message}\n`);
    }
    throw error;
  }
  return { main: join(tree, 'dist/main.js'), remove };
}

async function main(): Promise<void> {
  const ref = process.argv[2];
  if (ref === undefined || ref.startsWith('-')) throw new Error('usage: npm run bench:compare -- <git ref>   (e.g. HEAD~3, a tag, a commit)');
  if (![ROUNDS, SECONDS, WARMUP_SECONDS].every((n) => Number.isFinite(n) && n >= 1)) throw new Error('COMPARE_ROUNDS, BENCH_SECONDS and BENCH_WARMUP must be numbers, at least 1');
  const root = fileURLToPath(new URL('..', import.meta.url));
  let commit: string;
  try {
    commit = execFileSync('git', ['-C', root, 'rev-parse', '--short', `${ref}^{commit}`], { encoding: 'utf8', stdio: ['ignore', 'pipe', 'ignore'] }).trim();
  } catch {
    throw new Error(`"${ref}" names no commit in this clone: fetch it, or give another ref (git log --oneline lists them)`);
  }
  const work = mkdtempSync(join(tmpdir(), 'airlock-compare-'));
  const stops: Array<() => Promise<void> | void> = [];
  try {
    progress(`building ${ref} (${commit}) in a temporary worktree`);
    const built = buildRef(root, ref, work);
    stops.push(built.remove);
    const upstream = await startScript('./bench-upstream.ts');
    stops.push(upstream.stop);
    const sink = TRACING === 'none' ? null : await startOtlpSink();
    if (sink !== null) stops.push(sink.close);
    const agent = generateAgentToken();
    const env = { BENCH_UPSTREAM_KEY: `sk-bench-${agent.hash.slice(7, 31)}` };
    const auth = { authorization: `Bearer ${agent.token}` };
    const variant = [NODE_FLAGS.join(' '), Object.keys(CONFIG_OVERRIDES).length === 0 ? '' : JSON.stringify(CONFIG_OVERRIDES), TRACING === 'this' ? 'tracing' : ''].filter((part) => part !== '');
    const builds: Array<[string, string, readonly string[], Readonly<Record<string, unknown>>, string | null]> = [
      [`${commit} (${ref})`, built.main, [], {}, TRACING === 'both' ? (sink?.url ?? null) : null],
      [['this tree', ...variant].join(', '), join(root, 'dist/main.js'), NODE_FLAGS, CONFIG_OVERRIDES, sink?.url ?? null],
    ];
    const airlocks: Target[] = [];
    for (const [index, [name, main, flags, overrides, otlp]] of builds.entries()) {
      const dir = join(work, `airlock-${index}`);
      mkdirSync(dir);
      const config = airlockConfig({ dataDir: dir, upstreamPort: upstream.port, agentHash: agent.hash, adminHash: generateAgentToken().hash, otlp, overrides });
      const started: BenchProcess = await startAirlockProcess(config, env, join(dir, 'airlock.log'), main, flags);
      stops.push(started.stop);
      // https with COMPARE_CONFIG='{"tls":{...}}' (wrk does not check the certificate).
      airlocks.push({ name, url: `${started.scheme ?? 'http'}://127.0.0.1:${started.port}/api`, pid: started.pid, headers: auth });
    }
    const direct: Target = { name: 'direct', url: `http://127.0.0.1:${upstream.port}`, pid: null, headers: {} };

    const lines = [`| load | build | rps | p50 ms | p99 ms | CPU µs/req | RSS MiB (largest) |`, '|---|---|---:|---:|---:|---:|---:|'];
    // Paired by round: each round measures both builds within seconds of each other, so the ratio of a
    // round cancels the drift between rounds (the VM's speed wanders by 20% and more within minutes),
    // which the medians above keep. A change of a few percent shows here first.
    const paired = ['| load | CPU µs/req, this tree / other, per round | rps, this tree / other, per round |', '|---|---:|---:|'];
    for (const load of LOADS) {
      const samples = new Map<string, Sample[]>();
      for (let round = 0; round < ROUNDS; round++) {
        const order = round % 2 === 0 ? airlocks : [...airlocks].reverse();
        const warmup = round === 0 ? WARMUP_SECONDS : 2;
        if (load.together === true) {
          progress(`${load.name.padEnd(8)} round ${round + 1}/${ROUNDS}  both builds at once`);
          const results = await Promise.all(order.map((target) => sample(target, load.path, load.connections, warmup, false)));
          order.forEach((target, i) => samples.set(target.name, [...(samples.get(target.name) ?? []), results[i] as Sample]));
          continue;
        }
        for (const target of load.connections === 1 ? [direct, ...order] : order) {
          progress(`${load.name.padEnd(8)} round ${round + 1}/${ROUNDS}  ${target.name}`);
          const result = await sample(target, load.path, load.connections, warmup, load.paced === true);
          samples.set(target.name, [...(samples.get(target.name) ?? []), result]);
        }
      }
      for (const [name, list] of samples) {
        const cpu = list.map((s) => s.cpuUs).filter((c): c is number => c !== null);
        const rss = list.map((s) => s.rssMiB).filter((m): m is number => m !== null);
        lines.push(`| ${load.name} (${load.connections} conn.) | ${name} | ${summary(list.map((s) => s.rps), 0)} | ${summary(list.map((s) => s.p50Ms), 3)} | ${summary(list.map((s) => s.p99Ms), 2)} | ${cpu.length === 0 ? 'n/a' : summary(cpu, 0)} | ${rss.length === 0 ? 'n/a' : Math.max(...rss)} |`);
      }
      const [other, mine] = airlocks.map((target) => samples.get(target.name) ?? []);
      const ratios = (pick: (s: Sample) => number | null): number[] =>
        (mine ?? []).flatMap((s, i) => {
          const a = pick(s);
          const b = other?.[i] === undefined ? null : pick(other[i] as Sample);
          return a === null || b === null || b === 0 ? [] : [a / b];
        });
      paired.push(`| ${load.name} (${load.connections} conn.) | ${summary(ratios((s) => s.cpuUs), 3)} | ${summary(ratios((s) => s.rps), 3)} |`);
    }
    process.stdout.write(
      `\n${ROUNDS} rounds, median (range); ${SECONDS} s per run, the order of the builds alternating each round${sink === null ? '' : `; ${TRACING === 'both' ? 'both builds' : 'this tree'} tracing at sampling 1.0 (${sink.exports()} OTLP exports received)`}\n\n${lines.join('\n')}\n\n` +
        `Per round, this tree against the other (median (range) of the rounds' ratios; below 1 is less CPU, above 1 more rps):\n\n${paired.join('\n')}\n`,
    );
  } finally {
    // Every step runs even when one fails: the Airlocks stop before their worktree goes.
    for (const stop of stops.reverse()) {
      try {
        await stop();
      } catch (error) {
        process.stderr.write(`cleanup: ${(error as Error).message} (a leftover worktree goes with \`git worktree prune\`)\n`);
      }
    }
    rmSync(work, { recursive: true, force: true });
  }
}

main().catch((error: unknown) => {
  process.stderr.write(`bench:compare failed: ${(error as Error).message}\nRun it as \`npm run bench:compare -- <git ref>\` from a clone with that commit (npm run build runs first).\n`);
  process.exit(1);
});
