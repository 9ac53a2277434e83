/**
 * The official stripe-node client has no base path option, so the stripe service gets a listener of
 * its own (`listen`) and the client is pointed at it by host, port and protocol, with its agent token
 * as the API key. The stand-in Stripe upstream sees the real key as Bearer and the form body exactly
 * as stripe-node encoded it; a scope denial becomes a StripePermissionError carrying Airlock's detail
 * (stripe-node raises only because Airlock's problem body has an `error` member). The same service
 * stays reachable by its prefix on the shared listener.
 */
import Stripe from 'stripe';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { generateAgentToken } from '../../src/identity/agent-token.js';
import { assertNoLeak } from '../helpers/assert-no-leak.js';
import { canary } from '../helpers/canary.js';
import { adminClient } from '../helpers/operator.js';
import { startProxy, type ProxyFixture } from '../helpers/start-proxy.js';
import { startUpstream, type Upstream } from '../helpers/start-upstream.js';

function charge(id: string): Record<string, unknown> {
  return {
    id,
    object: 'charge',
    amount: 2000,
    amount_captured: 2000,
    amount_refunded: 0,
    captured: true,
    currency: 'usd',
    customer: 'cus_123',
    description: 'Widget',
    livemode: false,
    metadata: {},
    paid: true,
    refunded: false,
    status: 'succeeded',
    created: 1767225600,
  };
}

describe('stripe-node through Airlock', () => {
  const realKey = canary('stripe');
  const agent = generateAgentToken();
  const adminToken = generateAgentToken();
  const agentVisible: string[] = [];
  let upstream: Upstream;
  let proxy: ProxyFixture;

  function stripe(): Stripe {
    const own = new URL(proxy.serviceUrls['stripe'] ?? 'http://stripe-has-no-own-listener');
    return new Stripe(agent.token, {
      host: own.hostname,
      port: Number(own.port),
      protocol: 'http',
      maxNetworkRetries: 0,
      timeout: 10_000,
      telemetry: false,
    });
  }

  beforeAll(async () => {
    upstream = await startUpstream((req, res, recorded) => {
      const json = (status: number, payload: unknown): void => {
        res.writeHead(status, { 'content-type': 'application/json', 'request-id': 'req_stand_in' });
        res.end(JSON.stringify(payload));
      };
      const path = (req.url ?? '').split('?')[0] ?? '';
      const chargeMatch = /^\/v1\/charges\/([A-Za-z0-9_]+)$/.exec(path);
      if (req.method === 'GET' && chargeMatch) {
        json(200, charge(chargeMatch[1] as string));
        return;
      }
      if (req.method === 'POST' && path === '/v1/customers') {
        const form = new URLSearchParams(recorded.body.toString('utf8'));
        json(200, {
          id: 'cus_new_1',
          object: 'customer',
          email: form.get('email'),
          name: form.get('name'),
          metadata: { tier: form.get('metadata[tier]') },
          livemode: false,
          created: 1767225600,
        });
        return;
      }
      json(404, { error: { type: 'invalid_request_error', message: 'Unrecognized request URL' } });
    });
    proxy = await startProxy(
      {
        services: {
          stripe: {
            upstream: upstream.url,
            listen: '127.0.0.1:0',
            credential: { secret: 'env:STRIPE_SECRET_KEY', inject: 'bearer' },
            routes: [
              { method: 'GET', path: '/v1/charges/:charge', scope: 'charges:read' },
              { method: 'POST', path: '/v1/customers', scope: 'customers:write' },
              { method: 'POST', path: '/v1/refunds', scope: 'refunds:write' },
            ],
          },
        },
        agents: { 'support-bot': { tokens: [agent.hash], credentials: [{ service: 'stripe', max_scope: ['charges:read', 'customers:write'] }] } },
        admin: { listen: '127.0.0.1:0', tokens: [adminToken.hash] },
      },
      { env: { STRIPE_SECRET_KEY: realKey } },
    );
  });

  afterAll(async () => {
    await proxy.close();
    await upstream.close();
  });

  it('has a listener of its own for the stripe service', () => {
    expect(proxy.serviceUrls['stripe']).toMatch(/^http:\/\/127\.0\.0\.1:\d+$/);
    expect(proxy.serviceUrls['stripe']).not.toBe(proxy.url);
  });

  it('retrieves a charge with the real key injected as Bearer and the agent token removed', async () => {
    const retrieved = await stripe().charges.retrieve('ch_3Abc');
    agentVisible.push(JSON.stringify(retrieved));
    expect(retrieved.id).toBe('ch_3Abc');
    expect(retrieved.object).toBe('charge');
    expect(retrieved.amount).toBe(2000);

    const seen = upstream.requests.at(-1);
    expect(seen?.method).toBe('GET');
    expect(seen?.target).toBe('/v1/charges/ch_3Abc');
    expect(seen?.header('authorization')).toEqual([`Bearer ${realKey}`]);
    expect(seen?.rawHeaders.join('\n')).not.toContain(agent.token);
    // stripe-node's own headers pass through.
    expect(seen?.header('stripe-version')).toHaveLength(1);
    expect(seen?.header('user-agent')[0]).toMatch(/^Stripe\/v1 NodeBindings\//);
  });

  it('creates a customer: the form body arrives byte for byte', async () => {
    const customer = await stripe().customers.create({ email: 'ada@example.com', name: 'Ada Lovelace', metadata: { tier: 'gold' } });
    agentVisible.push(JSON.stringify(customer));
    expect(customer.id).toBe('cus_new_1');
    expect(customer.email).toBe('ada@example.com');
    expect(customer.metadata).toEqual({ tier: 'gold' });

    const seen = upstream.requests.at(-1);
    expect(seen?.method).toBe('POST');
    expect(seen?.target).toBe('/v1/customers');
    expect(seen?.header('content-type')).toEqual(['application/x-www-form-urlencoded']);
    expect(seen?.body.toString('utf8')).toBe('email=ada%40example.com&name=Ada%20Lovelace&metadata[tier]=gold');
    expect(seen?.header('content-length')).toEqual([String(seen?.body.length)]);
    expect(seen?.header('authorization')).toEqual([`Bearer ${realKey}`]);
    expect(seen?.rawHeaders.join('\n')).not.toContain(agent.token);
  });

  it("turns a scope denial into a StripePermissionError whose message is Airlock's detail", async () => {
    const before = upstream.requests.length;
    const error = await stripe().refunds.create({ charge: 'ch_3Abc' }).then(
      () => null,
      (e: unknown) => e,
    );
    expect(error).toBeInstanceOf(Stripe.errors.StripePermissionError);
    const denied = error as Stripe.errors.StripePermissionError;
    agentVisible.push(denied.message, JSON.stringify(denied.raw));
    expect(denied.statusCode).toBe(403);
    expect(denied.message).toBe(
      'Agent support-bot lacks scope refunds:write on service stripe. An operator grants it by adding refunds:write to agents.support-bot.credentials[0].max_scope.',
    );
    expect(denied.code).toBe('scope_denied');
    expect(upstream.requests.length, 'a denied call never reaches the upstream').toBe(before);
  });

  it('is still reachable by its prefix on the shared listener', async () => {
    const res = await fetch(`${proxy.url}/stripe/v1/charges/ch_shared`, { headers: { authorization: `Bearer ${agent.token}` } });
    const text = await res.text();
    agentVisible.push(text);
    expect(res.status).toBe(200);
    expect((JSON.parse(text) as { id: string }).id).toBe('ch_shared');

    const seen = upstream.requests.at(-1);
    expect(seen?.target).toBe('/v1/charges/ch_shared');
    expect(seen?.header('authorization')).toEqual([`Bearer ${realKey}`]);
    expect(seen?.rawHeaders.join('\n')).not.toContain(agent.token);
  });

  it('leaves no trace of the key in what the agent saw, the logs or the audit', async () => {
    await proxy.waitForAudit(4);
    assertNoLeak([realKey], [
      { name: 'SDK-visible responses', text: agentVisible.join('\n') },
      { name: 'log', text: proxy.logLines.join('') },
      { name: 'audit', text: proxy.auditText() },
    ]);
    const records = proxy.auditRecords();
    expect(records.map((r) => [r.decision, r.status, r.method, r.route, r.scope])).toEqual([
      ['allow', 200, 'GET', '/v1/charges/:charge', 'charges:read'],
      ['allow', 200, 'POST', '/v1/customers', 'customers:write'],
      ['deny', 403, 'POST', '/v1/refunds', 'refunds:write'],
      ['allow', 200, 'GET', '/v1/charges/:charge', 'charges:read'],
    ]);
    expect(records.every((r) => r.service === 'stripe')).toBe(true);
  });

  it('asks once when Airlock says asking again will not help (stripe-should-retry), with retries on', async () => {
    const own = new URL(proxy.serviceUrls['stripe'] ?? '');
    const retrying = new Stripe(agent.token, { host: own.hostname, port: Number(own.port), protocol: 'http', maxNetworkRetries: 2, timeout: 10_000, telemetry: false });
    const admin = adminClient(() => proxy.airlock.adminUrl ?? '', adminToken.token);
    expect((await admin.call('POST', '/v1/revocations', { kind: 'service', target: 'stripe', reason: 'drill' })).status).toBe(200);
    try {
      const refusedBefore = proxy.auditRecords().filter((record) => record.code === 'service_suspended').length;
      const failure = await retrying.charges.retrieve('ch_3Abc').then(
        () => null,
        (error: unknown) => error,
      );
      expect(failure).toBeInstanceOf(Stripe.errors.StripeAPIError);
      expect((failure as Stripe.errors.StripeError).statusCode).toBe(503);
      assertNoLeak([realKey], [{ name: 'the error', text: JSON.stringify({ message: (failure as Error).message, raw: (failure as { raw?: unknown }).raw }) }]);
      // Found by the SDK walkthrough: stripe-node reads stripe-should-retry only, and sent it three times.
      await proxy.waitForAudit(proxy.auditRecords().length);
      expect(proxy.auditRecords().filter((record) => record.code === 'service_suspended').length - refusedBefore).toBe(1);
    } finally {
      expect((await admin.call('POST', '/v1/revocations/lift', { kind: 'service', target: 'stripe' })).status).toBe(200);
    }
  });
});
