/**
 * The agent's `tracestate` never reaches the collector: the SDK copies a parent's trace state onto every
 * span it starts under it, and the exporter sends it as it came. A managed credential's value and the
 * agent's own alk_ token written into tracestate, by an authenticated agent and by a caller with no
 * token at all, appear in no exported body; the trace is still continued by trace id and parent span id,
 * and the upstream gets no agent trace state either.
 */
import { randomBytes } from 'node:crypto';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { generateAgentToken } from '../../src/identity/agent-token.js';
import { assertNoLeak } from '../helpers/assert-no-leak.js';
import { canary } from '../helpers/canary.js';
import { sendRequest } from '../helpers/send-request.js';
import { startProxy, type ProxyFixture } from '../helpers/start-proxy.js';
import { startUpstream, type Upstream } from '../helpers/start-upstream.js';
import { SPAN_KIND, startOtlpReceiver, type OtlpReceiver } from '../support/otlp-receiver.js';

const key = canary('tracestate-key');
/** A value Airlock does not manage: only dropping the trace state keeps it out, no scrubber would. */
const vendorValue = canary('tracestate-vendor');
const agent = generateAgentToken();

function agentParent(): { traceId: string; spanId: string; header: string } {
  const traceId = randomBytes(16).toString('hex');
  const spanId = randomBytes(8).toString('hex');
  return { traceId, spanId, header: `00-${traceId}-${spanId}-01` };
}

describe('an agent tracestate under OTLP export', () => {
  let receiver: OtlpReceiver;
  let upstream: Upstream;
  let proxy: ProxyFixture;

  beforeAll(async () => {
    receiver = await startOtlpReceiver();
    upstream = await startUpstream();
    proxy = await startProxy(
      {
        telemetry: { otlp: { endpoint: receiver.url }, sampling: 1 },
        services: {
          echo: { upstream: upstream.url, credential: { secret: 'env:TRACESTATE_KEY', inject: 'bearer' }, routes: [{ method: 'GET', path: '/v1/*', scope: 'read' }] },
        },
        agents: { 'state-bot': { tokens: [agent.hash], credentials: [{ service: 'echo', max_scope: ['read'] }] } },
      },
      { env: { TRACESTATE_KEY: key } },
    );
  });

  afterAll(async () => {
    await proxy?.close();
    await upstream?.close();
    await receiver?.close();
  });

  it('continues the trace but exports none of it, for an agent and for a caller without a token', async () => {
    const withToken = agentParent();
    const withoutToken = agentParent();
    const secretState = agentParent();
    const tokenState = agentParent();
    const allowed = await sendRequest(`${proxy.url}/echo/v1/things?n=1`, { headers: { authorization: `Bearer ${agent.token}`, traceparent: withToken.header, tracestate: `vendor=${vendorValue}` } });
    const anonymous = await sendRequest(`${proxy.url}/echo/v1/things?n=2`, { headers: { traceparent: withoutToken.header, tracestate: `v2=${vendorValue},k=${key},t=${agent.token}` } });
    // A managed value or an Airlock token in a header is refused by the request guard; the refusal is still a span.
    const secretRefused = await sendRequest(`${proxy.url}/echo/v1/things?n=3`, { headers: { authorization: `Bearer ${agent.token}`, traceparent: secretState.header, tracestate: `k=${key}` } });
    const tokenRefused = await sendRequest(`${proxy.url}/echo/v1/things?n=4`, { headers: { authorization: `Bearer ${agent.token}`, traceparent: tokenState.header, tracestate: `t=${agent.token}` } });
    expect(allowed.status, allowed.text).toBe(200);
    expect(anonymous.status).toBe(401);
    expect(secretRefused.status).toBe(400);
    expect(tokenRefused.status).toBe(400);

    for (const parent of [withToken, withoutToken, secretState, tokenState]) {
      const [server] = await receiver.waitForSpans((s) => s.traceId === parent.traceId && s.kind === SPAN_KIND.SERVER);
      expect(server?.parentSpanId).toBe(parent.spanId);
    }
    // The CLIENT span of the allowed request is exported too: its trace state came from the same parent.
    await receiver.waitForSpans((s) => s.traceId === withToken.traceId && s.kind === SPAN_KIND.CLIENT);

    assertNoLeak(
      [key, vendorValue, agent.token],
      [
        { name: 'exported spans', text: receiver.bodies.join('\n') },
        { name: 'logs', text: proxy.logLines.join('') },
        { name: 'audit', text: proxy.auditText() },
      ],
    );
    const forwarded = upstream.requests.find((r) => r.target === '/v1/things?n=1');
    expect(forwarded?.header('traceparent')[0]).toContain(withToken.traceId);
    expect(forwarded?.header('tracestate')).toEqual([]);
    // Every exported span's traceState is empty: key-shaped values would be masked by the scrub and
    // slip past the leak check above, so the field itself is checked (found by the owner's review).
    const states = receiver.bodies.flatMap((body) => [...body.matchAll(/"traceState":"([^"]*)"/g)].map((m) => m[1]));
    expect(states.filter((state) => state !== '')).toEqual([]);
  });
});
