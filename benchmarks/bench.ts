/**
 * npm run bench: Airlock against what users would pick instead, on this machine, in one run.
 *
 * Targets, all on loopback in front of the same Node upstream (its own process):
 *   direct         the upstream itself (what a proxy adds is measured against it)
 *   nginx          proxy_pass with header injection, 1 worker, upstream keepalive (skipped when absent)
 *   floor          a bare undici dispatch proxy (benchmarks/parts/floor-proxy.ts): the Node floor
 *   airlock        every feature on: token auth, scope check, rate limit, injection, redaction,
 *                  audit log, metrics, anomaly detection, one JSON log line per request; tracing off
 *   airlock+trace  the same with OpenTelemetry tracing, sampling 1.0, exported over OTLP/HTTP
 *
 * For each: wrk (autocannon when wrk is missing) after a warm-up, the same connections for all, in
 * rounds where the targets take turns; rps, p50/p99, CPU microseconds per request of the proxy process
 * tree (from /proc), RSS after the run, as medians of the rounds; ratios to nginx and to the floor, as
 * the median of each round's ratio. Then: added latency unloaded (1 connection), SSE event delay
 * against direct, 1 MB responses with redaction (Airlock) against without (the floor), and RSS at
 * 1,000 concurrent connections (Airlock, then the floor for reference). Results: bench-results/<time>.json and .md, and the table printed.
 *
 * Environment: BENCH_SECONDS (default 10) per measured run, BENCH_CONNECTIONS (default 50),
 * BENCH_WARMUP (seconds of load before each target's first measured run; default 8, or a quarter of
 * BENCH_SECONDS when longer), BENCH_ROUNDS (default 3).
 */
import { mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { cpus, tmpdir } from 'node:os';
import { join } from 'node:path';
import { spawnSync } from 'node:child_process';
import { request } from 'undici';
import { generateAgentToken } from '../src/identity/agent-token.js';
import { cpuMicros, processTree, rssMiB } from './parts/process-stats.js';
import { LOAD_TOOL, runLoad, type LoadResult } from './parts/run-load.js';
import { startNginx } from './parts/start-nginx.js';
import { startOtlpSink } from './parts/otlp-sink.js';
import { startAirlockProcess, startScript, type BenchProcess } from './parts/start-process.js';
import { airlockConfig } from './parts/airlock-config.js';
import { combineRounds, renderReport, type BenchReport, type Row, type Sample, type ThousandConnections } from './parts/bench-report.js';

const SECONDS = Number(process.env['BENCH_SECONDS'] ?? 10);
const CONNECTIONS = Number(process.env['BENCH_CONNECTIONS'] ?? 50);
/**
 * Warm-up before each measured run. Airlock has far more JavaScript on its path than the floor, and V8
 * keeps optimizing it for several seconds: at 50 connections its CPU per request is about twice as
 * high in the first 3 s as after 6 s. The 1-2 s warm-up used before measured the JIT, not the proxy.
 */
const WARMUP_SECONDS = Number(process.env['BENCH_WARMUP'] ?? Math.max(8, Math.round(SECONDS / 4)));
if (!Number.isFinite(WARMUP_SECONDS) || WARMUP_SECONDS < 1) throw new Error(`BENCH_WARMUP must be a number of seconds, at least 1 (got ${process.env['BENCH_WARMUP']})`);
/**
 * Each workload runs in rounds, the targets taking turns and the order reversed each round: runs on
 * this shared VM drift by 20% within minutes, so one run per target compared targets measured in
 * different machine states. The report gives medians and the median of each round's ratios.
 */
const ROUNDS = Number(process.env['BENCH_ROUNDS'] ?? 3);
if (!Number.isInteger(ROUNDS) || ROUNDS < 1) throw new Error(`BENCH_ROUNDS must be a whole number, at least 1 (got ${process.env['BENCH_ROUNDS']})`);
/** Load before the measured run of the later rounds: the process is warm; this refills its pools and caches. */
const REWARM_SECONDS = Math.min(WARMUP_SECONDS, 2);

interface Target {
  readonly name: string;
  readonly url: string;
  /** The process tree whose CPU and memory the row reports (null: direct, no proxy). */
  readonly pids: () => number[];
  readonly headers: Record<string, string>;
}

function progress(message: string): void {
  process.stderr.write(`[bench ${new Date().toISOString().slice(11, 19)}] ${message}\n`);
}

/** Every target under one workload, ROUNDS times, taking turns. */
async function measureRounds(targets: readonly Target[], path: string, workload: string, connections: number): Promise<Row[]> {
  const samples = new Map<string, Sample[]>(targets.map((t) => [t.name, []]));
  for (let round = 0; round < ROUNDS; round++) {
    const order = round % 2 === 0 ? targets : [...targets].reverse();
    for (const target of order) {
      progress(`${target.name.padEnd(14)} ${workload.padEnd(8)} round ${round + 1}/${ROUNDS}`);
      (samples.get(target.name) as Sample[]).push(await measure(target, path, connections, round === 0 ? WARMUP_SECONDS : REWARM_SECONDS));
    }
  }
  return targets.map((t) => combineRounds(t.name, workload, connections, samples.get(t.name) as Sample[]));
}

async function measure(target: Target, path: string, connections: number, warmupSeconds: number): Promise<Sample> {
  progress(`${''.padEnd(14)} warm-up ${warmupSeconds} s, then ${SECONDS} s at ${connections} connections`);
  await runLoad({ url: `${target.url}${path}`, connections, seconds: warmupSeconds, headers: target.headers });
  const pids = target.pids();
  const cpuBefore = cpuMicros(pids);
  const load: LoadResult = await runLoad({ url: `${target.url}${path}`, connections, seconds: SECONDS, headers: target.headers });
  const cpu = cpuMicros(pids) - cpuBefore;
  const sample: Sample = {
    rps: Math.round(load.rps),
    p50Ms: load.p50Ms,
    p99Ms: load.p99Ms,
    cpuUsPerRequest: pids.length === 0 ? null : Math.round((cpu / load.requests) * 10) / 10,
    rssMiB: pids.length === 0 ? null : Math.round(rssMiB(pids)),
    errors: load.errors,
    requests: load.requests,
  };
  progress(`${''.padEnd(14)} -> ${sample.rps} rps, p50 ${sample.p50Ms} ms, p99 ${sample.p99Ms} ms${sample.cpuUsPerRequest === null ? '' : `, ${sample.cpuUsPerRequest} µs CPU/req, ${sample.rssMiB} MiB RSS`}${sample.errors > 0 ? `, ${sample.errors} ERRORS` : ''}`);
  return sample;
}

/** Delay of each server-sent event from the upstream's write to the client's read, in ms. */
async function sseDelays(url: string, headers: Record<string, string>, streams: number): Promise<number[]> {
  const delays: number[] = [];
  for (let i = 0; i < streams; i++) {
    const response = await request(`${url}/sse`, { headers });
    let buffer = '';
    for await (const chunk of response.body) {
      const arrived = performance.timeOrigin + performance.now();
      buffer += (chunk as Buffer).toString('utf8');
      let end: number;
      while ((end = buffer.indexOf('\n\n')) >= 0) {
        const event = buffer.slice(0, end);
        buffer = buffer.slice(end + 2);
        const sentAt = /"sent_at":([\d.]+)/.exec(event)?.[1];
        if (sentAt !== undefined) delays.push(arrived - Number(sentAt));
      }
    }
  }
  return delays;
}

function percentile(values: number[], p: number): number {
  const sorted = [...values].sort((a, b) => a - b);
  return sorted[Math.min(sorted.length - 1, Math.floor((p / 100) * sorted.length))] ?? Number.NaN;
}

/** Peak RSS of a process tree while a load runs, sampled every 100 ms. */
async function peakRssDuring<T>(pids: number[], work: Promise<T>): Promise<{ result: T; peak: number }> {
  let peak = rssMiB(pids);
  const timer = setInterval(() => (peak = Math.max(peak, rssMiB(pids))), 100);
  try {
    const result = await work;
    return { result, peak: Math.round(Math.max(peak, rssMiB(pids))) };
  } finally {
    clearInterval(timer);
  }
}

function toolVersion(command: string, args: string[]): string {
  const run = spawnSync(command, args, { encoding: 'utf8' });
  if (run.error !== undefined) return 'not installed';
  return `${run.stdout}${run.stderr}`.split('\n').find((line) => line.trim() !== '')?.trim() ?? 'unknown';
}

async function main(): Promise<void> {
  const work = mkdtempSync(join(tmpdir(), 'airlock-bench-'));
  const stops: Array<() => Promise<void>> = [];
  try {
    progress(`load tool: ${LOAD_TOOL}; ${SECONDS} s per run, ${CONNECTIONS} connections; scratch ${work}`);
    const upstream = await startScript('./bench-upstream.ts');
    stops.push(upstream.stop);
    // The floor runs with the node flags Airlock runs with (start-process.ts), so that neither is measured
    // in V8's shrunken-heap state after waiting for its turn.
    const floor = await startScript('./floor-proxy.ts', [`http://127.0.0.1:${upstream.port}`], ['--no-memory-reducer']);
    stops.push(floor.stop);
    const nginx = await startNginx(join(work, 'nginx'), upstream.port);
    if (typeof nginx === 'string') progress(`SKIPPED nginx: ${nginx}`);
    else stops.push(nginx.stop);

    const agent = generateAgentToken();
    const admin = generateAgentToken();
    const env = { BENCH_UPSTREAM_KEY: `sk-bench-${agent.hash.slice(7, 31)}` };
    const sink = await startOtlpSink();
    stops.push(sink.close);
    const airlocks: Record<string, BenchProcess> = {};
    for (const [name, otlp] of [['airlock', null], ['airlock+trace', sink.url]] as const) {
      const dir = join(work, name);
      mkdirSync(dir);
      const started = await startAirlockProcess(airlockConfig({ dataDir: dir, upstreamPort: upstream.port, agentHash: agent.hash, adminHash: admin.hash, otlp }), env, join(dir, 'airlock.log'));
      stops.push(started.stop);
      airlocks[name] = started;
    }
    const auth = { authorization: `Bearer ${agent.token}` };
    const targets: Target[] = [
      { name: 'direct', url: `http://127.0.0.1:${upstream.port}`, pids: () => [], headers: {} },
      ...(typeof nginx === 'string' ? [] : [{ name: 'nginx', url: nginx.url, pids: () => processTree(nginx.pid), headers: {} }]),
      { name: 'floor', url: `http://127.0.0.1:${floor.port}`, pids: () => [floor.pid], headers: {} },
      ...Object.entries(airlocks).map(([name, p]) => ({ name, url: `http://127.0.0.1:${p.port}/api`, pids: () => [p.pid], headers: auth })),
    ];

    const rows: Row[] = [];
    for (const [path, workload] of [['/small', 'small'], ['/64k', '64k']] as const) rows.push(...(await measureRounds(targets, path, workload, CONNECTIONS)));
    const untraced = targets.filter((t) => t.name !== 'airlock+trace');
    // Unloaded: one connection, one request at a time.
    rows.push(...(await measureRounds(untraced, '/small', 'unloaded', 1)));
    // 1 MB responses: Airlock scans every byte for secrets; the floor relays them unread.
    rows.push(...(await measureRounds(untraced, '/1mb', '1mb', 8)));

    progress('SSE: 10 streams of 20 events each, direct and through Airlock');
    const airlockTarget = targets.find((t) => t.name === 'airlock') as Target;
    const direct = await sseDelays(targets[0]?.url as string, {}, 10);
    const through = await sseDelays(airlockTarget.url, auth, 10);
    const sse = { directP50Ms: percentile(direct, 50), directP99Ms: percentile(direct, 99), airlockP50Ms: percentile(through, 50), airlockP99Ms: percentile(through, 99), events: through.length };

    // The floor too, after Airlock: what a bare relay's memory comes to under the same load.
    const atThousand: ThousandConnections[] = [];
    for (const target of [airlockTarget, targets.find((t) => t.name === 'floor') as Target]) {
      progress(`1,000 concurrent connections through ${target.name}: peak RSS`);
      const heavy = await peakRssDuring(target.pids(), runLoad({ url: `${target.url}/small`, connections: 1000, seconds: SECONDS, headers: target.headers, threads: 2 }));
      atThousand.push({ rps: Math.round(heavy.result.rps), p99Ms: heavy.result.p99Ms, errors: heavy.result.errors, peakRssMiB: heavy.peak });
    }

    // Rotated files too: the warm-ups alone write more than audit.max_bytes.
    const auditDir = join(work, 'airlock');
    const auditLines = readdirSync(auditDir)
      .filter((name) => /^audit\.jsonl(\.\d+)?$/.test(name))
      .reduce((sum, name) => sum + readFileSync(join(auditDir, name), 'utf8').split('\n').filter((l) => l !== '').length, 0);

    const report: BenchReport = {
      date: new Date().toISOString(),
      machine: { cpus: cpus().length, cpuModel: cpus()[0]?.model ?? 'unknown', node: process.version, nginx: toolVersion('nginx', ['-v']), loadTool: LOAD_TOOL === 'wrk' ? toolVersion('wrk', ['--version']) : 'autocannon' },
      settings: { seconds: SECONDS, connections: CONNECTIONS, warmupSeconds: WARMUP_SECONDS, rewarmSeconds: REWARM_SECONDS, rounds: ROUNDS },
      rows,
      sse,
      thousandConnections: atThousand[0] as ThousandConnections,
      thousandConnectionsFloor: atThousand[1] as ThousandConnections,
      auditLines,
      tracedSpansExports: sink.exports(),
    };
    const { markdown, json } = renderReport(report);
    const dir = join(process.cwd(), 'bench-results');
    mkdirSync(dir, { recursive: true });
    const stamp = report.date.replace(/[:.]/g, '-');
    writeFileSync(join(dir, `${stamp}.json`), json);
    writeFileSync(join(dir, `${stamp}.md`), markdown);
    writeFileSync(join(dir, 'latest.md'), markdown);
    process.stdout.write(`\n${markdown}\n`);
    progress(`written: bench-results/${stamp}.json and .md (and bench-results/latest.md)`);
  } finally {
    for (const stop of stops.reverse()) await stop().catch(() => undefined);
    rmSync(work, { recursive: true, force: true });
  }
}

main().catch((error: unknown) => {
  process.stderr.write(`bench failed: ${(error as Error).stack ?? String(error)}\nCheck that \`npm run build\` succeeded and that wrk (apt-get install -y wrk) and nginx (apt-get install -y nginx) are installed.\n`);
  process.exit(1);
});
