/**
 * OpenTelemetry traces (issue 6), read back from an in-process OTLP/HTTP receiver: one agent request is
 * one tree in the agent's own trace (SERVER span "METHOD /prefix/route-template" under the agent's span,
 * a credential.resolve child and a CLIENT span child), and the upstream is handed the CLIENT span as its
 * parent, never the agent's traceparent. Requests without a traceparent start a trace of their own;
 * denials carry airlock.code and no CLIENT span; a 502 marks the server span as an error. The trace id is
 * in the audit record and the log line. Sampling 0 exports nothing but still propagates (unsampled);
 * with tracing off the agent's headers pass through untouched. OTEL_EXPORTER_OTLP_ENDPOINT alone turns
 * export on. No canary (credential, query value, header value, agent token) reaches any exported body.
 */
import { randomBytes } from 'node:crypto';
import { once } from 'node:events';
import { createServer } from 'node:net';
import type { AddressInfo } from 'node:net';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { generateAgentToken } from '../../src/identity/agent-token.js';
import type { AuditRecord } from '../../src/observability/audit-record.js';
import { assertNoLeak } from '../helpers/assert-no-leak.js';
import { canary } from '../helpers/canary.js';
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

async function closedPort(): Promise<number> {
  const server = createServer();
  server.listen(0, '127.0.0.1');
  await once(server, 'listening');
  const { port } = server.address() as AddressInfo;
  await new Promise<void>((resolve) => server.close(() => resolve()));
  return port;
}

async function eventually<T>(what: string, probe: () => T | undefined, timeoutMs = 5_000): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const value = probe();
    if (value !== undefined) return value;
    if (Date.now() > deadline) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}`);
    await new Promise((resolve) => setTimeout(resolve, 10));
  }
}

const key = canary('trace-key');
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
  };
}

const agents = {
  'trace-bot': {
    tokens: [agent.hash],
    credentials: [
      { service: 'openai', max_scope: ['chat:write', 'models:read'] },
      { service: 'down', max_scope: ['*'] },
    ],
  },
};

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

describe('traces exported over OTLP/HTTP', () => {
  let receiver: OtlpReceiver;
  let upstream: Upstream;
  let proxy: ProxyFixture;
  let downPort: number;

  beforeAll(async () => {
    receiver = await startOtlpReceiver();
    upstream = await startUpstream();
    downPort = await closedPort();
    proxy = await startProxy(
      { telemetry: { otlp: { endpoint: receiver.url }, service_name: 'airlock-under-test' }, services: services(upstream, downPort), agents },
      { env: { TRACE_KEY: key } },
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
    });

    it('has a credential.resolve child and a CLIENT child, all in the one trace', () => {
      const trace = spansOfTrace(context.traceId);
      expect(trace.map((s) => s.name).sort()).toEqual(['POST', 'POST /openai/v1/chat/completions', 'credential.resolve']);
      const resolve = trace.find((s) => s.name === 'credential.resolve') as ReceivedSpan;
      expect(resolve.kind).toBe(SPAN_KIND.INTERNAL);
      expect(resolve.parentSpanId).toBe(server.spanId);
      expect(resolve.attributes['airlock.credential.ref']).toBe('env:TRACE_KEY');
      expect(resolve.status.code).not.toBe(STATUS_CODE.ERROR);
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

  it('puts no header value, query value, credential or agent token in any exported span', async () => {
    // Make sure everything sent so far has been exported before reading the bodies.
    await receiver.waitForSpans((s) => s.kind === SPAN_KIND.SERVER, 5_000, 5);
    expect(receiver.bodies.length).toBeGreaterThan(0);
    expect(receiver.rejected).toEqual([]);
    assertNoLeak([key, queryCanary, headerCanary, agent.token], [
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
  let receiver: OtlpReceiver;
  let upstream: Upstream;
  let proxy: ProxyFixture;
  let responses: SentResponse[] = [];
  const sampledParent = agentContext('01');

  beforeAll(async () => {
    receiver = await startOtlpReceiver();
    upstream = await startUpstream();
    proxy = await startProxy({ telemetry: { otlp: { endpoint: receiver.url }, sampling: 0 }, services: services(upstream, await closedPort()), agents }, { env: { TRACE_KEY: key } });
    responses = [await call(proxy, '/openai/v1/models/a?unsampled=1'), await call(proxy, '/openai/v1/models/b?unsampled=2')];
  });

  afterAll(async () => {
    await proxy?.close();
    await upstream?.close();
    await receiver?.close();
  });

  it('still forwards, with an unsampled traceparent for the upstream and the trace id in the audit', async () => {
    for (const response of responses) expect(response.status, response.text).toBe(200);
    for (const [i, response] of responses.entries()) {
      const seen = parseTraceparent(upstreamRequestFor(upstream, `unsampled=${i + 1}`).header('traceparent')[0]);
      expect(seen.flags).toBe('00');
      expect(seen.traceId).not.toMatch(/^0+$/);
      const record = await eventually('the audit record', () => proxy.auditRecords().find((r) => r.request_id === requestIdOf(response)));
      expect(record.trace_id).toBe(seen.traceId);
    }
  });

  it('follows a sampled parent from the agent (parent-based sampling)', async () => {
    const response = await call(proxy, '/openai/v1/models/c?parented=1', { headers: { traceparent: sampledParent.header } });
    expect(response.status).toBe(200);
    const found = await receiver.waitForSpans((s) => s.traceId === sampledParent.traceId && s.kind === SPAN_KIND.SERVER);
    expect(found[0]?.parentSpanId).toBe(sampledParent.spanId);
  });

  it('exports nothing for the new traces, even after the flush on close', async () => {
    await proxy.close();
    const unsampled = receiver.spans.filter((s) => s.traceId !== sampledParent.traceId);
    expect(unsampled).toEqual([]);
    expect(receiver.rejected).toEqual([]);
  });
});

describe('tracing not configured', () => {
  let upstream: Upstream;
  let proxy: ProxyFixture;

  beforeAll(async () => {
    upstream = await startUpstream();
    proxy = await startProxy({ services: services(upstream, await closedPort()), agents }, { env: { TRACE_KEY: key } });
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
  let receiver: OtlpReceiver;
  let upstream: Upstream;
  let proxy: ProxyFixture;

  beforeAll(async () => {
    receiver = await startOtlpReceiver();
    upstream = await startUpstream();
    proxy = await startProxy(
      { services: services(upstream, await closedPort()), agents },
      { env: { TRACE_KEY: key, OTEL_EXPORTER_OTLP_ENDPOINT: receiver.url, OTEL_SERVICE_NAME: 'airlock-from-env' } },
    );
  });

  afterAll(async () => {
    await proxy?.close();
    await upstream?.close();
    await receiver?.close();
  });

  it('exports the request tree to <endpoint>/v1/traces', async () => {
    const context = agentContext();
    const response = await call(proxy, `/openai/v1/models/env?q=${queryCanary}`, { headers: { traceparent: context.header } });
    expect(response.status).toBe(200);
    const [server] = await receiver.waitForSpans((s) => s.traceId === context.traceId && s.kind === SPAN_KIND.SERVER);
    expect(server?.parentSpanId).toBe(context.spanId);
    expect(server?.name).toBe('GET /openai/v1/models/:model');
    expect(server?.resource['service.name']).toBe('airlock-from-env');
    await receiver.waitForSpans((s) => s.traceId === context.traceId, 5_000, 3);
    expect(parseTraceparent(upstreamRequestFor(upstream, queryCanary).header('traceparent')[0]).traceId).toBe(context.traceId);
    expect(receiver.requests.every((r) => r.contentType.startsWith('application/json'))).toBe(true);
    assertNoLeak([key, queryCanary, headerCanary, agent.token], [{ name: 'OTLP bodies', text: receiver.bodies.join('\n') }]);
  });
});
