/**
 * npm run profile: where Airlock's CPU goes on the hot path. Starts the benchmark upstream and Airlock
 * (all features, as in npm run bench) under `node --cpu-prof`, loads it with wrk (autocannon when wrk is
 * missing), stops it, and prints the functions with the most self time, and the files they are in.
 * The .cpuprofile is kept in bench-results/ for Chrome DevTools or speedscope.
 *
 * Environment: PROFILE_SECONDS (default 10), PROFILE_PATH (default /small), PROFILE_CONNECTIONS (50),
 * PROFILE_CONFIG (JSON merged over the config's top-level keys).
 *
 * PROFILE_ALLOCATIONS=1: what is allocated per request instead (garbage included; parts/sample-allocations.mjs),
 * for Airlock and then the floor under the same load: bytes per request of each, and Airlock's
 * functions and files by bytes allocated per request. Allocation is what promotes garbage and grows the
 * heap, and its figures hardly drift with the machine's speed, unlike CPU time.
 */
import { mkdirSync, mkdtempSync, readdirSync, readFileSync, renameSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, relative } from 'node:path';
import { fileURLToPath } from 'node:url';
import { generateAgentToken } from '../src/identity/agent-token.js';
import { airlockConfig } from './parts/airlock-config.js';
import { runLoad } from './parts/run-load.js';
import { startAirlockProcess, startScript, type BenchProcess } from './parts/start-process.js';

const SECONDS = Number(process.env['PROFILE_SECONDS'] ?? 10);
const PATH = process.env['PROFILE_PATH'] ?? '/small';
const CONNECTIONS = Number(process.env['PROFILE_CONNECTIONS'] ?? 50);

interface ProfileNode {
  id: number;
  callFrame: { functionName: string; url: string; lineNumber: number };
  children?: number[];
}
interface Profile {
  nodes: ProfileNode[];
  samples: number[];
  timeDeltas: number[];
}

function summarize(profile: Profile, root: string): string {
  const byId = new Map(profile.nodes.map((n) => [n.id, n]));
  const self = new Map<number, number>();
  profile.samples.forEach((id, i) => self.set(id, (self.get(id) ?? 0) + (profile.timeDeltas[i] ?? 0)));
  const total = [...self.values()].reduce((a, b) => a + b, 0);
  const byFunction = new Map<string, number>();
  const byFile = new Map<string, number>();
  for (const [id, micros] of self) {
    const frame = (byId.get(id) as ProfileNode).callFrame;
    const file = frame.url === '' ? '(native)' : frame.url.startsWith('file://') ? relative(root, fileURLToPath(frame.url)) : frame.url;
    const name = `${frame.functionName || '(anonymous)'}  ${file}:${frame.lineNumber + 1}`;
    byFunction.set(name, (byFunction.get(name) ?? 0) + micros);
    const group = file.startsWith('node_modules/') ? file.split('/').slice(0, file.startsWith('node_modules/@') ? 3 : 2).join('/') : file;
    byFile.set(group, (byFile.get(group) ?? 0) + micros);
  }
  const top = (map: Map<string, number>, n: number): string[] =>
    [...map.entries()]
      .sort((a, b) => b[1] - a[1])
      .slice(0, n)
      .map(([name, micros]) => `${((micros / total) * 100).toFixed(1).padStart(5)}%  ${name}`);
  return ['Self time by function (top 40):', ...top(byFunction, 40), '', 'Self time by file or package (top 25):', ...top(byFile, 25)].join('\n');
}

interface SampledNode {
  callFrame: { functionName: string; url: string; lineNumber: number };
  selfSize: number;
  children: SampledNode[];
}

function summarizeAllocations(head: SampledNode, requests: number, root: string): { perRequest: number; text: string } {
  const byFunction = new Map<string, number>();
  const byFile = new Map<string, number>();
  let total = 0;
  const visit = (node: SampledNode): void => {
    const frame = node.callFrame;
    const file = frame.url === '' ? '(native)' : frame.url.startsWith('file://') ? relative(root, fileURLToPath(frame.url)) : frame.url;
    const name = `${frame.functionName || '(anonymous)'}  ${file}:${frame.lineNumber + 1}`;
    byFunction.set(name, (byFunction.get(name) ?? 0) + node.selfSize);
    const group = file.startsWith('node_modules/') ? file.split('/').slice(0, file.startsWith('node_modules/@') ? 3 : 2).join('/') : file;
    byFile.set(group, (byFile.get(group) ?? 0) + node.selfSize);
    total += node.selfSize;
    for (const child of node.children) visit(child);
  };
  visit(head);
  const top = (map: Map<string, number>, n: number): string[] =>
    [...map.entries()]
      .sort((a, b) => b[1] - a[1])
      .slice(0, n)
      .map(([name, bytes]) => `${String(Math.round(bytes / requests)).padStart(6)} B  ${((bytes / total) * 100).toFixed(1).padStart(5)}%  ${name}`);
  return { perRequest: total / requests, text: ['Bytes allocated per request by function (top 30):', ...top(byFunction, 30), '', 'By file or package (top 20):', ...top(byFile, 20)].join('\n') };
}

/** Samples one process's allocations while the load runs; the process is started by `start` with the preload's flags and environment. */
async function sampleAllocations(start: (flags: string[], env: Record<string, string>) => Promise<BenchProcess & { url: string; headers: Record<string, string> }>, work: string, name: string): Promise<{ head: SampledNode; requests: number; rps: number }> {
  const seconds = Math.max(SECONDS, 16);
  const out = join(work, `${name}.allocations.json`);
  const preload = fileURLToPath(new URL('./parts/sample-allocations.mjs', import.meta.url));
  // Sampled from 40% of the load (after warm-up) for half of it.
  const target = await start(['--import', preload], { SAMPLE_ALLOCATIONS_OUT: out, SAMPLE_ALLOCATIONS_START_MS: String(1000 + seconds * 400), SAMPLE_ALLOCATIONS_MS: String(seconds * 500) });
  process.stderr.write(`sampling ${name}'s allocations (pid ${target.pid}): ${seconds} s of ${PATH} at ${CONNECTIONS} connections\n`);
  const load = await runLoad({ url: `${target.url}${PATH}`, connections: CONNECTIONS, seconds, headers: target.headers });
  await target.stop();
  const { profile, requests } = JSON.parse(readFileSync(out, 'utf8')) as { profile: { head: SampledNode }; requests: number };
  if (requests === 0) throw new Error(`${name} answered no request while its allocations were sampled`);
  return { head: profile.head, requests, rps: load.rps };
}

async function profileAllocations(root: string): Promise<void> {
  const work = mkdtempSync(join(tmpdir(), 'airlock-allocations-'));
  const upstream = await startScript('./bench-upstream.ts');
  const agent = generateAgentToken();
  const overrides = JSON.parse(process.env['PROFILE_CONFIG'] ?? '{}') as Record<string, unknown>;
  const configFile = airlockConfig({ dataDir: work, upstreamPort: upstream.port, agentHash: agent.hash, adminHash: generateAgentToken().hash, otlp: null, overrides });
  const airlock = await sampleAllocations(async (flags, env) => {
    const started = await startAirlockProcess(configFile, { BENCH_UPSTREAM_KEY: 'sk-profile-key-0123456789abcdef', ...env }, '/dev/null', undefined, flags);
    return { ...started, url: `http://127.0.0.1:${started.port}/api`, headers: { authorization: `Bearer ${agent.token}` } };
  }, work, 'airlock');
  const floor = await sampleAllocations(async (flags, env) => {
    const started = await startScript('./floor-proxy.ts', [`http://127.0.0.1:${upstream.port}`], ['--no-memory-reducer', ...flags], env);
    return { ...started, url: `http://127.0.0.1:${started.port}`, headers: {} };
  }, work, 'floor');
  await upstream.stop();
  rmSync(work, { recursive: true, force: true });
  const summary = summarizeAllocations(airlock.head, airlock.requests, root);
  const floorBytes = summarizeAllocations(floor.head, floor.requests, root).perRequest;
  process.stdout.write(
    `Allocated per request of ${PATH} at ${CONNECTIONS} connections: Airlock ${(summary.perRequest / 1024).toFixed(1)} KiB (${airlock.requests} requests sampled, ${Math.round(airlock.rps)} rps), the floor ${(floorBytes / 1024).toFixed(1)} KiB (${floor.requests}, ${Math.round(floor.rps)} rps)\n\n${summary.text}\n`,
  );
}

async function main(): Promise<void> {
  const root = fileURLToPath(new URL('..', import.meta.url));
  if (process.env['PROFILE_ALLOCATIONS'] === '1') return profileAllocations(root);
  const work = mkdtempSync(join(tmpdir(), 'airlock-profile-'));
  const upstream = await startScript('./bench-upstream.ts');
  const agent = generateAgentToken();
  // PROFILE_CONFIG: top-level keys merged over the config, to see what a part costs by switching it off
  // (e.g. '{"log":{"level":"warn"},"audit":{"file":"/dev/null"},"anomalies":{"enabled":false}}').
  const overrides = JSON.parse(process.env['PROFILE_CONFIG'] ?? '{}') as Record<string, unknown>;
  const configFile = airlockConfig({ dataDir: work, upstreamPort: upstream.port, agentHash: agent.hash, adminHash: generateAgentToken().hash, otlp: null, overrides });
  const profiles = join(work, 'profiles');
  const airlock = await startAirlockProcess(configFile, { BENCH_UPSTREAM_KEY: 'sk-profile-key-0123456789abcdef' }, '/dev/null', undefined, ['--cpu-prof', '--cpu-prof-dir', profiles]);
  process.stderr.write(`profiling Airlock (pid ${airlock.pid}): ${SECONDS} s of ${PATH} at ${CONNECTIONS} connections\n`);
  const load = await runLoad({ url: `http://127.0.0.1:${airlock.port}/api${PATH}`, connections: CONNECTIONS, seconds: SECONDS, headers: { authorization: `Bearer ${agent.token}` } });
  process.stderr.write(`${Math.round(load.rps)} rps, p50 ${load.p50Ms} ms, p99 ${load.p99Ms} ms, ${load.errors} errors; writing the profile\n`);
  // node writes the .cpuprofile as it exits on SIGTERM.
  await airlock.stop();
  await upstream.stop();
  const file = readdirSync(profiles).find((name) => name.endsWith('.cpuprofile'));
  if (file === undefined) throw new Error('no .cpuprofile was written');
  const out = join(root, 'bench-results');
  mkdirSync(out, { recursive: true });
  const kept = join(out, `airlock-${new Date().toISOString().replace(/[:.]/g, '-')}.cpuprofile`);
  renameSync(join(profiles, file), kept);
  rmSync(work, { recursive: true, force: true });
  process.stdout.write(`${summarize(JSON.parse(readFileSync(kept, 'utf8')) as Profile, root)}\n\nprofile: ${relative(root, kept)}\n`);
}

main().catch((error: unknown) => {
  process.stderr.write(`profile failed: ${(error as Error).stack ?? String(error)}\nRun \`npm run build\` first.\n`);
  process.exit(1);
});
