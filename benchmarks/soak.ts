/**
 * npm run soak: one Airlock (all features, as in npm run bench) serves SOAK_REQUESTS requests (default
 * 1,000,000) from SOAK_CONNECTIONS keep-alive connections (default 64), mixing small and 64 KB
 * responses. RSS is sampled every second; at the end the audit lines are counted and must equal the
 * requests sent (plus Airlock's own start record), and every answer must have been 200.
 * Prints progress every 5 s, and a verdict: RSS flat (last quarter's median within 15% of the second
 * quarter's), audit complete, no errors. Exit 1 when a check fails.
 */
import { mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Pool } from 'undici';
import { generateAgentToken } from '../src/identity/agent-token.js';
import { rssMiB } from './parts/process-stats.js';
import { startAirlockProcess, startScript } from './parts/start-process.js';

const TOTAL = Number(process.env['SOAK_REQUESTS'] ?? 1_000_000);
const CONNECTIONS = Number(process.env['SOAK_CONNECTIONS'] ?? 64);

function median(values: number[]): number {
  const sorted = [...values].sort((a, b) => a - b);
  return sorted[Math.floor(sorted.length / 2)] ?? 0;
}

async function main(): Promise<void> {
  const work = mkdtempSync(join(tmpdir(), 'airlock-soak-'));
  const upstream = await startScript('./bench-upstream.ts');
  const agent = generateAgentToken();
  const config = {
    listen: '127.0.0.1:0',
    data_dir: work,
    audit: { max_bytes: 100 * 1024 * 1024, keep: 100 },
    admin: { listen: '127.0.0.1:0', tokens: [generateAgentToken().hash] },
    reload: { watch: false },
    services: { api: { upstream: `http://127.0.0.1:${upstream.port}`, credential: { secret: 'env:SOAK_UPSTREAM_KEY' }, max_connections: 128, routes: ['/small', '/64k'].map((path) => ({ method: 'GET', path, scope: 'soak:read' })) } },
    agents: { soak: { tokens: [agent.hash], credentials: [{ service: 'api', max_scope: ['soak:read'], rate: { requests: 100_000_000, per: 1 } }] } },
  };
  writeFileSync(join(work, 'airlock.yaml'), JSON.stringify(config));
  const airlock = await startAirlockProcess(join(work, 'airlock.yaml'), { SOAK_UPSTREAM_KEY: 'sk-soak-0123456789abcdefghijklmnop' }, '/dev/null');
  const pool = new Pool(`http://127.0.0.1:${airlock.port}`, { connections: CONNECTIONS, pipelining: 1 });
  const headers = { authorization: `Bearer ${agent.token}` };
  const samples: number[] = [];
  let sent = 0;
  let done = 0;
  let errors = 0;
  const started = Date.now();
  const sampler = setInterval(() => samples.push(rssMiB([airlock.pid])), 1000);
  const reporter = setInterval(() => {
    const seconds = (Date.now() - started) / 1000;
    process.stderr.write(`[soak] ${done.toLocaleString()} / ${TOTAL.toLocaleString()} requests, ${Math.round(done / seconds)} rps, RSS ${Math.round(samples.at(-1) ?? 0)} MiB, ${errors} errors, ${Math.round(seconds)} s\n`);
  }, 5000);
  const worker = async (): Promise<void> => {
    while (sent < TOTAL) {
      const n = sent++;
      const path = n % 10 === 9 ? '/api/64k' : '/api/small';
      try {
        const response = await pool.request({ method: 'GET', path, headers });
        await response.body.dump();
        if (response.statusCode !== 200) errors++;
      } catch {
        errors++;
      }
      done++;
    }
  };
  await Promise.all(Array.from({ length: CONNECTIONS }, worker));
  clearInterval(sampler);
  clearInterval(reporter);
  await pool.close();
  await airlock.stop();
  await upstream.stop();
  // The audit log rotates at audit.max_bytes (100 MB): count the rotated copies too.
  const auditFiles = readdirSync(work).filter((name) => /^audit\.jsonl(\.\d+)?$/.test(name));
  let auditLines = 0;
  for (const name of auditFiles) {
    auditLines += readFileSync(join(work, name), 'utf8').split('\n').filter((line) => line !== '' && !line.includes('"actor":"airlock"')).length;
  }
  rmSync(work, { recursive: true, force: true });

  const quarter = Math.max(1, Math.floor(samples.length / 4));
  const early = median(samples.slice(quarter, 2 * quarter));
  const late = median(samples.slice(-quarter));
  const seconds = (Date.now() - started) / 1000;
  const checks = [
    { name: `audit lines (${auditLines}, in ${auditFiles.length} files after rotation) equal requests (${TOTAL})`, ok: auditLines === TOTAL },
    { name: `no errors (${errors})`, ok: errors === 0 },
    { name: `RSS flat: last quarter median ${Math.round(late)} MiB within 15% of second quarter ${Math.round(early)} MiB (peak ${Math.round(Math.max(...samples))} MiB)`, ok: late <= early * 1.15 },
  ];
  const report = [`# Airlock soak, ${new Date().toISOString()}`, '', `${TOTAL.toLocaleString()} requests over ${CONNECTIONS} connections in ${Math.round(seconds)} s (${Math.round(TOTAL / seconds)} rps).`, '', ...checks.map((c) => `- ${c.ok ? 'ok' : 'FAILED'}: ${c.name}`), '', `RSS samples (MiB, one per second): ${samples.map((s) => Math.round(s)).join(' ')}`, ''].join('\n');
  const dir = join(process.cwd(), 'bench-results');
  mkdirSync(dir, { recursive: true });
  writeFileSync(join(dir, 'soak-latest.md'), report);
  process.stdout.write(`${report}\n`);
  if (checks.some((c) => !c.ok)) process.exit(1);
}

main().catch((error: unknown) => {
  process.stderr.write(`soak failed: ${(error as Error).stack ?? String(error)}\nRun \`npm run build\` first.\n`);
  process.exit(1);
});
