/** The benchmark's results: the table, the ratios, and each goal of issue 9 with whether it was met. */

export interface Row {
  readonly target: string;
  readonly workload: string;
  readonly connections: number;
  readonly rps: number;
  readonly p50Ms: number;
  readonly p99Ms: number;
  readonly cpuUsPerRequest: number | null;
  readonly rssMiB: number | null;
  readonly errors: number;
  readonly requests: number;
}

export interface BenchReport {
  readonly date: string;
  readonly machine: Record<string, string | number>;
  readonly settings: Record<string, number>;
  readonly rows: readonly Row[];
  readonly sse: { directP50Ms: number; directP99Ms: number; airlockP50Ms: number; airlockP99Ms: number; events: number };
  readonly thousandConnections: { rps: number; p99Ms: number; errors: number; peakRssMiB: number };
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

export function goals(report: BenchReport): Goal[] {
  const r = report.rows;
  const out: Goal[] = [];
  const check = (goal: string, value: number | null, ok: (v: number) => boolean, unit = 'x'): void => {
    out.push({ goal, measured: value === null ? 'n/a' : `${fixed(value)}${unit}`, met: value === null ? null : ok(value) });
  };
  check('small bodies: Airlock rps >= 0.60x nginx', ratio(find(r, 'airlock', 'small')?.rps, find(r, 'nginx', 'small')?.rps), (v) => v >= 0.6);
  check('64 KB bodies: Airlock rps >= 0.90x nginx', ratio(find(r, 'airlock', '64k')?.rps, find(r, 'nginx', '64k')?.rps), (v) => v >= 0.9);
  check('CPU per request <= 1.2x the bare dispatch floor (small)', ratio(find(r, 'airlock', 'small')?.cpuUsPerRequest, find(r, 'floor', 'small')?.cpuUsPerRequest), (v) => v <= 1.2);
  const direct = find(r, 'direct', 'unloaded');
  const airlock = find(r, 'airlock', 'unloaded');
  check('added p50 unloaded <= 0.25 ms', direct && airlock ? airlock.p50Ms - direct.p50Ms : null, (v) => v <= 0.25, ' ms');
  check('added p99 unloaded <= 1 ms', direct && airlock ? airlock.p99Ms - direct.p99Ms : null, (v) => v <= 1, ' ms');
  check('SSE: added delay per event (p50) within one event-loop turn (<= 1 ms)', report.sse.airlockP50Ms - report.sse.directP50Ms, (v) => v <= 1, ' ms');
  check('1 MB: with redaction (Airlock) >= 0.9x without (floor)', ratio(find(r, 'airlock', '1mb')?.rps, find(r, 'floor', '1mb')?.rps), (v) => v >= 0.9);
  check('RSS at 1,000 concurrent connections <= 120 MB', report.thousandConnections.peakRssMiB, (v) => v <= 120, ' MiB');
  return out;
}

export function renderReport(report: BenchReport): { markdown: string; json: string } {
  const lines: string[] = [];
  lines.push(`# Airlock benchmark, ${report.date}`);
  lines.push('');
  lines.push(`Machine: ${report.machine['cpus']} CPUs (${report.machine['cpuModel']}), Node ${report.machine['node']}, ${report.machine['nginx']}, load: ${report.machine['loadTool']}. ${report.settings['seconds']} s per run after ${report.settings['warmupSeconds']} s warm-up. Every process (load tool, upstream, proxy) shares the same cores.`);
  lines.push('');
  lines.push('| workload | target | conns | rps | p50 ms | p99 ms | CPU µs/req | RSS MiB | x nginx | x floor | errors |');
  lines.push('|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|');
  for (const row of report.rows) {
    const nginx = find(report.rows, 'nginx', row.workload);
    const floor = find(report.rows, 'floor', row.workload);
    const vsNginx = row.target === 'direct' ? null : ratio(row.rps, nginx?.rps);
    const vsFloor = row.target === 'direct' ? null : ratio(row.rps, floor?.rps);
    lines.push(`| ${row.workload} | ${row.target} | ${row.connections} | ${row.rps} | ${fixed(row.p50Ms)} | ${fixed(row.p99Ms)} | ${fixed(row.cpuUsPerRequest, 1)} | ${row.rssMiB ?? 'n/a'} | ${fixed(vsNginx)} | ${fixed(vsFloor)} | ${row.errors} |`);
  }
  lines.push('');
  lines.push(`SSE (${report.sse.events} events through Airlock): delay from the upstream's write to the client's read, p50 ${fixed(report.sse.airlockP50Ms, 3)} ms / p99 ${fixed(report.sse.airlockP99Ms, 3)} ms; direct p50 ${fixed(report.sse.directP50Ms, 3)} ms / p99 ${fixed(report.sse.directP99Ms, 3)} ms.`);
  lines.push('');
  lines.push(`1,000 concurrent connections through Airlock: ${report.thousandConnections.rps} rps, p99 ${fixed(report.thousandConnections.p99Ms)} ms, peak RSS ${report.thousandConnections.peakRssMiB} MiB, ${report.thousandConnections.errors} errors.`);
  lines.push('');
  lines.push(`Audit lines written by the measured Airlock: ${report.auditLines}. OTLP export requests received from airlock+trace: ${report.tracedSpansExports}.`);
  lines.push('');
  lines.push('| goal (issue 9) | measured | met |');
  lines.push('|---|---:|:---:|');
  for (const goal of goals(report)) lines.push(`| ${goal.goal} | ${goal.measured} | ${goal.met === null ? 'n/a' : goal.met ? 'yes' : 'NO'} |`);
  return { markdown: `${lines.join('\n')}\n`, json: `${JSON.stringify({ ...report, goals: goals(report) }, null, 2)}\n` };
}
