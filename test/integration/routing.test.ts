/**
 * Which service and route a request selects, and what the upstream then sees: prefix (removed before
 * forwarding, upstream base path put in front), Host header, a service's own listener; the denials of
 * the routing stages (404 unknown_service, 403 route_not_allowed, 405 with Allow, TRACE, 403
 * scope_denied) never reach an upstream; route templates match exactly; first match wins.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { generateAgentToken } from '../../src/identity/agent-token.js';
import type { AuditRecord } from '../../src/observability/audit-record.js';
import { assertNoLeak } from '../helpers/assert-no-leak.js';
import { canary } from '../helpers/canary.js';
import { sendRequest, type Problem, type SentResponse } from '../helpers/send-request.js';
import { startProxy, type ProxyFixture } from '../helpers/start-proxy.js';
import { startUpstream, type Upstream } from '../helpers/start-upstream.js';

describe('routing', () => {
  const keys = { alpha: canary('route-alpha'), beta: canary('route-beta'), gamma: canary('route-gamma'), delta: canary('route-delta') };
  const wide = generateAgentToken();
  const filesOnly = generateAgentToken();
  const general = generateAgentToken();
  const special = generateAgentToken();
  const noGrant = generateAgentToken();
  let alpha: Upstream;
  let beta: Upstream;
  let gamma: Upstream;
  let delta: Upstream;
  let proxy: ProxyFixture;
  const bodies: string[] = [];

  beforeAll(async () => {
    [alpha, beta, gamma, delta] = await Promise.all([startUpstream(), startUpstream(), startUpstream(), startUpstream()]);
    proxy = await startProxy(
      {
        services: {
          alpha: {
            upstream: alpha.url,
            credential: { secret: 'env:ALPHA_KEY' },
            routes: [
              { method: 'GET', path: '/v1/x', scope: 'x:read' },
              { method: 'GET', path: '/v1/models/:model', scope: 'models:read' },
              { method: ['GET', 'HEAD'], path: '/v1/files/*', scope: 'files:read' },
              { method: 'DELETE', path: '/v1/files/:id', scope: 'files:delete' },
              { method: 'POST', path: '/v1/items', scope: 'items:write' },
              { method: 'GET', path: '/v1/items', scope: 'items:read' },
              { method: 'GET', path: '/v1/first/:id', scope: 'first:special' },
              { method: 'GET', path: '/v1/first/*', scope: 'first:general' },
            ],
          },
          beta: {
            upstream: `${beta.url}/api`,
            prefix: '/b',
            credential: { secret: 'env:BETA_KEY' },
            routes: [
              { method: 'GET', path: '/v1/x', scope: 'x:read' },
              { method: 'GET', path: '/', scope: 'root:read' },
            ],
          },
          gamma: {
            upstream: gamma.url,
            hosts: ['gamma.airlock.test'],
            credential: { secret: 'env:GAMMA_KEY' },
            routes: [{ method: 'GET', path: '/v1/x', scope: 'x:read' }],
          },
          delta: {
            upstream: delta.url,
            listen: '127.0.0.1:0',
            credential: { secret: 'env:DELTA_KEY' },
            routes: [{ method: 'GET', path: '/v1/x', scope: 'x:read' }],
          },
        },
        agents: {
          wide: {
            tokens: [wide.hash],
            credentials: [
              { service: 'alpha', max_scope: ['*'] },
              { service: 'beta', max_scope: ['*'] },
              { service: 'gamma', max_scope: ['*'] },
              { service: 'delta', max_scope: ['*'] },
            ],
          },
          'files-only': { tokens: [filesOnly.hash], credentials: [{ service: 'alpha', max_scope: ['files:*'] }] },
          general: { tokens: [general.hash], credentials: [{ service: 'alpha', max_scope: ['first:general'] }] },
          special: { tokens: [special.hash], credentials: [{ service: 'alpha', max_scope: ['first:special'] }] },
          'no-grant': { tokens: [noGrant.hash], credentials: [{ service: 'beta', max_scope: ['x:read'] }] },
        },
      },
      { env: { ALPHA_KEY: keys.alpha, BETA_KEY: keys.beta, GAMMA_KEY: keys.gamma, DELTA_KEY: keys.delta } },
    );
  });

  afterAll(async () => {
    await proxy?.close();
    await Promise.all([alpha, beta, gamma, delta].map((u) => u?.close()));
  });

  async function call(url: string, token: string | null, method = 'GET', headers: Record<string, string> = {}): Promise<SentResponse> {
    const response = await sendRequest(url, { method, headers: token === null ? headers : { ...headers, authorization: `Bearer ${token}` } });
    bodies.push(response.text);
    return response;
  }

  /** The audit record of a response, waiting (bounded) for it: allowed requests are audited as they end. */
  async function auditFor(response: SentResponse): Promise<AuditRecord> {
    const id = response.headers['x-airlock-request-id'];
    const deadline = Date.now() + 5000;
    for (;;) {
      const found = proxy.auditRecords().find((r) => r.request_id === id);
      if (found !== undefined) return found;
      if (Date.now() > deadline) throw new Error(`no audit record for request ${String(id)}`);
      await new Promise((resolve) => setTimeout(resolve, 10));
    }
  }

  /** Runs `act` and returns how many requests each upstream received meanwhile. */
  async function upstreamDelta(act: () => Promise<unknown>): Promise<number> {
    const before = [alpha, beta, gamma, delta].reduce((n, u) => n + u.requests.length, 0);
    await act();
    return [alpha, beta, gamma, delta].reduce((n, u) => n + u.requests.length, 0) - before;
  }

  describe('service selection', () => {
    it('selects by prefix and removes the prefix before forwarding', async () => {
      const response = await call(`${proxy.url}/alpha/v1/x?limit=2&order=desc`, wide.token);
      expect(response.status).toBe(200);
      const seen = alpha.requests.at(-1);
      expect(seen?.target).toBe('/v1/x?limit=2&order=desc');
      expect(seen?.header('authorization')).toEqual([`Bearer ${keys.alpha}`]);
    });

    it('puts the upstream base path in front of the service path', async () => {
      const response = await call(`${proxy.url}/b/v1/x`, wide.token);
      expect(response.status).toBe(200);
      expect(beta.requests.at(-1)?.target).toBe('/api/v1/x');
      expect(beta.requests.at(-1)?.header('authorization')).toEqual([`Bearer ${keys.beta}`]);
    });

    it('maps the bare prefix to the service root under the base path', async () => {
      const response = await call(`${proxy.url}/b`, wide.token);
      expect(response.status).toBe(200);
      expect(beta.requests.at(-1)?.target).toBe('/api/');
    });

    it('does not treat a longer first segment as the prefix', async () => {
      const forwarded = await upstreamDelta(async () => {
        const response = await call(`${proxy.url}/alphabet/v1/x`, wide.token);
        expect(response.status).toBe(404);
        expect(response.json<Problem>().code).toBe('unknown_service');
      });
      expect(forwarded).toBe(0);
    });

    it('selects by Host header, with no prefix, ignoring the port and case', async () => {
      const response = await call(`${proxy.url}/v1/x`, wide.token, 'GET', { host: 'Gamma.Airlock.Test:7700' });
      expect(response.status).toBe(200);
      const seen = gamma.requests.at(-1);
      expect(seen?.target).toBe('/v1/x');
      expect(seen?.header('authorization')).toEqual([`Bearer ${keys.gamma}`]);
      expect(seen?.header('host')).toEqual([new URL(gamma.url).host]);
    });

    it('selects by a service\'s own listener, with no prefix', async () => {
      const own = proxy.serviceUrls['delta'];
      expect(own).toMatch(/^http:\/\/127\.0\.0\.1:\d+$/);
      expect(own).not.toBe(proxy.url);
      const response = await call(`${own}/v1/x`, wide.token);
      expect(response.status).toBe(200);
      expect(delta.requests.at(-1)?.target).toBe('/v1/x');
      expect(delta.requests.at(-1)?.header('authorization')).toEqual([`Bearer ${keys.delta}`]);
    });

    it('on a service\'s own listener, the prefix is just part of the path', async () => {
      const forwarded = await upstreamDelta(async () => {
        const response = await call(`${proxy.serviceUrls['delta']}/delta/v1/x`, wide.token);
        expect(response.status).toBe(403);
        expect(response.json<Problem>().code).toBe('route_not_allowed');
      });
      expect(forwarded).toBe(0);
    });

    it('answers an unknown prefix with 404 unknown_service', async () => {
      const forwarded = await upstreamDelta(async () => {
        const response = await call(`${proxy.url}/nope/v1/x`, wide.token);
        expect(response.status).toBe(404);
        expect(response.headers['content-type']).toMatch(/^application\/problem\+json(\s*;|$)/);
        const problem = response.json<Problem>();
        expect(problem.code).toBe('unknown_service');
        expect(problem.error.code).toBe('unknown_service');
        expect(problem.detail).toContain('/alpha');
      });
      expect(forwarded).toBe(0);
    });
  });

  describe('route matching', () => {
    it('refuses a path that matches no route with 403 route_not_allowed', async () => {
      const forwarded = await upstreamDelta(async () => {
        const response = await call(`${proxy.url}/alpha/v1/secret-admin`, wide.token);
        expect(response.status).toBe(403);
        const problem = response.json<Problem>();
        expect(problem.code).toBe('route_not_allowed');
        expect(problem.detail).toContain('services.alpha.routes');
      });
      expect(forwarded).toBe(0);
    });

    it('answers a path that matches with the wrong method with 405 and Allow', async () => {
      const forwarded = await upstreamDelta(async () => {
        const response = await call(`${proxy.url}/alpha/v1/items`, wide.token, 'PUT');
        expect(response.status).toBe(405);
        expect(response.json<Problem>().code).toBe('method_not_allowed');
        expect(response.headers['allow']?.split(',').map((m) => m.trim()).sort()).toEqual(['GET', 'POST']);
      });
      expect(forwarded).toBe(0);
    });

    it('lists the methods of every route the path matches in Allow', async () => {
      const response = await call(`${proxy.url}/alpha/v1/files/abc`, wide.token, 'PATCH');
      expect(response.status).toBe(405);
      expect(response.headers['allow']?.split(',').map((m) => m.trim()).sort()).toEqual(['DELETE', 'GET', 'HEAD']);
    });

    it('never forwards TRACE', async () => {
      const forwarded = await upstreamDelta(async () => {
        const response = await call(`${proxy.url}/alpha/v1/x`, wide.token, 'TRACE');
        expect(response.status).toBe(405);
        expect(response.json<Problem>().code).toBe('method_not_allowed');
      });
      expect(forwarded).toBe(0);
    });

    it(':param matches exactly one non-empty segment', async () => {
      const ok = await call(`${proxy.url}/alpha/v1/models/gpt-4o`, wide.token);
      expect(ok.status).toBe(200);
      expect(alpha.requests.at(-1)?.target).toBe('/v1/models/gpt-4o');
      const forwarded = await upstreamDelta(async () => {
        for (const path of ['/v1/models/', '/v1/models', '/v1/models/a/b']) {
          const response = await call(`${proxy.url}/alpha${path}`, wide.token);
          expect([path, response.status, response.json<Problem>().code]).toEqual([path, 403, 'route_not_allowed']);
        }
      });
      expect(forwarded).toBe(0);
    });

    it('a trailing * matches one or more segments, never zero', async () => {
      for (const path of ['/v1/files/a', '/v1/files/a/b/c']) {
        const response = await call(`${proxy.url}/alpha${path}`, wide.token);
        expect([path, response.status]).toEqual([path, 200]);
        expect(alpha.requests.at(-1)?.target).toBe(path);
      }
      const forwarded = await upstreamDelta(async () => {
        const response = await call(`${proxy.url}/alpha/v1/files`, wide.token);
        expect(response.status).toBe(403);
        expect(response.json<Problem>().code).toBe('route_not_allowed');
      });
      expect(forwarded).toBe(0);
    });

    it('does not fold a trailing slash or letter case', async () => {
      const forwarded = await upstreamDelta(async () => {
        for (const path of ['/v1/x/', '/v1/X', '/V1/x', '/v1/Models/gpt']) {
          const response = await call(`${proxy.url}/alpha${path}`, wide.token);
          expect([path, response.status, response.json<Problem>().code]).toEqual([path, 403, 'route_not_allowed']);
        }
        const upperPrefix = await call(`${proxy.url}/ALPHA/v1/x`, wide.token);
        expect(upperPrefix.status).toBe(404);
      });
      expect(forwarded).toBe(0);
    });

    it('first match wins: the earlier route\'s scope decides even when a later route would allow', async () => {
      const forwarded = await upstreamDelta(async () => {
        const denied = await call(`${proxy.url}/alpha/v1/first/abc`, general.token);
        expect(denied.status).toBe(403);
        const problem = denied.json<Problem>();
        expect(problem.code).toBe('scope_denied');
        expect(problem.detail).toContain('first:special');
      });
      expect(forwarded).toBe(0);

      const deeper = await call(`${proxy.url}/alpha/v1/first/abc/def`, general.token);
      expect(deeper.status).toBe(200);
      expect(alpha.requests.at(-1)?.target).toBe('/v1/first/abc/def');

      const allowed = await call(`${proxy.url}/alpha/v1/first/abc`, special.token);
      expect(allowed.status).toBe(200);
      expect(alpha.requests.at(-1)?.target).toBe('/v1/first/abc');

      expect(await auditFor(deeper)).toMatchObject({ route: '/v1/first/*', scope: 'first:general', decision: 'allow', status: 200 });
      expect(await auditFor(allowed)).toMatchObject({ route: '/v1/first/:id', scope: 'first:special', decision: 'allow', status: 200 });
    });
  });

  describe('scopes', () => {
    it('refuses a route whose scope the agent lacks with 403 scope_denied saying what to grant', async () => {
      const forwarded = await upstreamDelta(async () => {
        const response = await call(`${proxy.url}/alpha/v1/x`, filesOnly.token);
        expect(response.status).toBe(403);
        const problem = response.json<Problem>();
        expect(problem.code).toBe('scope_denied');
        expect(problem.detail).toContain('x:read');
        expect(problem.detail).toContain('files-only');
      });
      expect(forwarded).toBe(0);
    });

    it('refuses an agent with no grant for the service', async () => {
      const forwarded = await upstreamDelta(async () => {
        const response = await call(`${proxy.url}/alpha/v1/x`, noGrant.token);
        expect(response.status).toBe(403);
        expect(response.json<Problem>().code).toBe('scope_denied');
      });
      expect(forwarded).toBe(0);
    });

    it('a "prefix:*" grant holds every scope with that prefix', async () => {
      const response = await call(`${proxy.url}/alpha/v1/files/report.pdf`, filesOnly.token);
      expect(response.status).toBe(200);
      expect(alpha.requests.at(-1)?.target).toBe('/v1/files/report.pdf');
      const other = await call(`${proxy.url}/alpha/v1/items`, filesOnly.token);
      expect(other.status).toBe(403);
    });

    it('a "*" grant holds every scope of the service', async () => {
      for (const [method, path] of [['GET', '/v1/items'], ['POST', '/v1/items'], ['DELETE', '/v1/files/1']] as const) {
        const response = await call(`${proxy.url}/alpha${path}`, wide.token, method);
        expect([method, path, response.status]).toEqual([method, path, 200]);
        expect(alpha.requests.at(-1)?.method).toBe(method);
      }
    });

    it('refuses a request without a token before routing (401)', async () => {
      const forwarded = await upstreamDelta(async () => {
        const response = await call(`${proxy.url}/alpha/v1/x`, null);
        expect(response.status).toBe(401);
        expect(response.json<Problem>().code).toBe('unauthenticated');
      });
      expect(forwarded).toBe(0);
    });
  });

  it('answers /_airlock/health with 200 without a token', async () => {
    const forwarded = await upstreamDelta(async () => {
      const response = await call(`${proxy.url}/_airlock/health`, null);
      expect(response.status).toBe(200);
      expect(response.json()).toEqual({ status: 'ok' });
      expect(response.headers['x-airlock-request-id']).toMatch(/^[0-9a-f-]{36}$/);
    });
    expect(forwarded).toBe(0);
  });

  it('leaves no trace of any key in responses, logs or audit', async () => {
    await proxy.waitForAudit(1);
    assertNoLeak(Object.values(keys), [
      { name: 'responses', text: bodies.join('\n') },
      { name: 'log', text: proxy.logLines.join('') },
      { name: 'audit', text: proxy.auditText() },
    ]);
  });
});
