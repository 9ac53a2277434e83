/**
 * An audit outage leaves its trace in the log (found by the ops walkthrough: records lost while the
 * audit file could not be written left no mark, and `airlock audit verify` called the chain intact
 * without a word). The audit file's directory is moved away while Airlock runs, so the file cannot be
 * opened again: under `on_failure: refuse` requests are refused 503 audit_unavailable, under `log` they
 * go on unaudited. Once the directory is back, the first record written is an airlock:audit-gap record
 * saying how many records are missing and why, chained on from the last record written; a warn line says
 * the same, and `audit verify` prints the gap after its OK line.
 */
import { existsSync, mkdirSync, readFileSync, renameSync } from 'node:fs';
import { dirname } from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { generateAgentToken } from '../../src/identity/agent-token.js';
import type { AuditRecord } from '../../src/observability/audit-record.js';
import { assertNoLeak } from '../helpers/assert-no-leak.js';
import { canary } from '../helpers/canary.js';
import { eventually, runCliCapture } from '../helpers/operator.js';
import { sendRequest, type Problem } from '../helpers/send-request.js';
import { startProxy, type ProxyFixture } from '../helpers/start-proxy.js';
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

    const gap = records[0] as ChainedRecord;
    expect(gap).toMatchObject({ route: 'airlock:audit-gap', actor: 'airlock', agent: null, path: null });
    expect(gap.prev).toBe(headBefore);
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
    expect(run.code, run.stdout + run.stderr).toBe(0);
    expect(run.stdout).toContain('from the beginning of the log');
    expect(run.stdout).toMatch(/Records are missing: 1 gap recorded by Airlock/);
    expect(run.stdout).toContain(`GAP at ${file} line 1 (${gap.time}): ${gap.reason as string}`);
  });
});
