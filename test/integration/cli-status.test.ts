/**
 * `airlock status` against a real running Airlock through its admin API: the audit log, the lockdown,
 * revocations (an operator's and their reasons), pending approvals, live task sessions (an agent's
 * justification shown on one line, whatever characters it holds) and each credential's state, with
 * exit 0 when all is well and 2 when something needs an operator. Nothing secret reaches its output.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { generateAgentToken } from '../../src/identity/agent-token.js';
import { assertNoLeak } from '../helpers/assert-no-leak.js';
import { canary } from '../helpers/canary.js';
import { freePort, runCliCapture, writeConfigFile, type CliRun } from '../helpers/operator.js';
import { sendRequest } from '../helpers/send-request.js';
import { startProxy, tempDir, type ProxyFixture } from '../helpers/start-proxy.js';
import { startUpstream, type Upstream } from '../helpers/start-upstream.js';

describe('airlock status', () => {
  const llmKey = canary('status-llm');
  const agent = generateAgentToken();
  const alice = generateAgentToken();
  const seen: string[] = [];
  const runs: CliRun[] = [];
  const sessionTokens: string[] = [];
  let upstream: Upstream;
  let proxy: ProxyFixture;
  let cliConfig: string;

  beforeAll(async () => {
    upstream = await startUpstream();
    const port = await freePort();
    proxy = await startProxy(
      {
        admin: { listen: `127.0.0.1:${port}`, tokens: [{ name: 'alice', hash: alice.hash }] },
        services: {
          llm: {
            upstream: upstream.url,
            credential: { secret: 'env:STATUS_LLM_KEY' },
            routes: [
              { method: 'GET', path: '/v1/models', scope: 'models:read' },
              { method: 'POST', path: '/v1/jobs', scope: 'models:read', require_approval: true },
            ],
          },
          crm: { upstream: upstream.url, credential: { secret: 'env:STATUS_CRM_KEY_UNSET' }, routes: [{ method: 'GET', path: '/v1/tickets', scope: 'tickets:read' }] },
        },
        agents: { bot: { tokens: [agent.hash], credentials: [{ service: 'llm', max_scope: ['models:read'], approval_mode: 'async' }] } },
      },
      { env: { STATUS_LLM_KEY: llmKey } },
    );
    cliConfig = writeConfigFile(tempDir('airlock-status-cli-'), { admin: { listen: `127.0.0.1:${port}`, tokens: [alice.hash] } });
  });

  afterAll(async () => {
    await proxy?.close();
    await upstream?.close();
  });

  async function status(...extra: string[]): Promise<CliRun> {
    const run = await runCliCapture(['status', '--config', cliConfig, ...extra], { AIRLOCK_ADMIN_TOKEN: alice.token }, seen);
    runs.push(run);
    return run;
  }

  /** Mints a task session for the agent on llm; returns its id (its token is kept for the leak check). */
  async function mintSession(justification: string): Promise<string> {
    const minted = await sendRequest(`${proxy.url}/_airlock/sessions`, {
      method: 'POST',
      headers: { authorization: `Bearer ${agent.token}`, 'content-type': 'application/json' },
      body: JSON.stringify({ scopes: { llm: ['models:read'] }, justification, ttl_seconds: 600 }),
    });
    expect(minted.status, minted.text).toBe(201);
    const { session_id: sessionId, session_token: sessionToken } = minted.json<{ session_id: string; session_token: string }>();
    sessionTokens.push(sessionToken);
    return sessionId;
  }

  it('lists the credentials, the one whose secret is missing among them, and exits 2 for it', async () => {
    const run = await status();
    expect(run.code, run.stderr).toBe(2);
    expect(run.stdout).toMatch(/^Airlock at admin 127\.0\.0\.1:\d+: NEEDS ATTENTION\n/);
    expect(run.stdout).toMatch(/ {2}audit {8}writable \(head [0-9a-f]{12}…\)\n/);
    expect(run.stdout).toContain('  lockdown     none\n');
    expect(run.stdout).toContain('  revocations  none\n');
    expect(run.stdout).toContain('  approvals    none pending\n');
    expect(run.stdout).toContain('  sessions     none live\n');
    expect(run.stdout).toContain('  credentials  2, 1 failing or missing\n');
    expect(run.stdout).toMatch(/\n {4}env:STATUS_LLM_KEY {2}fresh, fetched \d+ s ago\n/);
    expect(run.stdout).toMatch(/\n {4}env:STATUS_CRM_KEY_UNSET {2}missing/);
  });

  // Found by review: only a count of pending approvals was shown, and none in --json.
  it('lists the pending approvals, with what to run to decide them', async () => {
    const asked = await sendRequest(`${proxy.url}/llm/v1/jobs`, { method: 'POST', headers: { authorization: `Bearer ${agent.token}`, 'content-type': 'application/json' }, body: '{"job":1}' });
    expect(asked.status, asked.text).toBe(202);
    const id = asked.json<{ approval_id: string }>().approval_id;
    const run = await status();
    expect(run.stdout).toContain('  approvals    1 pending: decide with  npx airlock approvals approve|deny ID --reason TEXT\n');
    expect(run.stdout).toMatch(new RegExp(`\\n {4}${id} {2}bot {2}POST /llm/v1/jobs {2}until \\d{4}-`));
    const json = JSON.parse((await status('--json')).stdout) as { approvals: Array<{ id: string }> };
    expect(json.approvals.map((a) => a.id)).toEqual([id]);
    const denied = await runCliCapture(['approvals', 'deny', id, '--reason', 'not now', '--config', cliConfig], { AIRLOCK_ADMIN_TOKEN: alice.token }, seen);
    expect(denied.code, denied.stderr).toBe(0);
    expect((await status()).stdout).toContain('  approvals    none pending\n');
  });

  it('shows a live session on one line, its justification\'s line break as a space', async () => {
    const sessionId = await mintSession('triage ticket 42\nalice approved everything');
    const run = await status();
    expect(run.stdout).toContain('  sessions     1 live\n');
    const line = run.stdout.split('\n').find((l) => l.startsWith(`    ${sessionId}  bot  until `));
    expect(line, run.stdout).toBeDefined();
    expect(line).toContain('llm: models:read  "triage ticket 42 alice approved everything"');
    expect(run.stdout).not.toContain('\nalice approved everything');
  });

  it('shows a revocation with who made it and why, and a lockdown, until each is lifted', async () => {
    const env = { AIRLOCK_ADMIN_TOKEN: alice.token };
    expect((await runCliCapture(['revoke', 'agent', 'bot', '--reason', 'leaked laptop\nreboot', '--config', cliConfig], env, seen)).code).toBe(0);
    const revoked = await status();
    expect(revoked.code).toBe(2);
    expect(revoked.stdout).toContain('  revocations  1; lift one with  npx airlock restore KIND TARGET\n');
    expect(revoked.stdout).toContain('  sessions     none live\n');
    expect(revoked.stdout).toMatch(/\n {4}agent bot {2}by alice at \d{4}-\d\d-\d\dT[\d:.]+Z: "leaked laptop reboot"\n/);

    expect((await runCliCapture(['revoke', 'all', '--reason', 'incident 7', '--config', cliConfig], env, seen)).code).toBe(0);
    const locked = await status();
    expect(locked.stdout).toMatch(/ {2}lockdown {5}IN FORCE: every request refused \(503 locked_down\); by alice at [^:]+:[^:]+:[^ ]+: "incident 7"; lift: npx airlock restore all\n/);
    expect(locked.stdout).toContain('  revocations  1;');

    expect((await runCliCapture(['restore', 'all', '--config', cliConfig], env, seen)).code).toBe(0);
    expect((await runCliCapture(['restore', 'agent', 'bot', '--config', cliConfig], env, seen)).code).toBe(0);
    const lifted = await status();
    expect(lifted.stdout).toContain('  lockdown     none\n');
    expect(lifted.stdout).toContain('  revocations  none\n');
  });

  it('--json gives every part as the admin API does', async () => {
    const run = await status('--json');
    const parsed = JSON.parse(run.stdout) as { health: { audit: string }; revocations: unknown[]; sessions: unknown[]; credentials: Array<{ ref: string; state: string }> };
    expect(parsed.health.audit).toBe('writable');
    expect(parsed.revocations).toEqual([]);
    // Revoking bot above ended its session for good; restoring the agent does not bring it back.
    expect(parsed.sessions).toEqual([]);
    expect(parsed.credentials.map((c) => [c.ref, c.state]).sort()).toEqual([
      ['env:STATUS_CRM_KEY_UNSET', 'missing'],
      ['env:STATUS_LLM_KEY', 'fresh'],
    ]);
    expect(run.code).toBe(2);
  });

  // Found by review: a session revocation (final) left status at "needs attention" for good with a hint
  // to restore it, which is refused; a mistyped session id read as revoked; a revoked credential read as
  // servable; a restore's reason was dropped from the audit record.
  it('lists revoked sessions as ended for good, notes an unknown session id, marks a revoked credential, keeps a restore reason', async () => {
    const env = { AIRLOCK_ADMIN_TOKEN: alice.token };
    const sessionId = await mintSession('short task');
    const known = await runCliCapture(['revoke', 'session', sessionId, '--reason', 'task done', '--config', cliConfig], env, seen);
    expect(known.code, known.stderr).toBe(0);
    expect(known.stderr).toBe('');
    const typo = await runCliCapture(['revoke', 'session', 'ses_AAAAAAAAAAAAAAAA', '--reason', 'typo', '--config', cliConfig], env, seen);
    expect(typo.code).toBe(0);
    expect(typo.stderr).toContain('Note: No live session ses_AAAAAAAAAAAAAAAA is known to this replica.');
    expect((await runCliCapture(['revoke', 'credential', 'env:STATUS_LLM_KEY', '--reason', 'key in a paste', '--config', cliConfig], env, seen)).code).toBe(0);

    const run = await status();
    expect(run.stdout).toContain('  revocations  1; lift one with  npx airlock restore KIND TARGET\n');
    expect(run.stdout).toContain('  ended        2 sessions revoked (for good: a session is not restored; the agent mints a new one)\n');
    expect(run.stdout).toContain(`\n    session ${sessionId}  by alice at `);
    expect(run.stdout).toMatch(/\n {4}env:STATUS_LLM_KEY {2}fresh, fetched \d+ s ago, REVOKED: refused \(503 credential_revoked\) until restored\n/);

    expect((await runCliCapture(['restore', 'credential', 'env:STATUS_LLM_KEY', '--reason', 'rotated upstream', '--config', cliConfig], env, seen)).code).toBe(0);
    const lift = proxy.auditRecords().find((r) => r.route === '/v1/revocations/lift' && r.credential === 'env:STATUS_LLM_KEY');
    expect(lift).toMatchObject({ actor: 'alice', reason: 'rotated upstream' });
    // Only the ended sessions are left: listed, nothing to lift.
    const after = await status();
    expect(after.stdout).toContain('  revocations  none\n');
    expect(after.stdout).toContain('  ended        2 sessions revoked');
  });

  it('without an admin token or an admin API, says what to do, exit 1', async () => {
    const noToken = await runCliCapture(['status', '--config', cliConfig], {}, seen);
    expect(noToken.code).toBe(1);
    expect(noToken.stderr).toContain('Set AIRLOCK_ADMIN_TOKEN to an admin token');
    const noAdmin = await runCliCapture(['status', '--config', writeConfigFile(tempDir('airlock-status-noadmin-'), {})], { AIRLOCK_ADMIN_TOKEN: alice.token }, seen);
    expect(noAdmin.code).toBe(1);
    expect(noAdmin.stderr).toContain('No admin API is configured in');
  });

  // Found by review: with audit.on_failure: log, status said requests were refused while they were
  // forwarded unaudited.
  it('a failing audit log under on_failure: log says requests go on unaudited; under refuse, that they are refused', async () => {
    for (const onFailure of ['log', 'refuse'] as const) {
      const port = await freePort();
      const failing = await startProxy(
        {
          audit: { file: '/dev/full', on_failure: onFailure },
          admin: { listen: `127.0.0.1:${port}`, tokens: [{ name: 'alice', hash: alice.hash }] },
          services: { llm: { upstream: upstream.url, credential: { secret: 'env:STATUS_LLM_KEY' }, routes: [{ method: 'GET', path: '/v1/models', scope: 'models:read' }] } },
          agents: { bot: { tokens: [agent.hash], credentials: [{ service: 'llm', max_scope: ['models:read'] }] } },
        },
        { env: { STATUS_LLM_KEY: llmKey } },
      );
      try {
        const sent = await sendRequest(`${failing.url}/llm/v1/models`, { headers: { authorization: `Bearer ${agent.token}` } });
        seen.push(sent.text);
        expect(sent.status).toBe(onFailure === 'log' ? 200 : 503);
        const config = writeConfigFile(tempDir('airlock-status-audit-'), { admin: { listen: `127.0.0.1:${port}`, tokens: [alice.hash] } });
        const run = await runCliCapture(['status', '--config', config], { AIRLOCK_ADMIN_TOKEN: alice.token }, seen);
        runs.push(run);
        expect(run.code).toBe(2);
        const line = run.stdout.split('\n').find((l) => l.startsWith('  audit '));
        expect(line).toBe(
          onFailure === 'log'
            ? '  audit        FAILING: requests are forwarded UNAUDITED (audit.on_failure: log) until it is writable again'
            : '  audit        FAILING: requests are refused (503 audit_unavailable) until it is writable again',
        );
      } finally {
        await failing.close();
      }
    }
  });

  // Found by the ops walkthrough: a healthy file: secret (cached 1 s) read "stale", and an idle value past
  // its max_staleness made status exit 2, though nothing was wrong.
  it('a value past its ttl or max_staleness with a healthy store is idle, not trouble: exit 0, said so', async () => {
    let offsetMs = 0;
    const idleKey = canary('status-idle');
    const port = await freePort();
    const idle = await startProxy(
      {
        admin: { listen: `127.0.0.1:${port}`, tokens: [{ name: 'alice', hash: alice.hash }] },
        services: { llm: { upstream: upstream.url, credential: { secret: 'env:STATUS_IDLE_KEY', ttl: 5, max_staleness: 10 }, routes: [{ method: 'GET', path: '/v1/models', scope: 'models:read' }] } },
        agents: { bot: { tokens: [agent.hash], credentials: [{ service: 'llm', max_scope: ['models:read'] }] } },
      },
      { env: { STATUS_IDLE_KEY: idleKey }, now: () => new Date(Date.now() + offsetMs) },
    );
    try {
      const config = writeConfigFile(tempDir('airlock-status-idle-'), { admin: { listen: `127.0.0.1:${port}`, tokens: [alice.hash] } });
      const idleStatus = async (): Promise<CliRun> => {
        const run = await runCliCapture(['status', '--config', config], { AIRLOCK_ADMIN_TOKEN: alice.token }, seen);
        runs.push(run);
        return run;
      };
      offsetMs = 7_000;
      const stale = await idleStatus();
      expect(stale.code, stale.stdout).toBe(0);
      expect(stale.stdout).toContain('  credentials  1, all servable\n');
      expect(stale.stdout).toContain('env:STATUS_IDLE_KEY  stale (idle: past its cache ttl and not needed since, its last fetch succeeded; the next request is served it while it is fetched again), fetched 7 s ago');
      offsetMs = 20_000;
      const expired = await idleStatus();
      expect(expired.code, expired.stdout).toBe(0);
      expect(expired.stdout).toContain('  credentials  1, 1 to be fetched again by the next request\n');
      expect(expired.stdout).toContain('env:STATUS_IDLE_KEY  expired (idle: no longer servable and not needed since, its last fetch succeeded; the next request waits for a fetch), fetched 20 s ago');
      const answer = await sendRequest(`${idle.url}/llm/v1/models`, { headers: { authorization: `Bearer ${agent.token}` } });
      expect(answer.status).toBe(200);
      expect((await idleStatus()).stdout).toMatch(/env:STATUS_IDLE_KEY {2}fresh, fetched 0 s ago/);
      assertNoLeak([idleKey], [{ name: 'status output', text: seen.join('\n') }]);
    } finally {
      await idle.close();
    }
  });

  it('prints no secret and no token', () => {
    expect(runs.length).toBeGreaterThanOrEqual(6);
    assertNoLeak([llmKey, agent.token, alice.token, ...sessionTokens], [{ name: 'status output', text: runs.map((r) => `${r.stdout}\n${r.stderr}`).join('\n') }, { name: 'all CLI output', text: seen.join('\n') }]);
  });
});
