/**
 * What the audit record, the log line and the server span keep of a request's path (all three read the
 * record's path). Found by review:
 *  - an agent or session token put in the path was refused, but the path was recorded as sent, token and
 *    all: the token is masked before the path is recorded;
 *  - a non-canonical path (recorded as sent, not canonical) was cut at 512 characters before the scrub
 *    of the audit and log lines ran, so a managed key across the cut left its first part in the record:
 *    the path is scrubbed before it is cut.
 * Real proxy, real upstream, real OTLP receiver.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { generateAgentToken } from '../../src/identity/agent-token.js';
import { assertNoLeak } from '../helpers/assert-no-leak.js';
import { plainCanary } from '../helpers/canary.js';
import { eventually } from '../helpers/operator.js';
import { rawGet, rawRequest } from '../helpers/raw-http.js';
import { sendRequest, type SentResponse } from '../helpers/send-request.js';
import { startProxy, type ProxyFixture } from '../helpers/start-proxy.js';
import { startUpstream, type Upstream } from '../helpers/start-upstream.js';
import { SPAN_KIND, startOtlpReceiver, type OtlpReceiver } from '../support/otlp-receiver.js';

describe('the path a record keeps', () => {
  // A key shaped like no provider key: only Airlock knowing the value can mask it.
  const serviceKey = plainCanary('pathkey');
  const bot = generateAgentToken();
  /** Every Airlock token used in this file: each is a canary. */
  const tokens: string[] = [bot.token];
  const seen: string[] = [];
  let upstream: Upstream;
  let receiver: OtlpReceiver;
  let proxy: ProxyFixture;

  beforeAll(async () => {
    upstream = await startUpstream();
    receiver = await startOtlpReceiver();
    proxy = await startProxy(
      {
        telemetry: { otlp: { endpoint: receiver.url }, sampling: 1.0 },
        services: { echo: { upstream: upstream.url, credential: { secret: 'env:PATH_KEY', inject: 'bearer' }, routes: [{ method: ['GET', 'POST'], path: '/*', scope: 'x' }] } },
        agents: { bot: { tokens: [bot.hash], credentials: [{ service: 'echo', max_scope: ['x'], max_ttl: 600 }] } },
      },
      { env: { PATH_KEY: serviceKey } },
    );
  });

  afterAll(async () => {
    await proxy?.close();
    await receiver?.close();
    await upstream?.close();
  });

  function keep(response: SentResponse): SentResponse {
    seen.push(`${response.status}\n${JSON.stringify(response.headers)}\n${response.text}`);
    return response;
  }

  async function recordOf(requestId: string): Promise<Record<string, unknown>> {
    return (await eventually(`the audit record of ${requestId}`, () => proxy.auditRecords().find((r) => r.request_id === requestId))) as unknown as Record<string, unknown>;
  }

  async function serverSpanPath(requestId: string): Promise<unknown> {
    const [span] = await receiver.waitForSpans((s) => s.kind === SPAN_KIND.SERVER && s.attributes['airlock.request_id'] === requestId, 10_000);
    return span?.attributes['url.path'];
  }

  /** What the proxy wrote and answered (the upstream, which is given the key, is not one). */
  function surfaces(): Array<{ name: string; text: string }> {
    return [
      { name: 'audit', text: proxy.auditText() },
      { name: 'logs', text: proxy.logLines.join('') },
      { name: 'spans', text: receiver.bodies.join('\n') },
      { name: 'responses', text: seen.join('\n') },
    ];
  }

  function upstreamSaw(): { name: string; text: string } {
    return { name: 'upstream', text: upstream.requests.map((r) => `${r.target}\n${r.rawHeaders.join('\n')}`).join('\n') };
  }

  it('an agent token or a session token in the path is refused and masked in the audit record, the log line and the span', async () => {
    // Not kept with the answers: this one hands the agent its session token.
    const minted = await sendRequest(`${proxy.url}/_airlock/sessions`, {
      method: 'POST',
      headers: { authorization: `Bearer ${bot.token}`, 'content-type': 'application/json' },
      body: JSON.stringify({ scopes: { echo: ['x'] }, ttl_seconds: 300, justification: 'path test' }),
    });
    expect(minted.status, minted.text).toBe(201);
    const sessionToken = minted.json<{ session_token: string }>().session_token;
    tokens.push(sessionToken);
    const before = upstream.requests.length;

    const cases: Array<{ what: string; path: string; headers: Record<string, string>; status: number; prefix: string }> = [
      { what: 'agent token in the path, sent with it', path: `/echo/v1/${bot.token}`, headers: { authorization: `Bearer ${bot.token}` }, status: 400, prefix: 'alk_' },
      { what: 'agent token in the path, no credential', path: `/echo/v1/files/${bot.token}/x`, headers: {}, status: 401, prefix: 'alk_' },
      { what: 'session token in the path, sent with it', path: `/echo/${sessionToken}`, headers: { authorization: `Bearer ${sessionToken}` }, status: 400, prefix: 'als_' },
      { what: 'session token in the path, no credential', path: `/echo/v1/${sessionToken}`, headers: {}, status: 401, prefix: 'als_' },
      // Escapes of unreserved characters spell the same token once canonical.
      { what: 'agent token in the path, its _ escaped', path: `/echo/v1/${bot.token.replace('_', '%5F')}`, headers: {}, status: 401, prefix: 'alk_' },
    ];
    for (const { what, path, headers, status, prefix } of cases) {
      const response = keep(await sendRequest(`${proxy.url}${path}`, { headers }));
      expect(response.status, `${what}: ${response.text}`).toBe(status);
      const id = String(response.headers['x-airlock-request-id']);
      const record = await recordOf(id);
      expect(record['path'], what).toMatch(new RegExp(`^/echo/.*${prefix}\\[REDACTED\\]`));
      expect(await serverSpanPath(id), what).toBe(record['path']);
      const line = await eventually(`the log line of ${id}`, () => proxy.logRecords().find((l) => l['request_id'] === id));
      expect(line['path'], what).toBe(record['path']);
    }
    expect(upstream.requests.length).toBe(before);
    assertNoLeak([...tokens, serviceKey], surfaces());
    assertNoLeak(tokens, [upstreamSaw()]);
  });

  it('a path without a token is recorded as sent', async () => {
    const response = keep(await sendRequest(`${proxy.url}/echo/v1/calls/alpha`, { headers: { authorization: `Bearer ${bot.token}` } }));
    expect(response.status, response.text).toBe(200);
    expect((await recordOf(String(response.headers['x-airlock-request-id'])))['path']).toBe('/echo/v1/calls/alpha');
  });

  it('a non-canonical path cut at 512 characters is scrubbed first: no part of a key across the cut is kept', async () => {
    // "%2F" opening a segment makes the path non-canonical (refused 400, and recorded as sent); the key starts 20
    // characters before the cut at 512.
    const head = '/echo/%2F';
    const path = `${head}${'a'.repeat(512 - 20 - head.length)}${serviceKey}`;
    const spelled = `${head}${'b'.repeat(512 - 20 - head.length)}%${serviceKey.charCodeAt(0).toString(16)}${serviceKey.slice(1)}`;
    for (const target of [path, spelled]) {
      const response = await rawRequest(proxy.url, rawGet(target));
      seen.push(response.raw);
      expect(response.status, response.body).toBe(400);
      const id = response.headers['x-airlock-request-id']?.[0] ?? '';
      const record = await recordOf(id);
      expect(String(record['path'])).toMatch(/^\/echo\/%2F[ab]+\[REDACTED\]/);
      await serverSpanPath(id);
    }
    // The first 20 characters of the key, which stood in front of the cut.
    const front = serviceKey.slice(0, 20);
    for (const surface of surfaces()) expect(surface.text.includes(front), `${surface.name} holds the front of the key`).toBe(false);
    assertNoLeak([...tokens, serviceKey], surfaces());
  });
});
