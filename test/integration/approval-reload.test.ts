/**
 * A request held for approval (approval_mode: hold) waits minutes; the config may be reloaded meanwhile.
 * Found by review: once approved, it was forwarded under the config it arrived in, after the reload had
 * removed its agent, its token, its grant or scope, or pointed the service at another upstream or
 * credential. Now it is authorized again under the config in force when the approval comes, and refused
 * (401, 403) with the reason when that config no longer allows it, or sends it elsewhere or with another
 * credential than the approver said yes to. Nothing reaches either upstream then. An async approval
 * (202, redeemed by a retry) given before a reload that moved the service to another upstream or
 * credential is refused the same way (found by a later review: it was redeemed there).
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { formatProblem } from '../../src/config/config-problem.js';
import { buildConfig } from '../../src/config/load-config.js';
import { generateAgentToken } from '../../src/identity/agent-token.js';
import { assertNoLeak } from '../helpers/assert-no-leak.js';
import { canary } from '../helpers/canary.js';
import { adminClient, eventually, type AdminClient } from '../helpers/operator.js';
import { sendRequest, type Problem, type SentResponse } from '../helpers/send-request.js';
import { startProxy, type ProxyFixture } from '../helpers/start-proxy.js';
import { echoHandler, startUpstream, type Upstream } from '../helpers/start-upstream.js';

interface Variant {
  /** The agent's tokens (hashes). */
  readonly tokens?: readonly string[];
  /** Whether the agent is in the config at all. */
  readonly agent?: boolean;
  readonly scopes?: readonly string[];
  /** The service the agent's grant is for. */
  readonly grantService?: string;
  readonly upstream?: 'a' | 'b';
  readonly secret?: string;
  /** An unrelated agent, to make a reload that changes nothing the held request stands on. */
  readonly bystander?: boolean;
}

/** Reloads `proxy` with `input` (on its own data_dir), which must be a valid config. */
async function reloadWith(proxy: ProxyFixture, input: Record<string, unknown>): Promise<void> {
  const built = buildConfig({ listen: '127.0.0.1:0', data_dir: proxy.dataDir, ...input }, { baseDir: proxy.dataDir });
  if (built.config === null) throw new Error(built.problems.map((p) => formatProblem(p, null)).join('\n'));
  expect(await proxy.airlock.reload(built.config)).toEqual({ ok: true });
}

describe('a held request is authorized again when a reload came during the hold', () => {
  const keyA = canary('hold-a');
  const keyB = canary('hold-b');
  const holder = generateAgentToken();
  const asker = generateAgentToken();
  const other = generateAgentToken();
  const alice = generateAgentToken();
  const agentSeen: string[] = [];
  let upstreamA: Upstream;
  let upstreamB: Upstream;
  let proxy: ProxyFixture;
  let admin: AdminClient;

  function input(variant: Variant = {}): Record<string, unknown> {
    const origin = (variant.upstream ?? 'a') === 'a' ? upstreamA.url : upstreamB.url;
    const routes = [
      { method: 'POST', path: '/v1/refunds/:id', scope: 'refunds:write' },
      { method: 'GET', path: '/v1/balance', scope: 'balance:read' },
    ];
    return {
      admin: { listen: '127.0.0.1:0', tokens: [{ name: 'alice', hash: alice.hash }] },
      services: {
        pay: { upstream: origin, credential: { secret: variant.secret ?? 'env:HOLD_KEY_A', inject: 'bearer' }, routes },
        ledger: { upstream: upstreamA.url, credential: { secret: 'env:HOLD_KEY_A', inject: 'bearer' }, routes },
      },
      agents: {
        ...(variant.agent === false
          ? {}
          : {
              holder: {
                tokens: variant.tokens ?? [holder.hash],
                credentials: [{ service: variant.grantService ?? 'pay', max_scope: variant.scopes ?? ['refunds:write', 'balance:read'], require_approval: true, approval_mode: 'hold', approval_timeout: 30 }],
              },
            }),
        // Async mode: 202, redeemed later with x-airlock-approval.
        asker: { tokens: [asker.hash], credentials: [{ service: 'pay', max_scope: ['refunds:write'], require_approval: true, approval_mode: 'async', approval_timeout: 60 }] },
        ...(variant.bystander === true ? { bystander: { tokens: [generateAgentToken().hash], credentials: [{ service: 'ledger', max_scope: ['balance:read'] }] } } : {}),
      },
    };
  }

  const reload = (variant: Variant): Promise<void> => reloadWith(proxy, input(variant));

  beforeAll(async () => {
    upstreamA = await startUpstream(echoHandler);
    upstreamB = await startUpstream(echoHandler);
    proxy = await startProxy(input(), { env: { HOLD_KEY_A: keyA, HOLD_KEY_B: keyB } });
    admin = adminClient(() => proxy.airlock.adminUrl as string, alice.token);
  });

  afterAll(async () => {
    try {
      const tokens = [holder.token, asker.token, other.token, alice.token];
      assertNoLeak([...tokens, keyA, keyB], [
        { name: 'logs', text: proxy.logLines.join('') },
        { name: 'audit', text: proxy.auditText() },
        { name: 'agent answers', text: agentSeen.join('\n') },
        { name: 'admin answers', text: admin.seen.join('\n') },
      ]);
    } finally {
      await proxy?.close();
      await upstreamA?.close();
      await upstreamB?.close();
    }
  });

  function hold(id: string): Promise<SentResponse> {
    return sendRequest(`${proxy.url}/pay/v1/refunds/${id}`, {
      method: 'POST',
      headers: { authorization: `Bearer ${holder.token}`, 'content-type': 'application/json' },
      body: JSON.stringify({ refund: id, amount: 1250 }),
      timeoutMs: 20_000,
    }).then((response) => {
      agentSeen.push(`${response.status}\n${JSON.stringify(response.headers)}\n${response.text}`);
      return response;
    });
  }

  function pendingId(path: string): Promise<string> {
    return eventually(`a pending approval for ${path}`, async () => {
      const listed = await admin.call('GET', '/v1/approvals?status=pending');
      return listed.json<{ approvals: Array<{ id: string; path: string }> }>().approvals.find((a) => a.path === path)?.id;
    });
  }

  async function approve(id: string): Promise<void> {
    const decided = await admin.call('POST', `/v1/approvals/${id}/approve`, { reason: 'looks right' });
    expect(decided.status, decided.text).toBe(200);
  }

  const cases: Array<{ what: string; variant: Variant; status: number; code: string; detail: string }> = [
    { what: 'the agent removed', variant: { agent: false }, status: 401, code: 'unauthenticated', detail: 'Agent holder was removed from the configuration while the request waited' },
    { what: 'the token it called with rotated out', variant: { tokens: [other.hash] }, status: 401, code: 'unauthenticated', detail: 'no longer accepts the credential this request was made with' },
    { what: 'the scope removed from its grant', variant: { scopes: ['balance:read'] }, status: 403, code: 'scope_denied', detail: 'lacks scope refunds:write on service pay' },
    { what: 'its grant moved to another service', variant: { grantService: 'ledger' }, status: 403, code: 'scope_denied', detail: 'has no grant for service pay' },
    { what: 'the service pointed at another upstream', variant: { upstream: 'b' }, status: 403, code: 'scope_denied', detail: 'now has another upstream than the one the approval was given for' },
    { what: 'the service given another credential', variant: { secret: 'env:HOLD_KEY_B' }, status: 403, code: 'scope_denied', detail: 'now uses another credential than the one the approval was given for' },
  ];

  for (const [n, { what, variant, status, code, detail }] of cases.entries()) {
    it(`refuses it, and sends nothing anywhere, after a reload with ${what}`, async () => {
      const before = upstreamA.requests.length + upstreamB.requests.length;
      const held = hold(`re_${n}`);
      try {
        // Held, then the reload, then the approval.
        const id = await pendingId(`/pay/v1/refunds/re_${n}`);
        await reload(variant);
        await approve(id);
        const response = await held;
        expect(response.status, response.text).toBe(status);
        const problem = response.json<Problem>();
        expect(problem.code).toBe(code);
        expect(problem.detail).toContain('while the request waited');
        expect(problem.detail).toContain(detail);
        expect(upstreamA.requests.length + upstreamB.requests.length).toBe(before);
        const record = await eventually('its audit record', () => proxy.auditRecords().find((r) => r.request_id === response.headers['x-airlock-request-id']));
        expect(record).toMatchObject({ agent: 'holder', code, status, upstream_status: null });
        expect(record.approval).not.toBeNull();
      } finally {
        await held.catch(() => undefined);
        await reload({});
      }
    });
  }

  it('forwards it when the reload changed nothing it stands on', async () => {
    const before = upstreamA.requests.length;
    const held = hold('re_fine');
    const id = await pendingId('/pay/v1/refunds/re_fine');
    await reload({ bystander: true });
    await approve(id);
    const response = await held;
    expect(response.status, response.text).toBe(200);
    expect(upstreamA.requests.length).toBe(before + 1);
    expect(upstreamA.requests.at(-1)?.header('authorization')).toEqual([`Bearer ${keyA}`]);
    await reload({});
  });

  // Found by review: an async approval went to the upstream, and with the credential, a reload had put
  // in place, where a held request was refused.
  function refund(id: string, approval?: string): Promise<SentResponse> {
    return sendRequest(`${proxy.url}/pay/v1/refunds/${id}`, {
      method: 'POST',
      headers: { authorization: `Bearer ${asker.token}`, 'content-type': 'application/json', ...(approval === undefined ? {} : { 'x-airlock-approval': approval }) },
      body: JSON.stringify({ refund: id, amount: 5000 }),
    }).then((response) => {
      agentSeen.push(`${response.status}\n${JSON.stringify(response.headers)}\n${response.text}`);
      return response;
    });
  }

  async function approvedAsync(id: string): Promise<string> {
    const asked = await refund(id);
    expect(asked.status, asked.text).toBe(202);
    const approval = asked.json<{ approval_id: string }>().approval_id;
    await approve(approval);
    return approval;
  }

  for (const { what, variant } of cases.filter((c) => c.variant.upstream !== undefined || c.variant.secret !== undefined)) {
    it(`async: refuses the approved retry after a reload with ${what}, and sends nothing anywhere`, async () => {
      const approval = await approvedAsync(`re_async_${what.length}`);
      const before = upstreamA.requests.length + upstreamB.requests.length;
      try {
        await reload(variant);
        const redeemed = await refund(`re_async_${what.length}`, approval);
        expect(redeemed.status, redeemed.text).toBe(403);
        expect(redeemed.json<Problem>().code).toBe('approval_denied');
        expect(upstreamA.requests.length + upstreamB.requests.length).toBe(before);
      } finally {
        await reload({});
      }
    });
  }

  it('async: redeems the approved retry after a reload that changed nothing it stands on', async () => {
    const approval = await approvedAsync('re_async_fine');
    await reload({ bystander: true });
    const redeemed = await refund('re_async_fine', approval);
    expect(redeemed.status, redeemed.text).toBe(200);
    expect(upstreamA.requests.at(-1)?.header('authorization')).toEqual([`Bearer ${keyA}`]);
    await reload({});
  });
});
