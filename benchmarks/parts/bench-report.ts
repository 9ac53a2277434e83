/** The benchmark's results: the table, the ratios, and each goal of issue 9 with whether it was met. */

/** One measured run of one target under one workload. */
export interface Sample {
  readonly rps: number;
  readonly p50Ms: number;
  readonly p99Ms: number;
  readonly cpuUsPerRequest: number | null;
  readonly rssMiB: number | null;
  readonly errors: number;
  readonly requests: number;
}

/**
 * A target under a workload over every round: the medians of its samples (RSS: the largest), errors
 * and requests summed, and the samples themselves in round order, for the paired ratios below.
 */
export interface Row extends Sample {
  readonly target: string;
  readonly workload: string;
  readonly connections: number;
  readonly rounds: readonly Sample[];
}

export function median(values: readonly number[]): number {
  const sorted = [...values].sort((a, b) => a - b);
  const middle = Math.floor(sorted.length / 2);
  return sorted.length % 2 === 1 ? (sorted[middle] as number) : ((sorted[middle - 1] as number) + (sorted[middle] as number)) / 2;
}

export function combineRounds(target: string, workload: string, connections: number, rounds: readonly Sample[]): Row {
  const cpu = rounds.map((r) => r.cpuUsPerRequest).filter((c): c is number => c !== null);
  const rss = rounds.map((r) => r.rssMiB).filter((m): m is number => m !== null);
  return {
    target,
    workload,
    connections,
    rps: Math.round(median(rounds.map((r) => r.rps))),
    p50Ms: median(rounds.map((r) => r.p50Ms)),
    p99Ms: median(rounds.map((r) => r.p99Ms)),
    cpuUsPerRequest: cpu.length === 0 ? null : Math.round(median(cpu) * 10) / 10,
    rssMiB: rss.length === 0 ? null : Math.max(...rss),
    errors: rounds.reduce((sum, r) => sum + r.errors, 0),
    requests: rounds.reduce((sum, r) => sum + r.requests, 0),
    rounds,
  };
}

export interface ThousandConnections {
  readonly rps: number;
  readonly p99Ms: number;
  readonly errors: number;
  readonly peakRssMiB: number;
}

export interface BenchReport {
  readonly date: string;
  readonly machine: Record<string, string | number>;
  readonly settings: Record<string, number>;
  readonly rows: readonly Row[];
  readonly sse: { directP50Ms: number; directP99Ms: number; airlockP50Ms: number; airlockP99Ms: number; events: number };
  readonly thousandConnections: ThousandConnections;
  /** The floor under the same load: the memory a bare relay needs for it, the reference for Airlock's. */
  readonly thousandConnectionsFloor: ThousandConnections;
  readonly auditLines: number;
  readonly tracedSpansExports: number;
}

interface Goal {
  readonly goal: string;
  readonly measured: string;
  readonly met: boolean | null;
}

const fixed = (n: number | null | undefined, digits = 2): string => (n === null || n === undefined || Number.isNaN(n) ? 'n/a' : n.toFixed(digits));

function find(rows: readonly Row[], target: string, workload: string): Row | undefined {
  return rows.find((r) => r.target === target && r.workload === workload);
}

function ratio(a: number | null | undefined, b: number | null | undefined): number | null {
  return a === null || a === undefined || b === null || b === undefined || b === 0 ? null : a / b;
}

/**
 * a / b, round by round, then the median: the targets of one round run back to back, so each round's
 * ratio sees both on the machine in the same state, which a ratio of two medians does not.
 */
function pairedRatio(a: Row | undefined, b: Row | undefined, metric: 'rps' | 'cpuUsPerRequest'): number | null {
  if (a === undefined || b === undefined) return null;
  const ratios: number[] = [];
  for (let i = 0; i < Math.min(a.rounds.length, b.rounds.length); i++) {
    const value = ratio((a.rounds[i] as Sample)[metric], (b.rounds[i] as Sample)[metric]);
    if (value !== null) ratios.push(value);
  }
  return ratios.length === 0 ? null : median(ratios);
}

/** a - b (latencies), round by round, then the median. */
function pairedDifference(a: Row | undefined, b: Row | undefined, metric: 'p50Ms' | 'p99Ms'): number | null {
  if (a === undefined || b === undefined) return null;
  const rounds = Math.min(a.rounds.length, b.rounds.length);
  if (rounds === 0) return null;
  return median(Array.from({ length: rounds }, (_, i) => (a.rounds[i] as Sample)[metric] - (b.rounds[i] as Sample)[metric]));
}

/** "median (lowest-highest)" over the rounds, or the one value. */
function spread(row: Row, metric: 'rps' | 'cpuUsPerRequest', digits: number): string {
  const values = row.rounds.map((r) => r[metric]).filter((v): v is number => v !== null);
  const value = row[metric];
  if (value === null) return 'n/a';
  if (values.length < 2) return fixed(value, digits);
  return `${fixed(value, digits)} (${fixed(Math.min(...values), digits)}-${fixed(Math.max(...values), digits)})`;
}

export function goals(report: BenchReport): Goal[] {
  const r = report.rows;
  const out: Goal[] = [];
  const check = (goal: string, value: number | null, ok: (v: number) => boolean, unit = 'x'): void => {
    out.push({ goal, measured: value === null ? 'n/a' : `${fixed(value)}${unit}`, met: value === null ? null : ok(value) });
  };
  check('small bodies: Airlock rps >= 0.60x nginx', pairedRatio(find(r, 'airlock', 'small'), find(r, 'nginx', 'small'), 'rps'), (v) => v >= 0.6);
  check('64 KB bodies: Airlock rps >= 0.90x nginx', pairedRatio(find(r, 'airlock', '64k'), find(r, 'nginx', '64k'), 'rps'), (v) => v >= 0.9);
  check('CPU per request <= 1.2x the bare dispatch floor (small)', pairedRatio(find(r, 'airlock', 'small'), find(r, 'floor', 'small'), 'cpuUsPerRequest'), (v) => v <= 1.2);
  const direct = find(r, 'direct', 'unloaded');
  const airlock = find(r, 'airlock', 'unloaded');
  check('added p50 unloaded <= 0.25 ms', pairedDifference(airlock, direct, 'p50Ms'), (v) => v <= 0.25, ' ms');
  check('added p99 unloaded <= 1 ms', pairedDifference(airlock, direct, 'p99Ms'), (v) => v <= 1, ' ms');
  check('SSE: added delay per event (p50) within one event-loop turn (<= 1 ms)', report.sse.airlockP50Ms - report.sse.directP50Ms, (v) => v <= 1, ' ms');
  check('1 MB: with redaction (Airlock) >= 0.9x without (floor)', pairedRatio(find(r, 'airlock', '1mb'), find(r, 'floor', '1mb'), 'rps'), (v) => v >= 0.9);
  check('RSS at 1,000 concurrent connections <= 120 MB', report.thousandConnections.peakRssMiB, (v) => v <= 120, ' MiB');
  return out;
}

export function renderReport(report: BenchReport): { markdown: string; json: string } {
  const lines: string[] = [];
  lines.push(`# Airlock benchmark, ${report.date}`);
  lines.push('');
  lines.push(`Machine: ${report.machine['cpus']} CPUs (${report.machine['cpuModel']}), Node ${report.machine['node']}, ${report.machine['nginx']}, load: ${report.machine['loadTool']}. ${report.settings['rounds']} rounds of ${report.settings['seconds']} s per target and workload, the targets taking turns (the order reversed each round), after ${report.settings['warmupSeconds']} s of warm-up in the first round and ${report.settings['rewarmSeconds']} s in the others. Every process (load tool, upstream, proxy) shares the same cores.`);
  lines.push('');
  lines.push('rps, p50, p99 and CPU: medians of the rounds, with their range; RSS: the largest after a round; x nginx, x floor: the median of the ratios within each round.');
  lines.push('');
  lines.push('| workload | target | conns | rps | p50 ms | p99 ms | CPU µs/req | RSS MiB | x nginx | x floor | errors |');
  lines.push('|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|');
  for (const row of report.rows) {
    const vsNginx = row.target === 'direct' ? null : pairedRatio(row, find(report.rows, 'nginx', row.workload), 'rps');
    const vsFloor = row.target === 'direct' ? null : pairedRatio(row, find(report.rows, 'floor', row.workload), 'rps');
    lines.push(`| ${row.workload} | ${row.target} | ${row.connections} | ${spread(row, 'rps', 0)} | ${fixed(row.p50Ms)} | ${fixed(row.p99Ms)} | ${spread(row, 'cpuUsPerRequest', 1)} | ${row.rssMiB ?? 'n/a'} | ${fixed(vsNginx)} | ${fixed(vsFloor)} | ${row.errors} |`);
  }
  lines.push('');
  lines.push(`SSE (${report.sse.events} events through Airlock): delay from the upstream's write to the client's read, p50 ${fixed(report.sse.airlockP50Ms, 3)} ms / p99 ${fixed(report.sse.airlockP99Ms, 3)} ms; direct p50 ${fixed(report.sse.directP50Ms, 3)} ms / p99 ${fixed(report.sse.directP99Ms, 3)} ms.`);
  lines.push('');
  // The mean latency from Little's law (1,000 requests in flight / rps): wrk's own latency figures at
  // this many connections disagree with its request count (README, Performance).
  const thousand = (t: ThousandConnections): string => `${t.rps} rps, mean latency ${t.rps > 0 ? fixed(1_000_000 / t.rps) : 'n/a'} ms (1,000 / rps), wrk's p99 ${fixed(t.p99Ms)} ms, peak RSS ${t.peakRssMiB} MiB, ${t.errors} errors`;
  lines.push(`1,000 concurrent connections, small bodies: through Airlock ${thousand(report.thousandConnections)}; through the floor ${thousand(report.thousandConnectionsFloor)}.`);
  lines.push('');
  lines.push(`Audit lines written by the measured Airlock: ${report.auditLines}. OTLP export requests received from airlock+trace: ${report.tracedSpansExports}.`);
  lines.push('');
  lines.push('| goal (issue 9) | measured | met |');
  lines.push('|---|---:|:---:|');
  for (const goal of goals(report)) lines.push(`| ${goal.goal} | ${goal.measured} | ${goal.met === null ? 'n/a' : goal.met ? 'yes' : 'NO'} |`);
  return { markdown: `${lines.join('\n')}\n`, json: `${JSON.stringify({ ...report, goals: goals(report) }, null, 2)}\n` };
}
