/**
 * Every request, allowed or denied, leaves exactly one audit record and one `request` log line with
 * the fields of DESIGN.md section 5, tied to the response by x-airlock-request-id; neither holds header
 * values, query values or the credential. When the audit log cannot be written, Airlock fails closed:
 * every request gets 503 audit_unavailable and nothing is forwarded.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { formatProblem } from '../../src/config/config-problem.js';
import { buildConfig } from '../../src/config/load-config.js';
import { generateAgentToken } from '../../src/identity/agent-token.js';
import type { AuditRecord } from '../../src/observability/audit-record.js';
import { assertNoLeak } from '../helpers/assert-no-leak.js';
import { canary } from '../helpers/canary.js';
import { freePort } from '../helpers/operator.js';
import { sendRequest, type Problem, type SentResponse } from '../helpers/send-request.js';
import { startProxy, type ProxyFixture } from '../helpers/start-proxy.js';
import { startUpstream, type Upstream } from '../helpers/start-upstream.js';

const AUDIT_FIELDS = [
  'time',
  'request_id',
  'agent',
  'service',
  'method',
  'path',
  'route',
  'scope',
  'decision',
  'code',
  'status',
  'upstream_status',
  'duration_ms',
  'credential',
  'redactions',
] as const;

/** The fields of a `request` log line: the audit record's, minus the time, which pino writes itself. */
const LOG_FIELDS = ['request_id', 'agent', 'service', 'method', 'path', 'route', 'scope', 'decision', 'code', 'status', 'upstream_status', 'duration_ms'] as const;

function requestLines(proxy: ProxyFixture): Array<Record<string, unknown>> {
  return proxy.logRecords().filter((line) => line['msg'] === 'request');
}

describe('audit records and request logs', () => {
  const key = canary('audit-key');
  const queryCanary = canary('audit-query');
  const headerCanary = canary('audit-header');
  const cookieCanary = canary('audit-cookie');
  const agent = generateAgentToken();
  const stranger = generateAgentToken();
  let upstream: Upstream;
  let proxy: ProxyFixture;
  const bodies: string[] = [];
  const responses: Array<{ label: string; response: SentResponse }> = [];

  beforeAll(async () => {
    upstream = await startUpstream();
    proxy = await startProxy(
      {
        services: {
          things: {
            upstream: upstream.url,
            credential: { secret: 'env:THINGS_KEY' },
            routes: [
              { method: 'POST', path: '/v1/things/:id', scope: 'things:write' },
              { method: 'GET', path: '/v1/things', scope: 'things:read' },
            ],
          },
        },
        agents: { 'audit-bot': { tokens: [agent.hash], credentials: [{ service: 'things', max_scope: ['things:write'] }] } },
      },
      { env: { THINGS_KEY: key } },
    );

    const headers = { authorization: `Bearer ${agent.token}`, 'x-custom-note': headerCanary, 'user-agent': `agent/${headerCanary}`, cookie: `session=${cookieCanary}` };
    const send = async (label: string, path: string, method: string, extra: Record<string, string> = headers): Promise<void> => {
      const response = await sendRequest(`${proxy.url}${path}`, { method, headers: extra, ...(method === 'POST' ? { body: '{"name":"widget"}' } : {}) });
      bodies.push(response.text, JSON.stringify(response.headers));
      responses.push({ label, response });
    };
    await send('allowed', `/things/v1/things/42?q=${queryCanary}&limit=5`, 'POST');
    await send('scope', `/things/v1/things?q=${queryCanary}`, 'GET');
    await send('route', `/things/v1/other?token=${queryCanary}`, 'GET');
    await send('service', `/nothing/v1/x?q=${queryCanary}`, 'GET');
    await send('unauthenticated', `/things/v1/things/7?q=${queryCanary}`, 'POST', { ...headers, authorization: `Bearer ${stranger.token}` });
    await proxy.waitForAudit(responses.length);
  });

  afterAll(async () => {
    await proxy?.close();
    await upstream?.close();
  });

  function pair(label: string): { response: SentResponse; record: AuditRecord; line: Record<string, unknown> } {
    const response = responses.find((r) => r.label === label)?.response;
    if (response === undefined) throw new Error(`no response ${label}`);
    const id = response.headers['x-airlock-request-id'];
    const records = proxy.auditRecords().filter((r) => r.request_id === id);
    const lines = requestLines(proxy).filter((l) => l['request_id'] === id);
    expect(records, `audit records for ${label}`).toHaveLength(1);
    expect(lines, `request log lines for ${label}`).toHaveLength(1);
    return { response, record: records[0] as AuditRecord, line: lines[0] as Record<string, unknown> };
  }

  it('writes one audit record and one request log line per request, allowed or denied', () => {
    expect(proxy.auditRecords()).toHaveLength(responses.length);
    expect(requestLines(proxy)).toHaveLength(responses.length);
    const ids = responses.map((r) => r.response.headers['x-airlock-request-id']);
    expect(new Set(ids).size).toBe(responses.length);
    expect(proxy.auditRecords().map((r) => r.request_id).sort()).toEqual([...ids].sort());
  });

  it('records an allowed request with every field', () => {
    const { response, record, line } = pair('allowed');
    expect(response.status).toBe(200);
    for (const field of AUDIT_FIELDS) expect(record, `audit field ${field}`).toHaveProperty(field);
    for (const field of LOG_FIELDS) expect(line, `log field ${field}`).toHaveProperty(field);
    expect(record).toMatchObject({
      request_id: response.headers['x-airlock-request-id'],
      agent: 'audit-bot',
      service: 'things',
      method: 'POST',
      path: '/things/v1/things/42',
      route: '/v1/things/:id',
      scope: 'things:write',
      decision: 'allow',
      code: null,
      status: 200,
      upstream_status: 200,
      credential: 'env:THINGS_KEY',
      redactions: 0,
    });
    expect(Number.isNaN(Date.parse(record.time))).toBe(false);
    expect(new Date(record.time).toISOString()).toBe(record.time);
    expect(record.duration_ms).toBeTypeOf('number');
    expect(record.duration_ms).toBeGreaterThanOrEqual(0);
    for (const field of LOG_FIELDS) expect([field, line[field]]).toEqual([field, record[field]]);
    expect(line['level']).toBe('info');
  });

  it('records a scope denial with the route and scope it needed', () => {
    const { response, record, line } = pair('scope');
    expect(response.status).toBe(403);
    expect(response.json<Problem>().request_id).toBe(record.request_id);
    expect(record).toMatchObject({
      agent: 'audit-bot',
      service: 'things',
      method: 'GET',
      path: '/things/v1/things',
      route: '/v1/things',
      scope: 'things:read',
      decision: 'deny',
      code: 'scope_denied',
      status: 403,
      upstream_status: null,
      credential: null,
    });
    expect(line).toMatchObject({ decision: 'deny', code: 'scope_denied', status: 403 });
  });

  it('records a route denial, an unknown service and an unknown token', () => {
    const route = pair('route');
    expect(route.record).toMatchObject({ agent: 'audit-bot', service: 'things', path: '/things/v1/other', route: null, scope: null, decision: 'deny', code: 'route_not_allowed', status: 403 });
    const service = pair('service');
    expect(service.record).toMatchObject({ agent: 'audit-bot', service: null, path: '/nothing/v1/x', decision: 'deny', code: 'unknown_service', status: 404 });
    const unauthenticated = pair('unauthenticated');
    expect(unauthenticated.record).toMatchObject({ agent: null, service: null, method: 'POST', decision: 'deny', code: 'unauthenticated', status: 401 });
    for (const { response } of responses) {
      if (response.status === 200) continue;
      expect(response.json<Problem>().request_id).toBe(response.headers['x-airlock-request-id']);
    }
  });

  it('forwards the query and headers upstream but keeps their values out of logs and audit', () => {
    const seen = upstream.requests.at(-1);
    expect(upstream.requests).toHaveLength(1);
    expect(seen?.target).toBe(`/v1/things/42?q=${queryCanary}&limit=5`);
    expect(seen?.header('x-custom-note')).toEqual([headerCanary]);
    assertNoLeak([key, queryCanary, headerCanary, cookieCanary, agent.token, stranger.token], [
      { name: 'log', text: proxy.logLines.join('') },
      { name: 'audit', text: proxy.auditText() },
    ]);
  });

  it('leaves no trace of the key in responses', () => {
    assertNoLeak([key], [{ name: 'responses', text: bodies.join('\n') }]);
  });
});

describe('audit fail-closed', () => {
  const key = canary('audit-full');
  const agent = generateAgentToken();
  let upstream: Upstream;
  let proxy: ProxyFixture;
  const bodies: string[] = [];

  beforeAll(async () => {
    upstream = await startUpstream();
    // /dev/full opens fine and fails every write with ENOSPC: a full disk on demand.
    // (Never read it back: reading /dev/full yields zeros forever, so proxy.auditText() is off limits.)
    proxy = await startProxy(
      {
        audit: { file: '/dev/full' },
        services: {
          things: {
            upstream: upstream.url,
            credential: { secret: 'env:THINGS_KEY' },
            routes: [
              { method: 'GET', path: '/v1/things', scope: 'things:read' },
              { method: 'GET', path: '/v1/secret', scope: 'things:admin' },
            ],
          },
        },
        agents: { bot: { tokens: [agent.hash], credentials: [{ service: 'things', max_scope: ['things:read'] }] } },
      },
      { env: { THINGS_KEY: key } },
    );
  });

  afterAll(async () => {
    await proxy?.close();
    await upstream?.close();
  });

  async function call(path: string): Promise<SentResponse> {
    const response = await sendRequest(`${proxy.url}${path}`, { headers: { authorization: `Bearer ${agent.token}` } });
    bodies.push(response.text);
    return response;
  }

  it('answers a denied request with 503 audit_unavailable instead of its 403', async () => {
    const response = await call('/things/v1/secret');
    expect(response.status).toBe(503);
    const problem = response.json<Problem>();
    expect(problem.code).toBe('audit_unavailable');
    expect(problem.request_id).toBe(response.headers['x-airlock-request-id']);
    const line = requestLines(proxy).find((l) => l['request_id'] === problem.request_id);
    expect(line).toMatchObject({ level: 'error', audited: false, code: 'audit_unavailable', status: 503 });
  });

  it('then refuses an otherwise allowed request with 503 audit_unavailable and sends nothing upstream', async () => {
    const response = await call('/things/v1/things');
    expect(response.status).toBe(503);
    expect(response.json<Problem>().code).toBe('audit_unavailable');
    expect(upstream.requests).toHaveLength(0);
  });

  it('logs why, without the key', () => {
    expect(proxy.logRecords().some((l) => l['level'] === 'error' && String(l['msg']).includes('audit record could not be written'))).toBe(true);
    assertNoLeak([key], [
      { name: 'responses', text: bodies.join('\n') },
      { name: 'log', text: proxy.logLines.join('') },
    ]);
  });
});

describe('log.requests: problems', () => {
  const key = canary('lines-key');
  const agent = generateAgentToken();
  let upstream: Upstream;
  let proxy: ProxyFixture;
  let input: Record<string, unknown>;

  beforeAll(async () => {
    upstream = await startUpstream();
    const closedPort = await freePort();
    input = {
      log: { level: 'info', requests: 'problems' },
      services: {
        things: { upstream: upstream.url, credential: { secret: 'env:LINES_KEY' }, routes: [{ method: 'GET', path: '/v1/things', scope: 'things:read' }, { method: 'GET', path: '/v1/admin', scope: 'things:admin' }] },
        down: { upstream: `http://127.0.0.1:${closedPort}`, credential: { secret: 'env:LINES_KEY' }, routes: [{ method: 'GET', path: '/v1/*', scope: 'down:read' }] },
      },
      agents: { 'lines-bot': { tokens: [agent.hash], credentials: [{ service: 'things', max_scope: ['things:read'] }, { service: 'down', max_scope: ['*'] }] } },
    };
    proxy = await startProxy(input, { env: { LINES_KEY: key } });
  });

  afterAll(async () => {
    await proxy?.close();
    await upstream?.close();
  });

  async function get(path: string): Promise<string> {
    const response = await sendRequest(`${proxy.url}${path}`, { headers: { authorization: `Bearer ${agent.token}` } });
    return `${response.status} ${response.headers['x-airlock-request-id'] as string}`;
  }

  it('writes the line of a 5xx only; the audit log has every request; a reload to all brings the others back', async () => {
    const [ok, denied, failed] = [await get('/things/v1/things'), await get('/things/v1/admin'), await get('/down/v1/x')];
    expect([ok, denied, failed].map((s) => s.split(' ')[0])).toEqual(['200', '403', '502']);
    const ids = [ok, denied, failed].map((s) => s.split(' ')[1]);
    const audited = await proxy.waitForAudit(3);
    expect(ids.every((id) => audited.some((r) => r.request_id === id))).toBe(true);
    const lines = requestLines(proxy);
    expect(lines.map((l) => l['request_id'])).toEqual([ids[2]]);
    expect(lines[0]).toMatchObject({ level: 'warn', status: 502, code: 'upstream_unreachable', audited: true });

    const built = buildConfig({ listen: '127.0.0.1:0', data_dir: proxy.dataDir, ...input, log: { level: 'info', requests: 'all' } }, { baseDir: proxy.dataDir });
    if (built.config === null) throw new Error(built.problems.map((p) => formatProblem(p, null)).join('\n'));
    expect(await proxy.airlock.reload(built.config)).toEqual({ ok: true });
    const after = (await get('/things/v1/things')).split(' ')[1];
    await proxy.waitForAudit(4);
    expect(requestLines(proxy).map((l) => l['request_id'])).toEqual([ids[2], after]);
    assertNoLeak([key, agent.token], [{ name: 'log', text: proxy.logLines.join('') }]);
  });
});
