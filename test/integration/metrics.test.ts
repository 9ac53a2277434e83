/**
 * Prometheus metrics on the admin listener (issue 6): after a scripted mix of requests (allowed calls on
 * several routes of two services, scope and route denials, an unknown service, an unknown token, a 502,
 * a response that needs redaction, a task session and a pending approval), one scrape of GET /metrics
 * (no admin token) matches what happened, series by series: requests by service, route template,
 * decision and code; request and upstream duration histograms; credential cache hits and misses;
 * redactions (equal to the audit records' sum); approvals pending; sessions active; upstream pool use.
 * Labels hold route templates, never the raw paths with their ids, and no canary appears anywhere.
 * A second proxy reads its key from the Vault stand-in: once Vault goes down after a good fetch, the cache
 * serves the last known good value (result "stale"), counts the failed refetch ("refresh_failure") and
 * reports the reference failing (airlock_credential_failing 1) until Vault is back.
 */
import type { IncomingMessage, ServerResponse } from 'node:http';
import { connect, type Socket } from 'node:net';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { generateAgentToken } from '../../src/identity/agent-token.js';
import type { AuditRecord } from '../../src/observability/audit-record.js';
import { assertNoLeak } from '../helpers/assert-no-leak.js';
import { canary } from '../helpers/canary.js';
import { eventually, freePort } from '../helpers/operator.js';
import { rawRequest } from '../helpers/raw-http.js';
import { sendRequest, type Problem, type SentResponse } from '../helpers/send-request.js';
import { startProxy, type ProxyFixture } from '../helpers/start-proxy.js';
import { startUpstream, type RecordedRequest, type Upstream } from '../helpers/start-upstream.js';
import { startVaultServer, type VaultServer } from '../support/vault-server.js';

interface Sample {
  readonly name: string;
  readonly labels: Readonly<Record<string, string>>;
  readonly value: number;
}

/** Parses the Prometheus text exposition format (0.0.4) into samples. */
function parseExposition(text: string): Sample[] {
  const samples: Sample[] = [];
  for (const line of text.split('\n')) {
    if (line === '' || line.startsWith('#')) continue;
    const match = /^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})?\s+(\S+)(?:\s+\d+)?$/.exec(line);
    if (match === null) throw new Error(`not an exposition line: ${line}`);
    const labels: Record<string, string> = {};
    for (const pair of (match[2] ?? '').matchAll(/([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"/g)) {
      labels[pair[1] as string] = (pair[2] as string).replace(/\\n/g, '\n').replace(/\\"/g, '"').replace(/\\\\/g, '\\');
    }
    samples.push({ name: match[1] as string, labels, value: Number(match[3]) });
  }
  return samples;
}

interface FourLabels {
  readonly service?: string | null;
  readonly route?: string | null;
  readonly decision?: string | null;
  readonly code?: string | null;
}

function key4(labels: FourLabels): string {
  return `${labels.service ?? 'none'} | ${labels.route ?? 'none'} | ${labels.decision ?? '?'} | ${labels.code ?? 'none'}`;
}

describe('GET /metrics after a scripted mix of requests', () => {
  const alphaKey = canary('metrics-alpha');
  const betaKey = canary('metrics-beta');
  const downKey = canary('metrics-down');
  const payKey = canary('metrics-pay');
  const queryCanary = canary('metrics-query');
  const headerCanary = canary('metrics-header');
  const agent = generateAgentToken();
  const stranger = generateAgentToken();
  const adminToken = generateAgentToken();
  const secrets = [alphaKey, betaKey, downKey, payKey, queryCanary, headerCanary, agent.token, stranger.token, adminToken.token];
  /** Raw path pieces (ids) that must never become label values. */
  const RAW_IDS = ['11111', '22222', '33333', 'alice-4711', 'widget-0815', '55555', '66666', '77777', '88888', 'zzz-nowhere'];

  let alpha: Upstream;
  let beta: Upstream;
  let pay: Upstream;
  let proxy: ProxyFixture;
  let scrape: SentResponse;
  let samples: Sample[];
  const responses: Array<{ label: string; response: SentResponse }> = [];
  let sessionToken = '';
  let rawRefusals = 0;

  /** Echoes the Authorization header it was given: the injected key, which Airlock must redact. */
  function leakyHandler(req: IncomingMessage, res: ServerResponse, recorded: RecordedRequest): void {
    const body = recorded.target.startsWith('/v1/echo/')
      ? JSON.stringify({ seen: req.headers['authorization'] ?? '', again: `key=${(req.headers['authorization'] ?? '').replace(/^Bearer /, '')}` })
      : '{"ok":true}';
    res.writeHead(200, { 'content-type': 'application/json', 'content-length': Buffer.byteLength(body) });
    res.end(body);
  }

  beforeAll(async () => {
    alpha = await startUpstream(leakyHandler);
    beta = await startUpstream();
    pay = await startUpstream();
    const downPort = await freePort();
    proxy = await startProxy(
      {
        admin: { listen: '127.0.0.1:0', tokens: [adminToken.hash] },
        services: {
          alpha: {
            upstream: alpha.url,
            credential: { secret: 'env:ALPHA_KEY' },
            routes: [
              { method: 'GET', path: '/v1/items/:id', scope: 'items:read' },
              { method: 'POST', path: '/v1/items', scope: 'items:write' },
              { method: 'GET', path: '/v1/echo/:id', scope: 'items:read' },
              { method: 'GET', path: '/v1/admin/:id', scope: 'admin:all' },
            ],
          },
          beta: {
            upstream: beta.url,
            credential: { secret: 'env:BETA_KEY' },
            routes: [{ method: 'GET', path: '/v1/users/:user/repos/:repo', scope: 'repos:read' }],
          },
          down: {
            upstream: `http://127.0.0.1:${downPort}`,
            credential: { secret: 'env:DOWN_KEY' },
            routes: [{ method: 'GET', path: '/v1/things/:id', scope: 'things:read' }],
          },
          pay: {
            upstream: pay.url,
            credential: { secret: 'env:PAY_KEY' },
            routes: [{ method: 'POST', path: '/v1/payouts', scope: 'payouts:write' }],
          },
        },
        agents: {
          'metrics-bot': {
            tokens: [agent.hash],
            credentials: [
              { service: 'alpha', max_scope: ['items:read', 'items:write'] },
              { service: 'beta', max_scope: ['*'] },
              { service: 'down', max_scope: ['*'] },
              { service: 'pay', max_scope: ['payouts:write'], require_approval: true, approval_mode: 'async', approval_timeout: 600 },
            ],
          },
        },
      },
      { env: { ALPHA_KEY: alphaKey, BETA_KEY: betaKey, DOWN_KEY: downKey, PAY_KEY: payKey } },
    );

    const send = async (label: string, path: string, options: { method?: string; token?: string; body?: string } = {}): Promise<void> => {
      const response = await sendRequest(`${proxy.url}${path}`, {
        method: options.method ?? 'GET',
        headers: { authorization: `Bearer ${options.token ?? agent.token}`, 'x-trace-note': headerCanary, ...(options.body === undefined ? {} : { 'content-type': 'application/json' }) },
        ...(options.body === undefined ? {} : { body: options.body }),
      });
      responses.push({ label, response });
    };
    await send('alpha item', `/alpha/v1/items/11111?q=${queryCanary}`);
    await send('alpha item', '/alpha/v1/items/22222');
    await send('alpha item', '/alpha/v1/items/33333');
    await send('alpha create', '/alpha/v1/items', { method: 'POST', body: '{"name":"thing"}' });
    await send('beta repo', '/beta/v1/users/alice-4711/repos/widget-0815');
    await send('beta repo', `/beta/v1/users/alice-4711/repos/widget-0815?token=${queryCanary}`);
    await send('alpha scope', '/alpha/v1/admin/55555');
    await send('alpha scope', '/alpha/v1/admin/55555');
    await send('alpha route', '/alpha/v1/unlisted/66666');
    await send('unknown service', '/zzz-nowhere/v1/77777');
    await send('unauthenticated', '/alpha/v1/items/11111', { token: stranger.token });
    await send('down', '/down/v1/things/88888');
    await send('echo', '/alpha/v1/echo/11111');
    await send('echo', '/alpha/v1/echo/22222');
    await send('payout pending', '/pay/v1/payouts', { method: 'POST', body: '{"amount":1}' });
    await send('session', '/_airlock/sessions', { method: 'POST', body: JSON.stringify({ scopes: { alpha: ['items:read'] }, ttl_seconds: 600, justification: 'metrics test', task_id: 'METRICS-1' }) });
    const minted = responses.at(-1)?.response;
    // Refused on the raw socket, before the pipeline (CONNECT: Airlock is not a forward proxy).
    const connect = await rawRequest(proxy.url, 'CONNECT api.example.com:443 HTTP/1.1\r\nHost: api.example.com:443\r\n\r\n');
    expect(connect.status).toBe(405);
    rawRefusals = 1;
    sessionToken = minted?.status === 201 ? String(minted.json()['session_token']) : '';
    secrets.push(...(sessionToken === '' ? [] : [sessionToken]));

    // Every request is counted by the time its log line is written (audit first, then the line).
    await proxy.waitForAudit(responses.length + rawRefusals);
    await eventually('a request log line per request', () => proxy.logRecords().filter((l) => l['msg'] === 'request').length >= responses.length + rawRefusals);
    scrape = await sendRequest(`${proxy.airlock.adminUrl as string}/metrics`);
    samples = parseExposition(scrape.text);
  });

  afterAll(async () => {
    await proxy?.close();
    await alpha?.close();
    await beta?.close();
    await pay?.close();
  });

  function status(label: string): number[] {
    return responses.filter((r) => r.label === label).map((r) => r.response.status);
  }

  function series(name: string): Sample[] {
    return samples.filter((s) => s.name === name);
  }

  function table(name: string, labelKey: (labels: Readonly<Record<string, string>>) => string): Record<string, number> {
    const out: Record<string, number> = {};
    for (const s of series(name)) if (s.value !== 0) out[labelKey(s.labels)] = (out[labelKey(s.labels)] ?? 0) + s.value;
    return out;
  }

  function audit(): AuditRecord[] {
    // Admin changes are audited too; none were made here, so every record is an agent request.
    return proxy.auditRecords();
  }

  it('ran the script as intended', () => {
    expect(status('alpha item')).toEqual([200, 200, 200]);
    expect(status('alpha create')).toEqual([200]);
    expect(status('beta repo')).toEqual([200, 200]);
    expect(status('alpha scope')).toEqual([403, 403]);
    expect(status('alpha route')).toEqual([403]);
    expect(status('unknown service')).toEqual([404]);
    expect(status('unauthenticated')).toEqual([401]);
    expect(status('down')).toEqual([502]);
    expect(status('echo')).toEqual([200, 200]);
    expect(status('payout pending')).toEqual([202]);
    expect(status('session')).toEqual([201]);
    const echoes = responses.filter((r) => r.label === 'echo').map((r) => r.response.text);
    for (const text of echoes) expect(text).toContain('[REDACTED]');
    expect(audit()).toHaveLength(responses.length + rawRefusals);
  });

  it('is served on the admin listener without a token, in the Prometheus text format', () => {
    expect(scrape.status).toBe(200);
    expect(scrape.headers['content-type']).toMatch(/^text\/plain; version=0\.0\.4/);
    expect(scrape.headers['cache-control']).toBe('no-store');
  });

  it('counts requests by service, route template, decision and code, exactly', () => {
    const expected: Record<string, number> = {
      'alpha | /v1/items/:id | allow | none': 3,
      'alpha | /v1/items | allow | none': 1,
      'beta | /v1/users/:user/repos/:repo | allow | none': 2,
      'alpha | /v1/admin/:id | deny | scope_denied': 2,
      'alpha | none | deny | route_not_allowed': 1,
      'none | none | deny | unknown_service': 1,
      'none | none | deny | unauthenticated': 1,
      'down | /v1/things/:id | allow | upstream_unreachable': 1,
      'alpha | /v1/echo/:id | allow | none': 2,
      'none | none | deny | method_not_allowed': 1,
    };
    const counted = table('airlock_requests_total', key4);
    expect(counted).toMatchObject(expected);
    // And the whole table is the one the audit log tells, row for row (pending approval and session included).
    const fromAudit: Record<string, number> = {};
    for (const r of audit()) fromAudit[key4(r)] = (fromAudit[key4(r)] ?? 0) + 1;
    expect(counted).toEqual(fromAudit);
    expect(Object.values(counted).reduce((a, b) => a + b, 0)).toBe(responses.length + rawRefusals);
  });

  function durationCounts(records: readonly AuditRecord[]): Record<string, number> {
    const out: Record<string, number> = {};
    for (const r of records) out[`${r.service ?? 'none'} | ${r.route ?? 'none'}`] = (out[`${r.service ?? 'none'} | ${r.route ?? 'none'}`] ?? 0) + 1;
    return out;
  }

  it('observes the request duration of every request, raw-socket refusals included, by service and route template', () => {
    const counts = table('airlock_request_duration_seconds_count', (l) => `${l['service']} | ${l['route']}`);
    expect(counts).toEqual(durationCounts(audit()));
    expect(counts['none | none']).toBe(3);
    expect(counts['alpha | /v1/items/:id']).toBe(3);
    expect(counts['beta | /v1/users/:user/repos/:repo']).toBe(2);
    // Buckets are cumulative and end in +Inf = count.
    const inf = series('airlock_request_duration_seconds_bucket').filter((s) => s.labels['le'] === '+Inf');
    for (const bucket of inf) expect(bucket.value).toBe(counts[`${bucket.labels['service']} | ${bucket.labels['route']}`]);
    const sums = series('airlock_request_duration_seconds_sum');
    for (const sum of sums) expect(sum.value).toBeGreaterThanOrEqual(0);
  });

  it('observes the upstream duration of every answered upstream exchange, by service', () => {
    const counts = table('airlock_upstream_duration_seconds_count', (l) => l['service'] as string);
    const answered: Record<string, number> = {};
    for (const r of audit()) if (r.upstream_status !== null) answered[r.service as string] = (answered[r.service as string] ?? 0) + 1;
    expect(answered).toEqual({ alpha: 6, beta: 2 });
    expect(counts).toEqual(answered);
    expect(alpha.requests).toHaveLength(6);
    expect(beta.requests).toHaveLength(2);
  });

  // Found by the observability walkthrough: an upstream's own 4xx/5xx were code "none" like its 200s.
  it('counts the upstream answers by status class, as the audit records have them', () => {
    const counts = table('airlock_upstream_responses_total', (l) => `${l['service'] as string} ${l['status_class'] as string}`);
    const answered: Record<string, number> = {};
    for (const r of audit()) {
      if (r.upstream_status === null) continue;
      const key = `${r.service as string} ${Math.floor(r.upstream_status / 100)}xx`;
      answered[key] = (answered[key] ?? 0) + 1;
    }
    expect(Object.keys(answered).length).toBeGreaterThan(0);
    expect(counts).toEqual(answered);
  });

  it('counts redactions per service, equal to the sum in the audit records', () => {
    const redacted = audit().filter((r) => r.redactions > 0);
    expect(redacted.length).toBe(2);
    expect(redacted.every((r) => r.service === 'alpha' && r.route === '/v1/echo/:id')).toBe(true);
    const auditSum = redacted.reduce((sum, r) => sum + r.redactions, 0);
    expect(auditSum).toBeGreaterThanOrEqual(2);
    expect(table('airlock_redactions_total', (l) => l['service'] as string)).toEqual({ alpha: auditSum });
  });

  it('counts credential cache hits and misses', () => {
    const cache = table('airlock_credential_cache_total', (l) => l['result'] as string);
    // Start-up resolves each of the four references once (misses); every request that reached the
    // credential step afterwards found it fresh.
    const resolved = audit().filter((r) => r.credential !== null && r.code !== 'approval_pending' && (r.upstream_status !== null || r.code === 'upstream_unreachable')).length;
    expect(resolved).toBe(9);
    expect(cache).toEqual({ miss: 4, hit: resolved });
    const ages = series('airlock_credential_age_seconds').map((s) => s.labels['ref']).sort();
    expect(ages).toEqual(['env:ALPHA_KEY', 'env:BETA_KEY', 'env:DOWN_KEY', 'env:PAY_KEY']);
    for (const failing of series('airlock_credential_failing')) expect(failing.value).toBe(0);
  });

  it('reports approvals pending and sessions active', () => {
    expect(series('airlock_approvals_pending')).toEqual([{ name: 'airlock_approvals_pending', labels: {}, value: 1 }]);
    expect(series('airlock_sessions_active')).toEqual([{ name: 'airlock_sessions_active', labels: {}, value: 1 }]);
  });

  it('has no certificate expiry without tls (a 0 there fires every expiry alert)', () => {
    expect(series('airlock_tls_certificate_expiry_timestamp_seconds')).toEqual([]);
    expect(scrape.text).toContain('# TYPE airlock_tls_certificate_expiry_timestamp_seconds gauge');
  });

  it('reports upstream connection pool use for every service', () => {
    const pools = series('airlock_upstream_connections');
    expect(new Set(pools.map((s) => s.labels['service']))).toEqual(new Set(['alpha', 'beta', 'down', 'pay']));
    for (const service of ['alpha', 'beta', 'down', 'pay']) {
      expect(pools.filter((s) => s.labels['service'] === service).map((s) => s.labels['state']).sort()).toEqual(['connected', 'free', 'pending', 'queued', 'running']);
    }
    for (const sample of pools) expect(sample.value).toBeGreaterThanOrEqual(0);
    const connected = (service: string): number => pools.find((s) => s.labels['service'] === service && s.labels['state'] === 'connected')?.value ?? -1;
    expect(connected('alpha')).toBeGreaterThanOrEqual(1);
    expect(connected('down')).toBe(0);
    expect(airlockAuditFailures()).toBe(0);
  });

  it('counts open agent connections, idle ones included, and lets them go when they close', async () => {
    const scrapeAgentConnections = async (): Promise<number> => {
      const text = (await sendRequest(`${proxy.airlock.adminUrl as string}/metrics`)).text;
      return parseExposition(text).find((s) => s.name === 'airlock_agent_connections' && s.labels['listener'] === 'shared')?.value ?? -1;
    };
    const before = await scrapeAgentConnections();
    expect(before).toBeGreaterThanOrEqual(0);
    const { port } = new URL(proxy.url);
    const idle = await Promise.all(Array.from({ length: 3 }, () => new Promise<Socket>((resolve, reject) => {
      const socket = connect(Number(port), '127.0.0.1', () => resolve(socket));
      socket.on('error', reject);
    })));
    await eventually('three idle connections counted', async () => (await scrapeAgentConnections()) === before + 3, 5_000, 20);
    for (const socket of idle) socket.destroy();
    await eventually('the closed connections no longer counted', async () => (await scrapeAgentConnections()) === before, 5_000, 20);
  });

  function airlockAuditFailures(): number {
    return series('airlock_audit_write_failures_total')[0]?.value ?? -1;
  }

  it('labels by route template, never by raw path', () => {
    const routes = new Set(samples.map((s) => s.labels['route']).filter((r): r is string => r !== undefined));
    expect([...routes].sort()).toEqual(['/_airlock/sessions', '/v1/admin/:id', '/v1/echo/:id', '/v1/items', '/v1/items/:id', '/v1/payouts', '/v1/things/:id', '/v1/users/:user/repos/:repo', 'none'].sort());
    for (const id of RAW_IDS) expect(scrape.text, `raw path piece ${id}`).not.toContain(id);
    const labelNames = new Set(samples.flatMap((s) => Object.keys(s.labels)));
    expect(labelNames).not.toContain('path');
    expect(labelNames).not.toContain('agent');
  });

  it('holds no canary', () => {
    expect(responses.find((r) => r.label === 'payout pending')?.response.json<Problem>().code).toBe('approval_pending');
    assertNoLeak(secrets, [
      { name: 'metrics', text: scrape.text },
      { name: 'metrics headers', text: JSON.stringify(scrape.headers) },
    ]);
  });
});

describe('GET /metrics while a credential store fails after a good fetch', () => {
  const REF = 'vault:secret/pay#api_key';
  const key = canary('metrics-vault');
  const agent = generateAgentToken();
  const adminToken = generateAgentToken();
  let vault: VaultServer;
  let upstream: Upstream;
  let proxy: ProxyFixture;
  const scrapes: string[] = [];

  beforeAll(async () => {
    vault = await startVaultServer();
    vault.putSecret('secret', 'pay', { api_key: key });
    upstream = await startUpstream();
    proxy = await startProxy(
      {
        admin: { listen: '127.0.0.1:0', tokens: [adminToken.hash] },
        secrets: { vault: { address: vault.url, timeout: 2, auth: { method: 'token', token: 'env:VAULT_TOKEN' } } },
        services: {
          pay: {
            upstream: upstream.url,
            // Fresh for 1 s, then the last good value may be served for 60 s while Vault fails.
            credential: { secret: REF, inject: 'bearer', ttl: 1, max_staleness: 60 },
            routes: [{ method: 'GET', path: '/v1/charges', scope: 'charges:read' }],
          },
        },
        agents: { 'stale-bot': { tokens: [agent.hash], credentials: [{ service: 'pay', max_scope: ['*'] }] } },
      },
      { env: { VAULT_TOKEN: vault.createToken() } },
    );
  });

  afterAll(async () => {
    await proxy?.close();
    await upstream?.close();
    await vault?.close();
  });

  async function metrics(): Promise<Sample[]> {
    const scrape = await sendRequest(`${proxy.airlock.adminUrl as string}/metrics`);
    expect(scrape.status).toBe(200);
    scrapes.push(scrape.text);
    return parseExposition(scrape.text);
  }

  function cacheCount(samples: readonly Sample[], result: string): number {
    return samples.find((s) => s.name === 'airlock_credential_cache_total' && s.labels['result'] === result)?.value ?? 0;
  }

  function failing(samples: readonly Sample[]): number | undefined {
    return samples.find((s) => s.name === 'airlock_credential_failing' && s.labels['ref'] === REF)?.value;
  }

  function charge(): Promise<SentResponse> {
    return sendRequest(`${proxy.url}/pay/v1/charges`, { headers: { authorization: `Bearer ${agent.token}` } });
  }

  function sleep(ms: number): Promise<void> {
    return new Promise((resolve) => setTimeout(resolve, ms));
  }

  it('counts stale serves and refresh failures and reports the reference failing, then healthy again', async () => {
    expect((await charge()).status).toBe(200);
    const healthy = await metrics();
    expect(failing(healthy)).toBe(0);
    expect(cacheCount(healthy, 'stale')).toBe(0);
    expect(cacheCount(healthy, 'refresh_failure')).toBe(0);
    expect(cacheCount(healthy, 'miss')).toBeGreaterThanOrEqual(1);

    await vault.setDown(true);
    // Past the 1 s TTL the value is stale: served (last known good) while a refetch runs and fails.
    await sleep(1_100);
    const served = await charge();
    expect(served.status, served.text).toBe(200);
    // The refetch runs in the background: poll the scrape (bounded) until it has failed.
    let samples = await metrics();
    const deadline = Date.now() + 3_000;
    while ((cacheCount(samples, 'refresh_failure') < 1 || failing(samples) !== 1) && Date.now() < deadline) {
      await sleep(50);
      samples = await metrics();
    }
    expect(cacheCount(samples, 'stale')).toBeGreaterThanOrEqual(1);
    expect(cacheCount(samples, 'refresh_failure')).toBeGreaterThanOrEqual(1);
    expect(failing(samples)).toBe(1);
    const age = samples.find((s) => s.name === 'airlock_credential_age_seconds' && s.labels['ref'] === REF)?.value;
    expect(age).toBeGreaterThanOrEqual(1);
    // Still served from the last known good value, with Vault down.
    const again = await charge();
    expect(again.status, again.text).toBe(200);
    expect(upstream.requests.map((r) => r.header('authorization')[0])).toEqual(upstream.requests.map(() => `Bearer ${key}`));
    expect(upstream.requests.length).toBe(3);

    // Vault back: the next refetch (after its backoff) succeeds and the reference is healthy again.
    await vault.setDown(false);
    let recovered = samples;
    const until = Date.now() + 3_000;
    do {
      await sleep(100);
      expect((await charge()).status).toBe(200);
      recovered = await metrics();
    } while (failing(recovered) !== 0 && Date.now() < until);
    expect(failing(recovered)).toBe(0);
  });

  it('holds no canary', () => {
    expect(scrapes.length).toBeGreaterThan(0);
    assertNoLeak([key, agent.token, adminToken.token, ...vault.issuedTokens()], [{ name: 'metrics', text: scrapes.join('\n') }]);
  });
});
