/**
 * The tamper-evident audit trail (issue 6). Every record carries the task context (agent, session,
 * justification, task id, approval and approver, credential reference and generation, decision, code)
 * and `prev`/`hash`; `airlock audit verify` says intact for what Airlock wrote, and names the first bad
 * line (exit 2) for a deleted, an edited, a swapped, an inserted forged or a torn line. Size rotation
 * keeps audit.keep files and carries the chain across them; a restart on the same data_dir continues
 * it. `audit.on_failure: log` lets requests through while writes fail and counts the failures; the
 * default refuses. `audit.webhook` receives JSON arrays of the chained records.
 *
 * The /dev/full proxies below never read their audit file back (reading /dev/full yields zeros forever),
 * so proxy.auditText(), auditRecords() and waitForAudit() are not called on them.
 */
import { existsSync, readFileSync, readdirSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { request as httpRequest } from 'node:http';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { generateAgentToken } from '../../src/identity/agent-token.js';
import { chainHash, GENESIS, verifyChain } from '../../src/observability/audit-chain.js';
import type { AuditRecord } from '../../src/observability/audit-record.js';
import { assertNoLeak } from '../helpers/assert-no-leak.js';
import { canary } from '../helpers/canary.js';
import { eventually, runCliCapture, type CliRun } from '../helpers/operator.js';
import { sendRequest, type Problem, type SentResponse } from '../helpers/send-request.js';
import { startProxy, tempDir, type ProxyFixture } from '../helpers/start-proxy.js';
import { startUpstream, type Upstream } from '../helpers/start-upstream.js';
import { startVaultServer, type VaultServer } from '../support/vault-server.js';

type Chained = AuditRecord & { prev: string; hash: string };

const cliSeen: string[] = [];
const cli = (args: readonly string[]): Promise<CliRun> => runCliCapture(args, {}, cliSeen);

function linesOf(text: string): string[] {
  return text.split('\n').filter((line) => line !== '');
}

function parseLines(text: string): Chained[] {
  return linesOf(text).map((line) => JSON.parse(line) as Chained);
}

function requestIdOf(response: SentResponse): string {
  return String(response.headers['x-airlock-request-id']);
}

/** Characters JSON escapes or that are multi-byte in UTF-8: the chain must survive a parse and re-stringify. */
const JUSTIFICATION = 'reconcile the March charges — naïve “quotes”, a \\ backslash, a "quote", a\ttab, a \u2028 separator, 🚀 done';

const TASK_CONTEXT_FIELDS = ['agent', 'session', 'justification', 'task_id', 'approval', 'approver', 'credential', 'generation', 'decision', 'code', 'trace_id', 'prev', 'hash'] as const;

describe('audit records with task context, verified and tampered with', () => {
  const vaultKey = canary('audit-vault');
  const payKey = canary('audit-pay');
  const queryCanary = canary('audit-query');
  const agent = generateAgentToken();
  const admin = generateAgentToken();
  const scratch = tempDir('airlock-audit-trail-');
  let vault: VaultServer;
  let upstream: Upstream;
  let proxy: ProxyFixture;
  let auditFile: string;
  const agentSeen: string[] = [];
  let sessionToken = '';
  let approvalId = '';
  const ids: Record<string, string> = {};

  async function call(path: string, options: { method?: string; token?: string; headers?: Record<string, string>; body?: string } = {}): Promise<SentResponse> {
    const response = await sendRequest(`${proxy.url}${path}`, {
      method: options.method ?? 'GET',
      headers: { authorization: `Bearer ${options.token ?? agent.token}`, ...(options.body === undefined ? {} : { 'content-type': 'application/json' }), ...(options.headers ?? {}) },
      ...(options.body === undefined ? {} : { body: options.body }),
    });
    agentSeen.push(`${response.status}\n${JSON.stringify(response.headers)}\n${response.text}`);
    return response;
  }

  beforeAll(async () => {
    vault = await startVaultServer();
    vault.putSecret('secret', 'charges', { api_key: canary('audit-vault-old') });
    vault.putSecret('secret', 'charges', { api_key: vaultKey });
    upstream = await startUpstream();
    proxy = await startProxy(
      {
        admin: { listen: '127.0.0.1:0', tokens: [{ name: 'alice', hash: admin.hash }] },
        secrets: { vault: { address: vault.url, timeout: 2, auth: { method: 'token', token: 'env:VAULT_TOKEN' } } },
        services: {
          charges: {
            upstream: upstream.url,
            credential: { secret: 'vault:secret/charges#api_key', inject: 'bearer' },
            routes: [
              { method: 'GET', path: '/v1/charges/:id', scope: 'charges:read' },
              { method: 'POST', path: '/v1/refunds', scope: 'refunds:write' },
            ],
          },
          pay: {
            upstream: upstream.url,
            credential: { secret: 'env:PAY_KEY', inject: 'bearer' },
            routes: [{ method: 'POST', path: '/v1/payouts', scope: 'payouts:write' }],
          },
        },
        agents: {
          'audit-bot': {
            tokens: [agent.hash],
            credentials: [
              { service: 'charges', max_scope: ['charges:read'] },
              { service: 'pay', max_scope: ['payouts:write'], require_approval: true, approval_mode: 'async', approval_timeout: 600 },
            ],
          },
        },
      },
      { env: { VAULT_TOKEN: vault.createToken({ policies: ['airlock'] }), PAY_KEY: payKey } },
    );
    auditFile = proxy.config.audit.file;

    const session = await call('/_airlock/sessions', {
      method: 'POST',
      body: JSON.stringify({ scopes: { charges: ['charges:read'] }, ttl_seconds: 600, justification: JUSTIFICATION, task_id: 'TICKET-4242' }),
    });
    expect(session.status, session.text).toBe(201);
    sessionToken = String(session.json()['session_token']);
    ids['session'] = requestIdOf(session);
    ids['in session'] = requestIdOf(await call(`/charges/v1/charges/ch_1?expand=${queryCanary}`, { token: sessionToken }));
    ids['plain'] = requestIdOf(await call('/charges/v1/charges/ch_2'));
    ids['denied'] = requestIdOf(await call('/charges/v1/refunds', { method: 'POST', body: '{}' }));
    const pending = await call('/pay/v1/payouts', { method: 'POST', body: '{"amount":5}' });
    expect(pending.status, pending.text).toBe(202);
    approvalId = String(pending.json()['approval_id']);
    ids['pending'] = requestIdOf(pending);
    const decided = await sendRequest(`${proxy.airlock.adminUrl as string}/v1/approvals/${approvalId}/approve`, {
      method: 'POST',
      headers: { authorization: `Bearer ${admin.token}`, 'content-type': 'application/json' },
      body: JSON.stringify({ reason: 'looks right' }),
    });
    expect(decided.status, decided.text).toBe(200);
    const approved = await call('/pay/v1/payouts', { method: 'POST', body: '{"amount":5}', headers: { 'x-airlock-approval': approvalId } });
    expect(approved.status, approved.text).toBe(200);
    ids['approved'] = requestIdOf(approved);
    // A burst of concurrent requests: records written in one batch still chain one by one.
    const burst = await Promise.all(Array.from({ length: 12 }, (_, i) => call(`/charges/v1/charges/burst_${i}`)));
    for (const response of burst) expect(response.status).toBe(200);
    await proxy.waitForAudit(6 + 1 + 12);
  });

  afterAll(async () => {
    await proxy?.close();
    await upstream?.close();
    await vault?.close();
    rmSync(scratch, { recursive: true, force: true });
  });

  function record(label: string): Chained {
    const found = parseLines(proxy.auditText()).filter((r) => r.request_id === ids[label]);
    expect(found, `audit record for ${label}`).toHaveLength(1);
    return found[0] as Chained;
  }

  /** A copy of the audit file with its lines rearranged by `edit`, written to the scratch dir. */
  function tampered(name: string, edit: (lines: string[]) => string[]): string {
    const file = join(scratch, name);
    writeFileSync(file, `${edit(linesOf(proxy.auditText())).join('\n')}\n`);
    return file;
  }

  async function expectBroken(file: string, line: number, problem: RegExp): Promise<void> {
    const verdict = verifyChain([{ name: file, text: readFileSync(file, 'utf8') }]);
    expect(verdict).toMatchObject({ ok: false, line, file });
    if (!verdict.ok) expect(verdict.problem).toMatch(problem);
    const run = await cli(['audit', 'verify', file]);
    expect(run.code, run.stdout + run.stderr).toBe(2);
    expect(run.stdout).toContain(`BROKEN at ${file} line ${line}:`);
  }

  it('holds the task context in every record', () => {
    const records = parseLines(proxy.auditText());
    expect(records.length).toBeGreaterThanOrEqual(19);
    for (const r of records) for (const field of TASK_CONTEXT_FIELDS) expect(r, `field ${field} of ${r.request_id}`).toHaveProperty(field);
    expect(record('session')).toMatchObject({ agent: 'audit-bot', route: '/_airlock/sessions', decision: 'allow', code: null, status: 201, justification: JUSTIFICATION, task_id: 'TICKET-4242' });
    expect(record('session').session).toMatch(/\S/);
    expect(record('in session')).toMatchObject({
      agent: 'audit-bot',
      session: record('session').session,
      justification: JUSTIFICATION,
      task_id: 'TICKET-4242',
      service: 'charges',
      route: '/v1/charges/:id',
      decision: 'allow',
      code: null,
      status: 200,
      credential: 'vault:secret/charges#api_key',
      generation: '2',
      approval: null,
      approver: null,
    });
    expect(record('plain')).toMatchObject({ agent: 'audit-bot', session: null, justification: null, task_id: null, credential: 'vault:secret/charges#api_key', generation: '2', decision: 'allow', code: null });
    expect(record('denied')).toMatchObject({ agent: 'audit-bot', route: '/v1/refunds', scope: 'refunds:write', decision: 'deny', code: 'scope_denied', status: 403, credential: null, generation: null });
    expect(record('pending')).toMatchObject({ service: 'pay', code: 'approval_pending', status: 202, approver: null });
    expect(record('approved')).toMatchObject({
      agent: 'audit-bot',
      service: 'pay',
      route: '/v1/payouts',
      decision: 'allow',
      code: null,
      status: 200,
      approval: approvalId,
      approver: 'alice',
      approval_reason: 'looks right',
      credential: 'env:PAY_KEY',
    });
    const change = parseLines(proxy.auditText()).find((r) => r.actor === 'alice');
    expect(change).toMatchObject({ approval: approvalId, route: '/v1/approvals/:id/approve', reason: 'looks right' });
  });

  it('verifies intact, directly and with `airlock audit verify`', async () => {
    const text = proxy.auditText();
    const records = parseLines(text);
    expect(records[0]?.prev).toBe(GENESIS);
    for (let i = 1; i < records.length; i++) expect(records[i]?.prev).toBe(records[i - 1]?.hash);
    expect(verifyChain([{ name: auditFile, text }])).toEqual({ ok: true, records: records.length, lastHash: records.at(-1)?.hash, firstPrev: GENESIS });
    const run = await cli(['audit', 'verify', auditFile]);
    expect(run.code, run.stdout + run.stderr).toBe(0);
    expect(run.stdout).toMatch(new RegExp(`^OK: ${records.length} records in 1 file, the hash chain is intact`));
  });

  it('catches a deleted line at the line that follows it', async () => {
    await expectBroken(tampered('deleted.jsonl', (lines) => [...lines.slice(0, 4), ...lines.slice(5)]), 5, /deleted, inserted or moved/);
  });

  it('catches a deleted first line when the log must start at its beginning (--complete)', async () => {
    const file = tampered('head-deleted.jsonl', (lines) => lines.slice(1));
    // Without --complete the chain may start after a rotated-away file: intact, but it says where it starts.
    const lenient = await cli(['audit', 'verify', file]);
    expect(lenient.code, lenient.stdout).toBe(0);
    expect(lenient.stdout).toContain('from a record that follows hash');
    const strict = await cli(['audit', 'verify', '--complete', file]);
    expect(strict.code, strict.stdout).toBe(2);
    expect(strict.stdout).toContain(`BROKEN at ${file} line 1: the first record follows a record`);
    const whole = await cli(['audit', 'verify', '--complete', auditFile]);
    expect(whole.code, whole.stdout).toBe(0);
    expect(whole.stdout).toContain('from the beginning of the log');
  });

  it("catches a cut tail against the head kept elsewhere (--head, the admin API's audit_head)", async () => {
    const health = await sendRequest(`${proxy.airlock.adminUrl as string}/v1/health`, { headers: { authorization: `Bearer ${admin.token}` } });
    expect(health.status).toBe(200);
    const head = (JSON.parse(health.text) as { audit_head: string }).audit_head;
    // The admin call itself is not audited (a GET): the head is the last line on disk.
    expect(head).toBe(parseLines(proxy.auditText()).at(-1)?.hash);
    const intact = await cli(['audit', 'verify', '--head', head, auditFile]);
    expect(intact.code, intact.stdout).toBe(0);
    expect(intact.stdout).toContain('the expected head');
    const cut = tampered('tail-cut.jsonl', (lines) => lines.slice(0, -2));
    const run = await cli(['audit', 'verify', '--head', head.slice(0, 16), cut]);
    expect(run.code, run.stdout).toBe(2);
    expect(run.stdout).toContain(`BROKEN: no record of ${cut} has the expected head ${head.slice(0, 16)}... (the last is `);
    expect(run.stdout).toContain('the records up to it were cut off or rewritten');
    const usage = await cli(['audit', 'verify', '--head', 'not-a-hash', auditFile]);
    expect(usage.code).toBe(1);
  });

  // Found by review: only the very last record was accepted as the head, so a head kept yesterday read as
  // "cut off" on a log that had only grown since.
  it('takes a head kept earlier, with records written after it, and names where it is', async () => {
    const records = parseLines(proxy.auditText());
    expect(records.length).toBeGreaterThan(6);
    const kept = records[4] as Chained;
    const run = await cli(['audit', 'verify', '--head', kept.hash, auditFile]);
    expect(run.code, run.stdout).toBe(0);
    expect(run.stdout).toContain(`; the expected head is record 5 (${auditFile} line 5), and ${records.length - 5} records were written after it.`);
  });

  // Found by review: the chain has no key, so whoever can write data_dir can edit a line and compute every
  // hash after it again; only a head kept out of their reach catches that.
  it('a chain recomputed after an edit verifies alone, and is caught by a head kept before the edit', async () => {
    const records = parseLines(proxy.auditText());
    const kept = records[4] as Chained;
    let prev = GENESIS;
    const forged = tampered('forged.jsonl', (lines) =>
      lines.map((line, i) => {
        const { hash: _hash, ...rest } = JSON.parse(line) as Chained;
        const edited = { ...rest, prev, ...(i === 2 ? { path: '/forged' } : {}) };
        prev = chainHash(prev, JSON.stringify(edited));
        return JSON.stringify({ ...edited, hash: prev });
      }),
    );
    const alone = await cli(['audit', 'verify', '--complete', forged]);
    expect(alone.code, alone.stdout).toBe(0);
    const anchored = await cli(['audit', 'verify', '--head', kept.hash, forged]);
    expect(anchored.code, anchored.stdout).toBe(2);
    expect(anchored.stdout).toContain('the records up to it were cut off or rewritten');
  });

  // Found by review: a log truncated to nothing verified as "OK: 0 records ... from the beginning".
  it('an empty log is broken where it must start at its beginning', async () => {
    const emptied = join(scratch, 'emptied.jsonl');
    writeFileSync(emptied, '');
    const run = await cli(['audit', 'verify', '--complete', emptied]);
    expect(run.code, run.stdout).toBe(2);
    expect(run.stdout).toContain(`BROKEN: ${emptied} holds no records, but the log should start at its beginning`);
  });

  it('catches an edited line (a status changed) at that line', async () => {
    const file = tampered('edited.jsonl', (lines) => {
      const target = lines[3] as string;
      expect(target).toMatch(/"status":(200|201|202|403)/);
      return lines.map((line, i) => (i === 3 ? line.replace(/"status":(\d+)/, '"status":500') : line));
    });
    await expectBroken(file, 4, /edited/);
  });

  it('catches an edit that keeps the JSON valid but reorders nothing (decision flipped)', async () => {
    const file = tampered('flipped.jsonl', (lines) => lines.map((line) => (JSON.parse(line) as Chained).request_id === ids['denied'] ? line.replace('"decision":"deny"', '"decision":"allow"') : line));
    const line = linesOf(proxy.auditText()).findIndex((l) => (JSON.parse(l) as Chained).request_id === ids['denied']) + 1;
    await expectBroken(file, line, /edited/);
  });

  it('catches two swapped lines at the first of them', async () => {
    await expectBroken(tampered('swapped.jsonl', (lines) => [lines[0] as string, lines[2] as string, lines[1] as string, ...lines.slice(3)]), 2, /deleted, inserted or moved/);
  });

  it('catches an inserted forged line whose own hash is recomputed but whose prev is wrong', async () => {
    const file = tampered('forged.jsonl', (lines) => {
      const { hash: _hash, ...model } = JSON.parse(lines[2] as string) as Chained;
      const forged = { ...model, request_id: '00000000-0000-4000-8000-000000000000', agent: 'someone-else', prev: GENESIS };
      const canonical = JSON.stringify(forged);
      const line = `${canonical.slice(0, -1)},"hash":"${chainHash(forged.prev, canonical)}"}`;
      return [...lines.slice(0, 3), line, ...lines.slice(3)];
    });
    await expectBroken(file, 4, /deleted, inserted or moved/);
  });

  it('catches a forged line chained to its predecessor at the line after it', async () => {
    const file = tampered('forged-linked.jsonl', (lines) => {
      const { hash: before } = JSON.parse(lines[2] as string) as Chained;
      const { hash: _hash, ...model } = JSON.parse(lines[2] as string) as Chained;
      const forged = { ...model, request_id: '00000000-0000-4000-8000-000000000001', prev: before };
      const canonical = JSON.stringify(forged);
      return [...lines.slice(0, 3), `${canonical.slice(0, -1)},"hash":"${chainHash(before, canonical)}"}`, ...lines.slice(3)];
    });
    await expectBroken(file, 5, /deleted, inserted or moved/);
  });

  it('catches a torn last line', async () => {
    await expectBroken(tampered('torn.jsonl', (lines) => [...lines.slice(0, -1), (lines.at(-1) as string).slice(0, 40)]), linesOf(proxy.auditText()).length, /not valid JSON/);
  });

  it('leaks no canary into the audit file or the CLI output', () => {
    assertNoLeak([vaultKey, payKey, queryCanary, agent.token, admin.token, sessionToken, ...vault.issuedTokens()], [
      { name: 'audit', text: proxy.auditText() },
      { name: 'cli', text: cliSeen.join('\n') },
      { name: 'log', text: proxy.logLines.join('') },
    ]);
    assertNoLeak([vaultKey, payKey], [{ name: 'agent responses', text: agentSeen.join('\n') }]);
  });
});

describe('rotation by size, and a restart', () => {
  const key = canary('audit-rotate');
  const agent = generateAgentToken();
  const dataDir = tempDir('airlock-audit-rotate-');
  const MAX_BYTES = 2000;
  let upstream: Upstream;
  let first: ProxyFixture | undefined;
  let second: ProxyFixture | undefined;
  let lastHashBeforeRestart = '';

  const config = (upstreamUrl: string): Record<string, unknown> => ({
    audit: { max_bytes: MAX_BYTES, keep: 3 },
    services: { things: { upstream: upstreamUrl, credential: { secret: 'env:THINGS_KEY' }, routes: [{ method: 'GET', path: '/v1/things/:id', scope: 'things:read' }] } },
    agents: { rotor: { tokens: [agent.hash], credentials: [{ service: 'things', max_scope: ['things:read'] }] } },
  });

  async function send(proxy: ProxyFixture, id: string): Promise<SentResponse> {
    const response = await sendRequest(`${proxy.url}/things/v1/things/${id}`, { headers: { authorization: `Bearer ${agent.token}` } });
    expect(response.status).toBe(200);
    return response;
  }

  let filesAfterRestart: Array<{ name: string; text: string }> = [];

  function files(base: string): { rotated: string[]; all: Array<{ name: string; text: string }> } {
    const rotated: string[] = [];
    for (let n = 1; existsSync(`${base}.${n}`); n++) rotated.unshift(`${base}.${n}`);
    // Between a rotation's rename and the write that follows it, the current file briefly does not exist.
    const read = (name: string): string => (existsSync(name) ? readFileSync(name, 'utf8') : '');
    return { rotated, all: [...rotated, base].map((name) => ({ name, text: read(name) })) };
  }

  beforeAll(async () => {
    upstream = await startUpstream();
    first = await startProxy(config(upstream.url), { dataDir, env: { THINGS_KEY: key } });
    // Sequential, so every record is its own write and each file stays within max_bytes.
    for (let i = 0; i < 16; i++) {
      await send(first, `r${i}`);
      // The log line follows the audit write: one record at a time.
      await eventually(`record ${i}`, () => (first as ProxyFixture).logRecords().filter((l) => l['msg'] === 'request').length === i + 1);
    }
  });

  afterAll(async () => {
    await first?.close();
    await second?.close();
    await upstream?.close();
    rmSync(dataDir, { recursive: true, force: true });
  });

  it('keeps audit.keep rotated files, each within max_bytes', async () => {
    const base = (first as ProxyFixture).config.audit.file;
    const { rotated, all } = files(base);
    expect(rotated).toEqual([`${base}.3`, `${base}.2`, `${base}.1`]);
    expect(existsSync(`${base}.4`)).toBe(false);
    for (const { name } of all) expect(statSync(name).size, name).toBeLessThanOrEqual(MAX_BYTES);
    expect(readdirSync(dataDir).filter((f) => f.startsWith('audit.jsonl')).sort()).toEqual(['audit.jsonl', 'audit.jsonl.1', 'audit.jsonl.2', 'audit.jsonl.3']);
  });

  it('carries the chain across the files: oldest first verifies intact, and each file starts where the last ended', async () => {
    const base = (first as ProxyFixture).config.audit.file;
    const { rotated, all } = files(base);
    expect(verifyChain(all)).toMatchObject({ ok: true });
    for (let i = 1; i < all.length; i++) {
      const previous = parseLines((all[i - 1] as { text: string }).text).at(-1) as Chained;
      const next = parseLines((all[i] as { text: string }).text)[0] as Chained;
      expect(next.prev, `${all[i]?.name} chains to ${all[i - 1]?.name}`).toBe(previous.hash);
    }
    const run = await cli(['audit', 'verify', ...rotated, base]);
    expect(run.code, run.stdout + run.stderr).toBe(0);
    expect(run.stdout).toContain('in 4 files, the hash chain is intact');
    // Newest first is not the chain.
    const wrongOrder = await cli(['audit', 'verify', base, ...rotated.reverse()]);
    expect(wrongOrder.code).toBe(2);
    // A rotated file that went missing from the middle is a break at the first line after the gap.
    const gap = verifyChain([all[0], all[2], all[3]] as Array<{ name: string; text: string }>);
    expect(gap).toMatchObject({ ok: false, file: `${base}.1`, line: 1 });
  });

  it('finds the rotated files itself from the config (`audit verify --config FILE`)', async () => {
    const configFile = join(dataDir, 'airlock-cli.yaml');
    writeFileSync(configFile, JSON.stringify({ data_dir: dataDir, audit: { max_bytes: MAX_BYTES, keep: 3 } }));
    const run = await cli(['audit', 'verify', '--config', configFile]);
    expect(run.code, run.stdout + run.stderr).toBe(0);
    expect(run.stdout).toContain('in 4 files, the hash chain is intact');
    rmSync(configFile);
  });

  it('continues the chain after a restart on the same data_dir', async () => {
    const base = (first as ProxyFixture).config.audit.file;
    await (first as ProxyFixture).close();
    const before = files(base).all;
    lastHashBeforeRestart = (parseLines((before.at(-1) as { text: string }).text).at(-1) as Chained).hash;
    second = await startProxy(config(upstream.url), { dataDir, env: { THINGS_KEY: key } });
    const response = await send(second, 'after-restart');
    const id = requestIdOf(response);
    // The instance that stopped wrote airlock:stop last; the new one writes airlock:start first,
    // chained to it, and then the request.
    const chain = await eventually('the first request record after the restart', () => {
      const snapshot = files(base).all;
      const records = snapshot.flatMap((f) => parseLines(f.text));
      if (!records.some((r) => r.request_id === id)) return undefined;
      // Kept for the next test: later writes may rotate the stop record out of the kept files
      // (record sizes vary with timings, so how many rotations follow is not fixed).
      filesAfterRestart = snapshot;
      return records;
    });
    const started = chain.findIndex((r) => r.prev === lastHashBeforeRestart);
    expect(chain[started - 1]).toMatchObject({ route: 'airlock:stop', actor: 'airlock' });
    expect(chain[started]).toMatchObject({ route: 'airlock:start', actor: 'airlock' });
    expect(chain[started + 1]).toMatchObject({ request_id: id, prev: chain[started]?.hash });
    for (let i = 0; i < 4; i++) await send(second, `again${i}`);
    await eventually('the records after the restart', () => files(base).all.flatMap((f) => parseLines(f.text)).filter((r) => r.request_id !== id && r.path?.includes('again')).length === 4);
    const { rotated, all } = files(base);
    expect(verifyChain(all)).toMatchObject({ ok: true });
    const run = await cli(['audit', 'verify', ...rotated, base]);
    expect(run.code, run.stdout).toBe(0);
  });

  it('catches, on copies, the deletion of the last record written before the restart', async () => {
    const all = filesAfterRestart;
    const scratch = tempDir('airlock-audit-restart-copy-');
    try {
      const copies = all.map(({ text }, i) => {
        const copy = join(scratch, `part${i}.jsonl`);
        writeFileSync(copy, text);
        return copy;
      });
      const fileIndex = all.findIndex((f) => parseLines(f.text).some((r) => r.hash === lastHashBeforeRestart));
      expect(fileIndex).toBeGreaterThanOrEqual(0);
      const target = copies[fileIndex] as string;
      const lines = linesOf(readFileSync(target, 'utf8'));
      const at = lines.findIndex((l) => (JSON.parse(l) as Chained).hash === lastHashBeforeRestart);
      expect(fileIndex === 0 && at === 0, 'the record is not the very first one kept (that one may chain to anything)').toBe(false);
      writeFileSync(target, `${[...lines.slice(0, at), ...lines.slice(at + 1)].join('\n')}\n`);
      // The restart record now follows a record it does not chain to: in the same file, or first in the next.
      const expected = at < lines.length - 1 ? `BROKEN at ${target} line ${at + 1}:` : `BROKEN at ${copies[fileIndex + 1] as string} line 1:`;
      const run = await cli(['audit', 'verify', ...copies]);
      expect(run.code, run.stdout).toBe(2);
      expect(run.stdout).toContain(expected);
    } finally {
      rmSync(scratch, { recursive: true, force: true });
    }
  });
});

describe('the audit file removed from under a running proxy', () => {
  const key = canary('audit-removed');
  const agent = generateAgentToken();
  const dataDir = tempDir('airlock-audit-removed-');
  let upstream: Upstream;
  let proxy: ProxyFixture;

  beforeAll(async () => {
    upstream = await startUpstream();
    proxy = await startProxy(
      {
        audit: { max_bytes: 2000, keep: 2 },
        services: { things: { upstream: upstream.url, credential: { secret: 'env:THINGS_KEY' }, routes: [{ method: 'GET', path: '/v1/things/:id', scope: 'things:read' }] } },
        agents: { bot: { tokens: [agent.hash], credentials: [{ service: 'things', max_scope: ['things:read'] }] } },
      },
      { dataDir, env: { THINGS_KEY: key } },
    );
  });

  afterAll(async () => {
    await proxy?.close();
    await upstream?.close();
    rmSync(dataDir, { recursive: true, force: true });
  });

  it('when rotation finds it gone, a new file is begun: requests go on (no 503), records land in it', async () => {
    const file = join(dataDir, 'audit.jsonl');
    const auth = { authorization: `Bearer ${agent.token}` };
    expect((await sendRequest(`${proxy.url}/things/v1/things/0`, { headers: auth })).status).toBe(200);
    await eventually('the first record', () => existsSync(file) && readFileSync(file, 'utf8').includes('/things/v1/things/0'));
    rmSync(file);
    // Enough records to pass max_bytes, so a rotation runs and finds the file gone.
    for (let i = 1; i <= 8; i++) {
      const response = await sendRequest(`${proxy.url}/things/v1/things/${i}`, { headers: auth });
      expect(response.status, response.text).toBe(200);
      // The log line follows the audit write: one record at a time, each saying it was audited.
      await eventually(`record ${i}`, () => proxy.logRecords().filter((l) => l['msg'] === 'request' && l['audited'] === true).length === i + 1);
    }
    await eventually('records in a new file', () => existsSync(file) && readFileSync(file, 'utf8').includes('/things/v1/things/8'));
    const text = readFileSync(file, 'utf8');
    expect(verifyChain([{ name: file, text }])).toMatchObject({ ok: true });
    expect((await sendRequest(`${proxy.url}/_airlock/ready`)).status).toBe(200);
    assertNoLeak([key], [{ name: 'audit log', text }]);
  });
});

describe('a record longer than the tail read at start-up', () => {
  const key = canary('audit-long');
  const agent = generateAgentToken();
  const dataDir = tempDir('airlock-audit-long-');
  let upstream: Upstream;

  const config = (upstreamUrl: string): Record<string, unknown> => ({
    // Room for a request target longer than the 256 KiB first read of the file's tail.
    limits: { max_header_bytes: 1024 * 1024 },
    services: { things: { upstream: upstreamUrl, credential: { secret: 'env:THINGS_KEY' }, routes: [{ method: 'GET', path: '/v1/things/:id', scope: 'things:read' }] } },
    agents: { bot: { tokens: [agent.hash], credentials: [{ service: 'things', max_scope: ['things:read'] }] } },
  });

  beforeAll(async () => {
    upstream = await startUpstream();
  });

  afterAll(async () => {
    await upstream?.close();
    rmSync(dataDir, { recursive: true, force: true });
  });

  it('a restart chains on from it (the tail read grows until it holds the whole last line)', async () => {
    const auth = { authorization: `Bearer ${agent.token}` };
    const first = await startProxy(config(upstream.url), { dataDir, env: { THINGS_KEY: key } });
    // A target no route matches: refused, and its record carries the whole canonical path.
    const long = await sendRequest(`${first.url}/things/v1/other/${'a'.repeat(300 * 1024)}`, { headers: auth });
    expect(long.status).toBe(403);
    await first.close();
    const file = join(dataDir, 'audit.jsonl');
    // As after a crash: the long record is the last line (the clean stop record is taken off).
    const written = readFileSync(file, 'utf8').split('\n').filter((l) => l !== '');
    expect((JSON.parse(written.pop() as string) as AuditRecord).route).toBe('airlock:stop');
    expect((JSON.parse(written[written.length - 1] as string) as AuditRecord)).toMatchObject({ status: 403, code: 'route_not_allowed' });
    writeFileSync(file, `${written.join('\n')}\n`);
    expect(statSync(file).size).toBeGreaterThan(300 * 1024);

    const second = await startProxy(config(upstream.url), { dataDir, env: { THINGS_KEY: key } });
    try {
      expect((await sendRequest(`${second.url}/things/v1/things/1`, { headers: auth })).status).toBe(200);
      await eventually('the second record', () => readFileSync(file, 'utf8').split('\n').filter((l) => l !== '').length >= 2);
    } finally {
      await second.close();
    }
    const text = readFileSync(file, 'utf8');
    const verdict = verifyChain([{ name: file, text }]);
    expect(verdict).toMatchObject({ ok: true, firstPrev: GENESIS });
    const lines = text.split('\n').filter((l) => l !== '');
    expect((JSON.parse(lines[lines.length - 1] as string) as AuditRecord & { prev: string }).prev).not.toBe(GENESIS);
    assertNoLeak([key], [{ name: 'audit log', text }]);
  });
});

describe('rotation with audit.keep 0', () => {
  const key = canary('audit-keep0');
  const agent = generateAgentToken();
  let upstream: Upstream;
  let proxy: ProxyFixture;

  beforeAll(async () => {
    upstream = await startUpstream();
    proxy = await startProxy(
      {
        audit: { max_bytes: 2000, keep: 0 },
        services: { things: { upstream: upstream.url, credential: { secret: 'env:THINGS_KEY' }, routes: [{ method: 'GET', path: '/v1/things/:id', scope: 'things:read' }] } },
        agents: { bot: { tokens: [agent.hash], credentials: [{ service: 'things', max_scope: ['things:read'] }] } },
      },
      { env: { THINGS_KEY: key } },
    );
    for (let i = 0; i < 8; i++) {
      const response = await sendRequest(`${proxy.url}/things/v1/things/${i}`, { headers: { authorization: `Bearer ${agent.token}` } });
      expect(response.status).toBe(200);
      await eventually(`record ${i}`, () => proxy.logRecords().filter((l) => l['msg'] === 'request').length === i + 1);
    }
  });

  afterAll(async () => {
    await proxy?.close();
    await upstream?.close();
  });

  // keep 0: no rotated copies; the file is truncated instead of growing past max_bytes.
  it('keeps the file within max_bytes and logs no rotation that did not happen', () => {
    const file = proxy.config.audit.file;
    expect(existsSync(`${file}.1`)).toBe(false);
    expect(statSync(file).size).toBeLessThanOrEqual(2000);
  });

  it('still writes one intact chain', () => {
    expect(verifyChain([{ name: proxy.config.audit.file, text: proxy.auditText() }])).toMatchObject({ ok: true });
  });
});

describe('audit.on_failure with a disk that is full', () => {
  const key = canary('audit-onfail');
  const agent = generateAgentToken();
  const adminToken = generateAgentToken();
  let upstream: Upstream;
  let logging: ProxyFixture;
  let refusing: ProxyFixture;

  const config = (onFailure: 'log' | 'refuse' | null): Record<string, unknown> => ({
    // /dev/full: every write fails with ENOSPC. Never read back (see the file comment).
    audit: onFailure === null ? { file: '/dev/full' } : { file: '/dev/full', on_failure: onFailure },
    admin: { listen: '127.0.0.1:0', tokens: [adminToken.hash] },
    services: { things: { upstream: upstream.url, credential: { secret: 'env:THINGS_KEY' }, routes: [{ method: 'GET', path: '/v1/things/:id', scope: 'things:read' }] } },
    agents: { bot: { tokens: [agent.hash], credentials: [{ service: 'things', max_scope: ['things:read'] }] } },
  });

  async function failures(proxy: ProxyFixture): Promise<number> {
    const scrape = await sendRequest(`${proxy.airlock.adminUrl as string}/metrics`);
    const match = /^airlock_audit_write_failures_total (\d+)/m.exec(scrape.text);
    return match === null ? -1 : Number(match[1]);
  }

  beforeAll(async () => {
    upstream = await startUpstream();
    logging = await startProxy(config('log'), { env: { THINGS_KEY: key } });
    refusing = await startProxy(config(null), { env: { THINGS_KEY: key } });
  });

  afterAll(async () => {
    await logging?.close();
    await refusing?.close();
    await upstream?.close();
  });

  it('on_failure: log lets requests through and counts each failed write', async () => {
    expect(logging.config.audit.on_failure).toBe('log');
    // The airlock:start record already failed (that is how the log is known broken at start).
    const initial = await failures(logging);
    expect(initial).toBe(1);
    const initialErrors = logging.logRecords().filter((l) => l['level'] === 'error' && String(l['msg']).includes('audit records could not be written')).length;
    const before = upstream.requests.length;
    for (let i = 0; i < 3; i++) {
      const response = await sendRequest(`${logging.url}/things/v1/things/${i}`, { headers: { authorization: `Bearer ${agent.token}` } });
      expect(response.status, response.text).toBe(200);
      // The answer goes out before its record is written, and records of answered requests share a write
      // for up to 2 ms: wait (bounded) for this one's failed write, so each request is a write of its own.
      const deadline = Date.now() + 5_000;
      let counted = await failures(logging);
      while (counted < initial + i + 1 && Date.now() < deadline) {
        await new Promise((resolve) => setTimeout(resolve, 20));
        counted = await failures(logging);
      }
      expect(counted).toBe(initial + i + 1);
    }
    expect(upstream.requests.length).toBe(before + 3);
    expect(logging.logRecords().filter((l) => l['level'] === 'error' && String(l['msg']).includes('audit records could not be written'))).toHaveLength(initialErrors + 3);
    assertNoLeak([key, agent.token], [{ name: 'log', text: logging.logLines.join('') }]);
  });

  it('on_failure: log keeps a denial what it is (401, not 503) and still counts the failed write', async () => {
    const initial = await failures(logging);
    const response = await sendRequest(`${logging.url}/things/v1/things/1`, { headers: { authorization: 'Bearer alk_not-a-real-token' } });
    expect(response.status, response.text).toBe(401);
    expect(JSON.parse(response.text)).toMatchObject({ code: 'unauthenticated' });
    expect(await failures(logging)).toBe(initial + 1);
  });

  // Airlock's own start record is written before the first request, so a log that cannot be written
  // is known broken before anything is forwarded.
  it('the default (refuse) refuses the very first allowed request whose record cannot be written', async () => {
    expect(refusing.config.audit.on_failure).toBe('refuse');
    const before = upstream.requests.length;
    const response = await sendRequest(`${refusing.url}/things/v1/things/first`, { headers: { authorization: `Bearer ${agent.token}` } });
    expect(upstream.requests.length).toBe(before);
    expect(response.status).toBe(503);
  });

  it('the default (refuse) refuses once a write has failed, and counts the failures', async () => {
    // Make sure one write has failed (a denied request writes its record before answering).
    const denied = await sendRequest(`${refusing.url}/things/v1/other`, { headers: { authorization: `Bearer ${agent.token}` } });
    expect(denied.status).toBe(503);
    const before = upstream.requests.length;
    const response = await sendRequest(`${refusing.url}/things/v1/things/1`, { headers: { authorization: `Bearer ${agent.token}` } });
    expect(response.status).toBe(503);
    expect(response.json<Problem>().code).toBe('audit_unavailable');
    expect(upstream.requests.length).toBe(before);
    expect(await failures(refusing)).toBeGreaterThanOrEqual(2);
  });
});

describe('audit.webhook', () => {
  const key = canary('audit-webhook');
  const queryCanary = canary('audit-webhook-query');
  const agent = generateAgentToken();
  let upstream: Upstream;
  let recorder: Upstream;
  let proxy: ProxyFixture;
  const ids: string[] = [];

  beforeAll(async () => {
    upstream = await startUpstream();
    recorder = await startUpstream();
    proxy = await startProxy(
      {
        audit: { webhook: `${recorder.url}/audit-sink` },
        services: { things: { upstream: upstream.url, credential: { secret: 'env:THINGS_KEY' }, routes: [{ method: 'GET', path: '/v1/things/:id', scope: 'things:read' }] } },
        agents: { bot: { tokens: [agent.hash], credentials: [{ service: 'things', max_scope: ['things:read'] }] } },
      },
      { env: { THINGS_KEY: key } },
    );
    for (const path of [`/things/v1/things/1?q=${queryCanary}`, '/things/v1/things/2', '/things/v1/nope', '/elsewhere/x']) {
      const response = await sendRequest(`${proxy.url}${path}`, { headers: { authorization: `Bearer ${agent.token}` } });
      ids.push(requestIdOf(response));
    }
    const burst = await Promise.all(Array.from({ length: 8 }, (_, i) => sendRequest(`${proxy.url}/things/v1/things/b${i}`, { headers: { authorization: `Bearer ${agent.token}` } })));
    ids.push(...burst.map(requestIdOf));
  });

  afterAll(async () => {
    await proxy?.close();
    await upstream?.close();
    await recorder?.close();
  });

  function delivered(): Chained[] {
    return recorder.requests.flatMap((r) => JSON.parse(r.body.toString('utf8')) as Chained[]);
  }

  it('receives JSON arrays of the chained records shortly after the requests', async () => {
    await eventually('every record at the webhook', () => ids.every((id) => delivered().some((r) => r.request_id === id)), 5_000, 20);
    for (const request of recorder.requests) {
      expect(request.method).toBe('POST');
      expect(request.target).toBe('/audit-sink');
      expect(request.header('content-type')).toEqual(['application/json']);
      expect(Array.isArray(JSON.parse(request.body.toString('utf8')))).toBe(true);
    }
    const records = delivered();
    for (const r of records) {
      expect(r.prev).toMatch(/^[0-9a-f]{64}$/);
      expect(r.hash).toMatch(/^[0-9a-f]{64}$/);
    }
    // The same records as the file, in the same order, so the copy verifies on its own.
    const file = parseLines(proxy.auditText());
    expect(records.map((r) => r.hash)).toEqual(file.map((r) => r.hash));
    // The requests' records plus Airlock's own airlock:start record first.
    expect(records[0]).toMatchObject({ route: 'airlock:start', actor: 'airlock' });
    expect(verifyChain([{ name: 'webhook', text: records.map((r) => JSON.stringify(r)).join('\n') }])).toMatchObject({ ok: true, records: ids.length + 1 });
    expect(records.find((r) => r.request_id === ids[2])).toMatchObject({ decision: 'deny', code: 'route_not_allowed' });
  });

  it('holds no canary', () => {
    assertNoLeak([key, queryCanary, agent.token], [{ name: 'webhook bodies', text: recorder.requests.map((r) => r.body.toString('utf8')).join('\n') }]);
  });
});

interface SseEvent {
  id: string | null;
  event: string | null;
  data: string;
}

/**
 * Reads a server-sent event stream until `wanted(events)` holds, then aborts the request; rejects after
 * timeoutMs. `onOpen` runs once the response headers are in (the subscription exists by then).
 */
function readEvents(
  url: string,
  token: string,
  wanted: (events: readonly SseEvent[]) => boolean,
  options: { timeoutMs?: number; onEvent?: (events: readonly SseEvent[]) => void; raw?: string[] } = {},
): Promise<{ status: number; contentType: string; events: SseEvent[] }> {
  const timeoutMs = options.timeoutMs ?? 5_000;
  return new Promise((resolve, reject) => {
    const controller = new AbortController();
    const events: SseEvent[] = [];
    let buffer = '';
    let settled = false;
    const timer = setTimeout(() => {
      finish(new Error(`timed out after ${timeoutMs} ms with ${events.length} events: ${JSON.stringify(events.map((e) => e.id))}`));
    }, timeoutMs);
    let status = 0;
    let contentType = '';
    function finish(error?: Error): void {
      if (settled) return;
      settled = true;
      clearTimeout(timer);
      controller.abort();
      if (error === undefined) resolve({ status, contentType, events });
      else reject(error);
    }
    const req = httpRequest(url, { headers: { authorization: `Bearer ${token}`, accept: 'text/event-stream' }, agent: false, signal: controller.signal }, (res) => {
      status = res.statusCode ?? 0;
      contentType = String(res.headers['content-type'] ?? '');
      if (status !== 200) return finish();
      res.setEncoding('utf8');
      res.on('data', (chunk: string) => {
        buffer += chunk;
        options.raw?.push(chunk);
        let end: number;
        while ((end = buffer.indexOf('\n\n')) !== -1) {
          const block = buffer.slice(0, end);
          buffer = buffer.slice(end + 2);
          const event: SseEvent = { id: null, event: null, data: '' };
          let fields = 0;
          for (const line of block.split('\n')) {
            if (line.startsWith(':')) continue; // a comment (the greeting, keep-alives)
            const colon = line.indexOf(':');
            const name = colon === -1 ? line : line.slice(0, colon);
            const value = colon === -1 ? '' : line.slice(colon + 1).replace(/^ /, '');
            fields++;
            if (name === 'id') event.id = value;
            else if (name === 'event') event.event = value;
            else if (name === 'data') event.data = event.data === '' ? value : `${event.data}\n${value}`;
          }
          if (fields === 0) continue;
          events.push(event);
          options.onEvent?.(events);
          if (wanted(events)) return finish();
        }
      });
      res.on('error', () => undefined);
      res.on('close', () => finish(new Error(`the stream closed after ${events.length} events`)));
    });
    req.on('error', (error) => finish(error));
    req.end();
  });
}

describe('the admin audit stream (GET /v1/audit/stream?replay=N)', () => {
  const key = canary('audit-stream');
  const queryCanary = canary('audit-stream-query');
  const agent = generateAgentToken();
  const admin = generateAgentToken();
  let upstream: Upstream;
  let proxy: ProxyFixture;
  const raw: string[] = [];
  const REPLAY = 3;

  beforeAll(async () => {
    upstream = await startUpstream();
    proxy = await startProxy(
      {
        admin: { listen: '127.0.0.1:0', tokens: [{ name: 'alice', hash: admin.hash }] },
        services: { things: { upstream: upstream.url, credential: { secret: 'env:THINGS_KEY' }, routes: [{ method: 'GET', path: '/v1/things/:id', scope: 'things:read' }] } },
        agents: { bot: { tokens: [agent.hash], credentials: [{ service: 'things', max_scope: ['things:read'] }] } },
      },
      { env: { THINGS_KEY: key } },
    );
    // The canary-carrying request is among the last REPLAY records, so the replay carries its record.
    for (const path of ['/things/v1/things/2', '/things/v1/nope', `/things/v1/things/1?q=${queryCanary}`, '/things/v1/things/3', '/things/v1/things/4']) {
      await sendRequest(`${proxy.url}${path}`, { headers: { authorization: `Bearer ${agent.token}` } });
    }
    await proxy.waitForAudit(5);
  });

  afterAll(async () => {
    await proxy?.close();
    await upstream?.close();
  });

  it('replays the last N records in order, then delivers a record written after subscribing', async () => {
    const fileLines = linesOf(proxy.auditText());
    expect(fileLines.length).toBeGreaterThan(REPLAY);
    const expected = fileLines.slice(-REPLAY).map((line) => JSON.parse(line) as Chained);
    let liveId = '';
    let liveSent = false;
    const { status, contentType, events } = await readEvents(
      `${proxy.airlock.adminUrl as string}/v1/audit/stream?replay=${REPLAY}`,
      admin.token,
      (seen) => liveId !== '' && seen.some((e) => e.id === liveId),
      {
        raw,
        onEvent: (seen) => {
          // Once the replay is in, make a new request: its record must arrive live.
          if (seen.length === REPLAY && !liveSent) {
            liveSent = true;
            void sendRequest(`${proxy.url}/things/v1/things/live`, { headers: { authorization: `Bearer ${agent.token}` } }).then((response) => {
              liveId = requestIdOf(response);
            });
          }
        },
        timeoutMs: 5_000,
      },
    );
    expect(status).toBe(200);
    expect(contentType).toMatch(/^text\/event-stream/);
    const replayed = events.slice(0, REPLAY);
    for (const event of events) expect(event.event).toBe('audit');
    expect(replayed.map((e) => e.id)).toEqual(expected.map((r) => r.request_id));
    expect(replayed.map((e) => JSON.parse(e.data) as Chained)).toEqual(expected);

    const live = events.slice(REPLAY);
    expect(live.map((e) => e.id)).toEqual([liveId]);
    const liveRecord = JSON.parse((live[0] as SseEvent).data) as Chained;
    expect(liveRecord).toMatchObject({ request_id: liveId, agent: 'bot', service: 'things', status: 200, decision: 'allow' });
    // The live record is the one written to the file, chained to the last replayed one.
    const written = await eventually('the live record in the file', () => parseLines(proxy.auditText()).find((r) => r.request_id === liveId));
    expect(liveRecord).toEqual(written);
    expect(liveRecord.prev).toBe(expected.at(-1)?.hash);
  });

  it('without a token the stream is refused', async () => {
    const { status } = await readEvents(`${proxy.airlock.adminUrl as string}/v1/audit/stream?replay=1`, 'not-a-token', () => true, { timeoutMs: 3_000 });
    expect(status).toBe(401);
  });

  it('holds no canary', () => {
    expect(raw.join('').length).toBeGreaterThan(0);
    assertNoLeak([key, queryCanary, agent.token, admin.token], [{ name: 'audit stream', text: raw.join('') }]);
  });
});
