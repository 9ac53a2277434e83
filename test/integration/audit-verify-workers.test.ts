/**
 * `airlock audit verify` with `workers` above 1 (found by review): each worker writes its own chain,
 * audit.w<N>.jsonl (run-cluster.ts), but verify with no file read only audit.jsonl, and said OK for a
 * stale single-process log while a worker's log was broken. Now it finds every chain next to the
 * configured file (the file itself, each audit.w<N>.jsonl, w1..wN for a numeric `workers`), each with
 * its rotated copies, checks each on its own and reports each; exit 2 when any is broken. Explicit files
 * are one chain, as before.
 *
 * The chains are written by real proxies, one per worker file, as a cluster's workers write them (same
 * data_dir, audit.file set as the worker's), plus a single-process log from an earlier run.
 */
import { existsSync, readFileSync, renameSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { generateAgentToken } from '../../src/identity/agent-token.js';
import { assertNoLeak } from '../helpers/assert-no-leak.js';
import { canary } from '../helpers/canary.js';
import { runCliCapture } from '../helpers/operator.js';
import { sendRequest } from '../helpers/send-request.js';
import { startProxy, tempDir } from '../helpers/start-proxy.js';
import { startUpstream, type Upstream } from '../helpers/start-upstream.js';

const MAX_BYTES = 2_000;
const KEEP = 10;

describe('audit verify finds and checks every worker chain', () => {
  const key = canary('audit-workers');
  const agent = generateAgentToken();
  const dataDir = tempDir('airlock-audit-workers-');
  const seen: string[] = [];
  let upstream: Upstream;
  let configFile: string;

  const cli = (args: readonly string[]): ReturnType<typeof runCliCapture> => runCliCapture(args, {}, seen);

  /** Runs a real proxy auditing into `file` (in data_dir, rotated past maxBytes) and sends `requests` requests through it. */
  async function writeChain(file: string, requests: number, maxBytes = 1_000_000): Promise<void> {
    const proxy = await startProxy(
      {
        audit: { file, max_bytes: maxBytes, keep: KEEP },
        services: { things: { upstream: upstream.url, credential: { secret: 'env:THINGS_KEY' }, routes: [{ method: 'GET', path: '/v1/things/:id', scope: 'things:read' }] } },
        agents: { worker: { tokens: [agent.hash], credentials: [{ service: 'things', max_scope: ['things:read'] }] } },
      },
      { dataDir, env: { THINGS_KEY: key } },
    );
    try {
      for (let i = 0; i < requests; i++) {
        const response = await sendRequest(`${proxy.url}/things/v1/things/${file}-${i}`, { headers: { authorization: `Bearer ${agent.token}` } });
        seen.push(response.text);
        expect(response.status).toBe(200);
      }
    } finally {
      // Closing flushes the audit log and ends the chain with airlock:stop.
      await proxy.close();
    }
  }

  /** Edits one field of the line in the middle of `file`, as a hand that hides a request would. */
  function tamper(file: string): { line: number; restore: () => void } {
    const path = join(dataDir, file);
    const original = readFileSync(path, 'utf8');
    const lines = original.split('\n').filter((l) => l !== '');
    const at = Math.floor(lines.length / 2);
    const record = JSON.parse(lines[at] as string) as Record<string, unknown>;
    lines[at] = JSON.stringify({ ...record, status: 418 });
    writeFileSync(path, `${lines.join('\n')}\n`);
    return { line: at + 1, restore: () => writeFileSync(path, original) };
  }

  beforeAll(async () => {
    upstream = await startUpstream();
    // An earlier single-process run: intact, and stale (no worker writes it any more).
    await writeChain('audit.jsonl', 2);
    // Two workers; the first writes enough to rotate, so its chain spans several files.
    await writeChain('audit.w1.jsonl', 12, MAX_BYTES);
    await writeChain('audit.w2.jsonl', 4);
    configFile = join(dataDir, 'airlock-cluster.yaml');
    writeFileSync(
      configFile,
      JSON.stringify({ data_dir: dataDir, workers: 2, state: { type: 'redis', url: 'redis://127.0.0.1:6379' }, audit: { max_bytes: MAX_BYTES, keep: KEEP } }),
    );
  });

  afterAll(async () => {
    await upstream?.close();
    assertNoLeak([key, agent.token], [{ name: 'cli and responses', text: seen.join('\n') }]);
    rmSync(dataDir, { recursive: true, force: true });
  });

  it('all intact: each chain reported OK on its own, exit 0', async () => {
    expect(existsSync(join(dataDir, 'audit.w1.jsonl.1')), 'worker 1 rotated at least once').toBe(true);
    const run = await cli(['audit', 'verify', '--config', configFile]);
    expect(run.code, run.stdout + run.stderr).toBe(0);
    expect(run.stdout).toContain('3 audit hash chains');
    expect(run.stdout).toMatch(/^ {2}audit\.jsonl: OK: 4 records in 1 file, the hash chain is intact from the beginning of the log/m);
    expect(run.stdout).toMatch(/^ {2}audit\.w1\.jsonl: OK: \d+ records in [2-9] files, the hash chain is intact from the beginning of the log/m);
    expect(run.stdout).toMatch(/^ {2}audit\.w2\.jsonl: OK: 6 records in 1 file/m);
    expect(run.stdout).toContain('OK: all 3 chains are intact.');
  });

  it("a broken worker chain is found and named, though audit.jsonl is intact: exit 2 (before: OK, exit 0)", async () => {
    const { line, restore } = tamper('audit.w2.jsonl');
    try {
      const run = await cli(['audit', 'verify', '--config', configFile]);
      expect(run.stdout).toContain(`  audit.w2.jsonl: BROKEN at ${join(dataDir, 'audit.w2.jsonl')} line ${line}: the hash does not match the record (the line was edited).`);
      expect(run.stdout).toMatch(/^ {2}audit\.jsonl: OK:/m);
      expect(run.stdout).toMatch(/^ {2}audit\.w1\.jsonl: OK:/m);
      expect(run.stdout).toContain('BROKEN: 1 of 3 chains (audit.w2.jsonl).');
      expect(run.code).toBe(2);

      // Explicit files are one chain, as before: the broken worker's file alone, and the intact one.
      const explicit = await cli(['audit', 'verify', join(dataDir, 'audit.w2.jsonl')]);
      expect(explicit.code).toBe(2);
      expect(explicit.stdout).toBe(`BROKEN at ${join(dataDir, 'audit.w2.jsonl')} line ${line}: the hash does not match the record (the line was edited). The ${line - 1} records before it verify.\n`);
      const single = await cli(['audit', 'verify', join(dataDir, 'audit.jsonl')]);
      expect(single.code).toBe(0);
      expect(single.stdout).toMatch(/^OK: 4 records in 1 file/);
    } finally {
      restore();
    }
  });

  it('a break in a rotated file of a worker is found too', async () => {
    const { line, restore } = tamper('audit.w1.jsonl.1');
    try {
      const run = await cli(['audit', 'verify', '--config', configFile]);
      expect(run.code).toBe(2);
      expect(run.stdout).toContain(`  audit.w1.jsonl: BROKEN at ${join(dataDir, 'audit.w1.jsonl.1')} line ${line}:`);
    } finally {
      restore();
    }
  });

  it("a configured worker's log that is gone cannot pass unnoticed: exit 1, said on stderr", async () => {
    const path = join(dataDir, 'audit.w2.jsonl');
    renameSync(path, `${path}.aside`);
    try {
      const run = await cli(['audit', 'verify', '--config', configFile]);
      expect(run.code).toBe(1);
      expect(run.stderr).toContain(`cannot read ${path}: it does not exist (worker 2 of workers: 2 has written no audit log there`);
      expect(run.stdout).toContain('  audit.w2.jsonl: NOT CHECKED');
      expect(run.stdout).toContain('NOT VERIFIED: 1 of 3 chains could not be read (audit.w2.jsonl); the others are intact.');
    } finally {
      renameSync(`${path}.aside`, path);
    }
  });

  it('--head with several chains is a usage error that says to give one worker\'s files', async () => {
    const run = await cli(['audit', 'verify', '--config', configFile, '--head', 'a'.repeat(64)]);
    expect(run.code).toBe(1);
    expect(run.stderr).toContain('--head is a record hash of one chain, and there are 3 here');
  });

  // Found by review: back to one process, the files an earlier cluster run left made --head a usage error.
  it('with workers: 1, --head checks audit.jsonl, whatever worker files an earlier run left', async () => {
    const single = join(dataDir, 'airlock-single.yaml');
    writeFileSync(single, JSON.stringify({ data_dir: dataDir, audit: { max_bytes: MAX_BYTES, keep: KEEP } }));
    const lines = readFileSync(join(dataDir, 'audit.jsonl'), 'utf8').trim().split('\n');
    const last = (JSON.parse(lines.at(-1) as string) as { hash: string }).hash;
    const run = await cli(['audit', 'verify', '--config', single, '--head', last]);
    expect(run.code, run.stdout + run.stderr).toBe(0);
    expect(run.stdout).toContain('OK');
    const wrong = await cli(['audit', 'verify', '--config', single, '--head', 'b'.repeat(64)]);
    expect(wrong.code).toBe(2);
  });

  it('a --head that is not a hash is not repeated (it may be a key)', async () => {
    const pasted = canary('audit-head');
    const run = await cli(['audit', 'verify', join(dataDir, 'audit.jsonl'), '--head', pasted]);
    expect(run.code).toBe(1);
    expect(run.stderr).toContain('not repeated here: it may be a key');
    assertNoLeak([pasted], [{ name: 'cli', text: run.stdout + run.stderr }]);
  });
});
