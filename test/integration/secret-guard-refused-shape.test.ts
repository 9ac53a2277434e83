/**
 * A managed key in a request refused before authentication for its shape or its target (found by
 * review): `GET /svc/v1//<key>` is refused for the "//" (canonicalize-target.ts), a request with two
 * Content-Type headers or too many header fields by checkRequestShape, before the secret guard reads it.
 * Nothing was forwarded, but the refusal neither named the credential nor raised the incident, unlike
 * the same key in a request refused at authentication (noteHeldSecret): the operator was not told that a
 * real key was in an agent's hands. The answer stays what it was (the caller learns nothing it could test
 * values with); the record names the credential and the incident, and the log line is a warning.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { generateAgentToken } from '../../src/identity/agent-token.js';
import type { AuditRecord } from '../../src/observability/audit-record.js';
import { assertNoLeak } from '../helpers/assert-no-leak.js';
import { canary } from '../helpers/canary.js';
import { rawGet, rawRequest, type RawResponse } from '../helpers/raw-http.js';
import { startProxy, type ProxyFixture } from '../helpers/start-proxy.js';
import { startUpstream, type Upstream } from '../helpers/start-upstream.js';

describe('a managed key in a request refused for its shape or target, before authentication', () => {
  const key = canary('refused-shape');
  const agent = generateAgentToken();
  const answers: RawResponse[] = [];
  let upstream: Upstream;
  let proxy: ProxyFixture;

  beforeAll(async () => {
    upstream = await startUpstream();
    proxy = await startProxy(
      {
        services: { api: { upstream: upstream.url, credential: { secret: 'env:API_KEY', inject: 'bearer' }, routes: [{ method: 'GET', path: '/v1/*', scope: 'read' }] } },
        agents: { bot: { tokens: [agent.hash], credentials: [{ service: 'api', max_scope: ['*'] }] } },
        anomalies: { enabled: false },
        limits: { max_headers: 8 },
      },
      { env: { API_KEY: key } },
    );
  });

  afterAll(async () => {
    assertNoLeak([key], [
      { name: 'responses', text: answers.map((a) => a.raw).join('\n') },
      { name: 'log', text: proxy.logLines.join('') },
      { name: 'audit', text: proxy.auditText() },
    ]);
    await proxy?.close();
    await upstream?.close();
  });

  async function refused(request: string): Promise<{ answer: RawResponse; detail: string; record: AuditRecord; level: unknown }> {
    const before = upstream.requests.length;
    const answer = await rawRequest(proxy.url, request);
    answers.push(answer);
    expect(upstream.requests.length).toBe(before);
    const problem = JSON.parse(answer.body) as { detail: string; request_id: string };
    const record = (await proxy.waitForAudit(1)).find((r) => r.request_id === problem.request_id);
    expect(record, answer.body).toBeDefined();
    const line = proxy.logRecords().find((entry) => entry['request_id'] === problem.request_id);
    return { answer, detail: problem.detail, record: record as AuditRecord, level: line?.['level'] };
  }

  function expectIncident(record: AuditRecord, level: unknown, detail: string): void {
    expect(record.credential).toBe('env:API_KEY');
    expect(record.reason).toMatch(/carried the value of env:API_KEY/);
    expect(record.reason).toContain('Rotate env:API_KEY');
    expect(level === 40 || level === 'warn', String(level)).toBe(true);
    // The caller's answer says only why the request was refused.
    expect(detail).not.toContain('env:API_KEY');
  }

  const authorized = (): Record<string, string> => ({ authorization: `Bearer ${agent.token}` });

  it.each([
    ['in the path, after "//"', () => `/api/v1//${key}`],
    ['in the path after "//", its first character escaped', () => `/api/v1//%${key.charCodeAt(0).toString(16)}${key.slice(1)}`],
    ['in the query of a path with "//"', () => `/api/v1//things?key=${encodeURIComponent(key)}`],
    ['in the path, with a dot segment', () => `/api/v1/../${key}`],
  ])('%s: 400 as before, and the record names the credential and the incident', async (_name, target) => {
    const { answer, detail, record, level } = await refused(rawGet(target(), authorized()));
    expect(answer.status).toBe(400);
    expect(record).toMatchObject({ code: 'invalid_request', status: 400 });
    expectIncident(record, level, detail);
  });

  it('in a header of a request with two Content-Type headers (checkRequestShape): the same', async () => {
    const { answer, detail, record, level } = await refused(rawGet('/api/v1/things', { ...authorized(), 'x-note': key, 'content-type': 'application/json', 'Content-Type': 'text/plain' }));
    expect(answer.status).toBe(400);
    expect(detail).toContain('more than one Content-Type');
    expectIncident(record, level, detail);
  });

  it('as an Expect header the refusal quotes: the same, and the quote is masked', async () => {
    const { answer, detail, record, level } = await refused(rawGet('/api/v1/things', { ...authorized(), expect: key }));
    expect(answer.status).toBe(400);
    expect(detail).toMatch(/^Expect: .* is not supported/);
    expectIncident(record, level, detail);
  });

  it('in a header of a request with too many header fields (431): the same', async () => {
    const many = Object.fromEntries(Array.from({ length: 8 }, (_, i) => [`x-pad-${i}`, '1']));
    const { answer, detail, record, level } = await refused(rawGet('/api/v1/things', { ...authorized(), 'x-api-key': key, ...many }));
    expect(answer.status).toBe(431);
    expect(record).toMatchObject({ code: 'headers_too_large', status: 431 });
    expectIncident(record, level, detail);
  });

  it('sent as the API key without a token, to a path with "//": the same', async () => {
    const { answer, detail, record, level } = await refused(rawGet('/api/v1//things', { 'x-api-key': key }));
    expect(answer.status).toBe(400);
    expectIncident(record, level, detail);
  });

  it('control: the same refusal without a managed key has no credential, no reason, and stays an info line', async () => {
    const { answer, record, level } = await refused(rawGet('/api/v1//things', authorized()));
    expect(answer.status).toBe(400);
    expect(record.credential).toBeNull();
    expect(record.reason).toBeNull();
    expect(level === 30 || level === 'info', String(level)).toBe(true);
  });
});
