/**
 * Who revoked what and why is the operators' (found by a fresh-user walkthrough): a revoked agent was
 * answered "Agent support-bot was revoked (by alice: ...)", handing the agent suspected of an incident
 * its responder's name and the incident's reason; a lockdown, a suspension and a revoked credential said
 * the same to every agent. Over a real proxy, each refusal now tells the agent what happened and what to
 * do in fixed words, while the audit record's `reason`, the request's log line and the admin API keep
 * who and why (errors.ts OperatorReason).
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { generateAgentToken } from '../../src/identity/agent-token.js';
import type { AuditRecord } from '../../src/observability/audit-record.js';
import { assertNoLeak } from '../helpers/assert-no-leak.js';
import { canary } from '../helpers/canary.js';
import { adminClient, eventually, type AdminClient } from '../helpers/operator.js';
import { sendRequest, type Problem, type SentResponse } from '../helpers/send-request.js';
import { startProxy, type ProxyFixture } from '../helpers/start-proxy.js';
import { startUpstream, type Upstream } from '../helpers/start-upstream.js';

/** The admin token's name: what the revocation's `by` is. */
const ADMIN = 'alice-incident-lead';
const FIND_WHY = 'An operator finds why in the audit record and the proxy log under this request id.';

describe('a refusal for a revocation tells the agent what happened, and the operator who and why', () => {
  const apiKey = canary('reason-api');
  const bot = generateAgentToken();
  const bystander = generateAgentToken();
  const adminToken = generateAgentToken();
  let upstream: Upstream;
  let proxy: ProxyFixture;
  let admin: AdminClient;
  /** Every answer an agent got, for the final leak check. */
  const agentSeen: string[] = [];

  beforeAll(async () => {
    upstream = await startUpstream();
    proxy = await startProxy(
      {
        admin: { listen: '127.0.0.1:0', tokens: [{ name: ADMIN, hash: adminToken.hash }] },
        services: { api: { upstream: upstream.url, credential: { secret: 'env:API_KEY', inject: 'bearer' }, routes: [{ method: 'GET', path: '/v1/ping', scope: 'ping:read' }] } },
        agents: {
          'support-bot': { tokens: [bot.hash], credentials: [{ service: 'api', max_scope: ['*'] }] },
          bystander: { tokens: [bystander.hash], credentials: [{ service: 'api', max_scope: ['*'] }] },
        },
      },
      { env: { API_KEY: apiKey } },
    );
    admin = adminClient(() => proxy.airlock.adminUrl as string, adminToken.token);
  });

  afterAll(async () => {
    await proxy?.close();
    await upstream?.close();
  });

  async function call(token: string): Promise<SentResponse> {
    const response = await sendRequest(`${proxy.url}/api/v1/ping`, { headers: { authorization: `Bearer ${token}` } });
    agentSeen.push(`${response.status}\n${JSON.stringify(response.headers)}\n${response.text}`);
    return response;
  }

  async function change(path: string, body: Record<string, unknown>): Promise<void> {
    const response = await admin.call('POST', path, body);
    expect(response.status, response.text).toBe(200);
  }

  /**
   * The agent's answer has the code and the fixed detail, and neither the admin's name nor the reason in
   * any encoding; the audit record's reason and the log line have both.
   */
  async function expectWithheld(response: SentResponse, status: number, code: string, detail: string, reason: string, operatorText: string): Promise<void> {
    expect(response.status, response.text).toBe(status);
    const problem = response.json<Problem>();
    expect(problem.code).toBe(code);
    expect(problem.detail).toBe(detail);
    expect(problem.error.message).toBe(detail);
    assertNoLeak([ADMIN, reason], [{ name: 'agent answer', text: `${JSON.stringify(response.headers)}\n${response.text}` }]);
    const id = response.headers['x-airlock-request-id'] as string;
    const record = await eventually<AuditRecord>('the audit record', () => proxy.auditRecords().find((r) => r.request_id === id));
    expect(record).toMatchObject({ code, status, decision: 'deny', reason: operatorText });
    const line = await eventually('the log line', () => proxy.logRecords().find((l) => l['request_id'] === id && l['msg'] === 'request'));
    expect(JSON.stringify(line['err'])).toContain(JSON.stringify(operatorText).slice(1, -1));
  }

  it('a revoked agent (its token and its session): the answer names neither the admin nor the reason; the audit record, the log and the admin API do', async () => {
    const minted = await sendRequest(`${proxy.url}/_airlock/sessions`, {
      method: 'POST',
      headers: { authorization: `Bearer ${bot.token}`, 'content-type': 'application/json' },
      body: JSON.stringify({ scopes: { api: ['ping:read'] }, justification: 'reason test' }),
    });
    expect(minted.status, minted.text).toBe(201);
    const session = minted.json<{ session_token: string }>().session_token;
    const reason = 'prompt injection suspected in ticket 4711';
    await change('/v1/agents/support-bot/revoke', { reason });
    try {
      const detail = `Agent support-bot was revoked; its tokens and sessions are refused until an operator restores it: ask one to. ${FIND_WHY}`;
      const operatorText = `Agent support-bot was revoked (by ${ADMIN}: ${reason})`;
      await expectWithheld(await call(bot.token), 401, 'unauthenticated', detail, reason, operatorText);
      // Its session is gone with it (refused as unknown), and says nothing of the revocation either.
      const bySession = await call(session);
      expect(bySession.status).toBe(401);
      assertNoLeak([ADMIN, reason], [{ name: 'agent answer', text: `${JSON.stringify(bySession.headers)}\n${bySession.text}` }]);
      // The operator still sees who and why wherever they look.
      const agents = (await admin.call('GET', '/v1/agents')).json<{ agents: Array<Record<string, unknown>> }>().agents;
      expect(agents.find((a) => a['name'] === 'support-bot')).toMatchObject({ status: 'revoked', revoked: { by: ADMIN, reason } });
      const revocations = (await admin.call('GET', '/v1/revocations')).json<{ revocations: Array<Record<string, unknown>> }>().revocations;
      expect(revocations).toContainEqual(expect.objectContaining({ kind: 'agent', target: 'support-bot', by: ADMIN, reason }));
    } finally {
      await change('/v1/agents/support-bot/restore', {});
    }
    expect((await call(bot.token)).status).toBe(200);
  });

  it('a lockdown (the kill switch), a suspended service and a revoked credential: every agent gets the fixed detail', async () => {
    const cases = [
      {
        kind: 'all',
        target: '*',
        reason: 'incident 42: exfiltration through support-bot',
        status: 503,
        code: 'locked_down',
        detail: `Airlock is locked down; no request is forwarded until an operator lifts it. ${FIND_WHY}`,
        operatorText: (reason: string) => `Airlock is locked down (by ${ADMIN}: ${reason})`,
      },
      {
        kind: 'service',
        target: 'api',
        reason: 'vendor breach notice 2026-11',
        status: 503,
        code: 'service_suspended',
        detail: `Service api is suspended; requests to it are refused until an operator lifts the suspension. ${FIND_WHY}`,
        operatorText: (reason: string) => `Service api is suspended (by ${ADMIN}: ${reason})`,
      },
      {
        kind: 'credential',
        target: 'env:API_KEY',
        reason: 'key pasted into the support channel',
        status: 503,
        code: 'credential_revoked',
        detail: `The credential env:API_KEY is revoked; requests that need it are refused until it is rotated and restored. ${FIND_WHY}`,
        operatorText: (reason: string) => `The credential env:API_KEY is revoked (by ${ADMIN}: ${reason})`,
      },
    ];
    const before = upstream.requests.length;
    for (const c of cases) {
      await change('/v1/revocations', { kind: c.kind, target: c.target, reason: c.reason });
      try {
        for (const token of [bot.token, bystander.token]) await expectWithheld(await call(token), c.status, c.code, c.detail, c.reason, c.operatorText(c.reason));
        const revocations = (await admin.call('GET', '/v1/revocations')).json<{ revocations: Array<Record<string, unknown>> }>().revocations;
        expect(revocations).toContainEqual(expect.objectContaining({ kind: c.kind, by: ADMIN, reason: c.reason }));
      } finally {
        await change('/v1/revocations/lift', { kind: c.kind, target: c.target });
      }
    }
    expect(upstream.requests.length).toBe(before);
    expect((await call(bystander.token)).status).toBe(200);
  });

  it('no secret reached an agent', () => {
    assertNoLeak([apiKey, adminToken.token], [{ name: 'agent answers', text: agentSeen.join('\n') }]);
  });
});
