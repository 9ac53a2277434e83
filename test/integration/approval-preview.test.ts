/**
 * What an approver sees of a held request's query and body, over real sockets: the admin API's
 * `preview`, the webhook's `preview` and Slack text, and the CLI's list, with key-shaped values and the
 * agent's own token masked (and nothing of them in the state file either), the amount shown; a body
 * longer than approvals.preview_bytes cut there, a key across the cut not partly shown; a binary body
 * described by size and type; preview_bytes 0: no preview; an approval an earlier version wrote to the
 * state file (no preview field) shows none, in the admin API and the CLI; through Redis, the other replica shows the
 * same preview, before and after a decision rewrites the record. The request itself still goes
 * upstream exactly as sent once approved. A token's base64 copy (an HTTP Basic value) is masked in the
 * preview, and so are the values of the service's strip_query keys (their keys shown); the CLI shows a
 * hidden character a preview from elsewhere in shared state still holds as "?".
 */
import { mkdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { generateAgentToken } from '../../src/identity/agent-token.js';
import { assertNoLeak, findLeaks } from '../helpers/assert-no-leak.js';
import { canary, plainCanary } from '../helpers/canary.js';
import { adminClient, eventually, runCliCapture, writeConfigFile, type AdminClient } from '../helpers/operator.js';
import { sendRequest, type SentResponse } from '../helpers/send-request.js';
import { startProxy, tempDir, type ProxyFixture } from '../helpers/start-proxy.js';
import { startUpstream, type Upstream } from '../helpers/start-upstream.js';
import { redisAvailable, startRedisServer, type RedisServer } from '../support/redis-server.js';

interface PreviewView {
  query: string | null;
  content_type: string | null;
  headers: Record<string, string>;
  body_bytes: number;
  body: string | null;
  truncated: boolean;
}

interface ApprovalView {
  id: string;
  agent: string;
  path: string;
  preview?: PreviewView | null;
}

const PREVIEW_BYTES = 2048;

/** The CLI's config: the admin listener at the address it was bound to (the proxy's is on port 0). */
function cliAdminSpec(proxy: ProxyFixture, adminSpec: { listen: string; tokens: unknown[] }): Record<string, unknown> {
  return { ...adminSpec, listen: new URL(proxy.airlock.adminUrl as string).host };
}

function call(base: string, token: string, path: string, body: string | Buffer, contentType: string, headers: Record<string, string> = {}): Promise<SentResponse> {
  return sendRequest(`${base}${path}`, { method: 'POST', headers: { authorization: `Bearer ${token}`, 'content-type': contentType, ...headers }, body, timeoutMs: 15_000 });
}

describe('approval preview', () => {
  const payKey = canary('pay-managed');
  const queryKey = canary('query-key');
  const noteKey = canary('note-key');
  const cutKey = canary('cut-key');
  const accountKey = canary('account-key');
  const holder = generateAgentToken();
  const alice = generateAgentToken();
  let upstream: Upstream;
  let webhook: Upstream;
  let proxy: ProxyFixture;
  let admin: AdminClient;
  let configDir: string;
  let cliConfig: string;
  const cliSeen: string[] = [];

  beforeAll(async () => {
    upstream = await startUpstream();
    webhook = await startUpstream();
    const adminSpec = { listen: '127.0.0.1:0', tokens: [{ name: 'alice', hash: alice.hash }] };
    proxy = await startProxy(
      {
        admin: adminSpec,
        approvals: { webhook: `${webhook.url}/hook` },
        services: {
          pay: {
            upstream: upstream.url,
            credential: { secret: 'env:PAY_KEY', inject: 'bearer' },
            strip_query: ['signature'],
            routes: [
              { method: 'POST', path: '/v1/charges', scope: 'charges:write', require_approval: true },
              { method: 'POST', path: '/v1/files', scope: 'charges:write', require_approval: true },
            ],
          },
        },
        agents: { holder: { tokens: [holder.hash], credentials: [{ service: 'pay', max_scope: ['charges:write'], approval_timeout: 20 }] } },
      },
      { env: { PAY_KEY: payKey } },
    );
    admin = adminClient(() => proxy.airlock.adminUrl as string, alice.token);
    configDir = tempDir('airlock-preview-cli-');
    cliConfig = writeConfigFile(configDir, { admin: cliAdminSpec(proxy, adminSpec) });
  });

  afterAll(async () => {
    await proxy?.close();
    await upstream?.close();
    await webhook?.close();
    if (configDir !== undefined) rmSync(configDir, { recursive: true, force: true });
  });

  async function pending(path: string): Promise<ApprovalView> {
    return eventually(`a pending approval for ${path}`, async () => {
      const response = await admin.call('GET', '/v1/approvals?status=pending');
      expect(response.status, response.text).toBe(200);
      return response.json<{ approvals: ApprovalView[] }>().approvals.find((a) => a.path === path);
    });
  }

  async function decide(id: string, decision: 'approve' | 'deny'): Promise<void> {
    const response = await admin.call('POST', `/v1/approvals/${id}/${decision}`, { reason: 'checked the preview' });
    expect(response.status, response.text).toBe(200);
  }

  function surfaces(): Array<{ name: string; text: string }> {
    return [
      { name: 'admin API answers', text: admin.seen.join('\n') },
      { name: 'webhook bodies', text: webhook.requests.map((r) => r.body.toString('utf8')).join('\n') },
      { name: 'CLI output', text: cliSeen.join('\n') },
      { name: 'state file', text: readFileSync(join(proxy.dataDir, 'state.jsonl'), 'utf8') },
      { name: 'audit log', text: proxy.auditText() },
      { name: 'log lines', text: proxy.logLines.join('') },
    ];
  }

  it('a held charge: the approver sees the amount and confirm=true; the keys and the agent token are masked everywhere', async () => {
    const body = `{"amount": 5000, "currency":"usd", "note": "${noteKey}", "token": "${holder.token}"}`;
    const path = '/pay/v1/charges';
    // Whose account it acts on, as an agent may spell it (approvals.bind_headers; Stripe_Account is
    // Stripe-Account to CGI-style servers), and a key where an account id belongs (a managed one would
    // be refused before any approval is asked: guard-request-secrets.ts).
    const accounts = { 'Stripe-Account': 'acct_1PREVIEW', Stripe_Account: 'acct_2OTHER', 'OpenAI-Project': accountKey };
    const held = call(proxy.url, holder.token, `${path}?confirm=true&api_key=${queryKey}`, body, 'application/json', accounts);
    held.catch(() => undefined);
    const approval = await pending(path);
    expect(approval.preview).toEqual({
      query: 'confirm=true&api_key=[REDACTED]',
      content_type: 'application/json',
      headers: { 'stripe-account': 'acct_1PREVIEW', stripe_account: 'acct_2OTHER', 'openai-project': '[REDACTED]' },
      body_bytes: Buffer.byteLength(body),
      body: '{"amount": 5000, "currency":"usd", "note": "[REDACTED]", "token": "alk_[REDACTED]"}',
      truncated: false,
    });

    // The webhook announcement carries the same preview, and its Slack text the start of it.
    const hook = await eventually('the announcement', () => webhook.requests.find((r) => r.body.toString('utf8').includes(approval.id)));
    const payload = JSON.parse(hook.body.toString('utf8')) as { preview: PreviewView; text: string };
    expect(payload.preview).toEqual(approval.preview);
    expect(payload.text).toContain('Query: `confirm=true&amp;api_key=[REDACTED]`');
    expect(payload.text).toContain('Headers: `stripe-account: acct_1PREVIEW; stripe_account: acct_2OTHER; openai-project: [REDACTED]`');
    expect(payload.text).toContain(`Body (${Buffer.byteLength(body)} bytes, application/json): \`{"amount": 5000, "currency":"usd"`);

    // The CLI's list: one line per part.
    const listed = await runCliCapture(['approvals', 'list', '--config', cliConfig], { AIRLOCK_ADMIN_TOKEN: alice.token }, cliSeen);
    expect(listed.code, listed.stderr).toBe(0);
    const lines = listed.stdout.split('\n');
    const at = lines.findIndex((line) => line.startsWith(approval.id));
    expect(lines[at + 1]).toBe('    query: confirm=true&api_key=[REDACTED]');
    expect(lines[at + 2]).toBe('    headers: stripe-account: acct_1PREVIEW; stripe_account: acct_2OTHER; openai-project: [REDACTED]');
    expect(lines[at + 3]).toBe(`    body: ${Buffer.byteLength(body)} bytes application/json  {"amount": 5000, "currency":"usd", "note": "[REDACTED]", "token": "alk_[REDACTED…`);

    await decide(approval.id, 'approve');
    const response = await held;
    expect(response.status, response.text).toBe(200);
    // Masking is for the approver only: the upstream gets the request as sent.
    const seen = upstream.requests.at(-1);
    expect(seen?.body.toString('utf8')).toBe(body);
    expect(seen?.target).toBe(`/v1/charges?confirm=true&api_key=${queryKey}`);

    assertNoLeak([queryKey, noteKey, accountKey, holder.token, payKey], surfaces());
  });

  it("a token's base64 copy (a Basic value) and a strip_query value: masked in the preview, keys shown", async () => {
    // Shaped like no key, so only the strip_query masking can hide it.
    const signature = plainCanary('signature');
    const basic = Buffer.from(`holder:${holder.token}`).toString('base64');
    const body = `{"amount": 6100, "upstream_auth": "Basic ${basic}", "token_b64": "${Buffer.from(holder.token).toString('base64url')}"}`;
    const held = call(proxy.url, holder.token, `/pay/v1/charges?confirm=b64&Signature[]=${signature}`, body, 'application/json');
    held.catch(() => undefined);
    const approval = await eventually('the base64 approval', async () => {
      const list = (await admin.call('GET', '/v1/approvals?status=pending')).json<{ approvals: ApprovalView[] }>().approvals;
      return list.find((a) => a.preview?.query?.startsWith('confirm=b64') === true);
    });
    expect(approval.preview).toEqual({
      query: 'confirm=b64&Signature[]=[REDACTED]',
      content_type: 'application/json',
      headers: {},
      body_bytes: Buffer.byteLength(body),
      body: '{"amount": 6100, "upstream_auth": "Basic [REDACTED]", "token_b64": "[REDACTED]"}',
      truncated: false,
    });
    await eventually('the announcement', () => webhook.requests.find((r) => r.body.toString('utf8').includes(approval.id)));
    await decide(approval.id, 'deny');
    expect((await held).status).toBe(403);
    // In any form (base64 at each alignment, either alphabet, among others), on every surface.
    assertNoLeak([holder.token, signature], surfaces());
  });

  it('a body longer than preview_bytes is cut there; a key across the cut is not partly shown', async () => {
    // The key starts 12 bytes before the cut: cut first, "sk-canary-cu" would be left, too short a run
    // for the key shape to recognize.
    const head = `{"amount": 7300, "pad": "${'x'.repeat(PREVIEW_BYTES - 48)}", "key": "`;
    expect(head.length).toBe(PREVIEW_BYTES - 12);
    expect(head.length + cutKey.length).toBeGreaterThan(PREVIEW_BYTES);
    const body = `${head}${cutKey}", "tail": "${'y'.repeat(500)}"}`;
    const held = call(proxy.url, holder.token, '/pay/v1/charges?long=1', body, 'application/json');
    held.catch(() => undefined);
    const approval = await eventually('the long approval', async () => {
      const list = (await admin.call('GET', '/v1/approvals?status=pending')).json<{ approvals: ApprovalView[] }>().approvals;
      return list.find((a) => a.preview?.query === 'long=1');
    });
    const preview = approval.preview as PreviewView;
    expect(preview.truncated).toBe(true);
    expect(preview.body_bytes).toBe(Buffer.byteLength(body));
    expect(Buffer.byteLength(preview.body as string)).toBeLessThanOrEqual(PREVIEW_BYTES);
    for (let n = 3; n <= cutKey.length; n++) expect(preview.body).not.toContain(cutKey.slice(0, n));
    expect(preview.body).toBe(`${head}[REDACTED]",`);
    await decide(approval.id, 'deny');
    expect((await held).status).toBe(403);
    assertNoLeak([cutKey], surfaces());
  });

  it('a binary body: no text, its size and content type', async () => {
    const png = Buffer.concat([Buffer.from([0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a]), Buffer.alloc(1200, 0xfe)]);
    const path = '/pay/v1/files';
    const held = call(proxy.url, holder.token, path, png, 'image/png');
    held.catch(() => undefined);
    const approval = await pending(path);
    expect(approval.preview).toEqual({ query: null, content_type: 'image/png', headers: {}, body_bytes: png.length, body: null, truncated: false });
    const listed = await runCliCapture(['approvals', 'list', '--config', cliConfig], { AIRLOCK_ADMIN_TOKEN: alice.token }, cliSeen);
    expect(listed.stdout).toContain('    body: 1,208 bytes image/png  (not text, not shown)\n');
    await decide(approval.id, 'deny');
    expect((await held).status).toBe(403);
  });
});

describe('approval preview: approvals.preview_bytes 0', () => {
  const holder = generateAgentToken();
  const alice = generateAgentToken();
  // Shaped like no key: were the body shown, shape masking would not hide it, so the leak check below can fail.
  const key = plainCanary('no-preview');
  let upstream: Upstream;
  let webhook: Upstream;
  let proxy: ProxyFixture;

  beforeAll(async () => {
    upstream = await startUpstream();
    webhook = await startUpstream();
    proxy = await startProxy({
      admin: { listen: '127.0.0.1:0', tokens: [{ name: 'alice', hash: alice.hash }] },
      approvals: { webhook: `${webhook.url}/hook`, preview_bytes: 0 },
      services: { pay: { upstream: upstream.url, credential: { secret: 'env:PAY_KEY' }, routes: [{ method: 'POST', path: '/v1/charges', scope: 'charges:write', require_approval: true }] } },
      agents: { holder: { tokens: [holder.hash], credentials: [{ service: 'pay', max_scope: ['charges:write'], approval_timeout: 20 }] } },
    }, { env: { PAY_KEY: canary('pay-zero') } });
  });

  afterAll(async () => {
    await proxy?.close();
    await upstream?.close();
    await webhook?.close();
  });

  it('no preview in the admin API nor in the webhook', async () => {
    const admin = adminClient(() => proxy.airlock.adminUrl as string, alice.token);
    const held = call(proxy.url, holder.token, '/pay/v1/charges?confirm=true', `{"amount": 5000, "note": "${key}"}`, 'application/json');
    held.catch(() => undefined);
    const approval = await eventually('the approval', async () => (await admin.call('GET', '/v1/approvals?status=pending')).json<{ approvals: ApprovalView[] }>().approvals[0]);
    expect(approval.preview).toBeNull();
    const hook = await eventually('the announcement', () => webhook.requests.find((r) => r.body.toString('utf8').includes(approval.id)));
    const payload = JSON.parse(hook.body.toString('utf8')) as { preview: unknown; text: string };
    expect(payload.preview).toBeNull();
    expect(payload.text).not.toContain('Body');
    // No query either: 0 turns off the preview of both (the path shown is the canonical one, no query).
    expect(payload.text).not.toContain('confirm=true');
    expect((await admin.call('POST', `/v1/approvals/${approval.id}/deny`, { reason: 'no' })).status).toBe(200);
    expect((await held).status).toBe(403);
    expect(findLeaks([key], [{ name: 'admin', text: admin.seen.join('\n') }, { name: 'webhook', text: hook.body.toString('utf8') }])).toEqual([]);
  });
});

describe('approval preview: an approval written by an earlier version', () => {
  const alice = generateAgentToken();
  let proxy: ProxyFixture;
  let dataDir: string;
  let configDir: string;

  beforeAll(async () => {
    dataDir = tempDir('airlock-preview-old-');
    mkdirSync(dataDir, { recursive: true });
    const now = Date.now();
    // As versions before the preview wrote it: no `preview` field.
    const approval = { id: 'apr_from_before', agent: 'holder', service: 'pay', route: '/v1/charges', scope: 'charges:write', method: 'POST', path: '/pay/v1/charges', binding: 'sha256:00', session: null, justification: null, taskId: null, mode: 'async', createdAt: now, expiresAt: now + 600_000, status: 'pending', decidedBy: null, reason: null, decidedAt: null };
    writeFileSync(join(dataDir, 'state.jsonl'), `${JSON.stringify({ type: 'approval.created', approval })}\n`, { mode: 0o600 });
    const adminSpec = { listen: '127.0.0.1:0', tokens: [{ name: 'alice', hash: alice.hash }] };
    proxy = await startProxy({ admin: adminSpec, services: {}, agents: {} }, { dataDir });
    configDir = tempDir('airlock-preview-old-cli-');
    writeConfigFile(configDir, { admin: cliAdminSpec(proxy, adminSpec) });
  });

  afterAll(async () => {
    await proxy?.close();
    for (const dir of [dataDir, configDir]) if (dir !== undefined) rmSync(dir, { recursive: true, force: true });
  });

  it('shows preview null, and the CLI lists it without preview lines', async () => {
    const admin = adminClient(() => proxy.airlock.adminUrl as string, alice.token);
    const listed = (await admin.call('GET', '/v1/approvals')).json<{ approvals: ApprovalView[] }>().approvals;
    expect(listed).toHaveLength(1);
    expect(listed[0]).toMatchObject({ id: 'apr_from_before', preview: null });
    const cli = await runCliCapture(['approvals', 'list', '--config', join(configDir, 'airlock.yaml')], { AIRLOCK_ADMIN_TOKEN: alice.token }, []);
    expect(cli.code, cli.stderr).toBe(0);
    expect(cli.stdout.trim().split('\n')).toHaveLength(1);
    expect(cli.stdout).toContain('apr_from_before');
  });
});

describe('approval preview: hidden characters left in a preview from elsewhere in shared state', () => {
  const alice = generateAgentToken();
  let proxy: ProxyFixture;
  let dataDir: string;
  let configDir: string;

  beforeAll(async () => {
    dataDir = tempDir('airlock-preview-hidden-');
    mkdirSync(dataDir, { recursive: true });
    const now = Date.now();
    // Not escaped, as a preview made elsewhere (another version, another writer of the state) may be.
    const preview = { query: 'to=alice\u2060bob', contentType: 'text/plain', bodyBytes: 16, body: 'pay\u2061me\ufeffnow\u2064\u2065\u202e', truncated: false };
    const approval = { id: 'apr_hidden', agent: 'holder', service: 'pay', route: '/v1/charges', scope: 'charges:write', method: 'POST', path: '/pay/v1/charges', binding: 'sha256:00', session: null, justification: null, taskId: null, mode: 'async', createdAt: now, expiresAt: now + 600_000, status: 'pending', decidedBy: null, reason: null, decidedAt: null, preview };
    writeFileSync(join(dataDir, 'state.jsonl'), `${JSON.stringify({ type: 'approval.created', approval })}\n`, { mode: 0o600 });
    const adminSpec = { listen: '127.0.0.1:0', tokens: [{ name: 'alice', hash: alice.hash }] };
    proxy = await startProxy({ admin: adminSpec, services: {}, agents: {} }, { dataDir });
    configDir = tempDir('airlock-preview-hidden-cli-');
    writeConfigFile(configDir, { admin: cliAdminSpec(proxy, adminSpec) });
  });

  afterAll(async () => {
    await proxy?.close();
    for (const dir of [dataDir, configDir]) if (dir !== undefined) rmSync(dir, { recursive: true, force: true });
  });

  it("the CLI's list shows each as \"?\" (the BOM, whitespace to JavaScript, as a space), the preview's own set", async () => {
    const cli = await runCliCapture(['approvals', 'list', '--config', join(configDir, 'airlock.yaml')], { AIRLOCK_ADMIN_TOKEN: alice.token }, []);
    expect(cli.code, cli.stderr).toBe(0);
    const lines = cli.stdout.split('\n');
    expect(lines[1]).toBe('    query: to=alice?bob');
    expect(lines[2]).toBe('    body: 16 bytes text/plain  pay?me now???');
  });
});

describe.skipIf(!redisAvailable())('approval preview: shared through Redis', () => {
  const holder = generateAgentToken();
  const alice = generateAgentToken();
  let redis: RedisServer;
  let upstream: Upstream;
  const proxies: ProxyFixture[] = [];

  beforeAll(async () => {
    redis = await startRedisServer();
    upstream = await startUpstream();
    for (let i = 0; i < 2; i++) {
      proxies.push(
        await startProxy({
          state: { type: 'redis', url: redis.url },
          admin: { listen: '127.0.0.1:0', tokens: [{ name: 'alice', hash: alice.hash }] },
          services: { pay: { upstream: upstream.url, credential: { secret: 'env:PAY_KEY' }, routes: [{ method: 'POST', path: '/v1/charges', scope: 'charges:write', require_approval: true }] } },
          agents: { holder: { tokens: [holder.hash], credentials: [{ service: 'pay', max_scope: ['charges:write'], approval_timeout: 20 }] } },
        }, { env: { PAY_KEY: canary('pay-redis') } }),
      );
    }
  });

  afterAll(async () => {
    for (const proxy of proxies) await proxy.close();
    await upstream?.close();
    await redis?.close();
  });

  it('held on A: B shows the same preview, and both still do once B decided', async () => {
    const [a, b] = proxies as [ProxyFixture, ProxyFixture];
    const adminA = adminClient(() => a.airlock.adminUrl as string, alice.token);
    const adminB = adminClient(() => b.airlock.adminUrl as string, alice.token);
    const body = '{"amount": 5000, "memo": "caf\u00e9 \u20ac / \\ \"x\"", "raw": "€ 😀"}';
    const held = call(a.url, holder.token, '/pay/v1/charges?confirm=true', body, 'application/json', { 'Stripe-Account': 'acct_REDIS1' });
    held.catch(() => undefined);
    const expected = { query: 'confirm=true', content_type: 'application/json', headers: { 'stripe-account': 'acct_REDIS1' }, body_bytes: Buffer.byteLength(body), body, truncated: false };
    const onB = await eventually('the approval on B', async () => (await adminB.call('GET', '/v1/approvals?status=pending')).json<{ approvals: ApprovalView[] }>().approvals[0]);
    expect(onB.preview).toEqual(expected);
    expect((await adminB.call('POST', `/v1/approvals/${onB.id}/approve`, { reason: 'ok' })).status).toBe(200);
    expect((await held).status).toBe(200);
    for (const admin of [adminA, adminB]) {
      const all = (await admin.call('GET', '/v1/approvals')).json<{ approvals: Array<ApprovalView & { status: string }> }>().approvals;
      expect(all.find((x) => x.id === onB.id)).toMatchObject({ status: 'consumed', preview: expected });
    }
  });
});
