/**
 * An audit outage leaves its trace in the log (found by the ops walkthrough: records lost while the
 * audit file could not be written left no mark, and `airlock audit verify` called the chain intact
 * without a word). The audit file's directory is moved away while Airlock runs, so the file cannot be
 * opened again: under `on_failure: refuse` requests are refused 503 audit_unavailable, under `log` they
 * go on unaudited. Once the directory is back, the first record written is an airlock:audit-gap record
 * saying how many records are missing and why, chained on from the last record written; a warn line says
 * the same, and `audit verify` prints the gap after its OK line.
 */
import { existsSync, mkdirSync, readFileSync, renameSync, rmSync, writeFileSync } from 'node:fs';
import { dirname } from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { generateAgentToken } from '../../src/identity/agent-token.js';
import type { AuditRecord } from '../../src/observability/audit-record.js';
import { assertNoLeak } from '../helpers/assert-no-leak.js';
import { canary } from '../helpers/canary.js';
import { eventually, runCliCapture } from '../helpers/operator.js';
import { sendRequest, type Problem } from '../helpers/send-request.js';
import { startProxy, tempDir, type ProxyFixture } from '../helpers/start-proxy.js';
import { startUpstream, type Upstream } from '../helpers/start-upstream.js';

const agent = generateAgentToken();

type ChainedRecord = AuditRecord & { readonly prev: string; readonly hash: string };

function recordsOf(file: string): ChainedRecord[] {
  if (!existsSync(file)) return [];
  return readFileSync(file, 'utf8')
    .split('\n')
    .filter((l) => l !== '')
    .map((l) => JSON.parse(l) as ChainedRecord);
}

describe.each([
  { onFailure: 'refuse' as const, during: 503, requests: /requests were refused 503 audit_unavailable meanwhile/ },
  { onFailure: 'log' as const, during: 200, requests: /went on unaudited/ },
])('audit.on_failure: $onFailure, the audit file unwritable for a while', ({ onFailure, during, requests }) => {
  let upstream: Upstream;
  let proxy: ProxyFixture;
  const key = canary(`audit-gap-${onFailure}`);
  const seen: string[] = [];

  afterEach(async () => {
    assertNoLeak([key, agent.token], [
      { name: 'logs', text: proxy.logLines.join('') },
      { name: 'audit', text: proxy.auditText() },
      { name: 'CLI output', text: seen.join('\n') },
    ]);
    await proxy?.close();
    await upstream?.close();
  });

  it('writes an airlock:audit-gap record first once it can write again, logs it, and verify lists it', async () => {
    upstream = await startUpstream();
    proxy = await startProxy(
      {
        audit: { file: 'audit/audit.jsonl', on_failure: onFailure },
        services: { echo: { upstream: upstream.url, credential: { secret: 'env:GAP_KEY' }, routes: [{ method: 'GET', path: '/v1/*', scope: 'read' }] } },
        agents: { 'gap-bot': { tokens: [agent.hash], credentials: [{ service: 'echo', max_scope: ['read'] }] } },
      },
      { env: { GAP_KEY: key } },
    );
    const file = proxy.config.audit.file;
    const failedRecords = (): number => proxy.logRecords().filter((l) => l['msg'] === 'audit records could not be written').reduce((sum, l) => sum + Number(l['records']), 0);
    const get = (path: string) => sendRequest(`${proxy.url}/echo${path}`, { headers: { authorization: `Bearer ${agent.token}` } });
    expect((await get('/v1/before')).status).toBe(200);
    await proxy.waitForAudit(1);
    const headBefore = recordsOf(file).at(-1)?.hash as string;

    // The directory moved away: the file moved with it, and the path cannot be opened again.
    const moved = `${dirname(file)}.moved`;
    renameSync(dirname(file), moved);
    const lostCalls = 3;
    for (let i = 0; i < lostCalls; i++) {
      const answer = await get(`/v1/during-${i}`);
      // The first is forwarded under either policy: its record, written once it is answered, is how
      // Airlock learns the log cannot be written.
      expect(answer.status, answer.text).toBe(i === 0 ? 200 : during);
      if (i > 0 && during === 503) expect(answer.json<Problem>().code).toBe('audit_unavailable');
      await eventually(`the record of call ${i} failed`, () => failedRecords() === i + 1);
    }
    expect(upstream.requests.filter((r) => r.target.startsWith('/v1/during-'))).toHaveLength(onFailure === 'log' ? lostCalls : 1);

    mkdirSync(dirname(file), { mode: 0o700 });
    // Under refuse, the first call after is the probe that heals the log (its own refusal is written).
    let after = await get('/v1/after');
    if (after.status === 503) after = await get('/v1/after-again');
    expect(after.status, after.text).toBe(200);
    const records = await (async () => {
      for (let i = 0; i < 100; i++) {
        const found = recordsOf(file);
        if (found.some((r) => r.path?.startsWith('/echo/v1/after') === true && r.status === 200)) return found;
        await new Promise((resolve) => setTimeout(resolve, 20));
      }
      throw new Error('no record of the call after the outage');
    })();

    // The first batch written after the outage (one record here) ends with the gap record.
    expect(records[0]?.prev).toBe(headBefore);
    const gap = records[1] as ChainedRecord;
    expect(gap).toMatchObject({ route: 'airlock:audit-gap', actor: 'airlock', agent: null, path: null });
    expect(records.filter((r) => r.route === 'airlock:audit-gap')).toHaveLength(1);
    // Every record not written is counted, each call of the outage.
    const lost = Number(/^(\d+) audit records? (?:was|were) not written from /.exec(gap.reason ?? '')?.[1]);
    expect(lost).toBe(lostCalls);
    expect(gap.reason).toMatch(/\(ENOENT\)/);
    expect(gap.reason).toMatch(requests);
    expect(records.slice(1).some((r) => r.path?.startsWith('/echo/v1/during-') === true)).toBe(false);

    const warned = proxy.logRecords().filter((l) => String(l['msg']).startsWith('the audit log is writable again'));
    expect(warned).toHaveLength(1);
    expect(warned[0]).toMatchObject({ level: 'warn', lost });

    const run = await runCliCapture(['audit', 'verify', `${moved}/audit.jsonl`, file], {}, seen);
    // Intact, but with records missing: exit 3, so a job that checks the exit code sees it.
    expect(run.code, run.stdout + run.stderr).toBe(3);
    expect(run.stdout).toContain('from the beginning of the log');
    expect(run.stdout).toMatch(/Records are missing: 1 gap recorded by Airlock/);
    expect(run.stdout).toContain(`GAP at ${file} line 2 (${gap.time}): ${gap.reason as string}`);

    // Once looked at, a gap stops the alert and stays listed (found by the ops walkthrough: exit 3
    // fired after every later check until the file holding it was rotated away).
    const known = await runCliCapture(['audit', 'verify', `${moved}/audit.jsonl`, file, '--gaps-known-until', gap.time], {}, seen);
    expect(known.code, known.stdout + known.stderr).toBe(0);
    expect(known.stdout).toContain(`GAP (known) at ${file} line 2 (${gap.time})`);
    expect(known.stdout).toContain('1 up to --gaps-known-until');
    const before = await runCliCapture(['audit', 'verify', `${moved}/audit.jsonl`, file, '--gaps-known-until', new Date(Date.parse(gap.time) - 1).toISOString()], {}, seen);
    expect(before.code).toBe(3);
    const typo = await runCliCapture(['audit', 'verify', file, '--gaps-known-until', 'yesterday'], {}, seen);
    expect(typo.code).toBe(1);
    expect(typo.stderr).toContain('--gaps-known-until takes a time with its offset');
    // Not ahead of now (a typo of next year would hide every gap to come), and with its offset.
    const ahead = await runCliCapture(['audit', 'verify', file, '--gaps-known-until', new Date(Date.now() + 86_400_000).toISOString()], {}, seen);
    expect(ahead.code).toBe(1);
    expect(ahead.stderr).toContain('is in the future, which would hide gaps not yet recorded');
    const local = await runCliCapture(['audit', 'verify', file, '--gaps-known-until', gap.time.replace(/Z$/, '')], {}, seen);
    expect(local.code).toBe(1);
  });
});

// Found by review: the loss was kept in memory only, so a crash (or a restart before any other record)
// dropped it. A log whose last record is not airlock:stop was left by a run that did not stop.
describe('a run that ended without airlock:stop', () => {
  it('is noted by the next run: its first batch ends with an airlock:audit-gap record, and a warn line says so', async () => {
    const upstream = await startUpstream();
    const key = canary('audit-gap-unclean');
    const input = {
      services: { echo: { upstream: upstream.url, credential: { secret: 'env:GAP_KEY' }, routes: [{ method: 'GET', path: '/v1/*', scope: 'read' }] } },
      agents: { 'gap-bot': { tokens: [agent.hash], credentials: [{ service: 'echo', max_scope: ['read'] }] } },
    };
    const dataDir = tempDir('airlock-audit-unclean-');
    const first = await startProxy(input, { env: { GAP_KEY: key }, dataDir });
    const file = first.config.audit.file;
    expect((await sendRequest(`${first.url}/echo/v1/last-call`, { headers: { authorization: `Bearer ${agent.token}` } })).status).toBe(200);
    await first.waitForAudit(1);
    await first.close();
    // As if killed before it could write airlock:stop: the log ends with the last request's record.
    const lines = readFileSync(file, 'utf8').split('\n').filter((l) => l !== '');
    expect((JSON.parse(lines.at(-1) as string) as AuditRecord).route).toBe('airlock:stop');
    writeFileSync(file, `${lines.slice(0, -1).join('\n')}\n`);
    const lastCall = JSON.parse(lines.at(-2) as string) as ChainedRecord;
    expect(lastCall.path).toBe('/echo/v1/last-call');

    const second = await startProxy(input, { env: { GAP_KEY: key }, dataDir });
    try {
      const records = recordsOf(file);
      const after = records.slice(records.findIndex((r) => r.hash === lastCall.hash) + 1);
      expect(after.map((r) => r.route)).toEqual(['airlock:start', 'airlock:audit-gap']);
      expect(after[0]?.prev).toBe(lastCall.hash);
      expect(after[1]?.reason).toBe(`The previous run of Airlock ended without an airlock:stop record (its last record is of ${lastCall.time}): it was killed or crashed, or its last records could not be written, so records of its last moments may be missing (how many is not known).`);
      expect(second.logRecords().some((l) => l['level'] === 'warn' && String(l['msg']).startsWith('the previous run ended without an airlock:stop record'))).toBe(true);
      // A run that stopped cleanly leaves nothing to note.
      await second.close();
      const third = await startProxy(input, { env: { GAP_KEY: key }, dataDir });
      await third.close();
      const finalRecords = recordsOf(file);
      expect(finalRecords.filter((r) => r.route === 'airlock:audit-gap')).toHaveLength(1);
      expect(finalRecords.slice(-2).map((r) => r.route)).toEqual(['airlock:start', 'airlock:stop']);
      assertNoLeak([key, agent.token], [{ name: 'audit', text: readFileSync(file, 'utf8') }, { name: 'logs', text: second.logLines.join('') + third.logLines.join('') }]);
    } finally {
      await second.close().catch(() => undefined);
      await upstream.close();
      rmSync(dataDir, { recursive: true, force: true });
    }
  });
});
