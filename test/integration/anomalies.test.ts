/**
 * Anomaly detection end to end over real sockets (issue 7), with small thresholds: a denial storm with
 * action `suspend` revokes the agent through the kill switch, so its next request gets 401; the audit
 * trail says the detector did it and why, GET /v1/revocations shows it, and restoring the agent through
 * the admin API lets it through again. An alert-only rule (a first-time route after the warm-up) raises
 * an event visible in GET /v1/anomalies, in airlock_anomalies_total and at the anomaly webhook, and
 * the agent keeps working. `airlock anomalies` lists the events. A steady agent past its warm-up
 * raises nothing; a burst of its requests raises rate_spike and one large response volume_spike, each
 * in GET /v1/anomalies, the metric and the audit trail. No canary reaches any of it.
 */
import { execFileSync } from 'node:child_process';
import { createReadStream, rmSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { generateAgentToken } from '../../src/identity/agent-token.js';
import type { AuditRecord } from '../../src/observability/audit-record.js';
import { assertNoLeak } from '../helpers/assert-no-leak.js';
import { canary } from '../helpers/canary.js';
import { adminClient, eventually, freePort, runCliCapture, sleep, writeConfigFile, type AdminClient, type CliRun } from '../helpers/operator.js';
import { sendRequest, type Problem, type SentResponse } from '../helpers/send-request.js';
import { startProxy, tempDir, type ProxyFixture } from '../helpers/start-proxy.js';
import { echoHandler, refusingHandler, startUpstream, type Upstream } from '../helpers/start-upstream.js';

interface AnomalyView {
  id: string;
  at: string;
  rule: string;
  action: string;
  agent: string;
  service: string | null;
  evidence: Record<string, string | number>;
  summary: string;
}

interface WebhookBody extends AnomalyView {
  type: string;
  text: string;
}

describe('anomaly detection end to end', () => {
  const llmKey = canary('anomaly-llm');
  const prober = generateAgentToken();
  const explorer = generateAgentToken();
  const alice = generateAgentToken();
  const agentSeen: string[] = [];
  const cliSeen: string[] = [];
  let llm: Upstream;
  let hooks: Upstream;
  let proxy: ProxyFixture;
  let admin: AdminClient;
  let configDir: string;
  let cliConfig: string;

  beforeAll(async () => {
    // The upstream echoes the request, Authorization included: the injected key comes back and must be
    // redacted from what the agent gets, and it must not surface in events either.
    llm = await startUpstream(echoHandler);
    hooks = await startUpstream();
    const port = await freePort();
    proxy = await startProxy(
      {
        admin: { listen: `127.0.0.1:${port}`, tokens: [{ name: 'alice', hash: alice.hash }] },
        anomalies: {
          // The schema wants a positive duration; a millisecond is as good as none here.
          warmup: { requests: 10, seconds: 0.001 },
          cooldown: 60,
          webhook: `${hooks.url}/anomaly`,
          // Keep the rate and volume rules out of the way of the ones under test.
          rate_spike: { min_requests: 1000 },
          volume_spike: { min_bytes: 100 * 1024 * 1024 },
          denial_burst: { count: 5, window: 60, action: 'suspend' },
          new_route: { action: 'alert' },
          new_scope: { action: 'alert' },
        },
        services: {
          llm: {
            upstream: llm.url,
            credential: { secret: 'env:LLM_KEY', inject: 'bearer' },
            routes: [
              { method: 'GET', path: '/v1/models', scope: 'models:read' },
              { method: 'GET', path: '/v1/files/:id', scope: 'files:read' },
              { method: 'POST', path: '/v1/admin/keys', scope: 'admin:write' },
            ],
          },
        },
        agents: {
          prober: { tokens: [prober.hash], credentials: [{ service: 'llm', max_scope: ['models:read'] }] },
          explorer: { tokens: [explorer.hash], credentials: [{ service: 'llm', max_scope: ['*'] }] },
        },
      },
      { env: { LLM_KEY: llmKey } },
    );
    admin = adminClient(() => proxy.airlock.adminUrl as string, alice.token);
    configDir = tempDir('airlock-anomalies-cli-');
    cliConfig = writeConfigFile(configDir, { admin: { listen: `127.0.0.1:${port}`, tokens: [alice.hash] } });
  });

  afterAll(async () => {
    await proxy?.close();
    await llm?.close();
    await hooks?.close();
    if (configDir !== undefined) rmSync(configDir, { recursive: true, force: true });
  });

  async function call(token: string, path: string, method = 'GET'): Promise<SentResponse> {
    const response = await sendRequest(`${proxy.url}${path}`, { method, headers: { authorization: `Bearer ${token}` }, timeoutMs: 15_000 });
    agentSeen.push(`${response.status}\n${JSON.stringify(response.headers)}\n${response.text}`);
    return response;
  }

  function cli(args: string[]): Promise<CliRun> {
    return runCliCapture(['anomalies', ...args, '--config', cliConfig], { AIRLOCK_ADMIN_TOKEN: alice.token }, cliSeen);
  }

  async function anomalies(agent?: string): Promise<AnomalyView[]> {
    const response = await admin.call('GET', agent === undefined ? '/v1/anomalies' : `/v1/anomalies?agent=${agent}`);
    expect(response.status, response.text).toBe(200);
    return response.json<{ anomalies: AnomalyView[] }>().anomalies;
  }

  async function metric(rule: string, action: string): Promise<number> {
    const response = await sendRequest(`${proxy.airlock.adminUrl as string}/metrics`);
    expect(response.status).toBe(200);
    admin.seen.push(response.text);
    const line = response.text.split('\n').find((l) => l.startsWith('airlock_anomalies_total{') && l.includes(`rule="${rule}"`) && l.includes(`action="${action}"`));
    return line === undefined ? 0 : Number(line.split(' ').at(-1));
  }

  function webhookBodies(): WebhookBody[] {
    return hooks.requests.map((r) => JSON.parse(r.body.toString('utf8')) as WebhookBody);
  }

  function auditOf(response: SentResponse): Promise<AuditRecord> {
    const id = response.headers['x-airlock-request-id'];
    return eventually(`the audit record of ${String(id)}`, () => proxy.auditRecords().find((r) => r.request_id === id));
  }

  it('a steady start raises nothing', async () => {
    for (let i = 0; i < 3; i++) {
      const response = await call(prober.token, '/llm/v1/models');
      expect(response.status, response.text).toBe(200);
      expect(response.text).not.toContain(llmKey);
    }
    expect(await anomalies()).toEqual([]);
    expect(hooks.requests).toHaveLength(0);
  });

  it('a denial storm with action suspend: the next request gets 401, revoked by anomaly-detector', async () => {
    const forwardedBefore = llm.requests.length;
    // Probing: routes it has no scope for, paths no route allows, a service that does not exist.
    const probes: Array<[string, string]> = [
      ['GET', '/llm/v1/files/f-1'],
      ['POST', '/llm/v1/admin/keys'],
      ['GET', '/llm/v1/internal/debug'],
      ['GET', '/nope/v1/models'],
      ['GET', '/llm/v1/files/f-2'],
    ];
    const statuses: number[] = [];
    for (const [method, path] of probes) statuses.push((await call(prober.token, path, method)).status);
    expect(statuses).toEqual([403, 403, 403, 404, 403]);

    // The suspension is in force once the kill switch has it (a bounded wait: the fifth denial is
    // answered before the revocation is kept and applied; see the last describe of this file).
    await eventually('the suspension', async () => (await admin.call('GET', '/v1/revocations')).json<{ revocations: Array<{ target: string }> }>().revocations.some((r) => r.target === 'prober'));
    const next = await call(prober.token, '/llm/v1/models');
    expect(next.status, next.text).toBe(401);
    const problem = next.json<Problem>();
    expect(problem.code).toBe('unauthenticated');
    // Which rule tripped, and that the detector did it, are the operators' (the audit record's reason):
    // an agent that probes would learn what to stay under.
    expect(problem.detail).toContain('Agent prober was revoked;');
    expect(next.text).not.toContain('anomaly-detector');
    expect(next.text).not.toContain('denial_burst');
    const refusal = await eventually('the refusal record', () => proxy.auditRecords().find((r) => r.request_id === next.headers['x-airlock-request-id']));
    expect(refusal.reason).toContain('Agent prober was revoked (by anomaly-detector: anomaly denial_burst');
    expect(llm.requests.length).toBe(forwardedBefore);
    // And the one after that.
    expect((await call(prober.token, '/llm/v1/models')).status).toBe(401);
    expect(llm.requests.length).toBe(forwardedBefore);

    const events = await anomalies('prober');
    expect(events).toHaveLength(1);
    expect(events[0]).toMatchObject({ rule: 'denial_burst', action: 'suspend', agent: 'prober', service: null, evidence: { denials: 5, window_s: 60, threshold: 5 } });
    expect(Number.isNaN(Date.parse((events[0] as AnomalyView).at))).toBe(false);
  });

  it('the audit trail has the anomaly record: actor anomaly-detector, route anomaly:denial_burst, the evidence as reason', async () => {
    const record = await eventually('the anomaly audit record', () => proxy.auditRecords().find((r) => r.route === 'anomaly:denial_burst'));
    expect(record).toMatchObject({ agent: 'prober', actor: 'anomaly-detector', decision: 'deny', service: null });
    expect(record.reason).toContain('5 requests refused by policy in 60 s (threshold 5), the last scope_denied on /v1/files/:id: probing');
    expect(record.reason).toContain('action suspend');
    const [event] = await anomalies('prober');
    expect(record.reason).toContain((event as AnomalyView).id);
  });

  it('the revocation shows in GET /v1/revocations and /v1/agents with by "anomaly-detector"', async () => {
    const response = await admin.call('GET', '/v1/revocations');
    expect(response.status, response.text).toBe(200);
    const revocations = response.json<{ revocations: Array<{ kind: string; target: string; by: string; reason: string }> }>().revocations;
    const revocation = revocations.find((r) => r.kind === 'agent' && r.target === 'prober');
    expect(revocation).toMatchObject({ by: 'anomaly-detector' });
    expect(revocation?.reason).toContain('anomaly denial_burst');
    const agents = (await admin.call('GET', '/v1/agents')).json<{ agents: Array<{ name: string; status: string; revoked: { by: string } | null }> }>().agents;
    expect(agents.find((a) => a.name === 'prober')).toMatchObject({ status: 'revoked', revoked: { by: 'anomaly-detector' } });
    expect(agents.find((a) => a.name === 'explorer')).toMatchObject({ status: 'active' });
    expect(await metric('denial_burst', 'suspend')).toBe(1);
  });

  it('the suspension is announced at the webhook, saying how to restore the agent', async () => {
    const hook = await eventually('the denial_burst webhook', () => webhookBodies().find((b) => b.rule === 'denial_burst'));
    expect(hooks.requests[0]?.header('content-type')[0]).toContain('application/json');
    expect(hook).toMatchObject({ type: 'airlock.anomaly', rule: 'denial_burst', action: 'suspend', agent: 'prober', evidence: { denials: 5, threshold: 5 } });
    expect(hook.text).toContain('denial_burst');
    expect(hook.text).toContain('prober');
    expect(hook.text).toContain('airlock restore agent prober');
  });

  it('restoring through the admin API (POST /v1/agents/:name/restore) lets the agent through again', async () => {
    const restored = await admin.call('POST', '/v1/agents/prober/restore');
    expect(restored.status, restored.text).toBe(200);
    const before = llm.requests.length;
    const response = await call(prober.token, '/llm/v1/models');
    expect(response.status, response.text).toBe(200);
    expect(llm.requests.length).toBe(before + 1);
    expect(llm.requests.at(-1)?.header('authorization')).toEqual([`Bearer ${llmKey}`]);
    expect((await admin.call('GET', '/v1/revocations')).json<{ revocations: unknown[] }>().revocations).toEqual([]);
    const change = await eventually('the restore audit record', () => proxy.auditRecords().find((r) => r.route === '/v1/agents/:name/restore'));
    expect(change).toMatchObject({ actor: 'alice', agent: 'prober' });
  });

  it('an alert-only rule (new_route after the warm-up): event, metric and webhook; the agent keeps working', async () => {
    // Warm-up: 10 requests on the route it usually calls.
    for (let i = 0; i < 10; i++) expect((await call(explorer.token, '/llm/v1/models')).status).toBe(200);
    expect(await anomalies('explorer')).toEqual([]);

    const first = await call(explorer.token, '/llm/v1/files/report-7');
    expect(first.status, first.text).toBe(200);
    const events = await eventually('the new_route event', async () => {
      const list = await anomalies('explorer');
      return list.some((e) => e.rule === 'new_route') ? list : undefined;
    });
    expect(events.find((e) => e.rule === 'new_route')).toMatchObject({ action: 'alert', agent: 'explorer', service: 'llm', evidence: { route: '/v1/files/:id' } });
    // Its scope was new too.
    expect(events.find((e) => e.rule === 'new_scope')).toMatchObject({ action: 'alert', agent: 'explorer', service: 'llm', evidence: { scope: 'files:read' } });
    expect(await metric('new_route', 'alert')).toBe(1);
    expect(await metric('new_scope', 'alert')).toBe(1);

    const hook = await eventually('the new_route webhook', () => webhookBodies().find((b) => b.rule === 'new_route'));
    expect(hook).toMatchObject({ type: 'airlock.anomaly', rule: 'new_route', action: 'alert', agent: 'explorer', service: 'llm', evidence: { route: '/v1/files/:id' } });
    expect(typeof hook.text).toBe('string');
    expect(hook.text).toContain('new_route');
    expect(hook.text).toContain('explorer');
    expect(hook.text).not.toContain('suspended');

    // Alert only: nothing revoked, the agent goes on, on the new route and the old one.
    expect((await call(explorer.token, '/llm/v1/files/report-8')).status).toBe(200);
    expect((await call(explorer.token, '/llm/v1/models')).status).toBe(200);
    expect((await admin.call('GET', '/v1/revocations')).json<{ revocations: unknown[] }>().revocations).toEqual([]);
    const record = await eventually('the new_route audit record', () => proxy.auditRecords().find((r) => r.route === 'anomaly:new_route'));
    expect(record).toMatchObject({ agent: 'explorer', service: 'llm', actor: 'anomaly-detector', decision: 'allow' });
    // Used again, the route is no longer new: still one new_route event.
    expect((await anomalies('explorer')).filter((e) => e.rule === 'new_route')).toHaveLength(1);
  });

  it('`airlock anomalies` lists the events with their evidence', async () => {
    const listed = await cli([]);
    expect(listed.code, listed.stderr).toBe(0);
    const lines = listed.stdout.trim().split('\n');
    expect(lines).toHaveLength(3);
    expect(listed.stdout).toMatch(/denial_burst\s+suspend\s+prober\s+5 requests refused by policy in 60 s/);
    expect(listed.stdout).toMatch(/new_route\s+alert\s+explorer\/llm\s+first use of route \/v1\/files\/:id/);
    expect(listed.stdout).toMatch(/new_scope\s+alert\s+explorer\/llm/);

    const json = await cli(['--json', '--agent', 'explorer']);
    expect(json.code, json.stderr).toBe(0);
    const events = JSON.parse(json.stdout) as AnomalyView[];
    expect(events.map((e) => e.rule).sort()).toEqual(['new_route', 'new_scope']);
    const newRoute = events.find((e) => e.rule === 'new_route');
    expect(newRoute?.evidence).toEqual({ route: '/v1/files/:id', request_id: expect.stringMatching(/^[0-9a-f-]{36}$/) });
    // Joinable (found by the observability walkthrough): the request that raised it is in the audit trail.
    const raisedBy = proxy.auditRecords().find((r) => r.request_id === newRoute?.evidence['request_id']);
    expect(raisedBy).toMatchObject({ agent: 'explorer', route: '/v1/files/:id' });
    const eventRecord = proxy.auditRecords().find((r) => r.route === 'anomaly:new_route');
    expect(eventRecord?.reason).toContain(`raised by request ${String(newRoute?.evidence['request_id'])}`);

    const limited = await cli(['--limit', '1']);
    expect(limited.code).toBe(0);
    expect(limited.stdout.trim().split('\n')).toHaveLength(1);
  });

  it('`airlock anomalies` without an admin token is refused with a clear message', async () => {
    const run = await runCliCapture(['anomalies', '--config', cliConfig], {}, cliSeen);
    expect(run.code).toBe(1);
    expect(run.stderr).toContain('AIRLOCK_ADMIN_TOKEN');
    const wrong = await runCliCapture(['anomalies', '--config', cliConfig], { AIRLOCK_ADMIN_TOKEN: prober.token }, cliSeen);
    expect(wrong.code).toBe(1);
    expect(wrong.stdout).toBe('');
  });

  it('no canary or token in events, webhook bodies, logs, audit, admin or CLI output, or agent responses', async () => {
    const events = await admin.call('GET', '/v1/anomalies');
    assertNoLeak([llmKey, prober.token, explorer.token, alice.token], [
      { name: 'anomaly events', text: events.text },
      { name: 'webhook bodies', text: hooks.requests.map((r) => `${r.rawHeaders.join('\n')}\n${r.body.toString('utf8')}`).join('\n') },
      { name: 'logs', text: proxy.logLines.join('') },
      { name: 'audit', text: proxy.auditText() },
      { name: 'admin answers and metrics', text: admin.seen.join('\n') },
      { name: 'CLI output', text: cliSeen.join('\n') },
    ]);
    assertNoLeak([llmKey], [{ name: 'agent responses', text: agentSeen.join('\n') }]);
    // The anomaly log lines are there, with the rule and the evidence.
    const warnings = proxy.logRecords().filter((r) => typeof r['msg'] === 'string' && (r['msg'] as string).startsWith('anomaly:'));
    expect(warnings.map((w) => w['rule']).sort()).toEqual(['denial_burst', 'new_route', 'new_scope']);
  });
});

describe('suspend and the very next request', () => {
  const key = canary('anomaly-race');
  const agent = generateAgentToken();
  let llm: Upstream;
  let proxy: ProxyFixture;
  let fifo: string;

  beforeAll(async () => {
    llm = await startUpstream();
    proxy = await startProxy(
      {
        anomalies: { denial_burst: { count: 5, window: 60, action: 'suspend' } },
        services: { llm: { upstream: llm.url, credential: { secret: 'env:LLM_KEY' }, routes: [{ method: 'GET', path: '/v1/models', scope: 'models:read' }] } },
        agents: { hasty: { tokens: [agent.hash], credentials: [{ service: 'llm', max_scope: ['models:read'] }] } },
      },
      { env: { LLM_KEY: key } },
    );
    // A slow state store, made deterministic: data_dir/state.jsonl becomes a named pipe, so keeping a
    // governance event waits until someone reads it (as a write to a slow disk or to Redis waits).
    fifo = join(proxy.dataDir, 'state.jsonl');
    rmSync(fifo, { force: true });
    execFileSync('mkfifo', ['-m', '600', fifo]);
  });

  afterAll(async () => {
    // Reading the pipe lets the pending write finish, so the proxy can close.
    const reader = createReadStream(fifo);
    reader.on('data', () => undefined);
    reader.on('error', () => undefined);
    await proxy?.close();
    reader.destroy();
    await llm?.close();
  });

  // The denial that trips the detector is observed before it is answered, and a revocation applies in
  // memory before the state store keeps it: here the state write is held (a named pipe) so a slow store
  // is deterministic, and the next request is still refused.
  it('the request sent right after the fifth denial is refused, even while the state store is slow', async () => {
    for (let i = 0; i < 5; i++) {
      const denied = await sendRequest(`${proxy.url}/llm/v1/admin/${i}`, { headers: { authorization: `Bearer ${agent.token}` } });
      expect(denied.status).toBe(403);
    }
    const next = await sendRequest(`${proxy.url}/llm/v1/models`, { headers: { authorization: `Bearer ${agent.token}` }, timeoutMs: 5_000 }).catch((error: Error) => error);
    expect(llm.requests).toHaveLength(0);
    expect(next instanceof Error ? next.message : next.status).toBe(401);
  });
});

// Found by review: the rules that look at allowed requests ran once the request was answered, so with
// action suspend the request that tripped one (a first call to a route) reached its upstream anyway.
describe('suspend on a request rule, before the request is forwarded', () => {
  const key = canary('anomaly-screen');
  const agent = generateAgentToken();
  const seen: SentResponse[] = [];
  let llm: Upstream;
  let proxy: ProxyFixture;

  beforeAll(async () => {
    llm = await startUpstream(echoHandler);
    proxy = await startProxy(
      {
        anomalies: { warmup: { requests: 3, seconds: 0.001 }, new_route: { action: 'suspend' }, rate_spike: { min_requests: 1000 } },
        services: {
          llm: {
            upstream: llm.url,
            credential: { secret: 'env:SCREEN_KEY', inject: 'bearer' },
            routes: [
              { method: 'GET', path: '/v1/models', scope: 'models:read' },
              { method: 'GET', path: '/v1/files/:id', scope: 'models:read' },
            ],
          },
        },
        agents: { curious: { tokens: [agent.hash], credentials: [{ service: 'llm', max_scope: ['models:read'] }] } },
      },
      { env: { SCREEN_KEY: key } },
    );
  });

  afterAll(async () => {
    assertNoLeak([key, agent.token], [...seen.map((r, i) => ({ name: `response ${i}`, text: `${JSON.stringify(r.headers)}\n${r.text}` })), { name: 'log', text: proxy.logLines.join('\n') }, { name: 'audit', text: proxy.auditText() }]);
    await proxy?.close();
    await llm?.close();
  });

  async function call(path: string): Promise<SentResponse> {
    const response = await sendRequest(`${proxy.url}${path}`, { headers: { authorization: `Bearer ${agent.token}` } });
    seen.push(response);
    return response;
  }

  it('the first call to a new route after the warm-up is refused with 401, and the upstream never sees it', async () => {
    for (let i = 0; i < 3; i++) expect((await call('/llm/v1/models')).status).toBe(200);
    const tripped = await call('/llm/v1/files/f-1');
    expect(tripped.status, tripped.text).toBe(401);
    expect(tripped.json<Problem>().code).toBe('unauthenticated');
    expect(llm.requests.map((r) => r.target)).toEqual(['/v1/models', '/v1/models', '/v1/models']);
    // Suspended: the known route is refused too, until an operator restores the agent.
    expect((await call('/llm/v1/models')).status).toBe(401);
    expect(llm.requests).toHaveLength(3);
    const refused = await eventually('the refusal in the audit trail', () => proxy.auditRecords().find((r) => r.request_id === tripped.headers['x-airlock-request-id']));
    expect(refused).toMatchObject({ decision: 'deny', code: 'unauthenticated', route: '/v1/files/:id', status: 401 });
    expect(refused.reason).toContain('new_route');
    const event = await eventually('the anomaly record', () => proxy.auditRecords().find((r) => r.route === 'anomaly:new_route'));
    expect(event).toMatchObject({ agent: 'curious', actor: 'anomaly-detector' });
  });
});

/**
 * The baseline rules over real sockets. The baselines are hour-long averages, so in a test of seconds
 * the baseline is near zero and `min_requests` / `min_bytes` decide: a steady agent stays under them
 * past its warm-up, then a burst of requests (rate_spike) or one large response (volume_spike) goes over.
 * Windows of 2 s: a burst that takes under a second lies within one window whatever second it starts in.
 */
describe('rate and volume spikes over real sockets', () => {
  const llmKey = canary('anomaly-spike-llm');
  const steady = generateAgentToken();
  const reader = generateAgentToken();
  const alice = generateAgentToken();
  const EXPORT_BYTES = 320 * 1024;
  const agentSeen: string[] = [];
  let llm: Upstream;
  let proxy: ProxyFixture;
  let admin: AdminClient;

  beforeAll(async () => {
    // /v1/files/export is a large document; everything else echoes the request, the injected key
    // included, so the redaction of what the agent gets is exercised on every response.
    llm = await startUpstream((req, res, recorded) => {
      if (recorded.target !== '/v1/files/export') return echoHandler(req, res, recorded);
      const body = JSON.stringify({ id: 'export', data: 'x'.repeat(EXPORT_BYTES) });
      res.writeHead(200, { 'content-type': 'application/json', 'content-length': Buffer.byteLength(body) });
      res.end(body);
    });
    proxy = await startProxy(
      {
        admin: { listen: '127.0.0.1:0', tokens: [{ name: 'alice', hash: alice.hash }] },
        anomalies: {
          warmup: { requests: 5, seconds: 0.001 },
          cooldown: 60,
          rate_spike: { factor: 5, window: 2, min_requests: 15, action: 'alert' },
          volume_spike: { factor: 10, window: 2, min_bytes: 256 * 1024, action: 'alert' },
        },
        services: {
          llm: {
            upstream: llm.url,
            credential: { secret: 'env:LLM_KEY', inject: 'bearer' },
            routes: [
              { method: 'GET', path: '/v1/models', scope: 'models:read' },
              { method: 'GET', path: '/v1/files/:id', scope: 'files:read' },
            ],
          },
        },
        agents: {
          steady: { tokens: [steady.hash], credentials: [{ service: 'llm', max_scope: ['models:read'] }] },
          reader: { tokens: [reader.hash], credentials: [{ service: 'llm', max_scope: ['files:read'] }] },
        },
      },
      { env: { LLM_KEY: llmKey } },
    );
    admin = adminClient(() => proxy.airlock.adminUrl as string, alice.token);
  });

  afterAll(async () => {
    await proxy?.close();
    await llm?.close();
  });

  async function call(token: string, path: string): Promise<SentResponse> {
    const response = await sendRequest(`${proxy.url}${path}`, { headers: { authorization: `Bearer ${token}` }, timeoutMs: 15_000 });
    agentSeen.push(`${response.status}\n${JSON.stringify(response.headers)}\n${response.text}`);
    expect(response.status, response.text).toBe(200);
    expect(response.text).not.toContain(llmKey);
    return response;
  }

  /** Ten requests 50 ms apart: past the warm-up of 5, under the minimums of the spike rules. */
  async function steadily(token: string, path: (i: number) => string): Promise<void> {
    for (let i = 0; i < 10; i++) {
      await call(token, path(i));
      await sleep(50);
    }
  }

  async function anomalies(agent: string): Promise<AnomalyView[]> {
    const response = await admin.call('GET', `/v1/anomalies?agent=${agent}`);
    expect(response.status, response.text).toBe(200);
    return response.json<{ anomalies: AnomalyView[] }>().anomalies;
  }

  async function metric(rule: string, action: string): Promise<number> {
    const response = await sendRequest(`${proxy.airlock.adminUrl as string}/metrics`);
    expect(response.status).toBe(200);
    admin.seen.push(response.text);
    const line = response.text.split('\n').find((l) => l.startsWith('airlock_anomalies_total{') && l.includes(`rule="${rule}"`) && l.includes(`action="${action}"`));
    return line === undefined ? 0 : Number(line.split(' ').at(-1));
  }

  it('a steady agent builds a baseline past its warm-up without an event; then a burst of 30 raises rate_spike', async () => {
    await steadily(steady.token, () => '/llm/v1/models');
    expect(await anomalies('steady')).toEqual([]);
    expect(await metric('rate_spike', 'alert')).toBe(0);

    const forwardedBefore = llm.requests.length;
    await Promise.all(Array.from({ length: 30 }, () => call(steady.token, '/llm/v1/models')));
    // Alert only: every request of the burst went through, with the key injected.
    expect(llm.requests.length - forwardedBefore).toBe(30);
    for (const forwarded of llm.requests.slice(forwardedBefore)) expect(forwarded.header('authorization')).toEqual([`Bearer ${llmKey}`]);

    const events = await eventually('the rate_spike event', async () => {
      const list = await anomalies('steady');
      return list.length > 0 ? list : undefined;
    });
    // One event (the cooldown holds back the rest of the burst), and no other rule.
    expect(events.map((e) => e.rule)).toEqual(['rate_spike']);
    const event = events[0] as AnomalyView;
    expect(event).toMatchObject({ rule: 'rate_spike', action: 'alert', agent: 'steady', service: 'llm', evidence: { window_s: 2, factor: 5 } });
    const requests = event.evidence['requests'] as number;
    expect(requests).toBeGreaterThanOrEqual(15);
    expect(requests).toBeLessThanOrEqual(40);
    expect(event.evidence['baseline'] as number).toBeLessThan(requests / 5);
    expect(event.summary).toContain(`${requests} requests in 2 s`);
    expect(await metric('rate_spike', 'alert')).toBe(1);

    const record = await eventually('the rate_spike audit record', () => proxy.auditRecords().find((r) => r.route === 'anomaly:rate_spike'));
    expect(record).toMatchObject({ agent: 'steady', service: 'llm', actor: 'anomaly-detector', decision: 'allow' });
    expect(record.reason).toContain(event.id);
    expect(record.reason).toContain('action alert');

    // The agent keeps working; nothing was revoked.
    await call(steady.token, '/llm/v1/models');
    expect((await admin.call('GET', '/v1/revocations')).json<{ revocations: unknown[] }>().revocations).toEqual([]);
  });

  it('a steady reader of small files, then one large export, raises volume_spike', async () => {
    await steadily(reader.token, (i) => `/llm/v1/files/note-${i}`);
    expect(await anomalies('reader')).toEqual([]);
    expect(await metric('volume_spike', 'alert')).toBe(0);

    const exported = await call(reader.token, '/llm/v1/files/export');
    expect(exported.body.length).toBeGreaterThan(EXPORT_BYTES);

    const events = await eventually('the volume_spike event', async () => {
      const list = await anomalies('reader');
      return list.length > 0 ? list : undefined;
    });
    // Same route and scope as the steady reads, and eleven requests: only the volume is unusual.
    expect(events.map((e) => e.rule)).toEqual(['volume_spike']);
    const event = events[0] as AnomalyView;
    expect(event).toMatchObject({ rule: 'volume_spike', action: 'alert', agent: 'reader', service: 'llm', evidence: { window_s: 2, factor: 10 } });
    const bytes = event.evidence['bytes'] as number;
    // The export, plus whatever of the small echoes still lies within the window.
    expect(bytes).toBeGreaterThanOrEqual(exported.body.length);
    expect(bytes).toBeLessThan(exported.body.length + 64 * 1024);
    expect(event.evidence['baseline_bytes'] as number).toBeLessThan(bytes / 10);
    expect(event.summary).toContain(`${bytes} response bytes in 2 s`);
    expect(await metric('volume_spike', 'alert')).toBe(1);
    // The burst of the other agent is its own: still one rate_spike, no volume_spike for it.
    expect(await metric('rate_spike', 'alert')).toBe(1);

    const record = await eventually('the volume_spike audit record', () => proxy.auditRecords().find((r) => r.route === 'anomaly:volume_spike'));
    expect(record).toMatchObject({ agent: 'reader', service: 'llm', actor: 'anomaly-detector', decision: 'allow' });
    expect(record.reason).toContain(event.id);
    expect(record.reason).toContain('exfiltration?');

    await call(reader.token, '/llm/v1/files/note-after');
  });

  it('no canary or token in events, logs, audit, admin answers, metrics or agent responses', async () => {
    const events = await admin.call('GET', '/v1/anomalies');
    assertNoLeak([llmKey, steady.token, reader.token, alice.token], [
      { name: 'anomaly events', text: events.text },
      { name: 'logs', text: proxy.logLines.join('') },
      { name: 'audit', text: proxy.auditText() },
      { name: 'admin answers and metrics', text: admin.seen.join('\n') },
    ]);
    assertNoLeak([llmKey], [{ name: 'agent responses', text: agentSeen.join('\n') }]);
    const warnings = proxy.logRecords().filter((r) => typeof r['msg'] === 'string' && (r['msg'] as string).startsWith('anomaly:'));
    expect(warnings.map((w) => w['rule']).sort()).toEqual(['rate_spike', 'volume_spike']);
  });
});

/** No secret or token in what agents and admins were answered, the log or the audit file. */
function expectNothingLeaked(secrets: string[], seen: readonly SentResponse[], admin: AdminClient, proxy: ProxyFixture): void {
  assertNoLeak(secrets, [
    { name: 'agent responses', text: seen.map((r) => `${JSON.stringify(r.headers)}\n${r.text}`).join('\n') },
    { name: 'admin answers', text: admin.seen.join('\n') },
    { name: 'logs', text: proxy.logLines.join('') },
    { name: 'audit', text: proxy.auditText() },
  ]);
}

// Found by review: the mint of a child session was observed under the child's id, so a stolen session
// token used from a new address to mint a child, and the child used from there, never looked like the
// parent moving.
describe('new_client_address and a session narrowed from a stolen one', () => {
  const key = canary('anomaly-child');
  const bot = generateAgentToken();
  const alice = generateAgentToken();
  const sessionTokens: string[] = [];
  const seen: SentResponse[] = [];
  let upstream: Upstream;
  let proxy: ProxyFixture;
  let admin: AdminClient;

  beforeAll(async () => {
    upstream = await startUpstream(echoHandler);
    proxy = await startProxy(
      {
        admin: { listen: '127.0.0.1:0', tokens: [{ name: 'alice', hash: alice.hash }] },
        anomalies: { new_client_address: { action: 'suspend' }, cooldown: 60 },
        services: { echo: { upstream: upstream.url, credential: { secret: 'env:CHILD_KEY', inject: 'bearer' }, routes: [{ method: 'GET', path: '/v1/a', scope: 'a:read' }] } },
        agents: { bot: { tokens: [bot.hash], credentials: [{ service: 'echo', max_scope: ['a:read'] }] } },
      },
      { env: { CHILD_KEY: key } },
    );
    admin = adminClient(() => proxy.airlock.adminUrl as string, alice.token);
  });

  afterAll(async () => {
    expectNothingLeaked([key, bot.token, alice.token, ...sessionTokens], seen, admin, proxy);
    await proxy?.close();
    await upstream?.close();
  });

  async function mint(token: string, from: string): Promise<SentResponse> {
    const response = await sendRequest(`${proxy.url}/_airlock/sessions`, {
      method: 'POST',
      localAddress: from,
      headers: { authorization: `Bearer ${token}`, 'content-type': 'application/json' },
      // A child's ttl defaults to what its parent has left.
      body: JSON.stringify({ scopes: { echo: ['a:read'] }, ...(token === bot.token ? { ttl_seconds: 600 } : {}), justification: 'summarise the tickets' }),
    });
    if (response.status === 201) sessionTokens.push(response.json<{ session_token: string }>().session_token);
    return response;
  }

  /** The status, or 0 when the connection was cut (the kill switch ending a request already let in). */
  async function use(token: string, from: string): Promise<number> {
    const response = await sendRequest(`${proxy.url}/echo/v1/a`, { localAddress: from, headers: { authorization: `Bearer ${token}` } }).catch(() => null);
    if (response === null) return 0;
    seen.push(response);
    return response.status;
  }

  it('minting a child from a second address is the parent moving: the mint is refused and the agent suspended', async () => {
    const parent = (await mint(bot.token, '127.0.0.1')).json<{ session_token: string; session_id: string }>();
    expect(await use(parent.session_token, '127.0.0.1')).toBe(200);
    const before = upstream.requests.length;
    // The request rules run before the mint is answered: no child token is handed out.
    const child = await mint(parent.session_token, '127.0.0.2');
    seen.push(child);
    expect(child.status, child.text).toBe(401);
    expect(child.text).not.toContain('session_token');
    expect(await use(parent.session_token, '127.0.0.1')).toBe(401);
    expect(upstream.requests).toHaveLength(before);
    const events = (await admin.call('GET', '/v1/anomalies')).json<{ anomalies: Array<{ rule: string; evidence: Record<string, string> }> }>().anomalies;
    expect(events.map((event) => event.rule)).toEqual(['new_client_address']);
    expect(events[0]?.evidence).toMatchObject({ session: parent.session_id, first_address: '127.0.0.1', new_address: '127.0.0.2' });
    // The refusal's record names the rule for the operator; the agent's detail does not.
    const refused = await eventually('the refused mint in the audit trail', () => proxy.auditRecords().find((r) => r.request_id === child.headers['x-airlock-request-id']));
    expect(refused).toMatchObject({ decision: 'deny', code: 'unauthenticated', status: 401 });
    expect(refused.reason).toContain('new_client_address');
    expect(child.text).not.toContain('new_client_address');
    expect((await admin.call('POST', '/v1/agents/bot/restore', { reason: 'test done' })).status).toBe(200);
  });

  it('a session used from a second address: that very request is refused, before the upstream sees it', async () => {
    const session = (await mint(bot.token, '127.0.0.1')).json<{ session_token: string }>();
    expect(await use(session.session_token, '127.0.0.1')).toBe(200);
    const before = upstream.requests.length;
    expect(await use(session.session_token, '127.0.0.3')).toBe(401);
    expect(upstream.requests).toHaveLength(before);
    expect(await use(bot.token, '127.0.0.1')).toBe(401);
    expect((await admin.call('POST', '/v1/agents/bot/restore', { reason: 'test done' })).status).toBe(200);
  });

  it('a child used from where its parent was first used raises nothing', async () => {
    const before = (await admin.call('GET', '/v1/anomalies')).json<{ anomalies: unknown[] }>().anomalies.length;
    const parent = (await mint(bot.token, '127.0.0.1')).json<{ session_token: string }>();
    expect(await use(parent.session_token, '127.0.0.1')).toBe(200);
    const child = (await mint(parent.session_token, '127.0.0.1')).json<{ session_token: string }>();
    expect(await use(child.session_token, '127.0.0.1')).toBe(200);
    expect((await admin.call('GET', '/v1/anomalies')).json<{ anomalies: unknown[] }>().anomalies).toHaveLength(before);
  });
});

// Found by review: a reload that changed any anomalies key (here only the webhook) built a new detector
// and forgot the denials counted; and an agent restored within the cooldown of its suspension could
// probe again without being suspended again (its 401s while suspended counted too).
describe('denial_burst across a reload and a restore', () => {
  const key = canary('anomaly-burst');
  const bot = generateAgentToken();
  const alice = generateAgentToken();
  const seen: SentResponse[] = [];
  let upstream: Upstream;
  let hooks: Upstream;
  let proxy: ProxyFixture;
  let admin: AdminClient;

  const anomalies = (webhook: string): Record<string, unknown> => ({ webhook, cooldown: 600, denial_burst: { count: 5, window: 600, action: 'suspend' } });
  const input = (webhook: string): Record<string, unknown> => ({
    admin: { listen: '127.0.0.1:0', tokens: [{ name: 'alice', hash: alice.hash }] },
    anomalies: anomalies(webhook),
    services: {
      echo: {
        upstream: upstream.url,
        credential: { secret: 'env:BURST_KEY', inject: 'bearer' },
        routes: [
          { method: 'GET', path: '/v1/a', scope: 'a:read' },
          { method: 'GET', path: '/v1/b', scope: 'b:read' },
        ],
      },
    },
    agents: { bot: { tokens: [bot.hash], credentials: [{ service: 'echo', max_scope: ['a:read'] }] } },
  });

  beforeAll(async () => {
    upstream = await startUpstream(echoHandler);
    hooks = await startUpstream();
    proxy = await startProxy(input(`${hooks.url}/first`), { env: { BURST_KEY: key } });
    admin = adminClient(() => proxy.airlock.adminUrl as string, alice.token);
  });

  afterAll(async () => {
    expectNothingLeaked([key, bot.token, alice.token], seen, admin, proxy);
    await proxy?.close();
    await upstream?.close();
    await hooks?.close();
  });

  async function call(path: string): Promise<number> {
    const response = await sendRequest(`${proxy.url}/echo${path}`, { headers: { authorization: `Bearer ${bot.token}` } });
    seen.push(response);
    return response.status;
  }

  it('denials counted before a reload that changed only the webhook still count after it', async () => {
    for (let i = 0; i < 3; i++) expect(await call('/v1/b')).toBe(403);
    const next = { ...proxy.config, anomalies: { ...proxy.config.anomalies, webhook: `${hooks.url}/second` } } as typeof proxy.config;
    expect((await proxy.airlock.reload(next)).ok).toBe(true);
    for (let i = 0; i < 2; i++) expect(await call('/v1/b')).toBe(403);
    expect(await call('/v1/a'), 'the fifth denial suspended the agent').toBe(401);
  });

  it('an agent restored within the cooldown is suspended again by a new burst, its 401s while suspended not counted', async () => {
    for (let i = 0; i < 6; i++) expect(await call('/v1/a')).toBe(401);
    expect((await admin.call('POST', '/v1/agents/bot/restore', { reason: 'checked, false alarm' })).status).toBe(200);
    expect(await call('/v1/a'), 'restored, the agent works, its earlier 401s forgotten').toBe(200);
    for (let i = 0; i < 4; i++) expect(await call('/v1/b')).toBe(403);
    expect(await call('/v1/a'), 'four denials are under the threshold').toBe(200);
    expect(await call('/v1/b')).toBe(403);
    expect(await call('/v1/a'), 'the fifth suspended it again, within the cooldown').toBe(401);
    const rules = (await admin.call('GET', '/v1/anomalies')).json<{ anomalies: Array<{ rule: string }> }>().anomalies.map((event) => event.rule);
    expect(rules).toEqual(['denial_burst', 'denial_burst']);
    expect((await admin.call('POST', '/v1/agents/bot/restore', { reason: 'test done' })).status).toBe(200);
  });
});

// Found by review: denial_burst counted every 401/403/404/405 the agent received, the upstream's own
// among them, so an upstream key that expired (a 401 on every call) suspended every agent using it.
describe("denial_burst counts Airlock's refusals, not the upstream's answers", () => {
  const key = canary('anomaly-upstream-refuses');
  const bot = generateAgentToken();
  const alice = generateAgentToken();
  const seen: SentResponse[] = [];
  let upstream: Upstream;
  let proxy: ProxyFixture;
  let admin: AdminClient;

  beforeAll(async () => {
    upstream = await startUpstream((req, res, recorded) => {
      if (req.url === '/v1/expired') return refusingHandler(req, res, recorded);
      res.writeHead(404, { 'content-type': 'application/json' });
      res.end('{"error":{"message":"No such file"}}');
    });
    proxy = await startProxy(
      {
        admin: { listen: '127.0.0.1:0', tokens: [{ name: 'alice', hash: alice.hash }] },
        anomalies: { cooldown: 1, denial_burst: { count: 5, window: 600, action: 'suspend' } },
        services: {
          echo: {
            upstream: upstream.url,
            credential: { secret: 'env:REFUSED_KEY', inject: 'bearer' },
            routes: [
              { method: 'GET', path: '/v1/expired', scope: 'a:read' },
              { method: 'GET', path: '/v1/files/:id', scope: 'a:read' },
              { method: 'GET', path: '/v1/other', scope: 'b:read' },
            ],
          },
        },
        agents: { bot: { tokens: [bot.hash], credentials: [{ service: 'echo', max_scope: ['a:read'] }] } },
      },
      { env: { REFUSED_KEY: key } },
    );
    admin = adminClient(() => proxy.airlock.adminUrl as string, alice.token);
  });

  afterAll(async () => {
    expectNothingLeaked([key, bot.token, alice.token], seen, admin, proxy);
    await proxy?.close();
    await upstream?.close();
  });

  async function call(path: string): Promise<number> {
    const response = await sendRequest(`${proxy.url}/echo${path}`, { headers: { authorization: `Bearer ${bot.token}` } });
    seen.push(response);
    return response.status;
  }

  it("the upstream's 401s and 404s raise nothing; Airlock's own refusals still do, saying which", async () => {
    for (let i = 0; i < 6; i++) expect(await call('/v1/expired')).toBe(401);
    for (let i = 0; i < 6; i++) expect(await call(`/v1/files/file-${i}`)).toBe(404);
    expect((await admin.call('GET', '/v1/anomalies')).json<{ anomalies: unknown[] }>().anomalies).toEqual([]);
    expect(await call('/v1/files/file-9'), 'not suspended').toBe(404);
    for (let i = 0; i < 5; i++) expect(await call('/v1/other')).toBe(403);
    const events = (await admin.call('GET', '/v1/anomalies')).json<{ anomalies: AnomalyView[] }>().anomalies;
    expect(events).toHaveLength(1);
    expect(events[0]).toMatchObject({ rule: 'denial_burst', evidence: { denials: 5, last_code: 'scope_denied', last_route: '/v1/other' } });
    expect(await call('/v1/expired'), 'the fifth refusal suspended the agent').toBe(401);
    // Its 401s while suspended are the suspension at work, not more probing: past the 1 s cooldown they
    // raise nothing (found by review: an event every cooldown for as long as it stayed revoked).
    await sleep(1100);
    for (let i = 0; i < 6; i++) expect(await call('/v1/expired')).toBe(401);
    expect((await admin.call('GET', '/v1/anomalies')).json<{ anomalies: unknown[] }>().anomalies).toHaveLength(1);
    expect((await admin.call('POST', '/v1/agents/bot/restore', { reason: 'test done' })).status).toBe(200);
  });
});
