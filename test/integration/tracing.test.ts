/**
 * OpenTelemetry traces (issue 6), read back from an in-process OTLP/HTTP receiver: one agent request is
 * one tree in the agent's own trace (SERVER span "METHOD /prefix/route-template" under the agent's span,
 * a CLIENT span child, and a credential.resolve child when the credential was fetched from its store on
 * the request's path, failed fetches marked as errors; a cached credential adds no span), and the upstream is handed the CLIENT span as its
 * parent, never the agent's traceparent. Requests without a traceparent start a trace of their own;
 * denials carry airlock.code and no CLIENT span; a 502 marks the server span as an error. The trace id is
 * in the audit record and the log line. Sampling 0 exports nothing but still propagates (unsampled);
 * with tracing off the agent's headers pass through untouched. OTEL_EXPORTER_OTLP_ENDPOINT alone turns
 * export on; OTEL_EXPORTER_OTLP_TRACES_ENDPOINT overrides it, OTEL_EXPORTER_OTLP_HEADERS reach the
 * collector, OTEL_TRACES_SAMPLER_ARG=0 exports no new trace, OTEL_SDK_DISABLED / OTEL_TRACES_EXPORTER=none
 * export nothing. A task session's id and a response's redaction count are on the server span; an audit
 * write failure is logged with the trace id. No canary (credential, query value, header value, agent or
 * session token) reaches any exported body.
 */
import { randomBytes } from 'node:crypto';
import type { IncomingMessage, ServerResponse } from 'node:http';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { generateAgentToken } from '../../src/identity/agent-token.js';
import type { AuditRecord } from '../../src/observability/audit-record.js';
import { assertNoLeak } from '../helpers/assert-no-leak.js';
import { canary } from '../helpers/canary.js';
import { eventually, freePort, sleep } from '../helpers/operator.js';
import { sendRequest, type Problem, type SentResponse } from '../helpers/send-request.js';
import { startProxy, type ProxyFixture } from '../helpers/start-proxy.js';
import { startUpstream, type RecordedRequest, type Upstream } from '../helpers/start-upstream.js';
import { SPAN_KIND, STATUS_CODE, startOtlpReceiver, type OtlpReceiver, type ReceivedSpan } from '../support/otlp-receiver.js';

const TRACEPARENT = /^00-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})$/;

function hex(bytes: number): string {
  return randomBytes(bytes).toString('hex');
}

interface AgentTraceContext {
  traceId: string;
  spanId: string;
  header: string;
}

function agentContext(flags = '01'): AgentTraceContext {
  const traceId = hex(16);
  const spanId = hex(8);
  return { traceId, spanId, header: `00-${traceId}-${spanId}-${flags}` };
}

function parseTraceparent(value: string | undefined): { traceId: string; parentId: string; flags: string } {
  const match = TRACEPARENT.exec(value ?? '');
  if (match === null) throw new Error(`not a W3C traceparent: ${String(value)}`);
  return { traceId: match[1] as string, parentId: match[2] as string, flags: match[3] as string };
}

function requestIdOf(response: SentResponse): string {
  const id = response.headers['x-airlock-request-id'];
  if (typeof id !== 'string') throw new Error('no x-airlock-request-id');
  return id;
}

const key = canary('trace-key');
/** The value of a credential cached for 50 ms only, so a request after a pause fetches it again. */
const fetchedKey = canary('trace-fetched-key');
const FETCHED_CACHE = { ttl: 0.05, max_staleness: 0.05 };
const queryCanary = canary('trace-query');
const headerCanary = canary('trace-header');
const agent = generateAgentToken();

function services(upstream: Upstream, downPort: number): Record<string, unknown> {
  return {
    openai: {
      upstream: upstream.url,
      credential: { secret: 'env:TRACE_KEY', inject: 'bearer' },
      routes: [
        { method: 'POST', path: '/v1/chat/completions', scope: 'chat:write' },
        { method: 'GET', path: '/v1/models/:model', scope: 'models:read' },
        { method: 'GET', path: '/v1/organization', scope: 'org:admin' },
      ],
    },
    down: {
      upstream: `http://127.0.0.1:${downPort}`,
      credential: { secret: 'env:TRACE_KEY', inject: 'bearer' },
      routes: [{ method: 'GET', path: '/v1/things/:id', scope: 'things:read' }],
    },
    fetched: {
      upstream: upstream.url,
      credential: { secret: 'env:TRACE_FETCHED_KEY', inject: 'bearer', ...FETCHED_CACHE },
      routes: [{ method: 'GET', path: '/v1/models/:model', scope: 'models:read' }],
    },
    // Its upstream answers 200 and then stalls: the body is cut after 1 s (upstream_timeout under a 200).
    stall: {
      upstream: upstream.url,
      credential: { secret: 'env:TRACE_KEY', inject: 'bearer' },
      timeouts: { connect: 10, headers: 60, body: 1, queue: 30 },
      routes: [{ method: 'GET', path: '/v1/stall', scope: 'stall:read' }],
    },
    // Its variable is never set: every request waits for a fetch that fails (503).
    unset: {
      upstream: upstream.url,
      credential: { secret: 'env:TRACE_UNSET_KEY', inject: 'bearer' },
      routes: [{ method: 'GET', path: '/v1/models/:model', scope: 'models:read' }],
    },
  };
}

const agents = {
  'trace-bot': {
    tokens: [agent.hash],
    credentials: [
      { service: 'openai', max_scope: ['chat:write', 'models:read'] },
      { service: 'down', max_scope: ['*'] },
      { service: 'fetched', max_scope: ['*'] },
      { service: 'unset', max_scope: ['*'] },
      { service: 'stall', max_scope: ['*'] },
    ],
  },
};

interface TracedProxy {
  receiver: OtlpReceiver;
  upstream: Upstream;
  proxy: ProxyFixture;
}

/**
 * For one describe block: an OTLP receiver, an upstream, and a proxy whose config (beside services and
 * agents) and environment (beside TRACE_KEY) are built from the receiver; all closed after the block.
 */
function tracedProxy(build: (receiver: OtlpReceiver) => { config?: Record<string, unknown>; env?: Record<string, string> }): TracedProxy {
  const fixture = {} as TracedProxy;
  beforeAll(async () => {
    fixture.receiver = await startOtlpReceiver();
    fixture.upstream = await startUpstream();
    const { config = {}, env = {} } = build(fixture.receiver);
    fixture.proxy = await startProxy({ ...config, services: services(fixture.upstream, await freePort()), agents }, { env: { TRACE_KEY: key, TRACE_FETCHED_KEY: fetchedKey, ...env } });
  });
  afterAll(async () => {
    await fixture.proxy?.close();
    await fixture.upstream?.close();
    await fixture.receiver?.close();
  });
  return fixture;
}

function call(proxy: ProxyFixture, path: string, options: { method?: string; headers?: Record<string, string>; body?: string } = {}): Promise<SentResponse> {
  return sendRequest(`${proxy.url}${path}`, {
    method: options.method ?? 'GET',
    headers: { authorization: `Bearer ${agent.token}`, 'x-custom-note': headerCanary, ...(options.headers ?? {}) },
    ...(options.body === undefined ? {} : { body: options.body }),
  });
}

function upstreamRequestFor(upstream: Upstream, marker: string): RecordedRequest {
  const found = upstream.requests.find((r) => r.target.includes(marker));
  if (found === undefined) throw new Error(`the upstream saw no request with ${marker}`);
  return found;
}

/** The default neutral answer, except /v1/models/echo-key, which echoes the injected credential back. */
function leakyHandler(req: IncomingMessage, res: ServerResponse, recorded: RecordedRequest): void {
  if (recorded.target === '/v1/stall') {
    // Headers and the start of a body, then nothing (the test's teardown closes the socket).
    res.writeHead(200, { 'content-type': 'application/json' });
    res.write('{"partial":');
    return;
  }
  const authorization = req.headers['authorization'] ?? '';
  const body = recorded.target.startsWith('/v1/models/echo-key') ? JSON.stringify({ seen: authorization, again: `key=${authorization.replace(/^Bearer /, '')}` }) : '{"ok":true}';
  res.writeHead(200, { 'content-type': 'application/json', 'content-length': Buffer.byteLength(body) });
  res.end(body);
}

describe('traces exported over OTLP/HTTP', () => {
  let receiver: OtlpReceiver;
  let upstream: Upstream;
  let proxy: ProxyFixture;
  let downPort: number;
  /** The als_ token minted below: a canary like the agent token. */
  let sessionToken = '';

  beforeAll(async () => {
    receiver = await startOtlpReceiver();
    upstream = await startUpstream(leakyHandler);
    downPort = await freePort();
    proxy = await startProxy(
      { telemetry: { otlp: { endpoint: receiver.url }, service_name: 'airlock-under-test' }, services: services(upstream, downPort), agents },
      { env: { TRACE_KEY: key, TRACE_FETCHED_KEY: fetchedKey } },
    );
  });

  afterAll(async () => {
    await proxy?.close();
    await upstream?.close();
    await receiver?.close();
  });

  function serverSpanOf(requestId: string): Promise<ReceivedSpan> {
    return receiver.waitForSpans((s) => s.kind === SPAN_KIND.SERVER && s.attributes['airlock.request_id'] === requestId).then((found) => {
      expect(found).toHaveLength(1);
      return found[0] as ReceivedSpan;
    });
  }

  function spansOfTrace(traceId: string): ReceivedSpan[] {
    return receiver.spans.filter((s) => s.traceId === traceId);
  }

  describe('an allowed request that carries the agent traceparent', () => {
    const context = agentContext();
    let response: SentResponse;
    let server: ReceivedSpan;

    beforeAll(async () => {
      response = await call(proxy, `/openai/v1/chat/completions?api_key=${queryCanary}&n=1`, {
        method: 'POST',
        headers: { traceparent: context.header, 'content-type': 'application/json' },
        body: '{"model":"gpt-test","messages":[]}',
      });
      server = await serverSpanOf(requestIdOf(response));
    });

    it('is answered and forwarded', () => {
      expect(response.status, response.text).toBe(200);
      expect(upstreamRequestFor(upstream, queryCanary).target).toBe(`/v1/chat/completions?api_key=${queryCanary}&n=1`);
    });

    it('continues the agent trace with a SERVER span named after the method and the route template', () => {
      expect(server.traceId).toBe(context.traceId);
      expect(server.parentSpanId).toBe(context.spanId);
      expect(server.name).toBe('POST /openai/v1/chat/completions');
      expect(server.status.code).not.toBe(STATUS_CODE.ERROR);
      expect(server.attributes).toMatchObject({
        'http.request.method': 'POST',
        'url.path': '/openai/v1/chat/completions',
        'http.route': '/openai/v1/chat/completions',
        'http.response.status_code': 200,
        'airlock.agent': 'trace-bot',
        'airlock.service': 'openai',
        'airlock.route': '/v1/chat/completions',
        'airlock.scope': 'chat:write',
        'airlock.decision': 'allow',
        'airlock.redactions': 0,
        'airlock.request_id': requestIdOf(response),
      });
      expect(server.attributes).not.toHaveProperty('airlock.code');
      expect(server.resource['service.name']).toBe('airlock-under-test');
      // Replicas and workers told apart (found by the observability walkthrough: service.name and version only).
      expect(String(server.resource['service.instance.id'])).toMatch(/^[0-9a-f-]{36}$/);
    });

    it('has a CLIENT child in the one trace, and no credential.resolve span for a credential already cached', () => {
      const trace = spansOfTrace(context.traceId);
      // Fetched at start-up (app.ts warmCatalog) and cached since: nothing waited, so nothing to time.
      expect(trace.map((s) => s.name).sort()).toEqual(['POST', 'POST /openai/v1/chat/completions']);
      const client = trace.find((s) => s.kind === SPAN_KIND.CLIENT) as ReceivedSpan;
      expect(client.parentSpanId).toBe(server.spanId);
      expect(client.attributes).toMatchObject({
        'http.request.method': 'POST',
        'http.response.status_code': 200,
        'server.address': '127.0.0.1',
        'server.port': upstream.port,
        'url.full': `${upstream.url}/v1/chat/completions`,
        'airlock.service': 'openai',
      });
      // Exactly one span of each kind: the request did not start a second trace.
      expect(trace.filter((s) => s.kind === SPAN_KIND.SERVER)).toHaveLength(1);
      expect(receiver.spans.filter((s) => s.attributes['airlock.request_id'] === requestIdOf(response)).map((s) => s.traceId)).toEqual([context.traceId]);
    });

    it('hands the upstream the CLIENT span as parent in the same trace, not the agent traceparent', () => {
      const seen = upstreamRequestFor(upstream, queryCanary);
      const values = seen.header('traceparent');
      expect(values).toHaveLength(1);
      expect(values[0]).not.toBe(context.header);
      const parsed = parseTraceparent(values[0]);
      const client = spansOfTrace(context.traceId).find((s) => s.kind === SPAN_KIND.CLIENT) as ReceivedSpan;
      expect(parsed).toEqual({ traceId: context.traceId, parentId: client.spanId, flags: '01' });
    });

    it('writes the trace id into the audit record and the log line', async () => {
      const id = requestIdOf(response);
      const record = await eventually('the audit record', () => proxy.auditRecords().find((r) => r.request_id === id));
      expect(record.trace_id).toBe(context.traceId);
      // The log line follows the audit write.
      const line = await eventually('the request log line', () => proxy.logRecords().find((l) => l['msg'] === 'request' && l['request_id'] === id));
      expect(line['trace_id']).toBe(context.traceId);
    });
  });

  it('starts a new trace for a request without a traceparent', async () => {
    const response = await call(proxy, '/openai/v1/models/gpt-test?fresh=1');
    expect(response.status, response.text).toBe(200);
    const server = await serverSpanOf(requestIdOf(response));
    expect(server.parentSpanId).toBe('');
    expect(server.traceId).toMatch(/^[0-9a-f]{32}$/);
    expect(server.name).toBe('GET /openai/v1/models/:model');
    expect(server.attributes).toMatchObject({ 'http.route': '/openai/v1/models/:model', 'url.path': '/openai/v1/models/gpt-test', 'airlock.route': '/v1/models/:model', 'airlock.scope': 'models:read' });
    const client = spansOfTrace(server.traceId).find((s) => s.kind === SPAN_KIND.CLIENT) as ReceivedSpan;
    expect(client.parentSpanId).toBe(server.spanId);
    const upstreamSaw = parseTraceparent(upstreamRequestFor(upstream, 'fresh=1').header('traceparent')[0]);
    expect(upstreamSaw).toEqual({ traceId: server.traceId, parentId: client.spanId, flags: '01' });
    const record = await eventually('the audit record', () => proxy.auditRecords().find((r) => r.request_id === requestIdOf(response)));
    expect(record.trace_id).toBe(server.traceId);
  });

  it('gives a denied request a server span with airlock.code and no CLIENT or credential span', async () => {
    const context = agentContext();
    const before = upstream.requests.length;
    const response = await call(proxy, `/openai/v1/organization?key=${queryCanary}`, { headers: { traceparent: context.header } });
    expect(response.status).toBe(403);
    expect(response.json<Problem>().code).toBe('scope_denied');
    const server = await serverSpanOf(requestIdOf(response));
    expect(server.traceId).toBe(context.traceId);
    expect(server.parentSpanId).toBe(context.spanId);
    expect(server.name).toBe('GET /openai/v1/organization');
    expect(server.attributes).toMatchObject({
      'airlock.decision': 'deny',
      'airlock.code': 'scope_denied',
      'airlock.scope': 'org:admin',
      'http.response.status_code': 403,
      'url.path': '/openai/v1/organization',
    });
    // 4xx belongs to the client (HTTP semantic conventions): not an error of the server span.
    expect(server.status.code).not.toBe(STATUS_CODE.ERROR);
    expect(spansOfTrace(context.traceId).map((s) => s.kind)).toEqual([SPAN_KIND.SERVER]);
    expect(upstream.requests.length).toBe(before);
    const record = await eventually('the audit record', () => proxy.auditRecords().find((r) => r.request_id === requestIdOf(response)));
    expect(record.trace_id).toBe(context.traceId);
  });

  it('names an unknown service span by its method only and keeps the raw path out of the span name', async () => {
    const response = await call(proxy, '/nowhere/v1/users/12345');
    expect(response.status).toBe(404);
    const server = await serverSpanOf(requestIdOf(response));
    expect(server.name).toBe('GET');
    expect(server.attributes['airlock.code']).toBe('unknown_service');
    expect(server.attributes).not.toHaveProperty('http.route');
  });

  it('marks the server span of a 502 as an error', async () => {
    const context = agentContext();
    const response = await call(proxy, '/down/v1/things/7', { headers: { traceparent: context.header } });
    expect(response.status).toBe(502);
    expect(response.json<Problem>().code).toBe('upstream_unreachable');
    const server = await serverSpanOf(requestIdOf(response));
    expect(server.name).toBe('GET /down/v1/things/:id');
    expect(server.status.code).toBe(STATUS_CODE.ERROR);
    expect(server.attributes).toMatchObject({ 'airlock.code': 'upstream_unreachable', 'http.response.status_code': 502, 'airlock.service': 'down' });
    const client = spansOfTrace(context.traceId).find((s) => s.kind === SPAN_KIND.CLIENT);
    expect(client?.parentSpanId).toBe(server.spanId);
    expect(client?.status.code).toBe(STATUS_CODE.ERROR);
    expect(client?.attributes).not.toHaveProperty('http.response.status_code');
  });

  // Found by the observability walkthrough: a body cut after a 200 (upstream_timeout) left the server
  // span UNSET while the metrics and the audit record said upstream_timeout.
  it('marks the server span of a response cut after its 200 as an error, incomplete', async () => {
    // The status went out, then the body was cut: the client sees an aborted body.
    await sendRequest(`${proxy.url}/stall/v1/stall`, { headers: { authorization: `Bearer ${agent.token}` } }).catch(() => undefined);
    const requestId = await eventually('the stalled request audited', () => proxy.auditRecords().find((r) => r.route === '/v1/stall')?.request_id);
    const server = await serverSpanOf(requestId);
    expect(server.status.code).toBe(STATUS_CODE.ERROR);
    expect(server.attributes).toMatchObject({ 'airlock.code': 'upstream_timeout', 'error.type': 'upstream_timeout', 'airlock.incomplete': true, 'airlock.upstream_status': 200 });
  });

  it('puts the task session id on the server span of a request made with a session token', async () => {
    const minted = await call(proxy, '/_airlock/sessions', {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify({ scopes: { openai: ['models:read'] }, ttl_seconds: 60, justification: 'tracing test', task_id: 'TRACE-1' }),
    });
    expect(minted.status, minted.text).toBe(201);
    const { session_token: token, session_id: sessionId } = minted.json<{ session_token: string; session_id: string }>();
    sessionToken = token;
    expect(token).toMatch(/^als_/);
    expect(sessionId).toMatch(/^ses_/);
    const context = agentContext();
    const response = await sendRequest(`${proxy.url}/openai/v1/models/sessioned?s=1`, {
      headers: { authorization: `Bearer ${token}`, 'x-custom-note': headerCanary, traceparent: context.header },
    });
    expect(response.status, response.text).toBe(200);
    const server = await serverSpanOf(requestIdOf(response));
    expect(server.traceId).toBe(context.traceId);
    expect(server.attributes).toMatchObject({
      'airlock.agent': 'trace-bot',
      'airlock.session': sessionId,
      'airlock.decision': 'allow',
      'airlock.scope': 'models:read',
      'http.route': '/openai/v1/models/:model',
    });
    const record = await eventually('the audit record', () => proxy.auditRecords().find((r) => r.request_id === requestIdOf(response)));
    expect(record.session).toBe(sessionId);
    // A request made with the agent's own token carries no session attribute.
    const plain = await call(proxy, '/openai/v1/models/unsessioned');
    expect((await serverSpanOf(requestIdOf(plain))).attributes).not.toHaveProperty('airlock.session');
  });

  it('counts the redactions of a response that echoes the credential on the server span', async () => {
    const context = agentContext();
    const response = await call(proxy, '/openai/v1/models/echo-key', { headers: { traceparent: context.header } });
    expect(response.status, response.text).toBe(200);
    expect(response.text).toContain('[REDACTED]');
    expect(response.text).not.toContain(key);
    const server = await serverSpanOf(requestIdOf(response));
    expect(server.traceId).toBe(context.traceId);
    const redactions = server.attributes['airlock.redactions'];
    expect(typeof redactions).toBe('number');
    expect(redactions as number).toBeGreaterThan(0);
    const record = await eventually('the audit record', () => proxy.auditRecords().find((r) => r.request_id === requestIdOf(response)));
    expect(redactions).toBe(record.redactions);
  });

  it('times a credential fetched from its store on the request path as a credential.resolve child', async () => {
    // Past its 50 ms ttl and 50 ms staleness bound, the cached value is unusable: this request waits
    // for the store.
    await new Promise((resolve) => setTimeout(resolve, 250));
    const context = agentContext();
    const response = await call(proxy, `/fetched/v1/models/gpt-test?f=${queryCanary}`, { headers: { traceparent: context.header } });
    expect(response.status, response.text).toBe(200);
    expect(upstreamRequestFor(upstream, `f=${queryCanary}`).header('authorization')).toEqual([`Bearer ${fetchedKey}`]);
    const server = await serverSpanOf(requestIdOf(response));
    const [resolve] = await receiver.waitForSpans((s) => s.traceId === context.traceId && s.name === 'credential.resolve');
    const client = (await receiver.waitForSpans((s) => s.traceId === context.traceId && s.kind === SPAN_KIND.CLIENT))[0] as ReceivedSpan;
    expect(spansOfTrace(context.traceId).filter((s) => s.name === 'credential.resolve')).toHaveLength(1);
    expect(resolve?.kind).toBe(SPAN_KIND.INTERNAL);
    expect(resolve?.parentSpanId).toBe(server.spanId);
    expect(resolve?.attributes).toEqual({ 'airlock.credential.ref': 'env:TRACE_FETCHED_KEY', 'airlock.service': 'fetched' });
    expect(resolve?.status.code).not.toBe(STATUS_CODE.ERROR);
    // Opened when the wait was known, timed from when the resolution began: inside the server span,
    // and over before the upstream call started. Within a millisecond: the SDK anchors each span's
    // clock to Date.now(), whole milliseconds, so two spans' times can disagree by up to one.
    const ms = 1_000_000n;
    const start = BigInt(resolve?.startTimeUnixNano ?? '0');
    const end = BigInt(resolve?.endTimeUnixNano ?? '0');
    expect(start + ms >= BigInt(server.startTimeUnixNano)).toBe(true);
    expect(end >= start).toBe(true);
    expect(end <= BigInt(client.startTimeUnixNano) + ms).toBe(true);
    expect(end <= BigInt(server.endTimeUnixNano) + ms).toBe(true);
  });

  it('marks a failed fetch as an error credential.resolve span, under a 503 server span with no CLIENT span', async () => {
    const context = agentContext();
    const before = upstream.requests.length;
    const response = await call(proxy, `/unset/v1/models/gpt-test?u=${queryCanary}`, { headers: { traceparent: context.header } });
    expect(response.status, response.text).toBe(503);
    const code = response.json<Problem>().code;
    const server = await serverSpanOf(requestIdOf(response));
    expect(server.attributes['airlock.code']).toBe(code);
    const [resolve] = await receiver.waitForSpans((s) => s.traceId === context.traceId && s.name === 'credential.resolve');
    expect(resolve?.parentSpanId).toBe(server.spanId);
    expect(resolve?.attributes['airlock.credential.ref']).toBe('env:TRACE_UNSET_KEY');
    expect(resolve?.status).toMatchObject({ code: STATUS_CODE.ERROR, message: code });
    expect(spansOfTrace(context.traceId).map((s) => s.name).sort()).toEqual(['GET /unset/v1/models/:model', 'credential.resolve']);
    expect(spansOfTrace(context.traceId).filter((s) => s.kind === SPAN_KIND.CLIENT)).toEqual([]);
    expect(upstream.requests.length).toBe(before);
  });

  // The request guard refuses a managed key in the path (400), but the refused path is still the
  // server span's url.path: only a scrub of what is exported keeps the key from the collector.
  it('keeps a managed key an agent put in the path out of the exported span, which still shows the refusal', async () => {
    for (const form of [key, encodeURIComponent(key), Buffer.from(key).toString('base64url')]) {
      const response = await call(proxy, `/openai/v1/models/${form}`);
      expect(response.status, response.text).toBe(400);
      const server = await serverSpanOf(requestIdOf(response));
      expect(server.attributes['airlock.code']).toBe('invalid_request');
      expect(String(server.attributes['url.path'])).toContain('[REDACTED]');
    }
    assertNoLeak([key], [{ name: 'OTLP bodies', text: receiver.bodies.join('\n') }]);
  });

  it('puts no header value, query value, credential or agent token in any exported span', async () => {
    // Make sure everything sent so far has been exported before reading the bodies.
    await receiver.waitForSpans((s) => s.kind === SPAN_KIND.SERVER, 5_000, 5);
    expect(receiver.bodies.length).toBeGreaterThan(0);
    expect(receiver.rejected).toEqual([]);
    expect(sessionToken).not.toBe('');
    assertNoLeak([key, fetchedKey, queryCanary, headerCanary, agent.token, sessionToken], [
      { name: 'OTLP bodies', text: receiver.bodies.join('\n') },
      { name: 'OTLP request headers', text: JSON.stringify(receiver.requests.map((r) => r.headers)) },
    ]);
    for (const span of receiver.spans) {
      for (const [name, value] of Object.entries(span.attributes)) {
        if (typeof value === 'string' && (name === 'url.path' || name === 'url.full' || name === 'http.route')) expect(value, name).not.toContain('?');
      }
      expect(Object.keys(span.attributes).filter((name) => name.startsWith('http.request.header.') || name.startsWith('http.response.header.'))).toEqual([]);
    }
  });
});

describe('sampling 0', () => {
  const t = tracedProxy((receiver) => ({ config: { telemetry: { otlp: { endpoint: receiver.url }, sampling: 0 } } }));
  let responses: SentResponse[] = [];
  const sampledParent = agentContext('01');

  beforeAll(async () => {
    responses = [await call(t.proxy, '/openai/v1/models/a?unsampled=1'), await call(t.proxy, '/openai/v1/models/b?unsampled=2')];
  });

  it('still forwards, with an unsampled traceparent for the upstream and the trace id in the audit', async () => {
    for (const response of responses) expect(response.status, response.text).toBe(200);
    for (const [i, response] of responses.entries()) {
      const seen = parseTraceparent(upstreamRequestFor(t.upstream, `unsampled=${i + 1}`).header('traceparent')[0]);
      expect(seen.flags).toBe('00');
      expect(seen.traceId).not.toMatch(/^0+$/);
      const record = await eventually('the audit record', () => t.proxy.auditRecords().find((r) => r.request_id === requestIdOf(response)));
      expect(record.trace_id).toBe(seen.traceId);
    }
  });

  it('follows a sampled parent from the agent (parent-based sampling)', async () => {
    const response = await call(t.proxy, '/openai/v1/models/c?parented=1', { headers: { traceparent: sampledParent.header } });
    expect(response.status).toBe(200);
    const found = await t.receiver.waitForSpans((s) => s.traceId === sampledParent.traceId && s.kind === SPAN_KIND.SERVER);
    expect(found[0]?.parentSpanId).toBe(sampledParent.spanId);
  });

  it('exports nothing for the new traces, even after the flush on close', async () => {
    await t.proxy.close();
    const unsampled = t.receiver.spans.filter((s) => s.traceId !== sampledParent.traceId);
    expect(unsampled).toEqual([]);
    expect(t.receiver.rejected).toEqual([]);
  });
});

describe('tracing not configured', () => {
  let upstream: Upstream;
  let proxy: ProxyFixture;

  beforeAll(async () => {
    upstream = await startUpstream();
    proxy = await startProxy({ services: services(upstream, await freePort()), agents }, { env: { TRACE_KEY: key } });
  });

  afterAll(async () => {
    await proxy?.close();
    await upstream?.close();
  });

  it('passes the agent traceparent and tracestate to the upstream untouched and audits the agent trace id', async () => {
    const context = agentContext();
    const tracestate = 'vendor1=abc,vendor2=def';
    const response = await call(proxy, '/openai/v1/models/m?off=1', { headers: { traceparent: context.header, tracestate } });
    expect(response.status).toBe(200);
    const seen = upstreamRequestFor(upstream, 'off=1');
    expect(seen.header('traceparent')).toEqual([context.header]);
    expect(seen.header('tracestate')).toEqual([tracestate]);
    const record = await eventually<AuditRecord>('the audit record', () => proxy.auditRecords().find((r) => r.request_id === requestIdOf(response)));
    expect(record.trace_id).toBe(context.traceId);
    const line = await eventually('the request log line', () => proxy.logRecords().find((l) => l['msg'] === 'request' && l['request_id'] === requestIdOf(response)));
    expect(line['trace_id']).toBe(context.traceId);
  });

  it('records a null trace id and adds no traceparent when the agent sent none', async () => {
    const response = await call(proxy, '/openai/v1/models/m?off=2');
    expect(response.status).toBe(200);
    expect(upstreamRequestFor(upstream, 'off=2').header('traceparent')).toEqual([]);
    const record = await eventually<AuditRecord>('the audit record', () => proxy.auditRecords().find((r) => r.request_id === requestIdOf(response)));
    expect(record.trace_id).toBeNull();
  });
});

describe('OTEL_EXPORTER_OTLP_ENDPOINT without a telemetry block', () => {
  const t = tracedProxy((receiver) => ({ env: { OTEL_EXPORTER_OTLP_ENDPOINT: receiver.url, OTEL_SERVICE_NAME: 'airlock-from-env' } }));

  it('exports the request tree to <endpoint>/v1/traces', async () => {
    const context = agentContext();
    const response = await call(t.proxy, `/openai/v1/models/env?q=${queryCanary}`, { headers: { traceparent: context.header } });
    expect(response.status).toBe(200);
    const [server] = await t.receiver.waitForSpans((s) => s.traceId === context.traceId && s.kind === SPAN_KIND.SERVER);
    expect(server?.parentSpanId).toBe(context.spanId);
    expect(server?.name).toBe('GET /openai/v1/models/:model');
    expect(server?.resource['service.name']).toBe('airlock-from-env');
    await t.receiver.waitForSpans((s) => s.traceId === context.traceId, 5_000, 2);
    expect(parseTraceparent(upstreamRequestFor(t.upstream, queryCanary).header('traceparent')[0]).traceId).toBe(context.traceId);
    expect(t.receiver.requests.every((r) => r.contentType.startsWith('application/json'))).toBe(true);
    assertNoLeak([key, fetchedKey, queryCanary, headerCanary, agent.token], [{ name: 'OTLP bodies', text: t.receiver.bodies.join('\n') }]);
  });
});

describe('OTEL_EXPORTER_OTLP_HEADERS', () => {
  const t = tracedProxy((receiver) => ({
    env: {
      OTEL_EXPORTER_OTLP_ENDPOINT: receiver.url,
      // W3C baggage format: comma-separated, percent-encoded values.
      OTEL_EXPORTER_OTLP_HEADERS: 'x-collector-tenant=airlock-test, authorization=Bearer%20collector-token',
    },
  }));

  it('sends the listed headers, decoded, with every export to the collector', async () => {
    const context = agentContext();
    const response = await call(t.proxy, '/openai/v1/models/headers', { headers: { traceparent: context.header } });
    expect(response.status).toBe(200);
    await t.receiver.waitForSpans((s) => s.traceId === context.traceId && s.kind === SPAN_KIND.SERVER);
    expect(t.receiver.requests.length).toBeGreaterThan(0);
    for (const request of t.receiver.requests) {
      expect(request.headers['x-collector-tenant']).toBe('airlock-test');
      expect(request.headers['authorization']).toBe('Bearer collector-token');
    }
    expect(t.receiver.rejected).toEqual([]);
  });
});

describe('OTEL_EXPORTER_OTLP_TRACES_ENDPOINT', () => {
  let generic: OtlpReceiver;
  let traces: OtlpReceiver;
  let upstream: Upstream;
  let proxy: ProxyFixture;

  beforeAll(async () => {
    generic = await startOtlpReceiver();
    traces = await startOtlpReceiver();
    upstream = await startUpstream();
    proxy = await startProxy(
      { services: services(upstream, await freePort()), agents },
      // The signal-specific variable is the full URL (nothing appended) and wins over the generic one.
      { env: { TRACE_KEY: key, OTEL_EXPORTER_OTLP_ENDPOINT: generic.url, OTEL_EXPORTER_OTLP_TRACES_ENDPOINT: `${traces.url}/v1/traces` } },
    );
  });

  afterAll(async () => {
    await proxy?.close();
    await upstream?.close();
    await generic?.close();
    await traces?.close();
  });

  it('exports to the traces endpoint as given, and nothing to the generic endpoint', async () => {
    const context = agentContext();
    const response = await call(proxy, '/openai/v1/models/signal', { headers: { traceparent: context.header } });
    expect(response.status).toBe(200);
    const [server] = await traces.waitForSpans((s) => s.traceId === context.traceId && s.kind === SPAN_KIND.SERVER);
    expect(server?.name).toBe('GET /openai/v1/models/:model');
    await proxy.close();
    expect(traces.rejected).toEqual([]);
    expect(generic.requests).toEqual([]);
    expect(generic.rejected).toEqual([]);
  });
});

describe('OTEL_TRACES_SAMPLER_ARG=0', () => {
  const t = tracedProxy((receiver) => ({ env: { OTEL_EXPORTER_OTLP_ENDPOINT: receiver.url, OTEL_TRACES_SAMPLER_ARG: '0' } }));

  it('exports no new trace (the upstream gets an unsampled traceparent), yet follows a sampled agent parent', async () => {
    for (const n of [1, 2, 3]) expect((await call(t.proxy, `/openai/v1/models/x?envsampled=${n}`)).status).toBe(200);
    for (const n of [1, 2, 3]) expect(parseTraceparent(upstreamRequestFor(t.upstream, `envsampled=${n}`).header('traceparent')[0]).flags).toBe('00');
    // Parent-based: the exporter is live, a sampled agent trace is still exported.
    const parent = agentContext('01');
    expect((await call(t.proxy, '/openai/v1/models/x?envparented=1', { headers: { traceparent: parent.header } })).status).toBe(200);
    await t.receiver.waitForSpans((s) => s.traceId === parent.traceId && s.kind === SPAN_KIND.SERVER);
    await t.proxy.close();
    expect(t.receiver.spans.filter((s) => s.traceId !== parent.traceId)).toEqual([]);
    expect(t.receiver.rejected).toEqual([]);
  });
});

describe('OTEL_TRACES_SAMPLER=always_off (not parent-based)', () => {
  const t = tracedProxy((receiver) => ({ env: { OTEL_EXPORTER_OTLP_ENDPOINT: receiver.url, OTEL_TRACES_SAMPLER: 'always_off' } }));

  it('exports nothing, not even under a sampled agent parent, whose trace id it still carries upstream (unsampled)', async () => {
    const parent = agentContext('01');
    expect((await call(t.proxy, '/openai/v1/models/x?alwaysoff=1', { headers: { traceparent: parent.header } })).status).toBe(200);
    const seen = parseTraceparent(upstreamRequestFor(t.upstream, 'alwaysoff=1').header('traceparent')[0]);
    expect(seen).toMatchObject({ traceId: parent.traceId, flags: '00' });
    await t.proxy.close();
    expect(t.receiver.spans).toEqual([]);
  });
});

// Values Airlock cannot use: said in the log, and the default taken. OTEL_TRACES_SAMPLER_ARG=abc used to
// sample nothing, silently.
describe.each([
  [{ OTEL_TRACES_SAMPLER: 'xray', OTEL_TRACES_SAMPLER_ARG: 'abc' }, 'OTEL_TRACES_SAMPLER="xray" is not one Airlock implements'],
  [{ OTEL_TRACES_SAMPLER_ARG: 'abc' }, 'OTEL_TRACES_SAMPLER_ARG is not a ratio from 0 to 1'],
])('%j', (variables, warning) => {
  const t = tracedProxy((receiver) => ({ env: { OTEL_EXPORTER_OTLP_ENDPOINT: receiver.url, ...variables } }));

  it('warns, naming the variable, and samples every new trace (the default)', async () => {
    const warnings = t.proxy.logRecords().filter((r) => r['level'] === 'warn').map((r) => String(r['msg']));
    expect(warnings.filter((m) => m.startsWith(warning))).toHaveLength(1);
    const response = await call(t.proxy, '/openai/v1/models/x?badsampler=1');
    expect(response.status).toBe(200);
    const seen = parseTraceparent(upstreamRequestFor(t.upstream, 'badsampler=1').header('traceparent')[0]);
    expect(seen.flags).toBe('01');
    await t.receiver.waitForSpans((s) => s.traceId === seen.traceId && s.kind === SPAN_KIND.SERVER);
  });
});

describe.each([
  ['OTEL_SDK_DISABLED', 'true'],
  ['OTEL_SDK_DISABLED', 'TRUE'],
  ['OTEL_TRACES_EXPORTER', 'none'],
  ['OTEL_TRACES_EXPORTER', 'None'],
])('%s=%s', (variable, value) => {
  // Both the config block and the environment ask for export; the variable turns it off.
  const t = tracedProxy((receiver) => ({ config: { telemetry: { otlp: { endpoint: receiver.url } } }, env: { OTEL_EXPORTER_OTLP_ENDPOINT: receiver.url, [variable]: value } }));

  it('exports nothing and passes the agent traceparent through untouched', async () => {
    const context = agentContext();
    const response = await call(t.proxy, '/openai/v1/models/off?disabled=1', { headers: { traceparent: context.header } });
    expect(response.status).toBe(200);
    expect(upstreamRequestFor(t.upstream, 'disabled=1').header('traceparent')).toEqual([context.header]);
    const record = await eventually<AuditRecord>('the audit record', () => t.proxy.auditRecords().find((r) => r.request_id === requestIdOf(response)));
    expect(record.trace_id).toBe(context.traceId);
    expect((await call(t.proxy, '/openai/v1/models/off?disabled=2')).status).toBe(200);
    await t.proxy.close();
    expect(t.receiver.requests).toEqual([]);
    expect(t.receiver.rejected).toEqual([]);
  });
});

// Found by the observability walkthrough: a bad OTEL_EXPORTER_OTLP_HEADERS stopped start-up with
// "URI malformed" and no word of which variable.
describe('OTEL_EXPORTER_OTLP_HEADERS with a pair that is not valid percent-encoding', () => {
  const secretHeader = canary('otlp-header');
  const t = tracedProxy((receiver) => ({ env: { OTEL_EXPORTER_OTLP_ENDPOINT: receiver.url, OTEL_EXPORTER_OTLP_HEADERS: `x-good=ok,authorization=Bearer%ZZ${secretHeader}` } }));

  it('starts, skips the pair saying which variable and which pair (not its value), and sends the others', async () => {
    const warnings = t.proxy.logRecords().filter((r) => r['level'] === 'warn').map((r) => String(r['msg']));
    expect(warnings).toContain('OTEL_EXPORTER_OTLP_HEADERS: pair 2 is not valid percent-encoding (a "%" must start %XX); it was skipped. Encode "%" in a value as %25.');
    expect((await call(t.proxy, '/openai/v1/models/x?badheaders=1')).status).toBe(200);
    await t.receiver.waitForSpans((s) => s.kind === SPAN_KIND.SERVER);
    expect(t.receiver.requests.at(-1)?.headers['x-good']).toBe('ok');
    expect(t.proxy.logLines.join('')).not.toContain(secretHeader);
  });
});

// Found by the observability walkthrough: spans a collector did not take were dropped with no log line
// and no metric, and a stop waited 11 s on a collector that never answered.
describe('a collector that refuses every export', () => {
  const t = tracedProxy(() => ({ config: { admin: { listen: '127.0.0.1:0', tokens: [generateAgentToken().hash] }, telemetry: { otlp: { endpoint: 'http://127.0.0.1:9' } } } }));

  it('counts the dropped spans and says so once, requests unaffected', async () => {
    for (let i = 0; i < 5; i++) expect((await call(t.proxy, `/openai/v1/models/x?refused=${i}`)).status).toBe(200);
    const warning = await eventually('the dropped-spans warning', () => t.proxy.logRecords().find((r) => String(r['msg']).startsWith('the OTLP collector did not take a batch of spans')), 10_000);
    expect(warning).toMatchObject({ level: 'warn' });
    expect(Number(warning['spans'])).toBeGreaterThan(0);
    const metrics = await sendRequest(`${t.proxy.airlock.adminUrl as string}/metrics`);
    const dropped = /^airlock_trace_spans_dropped_total (\d+)$/m.exec(metrics.text);
    expect(Number(dropped?.[1])).toBeGreaterThan(0);
    // Known label sets start at 0, so `increase(...) > 0` sees a first event.
    expect(metrics.text).toContain('airlock_config_reloads_total{result="invalid"} 0');
    expect(metrics.text).toContain('airlock_anomalies_total{rule="denial_burst",action="suspend"} 0');
    // More failures within the minute: still one line.
    for (let i = 0; i < 3; i++) await call(t.proxy, `/openai/v1/models/x?again=${i}`);
    await sleep(1_200);
    expect(t.proxy.logRecords().filter((r) => String(r['msg']).startsWith('the OTLP collector did not take'))).toHaveLength(1);
  });
});

describe('an audit record that cannot be written', () => {
  // /dev/full: every write fails (ENOSPC); the default on_failure refuses the request.
  const t = tracedProxy((receiver) => ({ config: { audit: { file: '/dev/full' }, telemetry: { otlp: { endpoint: receiver.url } } } }));

  it('logs the failure with the request id and the trace id of the server span', async () => {
    const response = await call(t.proxy, '/openai/v1/models/unaudited');
    expect(response.status).toBe(503);
    expect(response.json<Problem>().code).toBe('audit_unavailable');
    const id = requestIdOf(response);
    const line = await eventually('the audit failure log line', () =>
      t.proxy.logRecords().find((l) => l['request_id'] === id && String(l['msg']).includes('audit record could not be written')),
    );
    const server = await t.receiver.waitForSpans((s) => s.kind === SPAN_KIND.SERVER && s.attributes['airlock.request_id'] === id);
    expect(line['trace_id']).toMatch(/^[0-9a-f]{32}$/);
    expect(line['trace_id']).toBe(server[0]?.traceId);
    assertNoLeak([key, agent.token, headerCanary], [{ name: 'log', text: t.proxy.logLines.join('') }]);
  });
});
