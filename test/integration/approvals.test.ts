/**
 * Human approval over real sockets. hold mode: the request waits while an approver decides through the
 * admin API or the CLI; approved, it goes upstream with the exact body; denied, 403 approval_denied with
 * the reason; no decision in time, 403 approval_timeout and nothing forwarded. async mode: 202
 * problem+json with the approval id and console link; the retry carrying `x-airlock-approval` goes
 * through once approved, once only, and only for the very request that was approved (body, path and
 * query). Route-level require_approval; 50 held requests decided one by one; the webhook announcement;
 * approver and reason in the audit record; the CLI lists, approves and denies.
 */
import { rmSync } from 'node:fs';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { generateAgentToken } from '../../src/identity/agent-token.js';
import type { AuditRecord } from '../../src/observability/audit-record.js';
import { assertNoLeak } from '../helpers/assert-no-leak.js';
import { canary } from '../helpers/canary.js';
import { adminClient, eventually, freePort, runCliCapture, sleep, writeConfigFile, type AdminClient, type CliRun } from '../helpers/operator.js';
import { sendRequest, type Problem, type SentResponse } from '../helpers/send-request.js';
import { startProxy, tempDir, type ProxyFixture } from '../helpers/start-proxy.js';
import { echoHandler, startUpstream, type RecordedRequest, type Upstream } from '../helpers/start-upstream.js';

interface ApprovalView {
  id: string;
  status: string;
  agent: string;
  service: string;
  method: string;
  path: string;
  route: string;
  scope: string;
  mode: string;
  decided_by: string | null;
  reason: string | null;
  expires_at: string;
}

interface PendingProblem extends Problem {
  approval_id: string;
  console_url?: string;
}

const PUBLIC_URL = 'https://airlock-admin.example.test/console';
const MAX_APPROVAL_BODY = 4096;

describe('human approval', () => {
  const payKey = canary('pay');
  const holder = generateAgentToken();
  /** holder's second token: another caller of the same agent. */
  const holderTwo = generateAgentToken();
  const quick = generateAgentToken();
  const asyncer = generateAgentToken();
  const asyncQuick = generateAgentToken();
  const plain = generateAgentToken();
  const switcher = generateAgentToken();
  const alice = generateAgentToken();
  const bob = generateAgentToken();
  const agentSeen: string[] = [];
  const cliSeen: string[] = [];
  const sessionTokens: string[] = [];
  let upstream: Upstream;
  let webhook: Upstream;
  let proxy: ProxyFixture;
  let admin: AdminClient;
  let bobAdmin: AdminClient;
  let cliConfig: string;
  let configDir: string;

  beforeAll(async () => {
    upstream = await startUpstream(echoHandler);
    webhook = await startUpstream();
    const port = await freePort();
    const grant = (extra: Record<string, unknown>): Record<string, unknown> => ({ service: 'pay', max_scope: ['refunds:write', 'balance:read'], ...extra });
    const adminSpec = {
      listen: `127.0.0.1:${port}`,
      tokens: [
        { name: 'alice', hash: alice.hash },
        { name: 'bob', hash: bob.hash },
      ],
      public_url: PUBLIC_URL,
    };
    proxy = await startProxy(
      {
        admin: adminSpec,
        // The defaults, and a name written with an underscore and capitals, as an operator may.
        approvals: { webhook: `${webhook.url}/hook`, max_body_bytes: MAX_APPROVAL_BODY, bind_headers: ['stripe-account', 'stripe-context', 'openai-organization', 'openai-project', 'X_Tenant'] },
        services: {
          pay: {
            upstream: upstream.url,
            credential: { secret: 'env:PAY_KEY', inject: 'bearer' },
            routes: [
              { method: 'POST', path: '/v1/refunds', scope: 'refunds:write' },
              { method: 'POST', path: '/v1/refunds/:id', scope: 'refunds:write' },
              { method: 'POST', path: '/v1/charges', scope: 'charges:write', require_approval: true },
              { method: 'GET', path: '/v1/balance', scope: 'balance:read' },
            ],
          },
          ...Object.fromEntries(
            ['pay-test', 'pay-live'].map((name) => [
              name,
              { upstream: upstream.url, hosts: [`${name}.internal`], credential: { secret: 'env:PAY_KEY', inject: 'bearer' }, routes: [{ method: 'POST', path: '/v1/refunds', scope: 'refunds:write' }] },
            ]),
          ),
        },
        agents: {
          holder: { tokens: [holder.hash, holderTwo.hash], credentials: [grant({ require_approval: true, approval_mode: 'hold', approval_timeout: 20 })] },
          quick: { tokens: [quick.hash], credentials: [grant({ require_approval: true, approval_timeout: 1 })] },
          asyncer: { tokens: [asyncer.hash], credentials: [grant({ require_approval: true, approval_mode: 'async', approval_timeout: 60 })] },
          'async-quick': { tokens: [asyncQuick.hash], credentials: [grant({ require_approval: true, approval_mode: 'async', approval_timeout: 1 })] },
          plain: { tokens: [plain.hash], credentials: [{ service: 'pay', max_scope: ['charges:write', 'balance:read'] }] },
          // Two accounts of one API, selected by Host (no prefix in the path), for the approval-binding test.
          switcher: {
            tokens: [switcher.hash],
            credentials: ['pay-test', 'pay-live'].map((service) => ({ service, max_scope: ['refunds:write'], require_approval: true, approval_mode: 'async', approval_timeout: 60 })),
          },
        },
      },
      { env: { PAY_KEY: payKey } },
    );
    expect(proxy.airlock.adminUrl).toBe(`http://127.0.0.1:${port}`);
    admin = adminClient(() => proxy.airlock.adminUrl as string, alice.token);
    bobAdmin = adminClient(() => proxy.airlock.adminUrl as string, bob.token);
    // The CLI reads its own copy of the config: only where the admin API listens matters to it.
    configDir = tempDir('airlock-approvals-cli-');
    cliConfig = writeConfigFile(configDir, { admin: adminSpec });
  });

  afterAll(async () => {
    await proxy?.close();
    await upstream?.close();
    await webhook?.close();
    if (configDir !== undefined) rmSync(configDir, { recursive: true, force: true });
  });

  function call(token: string, path: string, options: { body?: string; method?: string; approval?: string; timeoutMs?: number; host?: string } = {}): Promise<SentResponse> {
    return sendRequest(`${proxy.url}${path}`, {
      method: options.method ?? 'POST',
      headers: {
        authorization: `Bearer ${token}`,
        ...(options.host === undefined ? {} : { host: options.host }),
        ...(options.body === undefined ? {} : { 'content-type': 'application/json' }),
        ...(options.approval === undefined ? {} : { 'x-airlock-approval': options.approval }),
      },
      ...(options.body === undefined ? {} : { body: options.body }),
      timeoutMs: options.timeoutMs ?? 15_000,
    }).then((response) => {
      agentSeen.push(`${response.status}\n${JSON.stringify(response.headers)}\n${response.text}`);
      return response;
    });
  }

  function cli(args: string[], token = bob.token): Promise<CliRun> {
    return runCliCapture([...args, '--config', cliConfig], { AIRLOCK_ADMIN_TOKEN: token }, cliSeen);
  }

  function expectProblem<T extends Problem = Problem>(response: SentResponse, status: number, code: string): T {
    expect(response.status, response.text).toBe(status);
    expect(response.headers['content-type']).toContain('application/problem+json');
    const problem = response.json<T>();
    expect(problem.code).toBe(code);
    return problem;
  }

  async function approvals(status: string | null = 'pending'): Promise<ApprovalView[]> {
    const response = await admin.call('GET', status === null ? '/v1/approvals' : `/v1/approvals?status=${status}`);
    expect(response.status, response.text).toBe(200);
    return response.json<{ approvals: ApprovalView[] }>().approvals;
  }

  /** The pending approval of `agent` for `path`, once the held request has created it. */
  function pendingApproval(agent: string, path: string): Promise<ApprovalView> {
    return eventually(`a pending approval for ${agent} ${path}`, async () => (await approvals()).find((a) => a.agent === agent && a.path === path));
  }

  function decide(id: string, decision: 'approve' | 'deny', reason: string, as: AdminClient = admin): Promise<SentResponse> {
    return as.call('POST', `/v1/approvals/${id}/${decision}`, { reason });
  }

  function auditOf(response: SentResponse): Promise<AuditRecord> {
    const id = response.headers['x-airlock-request-id'];
    return eventually(`the audit record of ${String(id)}`, () => proxy.auditRecords().find((r) => r.request_id === id));
  }

  function forwardedBodies(): string[] {
    return upstream.requests.map((r: RecordedRequest) => r.body.toString('utf8'));
  }

  it('hold: the request waits; approved through the admin API, it completes with the exact body', async () => {
    const body = '{"charge":"ch_1","amount":1250,"reason":"duplicate"}';
    const before = upstream.requests.length;
    const held = call(holder.token, '/pay/v1/refunds', { body });
    const approval = await pendingApproval('holder', '/pay/v1/refunds');
    expect(approval).toMatchObject({ status: 'pending', service: 'pay', method: 'POST', route: '/v1/refunds', scope: 'refunds:write', mode: 'hold', decided_by: null });
    // Still waiting: nothing went upstream while no one decided.
    await sleep(100);
    expect(upstream.requests.length).toBe(before);

    const decided = await decide(approval.id, 'approve', 'customer confirmed on the phone');
    expect(decided.status, decided.text).toBe(200);
    expect(decided.json<{ approval: ApprovalView }>().approval).toMatchObject({ id: approval.id, status: 'approved', decided_by: 'alice', reason: 'customer confirmed on the phone' });

    const response = await held;
    expect(response.status, response.text).toBe(200);
    expect(upstream.requests.length).toBe(before + 1);
    const seen = upstream.requests.at(-1);
    expect(seen?.body.toString('utf8')).toBe(body);
    expect(seen?.target).toBe('/v1/refunds');
    expect(seen?.header('authorization')).toEqual([`Bearer ${payKey}`]);
    expect(JSON.parse(response.text)).toMatchObject({ body });

    // Approver identity and reason are in the request's audit record, and the decision has its own.
    expect(await auditOf(response)).toMatchObject({
      agent: 'holder',
      decision: 'allow',
      status: 200,
      approval: approval.id,
      approver: 'alice',
      approval_reason: 'customer confirmed on the phone',
    });
    const change = proxy.auditRecords().find((r) => r.approval === approval.id && r.actor !== null);
    expect(change).toMatchObject({ actor: 'alice', reason: 'customer confirmed on the phone', route: '/v1/approvals/:id/approve', agent: 'holder', service: 'pay' });
    // A decided approval cannot be decided again.
    const again = await decide(approval.id, 'deny', 'too late');
    expect(again.status).toBe(400);
    expect(again.json<Problem>().detail).toMatch(new RegExp(`^Approval ${approval.id} was already decided by alice at \\d{4}-[^:]+:[^:]+:[^ ]+: it is consumed\\.$`));
    expect((await approvals(null)).find((a) => a.id === approval.id)?.status).toBe('consumed');
  });

  it('hold: denied → 403 approval_denied with the approver and the reason; nothing forwarded', async () => {
    const before = upstream.requests.length;
    const held = call(holder.token, '/pay/v1/refunds/re_deny', { body: '{"amount":99999}' });
    const approval = await pendingApproval('holder', '/pay/v1/refunds/re_deny');
    expect((await decide(approval.id, 'deny', 'amount looks wrong')).status).toBe(200);
    const response = await held;
    const problem = expectProblem<PendingProblem>(response, 403, 'approval_denied');
    expect(problem.detail).toBe('alice denied the request: amount looks wrong.');
    expect(problem.error.message).toBe(problem.detail);
    expect(problem.approval_id).toBe(approval.id);
    expect(upstream.requests.length).toBe(before);
    // Tied to its approval, its approver and the reason (found by review: all three were null).
    expect(await auditOf(response)).toMatchObject({ agent: 'holder', decision: 'deny', code: 'approval_denied', status: 403, upstream_status: null, approval: approval.id, approver: 'alice', approval_reason: 'amount looks wrong' });
    const change = proxy.auditRecords().find((r) => r.approval === approval.id && r.actor !== null);
    expect(change).toMatchObject({ actor: 'alice', reason: 'amount looks wrong', route: '/v1/approvals/:id/deny' });
  });

  it('hold: no decision within approval_timeout → 403 approval_timeout and nothing forwarded', async () => {
    const before = upstream.requests.length;
    const started = Date.now();
    const response = await call(quick.token, '/pay/v1/refunds', { body: '{"amount":1}' });
    const problem = expectProblem<PendingProblem>(response, 403, 'approval_timeout');
    expect(Date.now() - started).toBeGreaterThanOrEqual(900);
    expect(problem.detail).toContain('within 1 seconds');
    expect(problem.approval_id).toMatch(/^apr_/);
    expect(upstream.requests.length).toBe(before);
    // Too late to approve now.
    const late = await decide(problem.approval_id, 'approve', 'sorry, was at lunch');
    expect(late.status).toBeGreaterThanOrEqual(400);
    expect((await approvals(null)).find((a) => a.id === problem.approval_id)?.status).toBe('expired');
    await sleep(100);
    expect(upstream.requests.length).toBe(before);
  });

  // Found by an SDK walkthrough: stripe-node gives up after 80 s and retries the same request; each retry
  // asked anew, and the approver who approved the first was told it could no longer be decided.
  it('hold: an agent that hangs up leaves its approval open; the same request sent again waits for it and goes once', async () => {
    const before = upstream.requests.length;
    const pendingBefore = (await approvals()).length;
    const body = '{"gone":true}';
    const controller = new AbortController();
    const held = fetch(`${proxy.url}/pay/v1/refunds/re_gone`, {
      method: 'POST',
      headers: { authorization: `Bearer ${holder.token}`, 'content-type': 'application/json' },
      body,
      signal: controller.signal,
    }).catch((error: unknown) => error);
    const approval = await pendingApproval('holder', '/pay/v1/refunds/re_gone');
    controller.abort();
    await held;
    // Audited as refused with no answer sent (status null), apart from an approver's silence (403).
    const abandoned = await eventually('the abandoned request audited', () => proxy.auditRecords().find((r) => r.approval === approval.id && r.code === 'approval_timeout'));
    expect(abandoned).toMatchObject({ agent: 'holder', decision: 'deny', status: null, upstream_status: null });
    expect((await approvals()).find((a) => a.id === approval.id)?.status).toBe('pending');

    // The retry joins it: no second approval for the approver to find.
    const retry = call(holder.token, '/pay/v1/refunds/re_gone', { body });
    await sleep(200);
    expect((await approvals()).filter((a) => a.path === '/pay/v1/refunds/re_gone')).toHaveLength(1);
    expect((await approvals()).length).toBe(pendingBefore + 1);
    // The same request from another token of the agent (another caller) asks for its own (found by
    // review: it rode the first caller's approval).
    const otherCaller = call(holderTwo.token, '/pay/v1/refunds/re_gone', { body });
    const theirs = await eventually('the other caller\'s own approval', async () => (await approvals()).find((a) => a.path === '/pay/v1/refunds/re_gone' && a.id !== approval.id));
    expect((await decide(theirs.id, 'deny', 'not this one')).status).toBe(200);
    expect((await otherCaller).status).toBe(403);
    // A different body is a different request: it asks for its own approval.
    const other = call(holder.token, '/pay/v1/refunds/re_gone', { body: '{"gone":false}' });
    await eventually('a second approval for the other body', async () => (await approvals()).filter((a) => a.path === '/pay/v1/refunds/re_gone').length === 2);
    expect(upstream.requests.length).toBe(before);

    expect((await decide(approval.id, 'approve', 'retry is fine')).status).toBe(200);
    const response = await retry;
    expect(response.status, response.text).toBe(200);
    expect(upstream.requests.length).toBe(before + 1);
    expect(upstream.requests.at(-1)?.body.toString('utf8')).toBe(body);
    expect(await auditOf(response)).toMatchObject({ agent: 'holder', status: 200, approval: approval.id, approver: 'alice' });
    // Used once: the same request again asks anew.
    const third = call(holder.token, '/pay/v1/refunds/re_gone', { body });
    const open = await eventually('a new approval for the third send, beside the other body\'s', async () => {
      const found = (await approvals()).filter((a) => a.path === '/pay/v1/refunds/re_gone');
      return found.length === 2 ? found : undefined;
    });
    expect(open.map((a) => a.id)).not.toContain(approval.id);
    for (const pending of open) expect((await decide(pending.id, 'deny', 'cleaning up')).status).toBe(200);
    expect((await third).status).toBe(403);
    expect((await other).status).toBe(403);
    expect(upstream.requests.length).toBe(before + 1);
  });

  it('hold: a body larger than approvals.max_body_bytes is refused (413) before anyone is asked', async () => {
    const pendingBefore = (await approvals()).length;
    const before = upstream.requests.length;
    const response = await call(holder.token, '/pay/v1/refunds', { body: JSON.stringify({ pad: 'x'.repeat(MAX_APPROVAL_BODY) }) });
    expectProblem(response, 413, 'payload_too_large');
    expect((await approvals()).length).toBe(pendingBefore);
    expect(upstream.requests.length).toBe(before);
  });

  it('async: 202 problem+json with approval_id and console_url; retry before the decision is 202 again; approved → 200 once', async () => {
    const body = '{"charge":"ch_async","amount":500}';
    const before = upstream.requests.length;
    const first = await call(asyncer.token, '/pay/v1/refunds', { body });
    const pending = expectProblem<PendingProblem>(first, 202, 'approval_pending');
    expect(pending.approval_id).toMatch(/^apr_[A-Za-z0-9_-]+$/);
    expect(pending.console_url).toBe(`${PUBLIC_URL}/#approval-${pending.approval_id}`);
    expect(pending.detail).toContain(`x-airlock-approval: ${pending.approval_id}`);
    expect(first.headers['retry-after']).toBe('10');
    expect(upstream.requests.length).toBe(before);
    expect(await auditOf(first)).toMatchObject({ code: 'approval_pending', approval: pending.approval_id, approver: null });
    const listed = (await approvals()).find((a) => a.id === pending.approval_id);
    expect(listed).toMatchObject({ agent: 'asyncer', mode: 'async', path: '/pay/v1/refunds', status: 'pending' });

    const early = await call(asyncer.token, '/pay/v1/refunds', { body, approval: pending.approval_id });
    expect(expectProblem<PendingProblem>(early, 202, 'approval_pending').approval_id).toBe(pending.approval_id);
    expect(upstream.requests.length).toBe(before);

    expect((await decide(pending.approval_id, 'approve', 'ok for async', bobAdmin)).status).toBe(200);
    const approved = await call(asyncer.token, '/pay/v1/refunds', { body, approval: pending.approval_id });
    expect(approved.status, approved.text).toBe(200);
    expect(upstream.requests.length).toBe(before + 1);
    expect(upstream.requests.at(-1)?.body.toString('utf8')).toBe(body);
    expect(upstream.requests.at(-1)?.rawHeaders.map((h) => h.toLowerCase())).not.toContain('x-airlock-approval');
    expect(await auditOf(approved)).toMatchObject({ agent: 'asyncer', status: 200, approval: pending.approval_id, approver: 'bob', approval_reason: 'ok for async' });

    const reused = await call(asyncer.token, '/pay/v1/refunds', { body, approval: pending.approval_id });
    expect(expectProblem(reused, 403, 'approval_denied').detail).toContain('already used');
    expect(upstream.requests.length).toBe(before + 1);
  });

  // Found by review: the binding left out the session, so an approval asked (and shown to the approver)
  // under a task session could be used with the agent's own token or another session.
  it('async: an approval asked under a task session is good under that session only', async () => {
    const minted = await sendRequest(`${proxy.url}/_airlock/sessions`, {
      method: 'POST',
      headers: { authorization: `Bearer ${asyncer.token}`, 'content-type': 'application/json' },
      body: JSON.stringify({ scopes: { pay: ['refunds:write'] }, ttl_seconds: 300, justification: 'refund under a session' }),
    });
    expect(minted.status, minted.text).toBe(201);
    const session = minted.json<{ session_token: string }>().session_token;
    sessionTokens.push(session);
    const body = '{"charge":"ch_session","amount":5}';
    const first = await call(session, '/pay/v1/refunds/re_session_bound', { body });
    const { approval_id: id } = expectProblem<PendingProblem>(first, 202, 'approval_pending');
    expect((await decide(id, 'approve', 'five under the session')).status).toBe(200);
    const before = upstream.requests.length;
    const ownToken = await call(asyncer.token, '/pay/v1/refunds/re_session_bound', { body, approval: id });
    expect(expectProblem(ownToken, 403, 'approval_denied').detail).toContain('different request');
    expect(upstream.requests.length).toBe(before);
    const underSession = await call(session, '/pay/v1/refunds/re_session_bound', { body, approval: id });
    expect(underSession.status, underSession.text).toBe(200);
    expect(upstream.requests.length).toBe(before + 1);
  });

  it('async: an approval replayed on a different body, path or query is refused (403) and nothing is forwarded', async () => {
    const body = '{"charge":"ch_bound","amount":10}';
    const first = await call(asyncer.token, '/pay/v1/refunds/re_bound', { body });
    const { approval_id: id } = expectProblem<PendingProblem>(first, 202, 'approval_pending');
    expect((await decide(id, 'approve', 'ten is fine')).status).toBe(200);
    const before = upstream.requests.length;

    const replays: Array<[string, string]> = [
      ['/pay/v1/refunds/re_bound', '{"charge":"ch_bound","amount":10000}'], // body
      ['/pay/v1/refunds/re_bound', `${body} `], // one byte more
      ['/pay/v1/refunds/re_other', body], // path
      ['/pay/v1/refunds', body], // another route
      ['/pay/v1/refunds/re_bound?amount=10000', body], // query added
    ];
    for (const [path, replayBody] of replays) {
      const response = await call(asyncer.token, path, { body: replayBody, approval: id });
      const problem = expectProblem(response, 403, 'approval_denied');
      expect(problem.detail, path).toContain('different request');
    }
    // Another agent cannot use it either, even for the identical request.
    const stolen = await call(holder.token, '/pay/v1/refunds/re_bound', { body, approval: id });
    expect(expectProblem(stolen, 403, 'approval_denied').detail).toContain(`no approval ${id} for this agent`);
    // An id that was never issued.
    expectProblem(await call(asyncer.token, '/pay/v1/refunds/re_bound', { body, approval: 'apr_forged000000000000000' }), 403, 'approval_denied');
    expect(upstream.requests.length).toBe(before);

    // The misuse did not spend it: the exact request still goes through, once.
    const exact = await call(asyncer.token, '/pay/v1/refunds/re_bound', { body, approval: id });
    expect(exact.status, exact.text).toBe(200);
    expect(upstream.requests.length).toBe(before + 1);
    expect(upstream.requests.at(-1)?.target).toBe('/v1/refunds/re_bound');
    expect(upstream.requests.at(-1)?.body.toString('utf8')).toBe(body);

    // The query is part of the binding in the other direction too.
    const withQuery = await call(asyncer.token, '/pay/v1/refunds/re_q?dry_run=1', { body });
    const queried = expectProblem<PendingProblem>(withQuery, 202, 'approval_pending');
    expect((await decide(queried.approval_id, 'approve', 'dry run only')).status).toBe(200);
    expectProblem(await call(asyncer.token, '/pay/v1/refunds/re_q', { body, approval: queried.approval_id }), 403, 'approval_denied');
    expectProblem(await call(asyncer.token, '/pay/v1/refunds/re_q?dry_run=0', { body, approval: queried.approval_id }), 403, 'approval_denied');
    const dry = await call(asyncer.token, '/pay/v1/refunds/re_q?dry_run=1', { body, approval: queried.approval_id });
    expect(dry.status).toBe(200);
    expect(upstream.requests.at(-1)?.target).toBe('/v1/refunds/re_q?dry_run=1');
  });

  // Found by review: the approval was redeemed with the live account's Stripe-Account, and another Content-Type.
  it('async: an approval is bound to Content-Type and the account headers (approvals.bind_headers)', async () => {
    const body = '{"charge":"ch_acct","amount":25}';
    const send = (headers: Record<string, string>, approval?: string): Promise<SentResponse> =>
      sendRequest(`${proxy.url}/pay/v1/refunds/re_acct`, {
        method: 'POST',
        headers: { authorization: `Bearer ${asyncer.token}`, ...headers, ...(approval === undefined ? {} : { 'x-airlock-approval': approval }) },
        body,
      }).then((response) => {
        agentSeen.push(`${response.status}\n${JSON.stringify(response.headers)}\n${response.text}`);
        return response;
      });
    const asked = { 'content-type': 'application/json', 'stripe-account': 'acct_TEST', 'openai-project': 'proj_sandbox', 'x-tenant': 'tenant-a' };
    const { approval_id: id } = expectProblem<PendingProblem>(await send(asked), 202, 'approval_pending');
    expect((await decide(id, 'approve', 'the test account')).status).toBe(200);
    const before = upstream.requests.length;
    const swaps: Array<Record<string, string>> = [
      { ...asked, 'stripe-account': 'acct_LIVE' },
      { 'content-type': 'application/json', 'openai-project': 'proj_sandbox' }, // the account header dropped
      { ...asked, 'openai-project': 'proj_prod' },
      { ...asked, 'content-type': 'application/x-www-form-urlencoded' },
      // An underscore spelling, which Rack, PHP-CGI and gunicorn read as the same header.
      { ...asked, stripe_account: 'acct_LIVE' },
      // Configured as X_Tenant: bound as every spelling of it is read (found by review: never matched).
      { ...asked, 'x-tenant': 'tenant-b' },
      { ...asked, x_tenant: 'tenant-b' },
    ];
    for (const headers of swaps) {
      const problem = expectProblem(await send(headers, id), 403, 'approval_denied');
      expect(problem.detail, JSON.stringify(headers)).toContain('different request');
    }
    expect(upstream.requests.length).toBe(before);
    // Headers outside the list (an SDK's retry count, a fresh idempotency key) may differ.
    const exact = await send({ ...asked, 'idempotency-key': 'a-new-one', 'x-stainless-retry-count': '1' }, id);
    expect(exact.status, exact.text).toBe(200);
    expect(upstream.requests.at(-1)?.header('stripe-account')).toEqual(['acct_TEST']);
    expect(upstream.requests.at(-1)?.header('content-type')).toEqual(['application/json']);
  });

  it('async: concurrent retries with one approval → exactly one goes through', async () => {
    const body = '{"race":true}';
    const { approval_id: id } = expectProblem<PendingProblem>(await call(asyncer.token, '/pay/v1/refunds/re_race', { body }), 202, 'approval_pending');
    expect((await decide(id, 'approve', 'race')).status).toBe(200);
    const before = upstream.requests.length;
    const answers = await Promise.all(Array.from({ length: 8 }, () => call(asyncer.token, '/pay/v1/refunds/re_race', { body, approval: id })));
    expect(answers.map((a) => a.status).sort()).toEqual([200, 403, 403, 403, 403, 403, 403, 403]);
    expect(upstream.requests.length).toBe(before + 1);
  });

  it('async: a denial and an expiry are 403 on the retry', async () => {
    const body = '{"deny":"me"}';
    const { approval_id: denied } = expectProblem<PendingProblem>(await call(asyncer.token, '/pay/v1/refunds/re_no', { body }), 202, 'approval_pending');
    expect((await decide(denied, 'deny', 'not this one')).status).toBe(200);
    const refused = expectProblem(await call(asyncer.token, '/pay/v1/refunds/re_no', { body, approval: denied }), 403, 'approval_denied');
    expect(refused.detail).toContain('not this one');

    const { approval_id: expiring } = expectProblem<PendingProblem>(await call(asyncQuick.token, '/pay/v1/refunds', { body }), 202, 'approval_pending');
    await eventually('the 1 s approval to expire', async () => (await approvals(null)).find((a) => a.id === expiring && a.status === 'expired'), 4_000, 100);
    expectProblem(await call(asyncQuick.token, '/pay/v1/refunds', { body, approval: expiring }), 403, 'approval_timeout');
    // Too late is said one way, whether or not the expiry was recorded yet (found by review: 400 or 403 by timing).
    const late = await decide(expiring, 'approve', 'late');
    expect(late.status, late.text).toBe(400);
    expect(late.json<Problem>().detail).toMatch(new RegExp(`^Approval ${expiring} can no longer be decided: it expired at \\d{4}-[^ ]+ with no decision; the agent sends its request again to ask anew\\.$`));
  });

  // Found by review: a held request outlived its agent's revocation, and went upstream once the agent was
  // restored and an approver said yes; an async approval could be approved for a revoked agent and
  // redeemed after its restore.
  it("a revocation ends the agent's held requests at once and withdraws its approvals; a restore does not bring them back", async () => {
    const before = upstream.requests.length;
    const held = call(holder.token, '/pay/v1/refunds/re_revoked', { body: '{"amount":5}' });
    const heldApproval = await pendingApproval('holder', '/pay/v1/refunds/re_revoked');
    const { approval_id: asked } = expectProblem<PendingProblem>(await call(asyncer.token, '/pay/v1/refunds/re_revoked', { body: '{"amount":6}' }), 202, 'approval_pending');
    const { approval_id: approved } = expectProblem<PendingProblem>(await call(asyncer.token, '/pay/v1/refunds/re_approved', { body: '{"amount":7}' }), 202, 'approval_pending');
    expect((await decide(approved, 'approve', 'fine')).status).toBe(200);

    for (const agent of ['holder', 'asyncer']) expect((await admin.call('POST', '/v1/revocations', { kind: 'agent', target: agent, reason: 'suspected injection' })).status).toBe(200);
    const answer = await held;
    expectProblem(answer, 401, 'unauthenticated');
    expect(await auditOf(answer)).toMatchObject({ agent: 'holder', decision: 'deny', code: 'unauthenticated', approval: heldApproval.id });
    const all = await approvals(null);
    for (const id of [heldApproval.id, asked, approved]) {
      expect(all.find((a) => a.id === id)).toMatchObject({ status: 'expired', decided_by: 'alice', reason: expect.stringMatching(/^withdrawn: agent (holder|asyncer) was revoked$/) });
    }

    for (const agent of ['holder', 'asyncer']) expect((await admin.call('POST', `/v1/agents/${agent}/restore`, { reason: 'false alarm' })).status).toBe(200);
    const afterRestore = await decide(asked, 'approve', 'after the restore');
    expect(afterRestore.status).toBe(400);
    expect(afterRestore.json<Problem>().detail).toBe(`Approval ${asked} can no longer be decided: withdrawn: agent asyncer was revoked; the agent sends its request again to ask anew.`);
    expectProblem(await call(asyncer.token, '/pay/v1/refunds/re_revoked', { body: '{"amount":6}', approval: asked }), 403, 'approval_timeout');
    expectProblem(await call(asyncer.token, '/pay/v1/refunds/re_approved', { body: '{"amount":7}', approval: approved }), 403, 'approval_timeout');
    expect(upstream.requests.length).toBe(before);
  });

  it('route-level require_approval holds calls to that route whatever the grant says', async () => {
    const before = upstream.requests.length;
    // A route without it: straight through.
    const balance = await call(plain.token, '/pay/v1/balance', { method: 'GET' });
    expect(balance.status).toBe(200);
    expect(upstream.requests.length).toBe(before + 1);

    const body = '{"amount":42,"currency":"eur"}';
    const held = call(plain.token, '/pay/v1/charges', { body });
    const approval = await pendingApproval('plain', '/pay/v1/charges');
    expect(approval).toMatchObject({ route: '/v1/charges', scope: 'charges:write', mode: 'hold' });
    expect(upstream.requests.length).toBe(before + 1);
    expect((await decide(approval.id, 'approve', 'route policy')).status).toBe(200);
    const response = await held;
    expect(response.status, response.text).toBe(200);
    expect(upstream.requests.at(-1)?.body.toString('utf8')).toBe(body);
  });

  it('50 concurrent held requests, each approved on its own, all complete with their own body', async () => {
    const count = 50;
    const before = upstream.requests.length;
    const bodies = Array.from({ length: count }, (_, n) => JSON.stringify({ n, note: `refund number ${n}` }));
    const settled = new Set<number>();
    const held = bodies.map((body, n) =>
      call(holder.token, `/pay/v1/refunds/bulk-${n}`, { body, timeoutMs: 25_000 }).then((response) => {
        settled.add(n);
        return response;
      }),
    );
    const pending = await eventually(
      `${count} pending approvals`,
      async () => {
        const list = (await approvals()).filter((a) => a.agent === 'holder' && a.path.startsWith('/pay/v1/refunds/bulk-'));
        return list.length === count ? list : undefined;
      },
      10_000,
      50,
    );
    const idOf = (n: number): string => (pending.find((a) => a.path === `/pay/v1/refunds/bulk-${n}`) as ApprovalView).id;
    expect(new Set(pending.map((a) => a.id)).size).toBe(count);

    // Approve the even ones (concurrently); the odd ones keep waiting.
    const evens = bodies.map((_, n) => n).filter((n) => n % 2 === 0);
    const odds = bodies.map((_, n) => n).filter((n) => n % 2 === 1);
    const evenDecisions = await Promise.all(evens.map((n) => decide(idOf(n), 'approve', `bulk ${n}`)));
    expect(evenDecisions.every((d) => d.status === 200)).toBe(true);
    const evenAnswers = await Promise.all(evens.map((n) => held[n] as Promise<SentResponse>));
    for (const [i, n] of evens.entries()) {
      expect(evenAnswers[i]?.status, evenAnswers[i]?.text).toBe(200);
      expect(JSON.parse(evenAnswers[i]?.text ?? '{}')).toMatchObject({ target: `/v1/refunds/bulk-${n}`, body: bodies[n] });
    }
    expect(odds.some((n) => settled.has(n))).toBe(false);
    expect(upstream.requests.length).toBe(before + evens.length);

    // Then the odd ones, one at a time, newest first.
    for (const n of [...odds].reverse()) {
      expect((await decide(idOf(n), 'approve', `bulk ${n}`)).status).toBe(200);
      const answer = await (held[n] as Promise<SentResponse>);
      expect(answer.status, answer.text).toBe(200);
      expect(JSON.parse(answer.text)).toMatchObject({ target: `/v1/refunds/bulk-${n}`, body: bodies[n] });
    }
    // Each body went upstream exactly once.
    const forwarded = forwardedBodies().slice(before);
    expect(forwarded.length).toBe(count);
    expect([...forwarded].sort()).toEqual([...bodies].sort());
    const answers = await Promise.all(held);
    const records = await Promise.all(answers.map((a) => auditOf(a)));
    records.forEach((record, n) => expect(record).toMatchObject({ status: 200, approval: idOf(n), approver: 'alice', approval_reason: `bulk ${n}` }));
  });

  // Found by review: the binding hashed agent, method, path, query and body, and a service selected by
  // Host has no prefix in its path; an approval shown for the test account sent the request to live.
  it('an approval is good on the service it was asked for only, not on another with the same path', async () => {
    const body = '{"amount":100}';
    const { approval_id: id } = expectProblem<PendingProblem>(await call(switcher.token, '/v1/refunds', { body, host: 'pay-test.internal' }), 202, 'approval_pending');
    expect((await decide(id, 'approve', 'refund on the test account')).status).toBe(200);
    const before = upstream.requests.length;
    const elsewhere = expectProblem(await call(switcher.token, '/v1/refunds', { body, host: 'pay-live.internal', approval: id }), 403, 'approval_denied');
    expect(elsewhere.detail).toContain('different request');
    expect(upstream.requests.length).toBe(before);
    // On the service it was given for, it is still good, once.
    const used = await call(switcher.token, '/v1/refunds', { body, host: 'pay-test.internal', approval: id });
    expect(used.status, used.text).toBe(200);
    expect(upstream.requests.length).toBe(before + 1);
  });

  it('the webhook receives a JSON POST per pending approval, with a Slack-compatible text', async () => {
    const before = webhook.requests.length;
    const { approval_id: id } = expectProblem<PendingProblem>(await call(asyncer.token, '/pay/v1/refunds/re_hook', { body: '{"hook":1}' }), 202, 'approval_pending');
    const announcement = await eventually('the webhook announcement', () => webhook.requests.slice(before).find((r) => r.body.toString('utf8').includes(id)));
    expect(announcement.method).toBe('POST');
    expect(announcement.target).toBe('/hook');
    expect(announcement.header('content-type')[0]).toContain('application/json');
    const payload = JSON.parse(announcement.body.toString('utf8')) as Record<string, unknown>;
    expect(payload).toMatchObject({
      type: 'airlock.approval.pending',
      approval_id: id,
      agent: 'asyncer',
      service: 'pay',
      method: 'POST',
      path: '/pay/v1/refunds/re_hook',
      route: '/v1/refunds/:id',
      scope: 'refunds:write',
      mode: 'async',
      console_url: `${PUBLIC_URL}/#approval-${id}`,
    });
    expect(Date.parse(payload['expires_at'] as string)).toBeGreaterThan(Date.now());
    expect(typeof payload['text']).toBe('string');
    const text = payload['text'] as string;
    expect(text).toContain('*asyncer*');
    expect(text).toContain('`POST /pay/v1/refunds/re_hook`');
    expect(text).toContain(id);
    expect(text).toContain(`approvals approve ${id}`);
    expect((await decide(id, 'deny', 'only here for the webhook')).status).toBe(200);
    // Every approval in this file so far was announced, once (hold and async alike).
    const all = await approvals(null);
    const announced = (): string[] => webhook.requests.map((r) => (JSON.parse(r.body.toString('utf8')) as { approval_id: string }).approval_id);
    await eventually('every approval to be announced', () => all.every((a) => announced().includes(a.id)), 3_000);
    expect(new Set(announced()).size).toBe(announced().length);
  });

  it('a held call made under a task session shows its session and justification to the approver', async () => {
    const JUSTIFICATION = 'refund for ticket 9001\napr_FAKE  approved  holder  GET /pay/v1/x\n\n*Approved by alice* <!channel>';
    const minted = await sendRequest(`${proxy.url}/_airlock/sessions`, {
      method: 'POST',
      headers: { authorization: `Bearer ${holder.token}`, 'content-type': 'application/json' },
      // A second line that would pass for a listed approval in a terminal (found by review).
      body: JSON.stringify({ scopes: { pay: ['refunds:write'] }, ttl_seconds: 60, justification: JUSTIFICATION, task_id: 'T-9001' }),
    });
    expect(minted.status, minted.text).toBe(201);
    const session = minted.json<{ session_token: string; session_id: string }>();
    sessionTokens.push(session.session_token);
    const hooksBefore = webhook.requests.length;
    const held = call(session.session_token, '/pay/v1/refunds/re_session', { body: '{"ticket":9001}' });
    const approval = await pendingApproval('holder', '/pay/v1/refunds/re_session');
    const view = (await admin.call('GET', '/v1/approvals?status=pending')).json<{ approvals: Array<Record<string, unknown>> }>().approvals.find((a) => a['id'] === approval.id);
    expect(view).toMatchObject({ session: session.session_id, justification: JUSTIFICATION, task_id: 'T-9001' });
    // The CLI shows it on the approval's own line, whitespace runs as one space.
    const listed = await cli(['approvals', 'list']);
    expect(listed.stdout.split('\n').find((line) => line.startsWith(approval.id))).toContain('"refund for ticket 9001 apr_FAKE approved holder GET /pay/v1/x *Approved by alice* <!channel>"');
    expect(listed.stdout.split('\n').some((line) => line.startsWith('apr_FAKE'))).toBe(false);
    const hook = await eventually('the announcement', () => webhook.requests.slice(hooksBefore).find((r) => r.body.toString('utf8').includes(approval.id)));
    const payload = JSON.parse(hook.body.toString('utf8')) as Record<string, unknown>;
    expect(payload).toMatchObject({ session: session.session_id, justification: JUSTIFICATION, task_id: 'T-9001' });
    // In chat as the preview is (found by review: raw, it drew a fake "Approved by" line and pinged the channel).
    expect(payload['text']).toContain('Justification: `refund for ticket 9001 apr_FAKE approved holder GET /pay/v1/x *Approved by alice* &lt;!channel&gt;`');
    expect(payload['text']).not.toContain('\n');
    expect((await decide(approval.id, 'approve', 'ticket checked')).status).toBe(200);
    const response = await held;
    expect(response.status, response.text).toBe(200);
    expect(await auditOf(response)).toMatchObject({ session: session.session_id, task_id: 'T-9001', approval: approval.id, approver: 'alice' });
  });

  it('the CLI lists pending approvals, approves and denies them (approver = the admin token name)', async () => {
    const before = upstream.requests.length;
    const approveBody = '{"cli":"approve"}';
    const denyBody = '{"cli":"deny"}';
    const toApprove = call(holder.token, '/pay/v1/refunds/cli-yes', { body: approveBody });
    const toDeny = call(holder.token, '/pay/v1/refunds/cli-no', { body: denyBody });
    const yes = await pendingApproval('holder', '/pay/v1/refunds/cli-yes');
    const no = await pendingApproval('holder', '/pay/v1/refunds/cli-no');

    const listed = await cli(['approvals', 'list']);
    expect(listed.code, listed.stderr).toBe(0);
    const lines = listed.stdout.split('\n');
    const yesLine = lines.find((l) => l.startsWith(yes.id));
    expect(yesLine).toContain('pending');
    expect(yesLine).toContain('holder  POST /pay/v1/refunds/cli-yes  (pay, refunds:write)');
    expect(lines.some((l) => l.startsWith(no.id))).toBe(true);

    const approved = await cli(['approvals', 'approve', yes.id, '--reason', 'approved from the terminal']);
    expect(approved.code, approved.stderr).toBe(0);
    expect(approved.stdout).toBe(`${yes.id} approved by bob: POST /pay/v1/refunds/cli-yes for holder.\n`);
    const done = await toApprove;
    expect(done.status, done.text).toBe(200);
    expect(upstream.requests.at(-1)?.body.toString('utf8')).toBe(approveBody);
    expect(await auditOf(done)).toMatchObject({ approval: yes.id, approver: 'bob', approval_reason: 'approved from the terminal' });

    const denied = await cli(['approvals', 'deny', no.id, '--reason', 'denied from the terminal']);
    expect(denied.code, denied.stderr).toBe(0);
    expect(denied.stdout).toContain(`${no.id} denied by bob`);
    const refused = expectProblem(await toDeny, 403, 'approval_denied');
    expect(refused.detail).toBe('bob denied the request: denied from the terminal.');
    expect(upstream.requests.length).toBe(before + 1);

    // Deciding again, an unknown id, a wrong token: exit 1 with the reason.
    const twice = await cli(['approvals', 'approve', yes.id, '--reason', 'again']);
    expect(twice.code).toBe(1);
    expect(twice.stderr).toContain('already');
    const unknown = await cli(['approvals', 'approve', 'apr_nopenopenopenope', '--reason', 'x']);
    expect(unknown.code).toBe(1);
    expect(unknown.stderr).toContain('(404)');
    const wrongToken = await cli(['approvals', 'list'], generateAgentToken().token);
    expect(wrongToken.code).toBe(1);
    expect(wrongToken.stderr).toContain('(401)');
    const all = await cli(['approvals', 'list', '--all']);
    expect(all.code).toBe(0);
    expect(all.stdout).toContain(`${no.id}  denied`);
    expect(all.stdout).toContain('by bob: "denied from the terminal"');
    const none = await cli(['approvals', 'list']);
    expect(none.stdout).toBe('No pending approvals.\n');
  });

  it('deciding an approval that does not exist is 404 not_found (not unknown_service)', async () => {
    for (const action of ['approve', 'deny']) {
      const missing = await admin.call('POST', `/v1/approvals/apr_doesnotexist0000/${action}`, { reason: 'x' });
      expect(missing.status, missing.text).toBe(404);
      expect(missing.json<Problem>()).toMatchObject({ code: 'not_found', detail: 'There is no approval apr_doesnotexist0000.' });
    }
  });

  // Found by review: an agent token or a key pasted where the id goes came back in the answer and on the terminal.
  it('an id that is not an approval id is refused without being repeated, by the admin API and the CLI', async () => {
    const pasted = [holder.token, canary('pasted-as-approval-id')];
    for (const id of pasted) {
      const refused = await admin.call('POST', `/v1/approvals/${encodeURIComponent(id)}/approve`, { reason: 'x' });
      expect(refused.status, refused.text).toBe(400);
      expect(refused.json<Problem>().detail).toContain('An approval is named by its id: "apr_" and 16 letters');
      expect(refused.text).not.toContain(id);
      const run = await cli(['approvals', 'approve', id]);
      expect(run.code).toBe(1);
      expect(run.stderr).toContain('That is not an approval id');
      expect(`${run.stdout}${run.stderr}`).not.toContain(id);
    }
  });

  it('refuses admin calls without a valid admin token (an agent token is not one)', async () => {
    const logged = proxy.logLines.length;
    for (const token of [null, holder.token, generateAgentToken().token]) {
      const list = await admin.call('GET', '/v1/approvals', undefined, token);
      expect(list.status).toBe(401);
      const approve = await admin.call('POST', '/v1/approvals/apr_x/approve', { reason: 'x' }, token);
      expect(approve.status).toBe(401);
    }
    // Each refusal leaves a line for the operator saying what was presented, never the token (found by
    // review: none was left, so an agent trying its token on the admin API went unseen).
    const refused = proxy.logLines.slice(logged).map((line) => JSON.parse(line) as Record<string, unknown>).filter((line) => line['msg'] === 'admin API refused a call without a valid admin token');
    expect(refused.map((line) => `${String(line['method'])} ${String(line['path'])}: ${String(line['presented'])}`)).toEqual(
      ['no Authorization header', 'the token of agent holder (an agent token is never an admin token)', 'a token not listed under admin.tokens'].flatMap((presented) => [`GET /v1/approvals: ${presented}`, `POST /v1/approvals/apr_x/approve: ${presented}`]),
    );
    expect(refused.every((line) => line['level'] === 40 || line['level'] === 'warn')).toBe(true);
  });

  it('no secret (upstream key, agent or admin tokens) reaches logs, audit, admin or CLI output, webhooks or agents', async () => {
    await proxy.waitForAudit(1);
    const webhookText = webhook.requests.map((r) => `${r.rawHeaders.join('\n')}\n${r.body.toString('utf8')}`).join('\n');
    const tokens = [holder.token, quick.token, asyncer.token, asyncQuick.token, plain.token, alice.token, bob.token, ...sessionTokens];
    expect(sessionTokens.length).toBe(2);
    assertNoLeak([payKey, ...tokens], [
      { name: 'log', text: proxy.logLines.join('') },
      { name: 'audit', text: proxy.auditText() },
      { name: 'admin responses', text: [...admin.seen, ...bobAdmin.seen].join('\n') },
      { name: 'CLI output', text: cliSeen.join('\n') },
      { name: 'webhook', text: webhookText },
      { name: 'agent responses', text: agentSeen.join('\n') },
    ]);
    const upstreamText = upstream.requests.map((r) => r.rawHeaders.join('\n')).join('\n');
    assertNoLeak(tokens, [{ name: 'upstream requests', text: upstreamText }]);
  });
});

/** A proxy whose agent `bot` needs an async approval for POST /pay/v1/refunds, its admin listener on `adminListen`. */
function startRefundProxy(upstream: Upstream, agent: { hash: string }, adminToken: { hash: string }, adminListen: string, extra: Record<string, unknown> = {}): Promise<ProxyFixture> {
  return startProxy(
    {
      admin: { listen: adminListen, tokens: [adminToken.hash] },
      services: { pay: { upstream: upstream.url, credential: { secret: 'env:PAY_KEY' }, routes: [{ method: 'POST', path: '/v1/refunds', scope: 'refunds:write' }] } },
      agents: { bot: { tokens: [agent.hash], credentials: [{ service: 'pay', max_scope: ['*'], require_approval: true, approval_mode: 'async' }] } },
      ...extra,
    },
    { env: { PAY_KEY: canary(`pay-${adminListen}`) } },
  );
}

describe('human approval: max_pending, and the console link without admin.public_url', () => {
  const agent = generateAgentToken();
  const adminToken = generateAgentToken();
  let upstream: Upstream;
  let proxy: ProxyFixture;

  beforeAll(async () => {
    upstream = await startUpstream();
    proxy = await startRefundProxy(upstream, agent, adminToken, '127.0.0.1:0', { approvals: { max_pending: 2 } });
  });

  afterAll(async () => {
    await proxy?.close();
    await upstream?.close();
  });

  it('points at the admin listener that is actually bound (port 0 resolved to the real port)', async () => {
    const response = await sendRequest(`${proxy.url}/pay/v1/refunds`, { method: 'POST', headers: { authorization: `Bearer ${agent.token}` }, body: '{}' });
    expect(response.status, response.text).toBe(202);
    const problem = response.json<PendingProblem>();
    expect(problem.approval_id).toMatch(/^apr_/);
    const bound = new URL(proxy.airlock.adminUrl as string);
    expect(bound.hostname).toBe('127.0.0.1');
    expect(Number(bound.port)).toBeGreaterThan(0);
    expect(problem.console_url).toBe(`http://127.0.0.1:${bound.port}/#approval-${problem.approval_id}`);
  });

  it('refuses a new approval with 429 rate_limited while approvals.max_pending are pending', async () => {
    const ask = (n: number): Promise<SentResponse> =>
      sendRequest(`${proxy.url}/pay/v1/refunds`, { method: 'POST', headers: { authorization: `Bearer ${agent.token}` }, body: JSON.stringify({ n }) });
    const adminCall = (method: string, path: string, body?: string): Promise<SentResponse> =>
      sendRequest(`${proxy.airlock.adminUrl as string}${path}`, {
        method,
        headers: { authorization: `Bearer ${adminToken.token}`, 'content-type': 'application/json' },
        ...(body === undefined ? {} : { body }),
      });
    const accepted: string[] = [];
    let refused: SentResponse | null = null;
    for (let n = 0; n < 5 && refused === null; n++) {
      const answer = await ask(n);
      if (answer.status === 202) accepted.push(answer.json<PendingProblem>().approval_id);
      else refused = answer;
    }
    expect(refused?.status, refused?.text).toBe(429);
    expect(refused?.json<Problem>().code).toBe('rate_limited');
    expect(refused?.json<Problem>().detail).toContain('2 approvals are already pending (approvals.max_pending)');
    expect(refused?.headers['retry-after']).toBe('30');
    const pending = (await adminCall('GET', '/v1/approvals?status=pending')).json<{ approvals: Array<{ id: string }> }>().approvals;
    expect(pending.length).toBe(2);
    const denied = await adminCall('POST', `/v1/approvals/${pending[0]?.id as string}/deny`, '{"reason":"make room"}');
    expect(denied.status, denied.text).toBe(200);
    expect((await ask(9)).status).toBe(202);
    expect(upstream.requests.length).toBe(0);
  });
});

describe('human approval: the console link of an admin listener bound on 0.0.0.0, without admin.public_url', () => {
  const agent = generateAgentToken();
  const adminToken = generateAgentToken();
  let upstream: Upstream;
  let proxy: ProxyFixture;

  beforeAll(async () => {
    upstream = await startUpstream();
    proxy = await startRefundProxy(upstream, agent, adminToken, '0.0.0.0:0');
  });

  afterAll(async () => {
    await proxy?.close();
    await upstream?.close();
  });

  it('shows the wildcard bind as loopback: http://127.0.0.1:<bound port>', async () => {
    const bound = new URL(proxy.airlock.adminUrl as string);
    // The listener itself is on every interface, at a real port.
    expect(bound.hostname).toBe('0.0.0.0');
    expect(Number(bound.port)).toBeGreaterThan(0);
    const response = await sendRequest(`${proxy.url}/pay/v1/refunds`, { method: 'POST', headers: { authorization: `Bearer ${agent.token}` }, body: '{}' });
    expect(response.status, response.text).toBe(202);
    const problem = response.json<PendingProblem>();
    expect(problem.approval_id).toMatch(/^apr_/);
    expect(problem.console_url).toBe(`http://127.0.0.1:${bound.port}/#approval-${problem.approval_id}`);
    expect(upstream.requests.length).toBe(0);
  });
});

// Found by review: max_pending was counted over all agents, so one agent's burst of approval-needing
// requests left every other agent's refused with 429 for as long as approval_timeout.
describe('human approval: max_pending_per_agent', () => {
  const greedy = generateAgentToken();
  const other = generateAgentToken();
  let upstream: Upstream;
  let proxy: ProxyFixture;
  const grant = { service: 'pay', max_scope: ['*'], require_approval: true, approval_mode: 'async' };

  beforeAll(async () => {
    upstream = await startUpstream();
    proxy = await startProxy(
      {
        approvals: { max_pending: 10, max_pending_per_agent: 2 },
        services: { pay: { upstream: upstream.url, credential: { secret: 'env:PAY_KEY' }, routes: [{ method: 'POST', path: '/v1/refunds', scope: 'refunds:write' }] } },
        agents: { greedy: { tokens: [greedy.hash], credentials: [grant] }, other: { tokens: [other.hash], credentials: [grant] } },
      },
      { env: { PAY_KEY: canary('pay-per-agent') } },
    );
  });

  afterAll(async () => {
    await proxy?.close();
    await upstream?.close();
  });

  const ask = (token: string, n: number): Promise<SentResponse> =>
    sendRequest(`${proxy.url}/pay/v1/refunds`, { method: 'POST', headers: { authorization: `Bearer ${token}` }, body: JSON.stringify({ n }) });

  it("refuses one agent's third pending approval with 429, naming the setting, while another agent still gets 202", async () => {
    expect((await ask(greedy.token, 1)).status).toBe(202);
    expect((await ask(greedy.token, 2)).status).toBe(202);
    const refused = await ask(greedy.token, 3);
    expect(refused.status, refused.text).toBe(429);
    expect(refused.json<Problem>()).toMatchObject({ code: 'rate_limited' });
    expect(refused.json<Problem>().detail).toContain('Agent greedy already has 2 approvals pending (approvals.max_pending_per_agent)');
    expect(refused.headers['retry-after']).toBe('30');
    expect((await ask(other.token, 1)).status).toBe(202);
    expect(upstream.requests.length).toBe(0);
  });
});
