/**
 * A format suffix (found by review): Rails adds `(.:format)` to every route by default, and Spring MVC
 * before 5.3 matched suffix patterns (`/v1/admin` also serves `/v1/admin.json`), so on such an upstream
 * `/v1/admin.json` reaches the `/v1/admin` handler. Authorized under `/v1/*`'s weaker scope and
 * forwarded, it let an agent holding only `read` reach the `admin` route. A route that spells the dot
 * itself names a file the upstream tells apart, and a `:name` holding a dot stays its own route; but
 * such a route is no blanket exemption (found by review: `/v1/projects/internal/settings.json` under
 * `/v1/projects/:project/settings.json` reached `/v1/projects/internal/settings`'s handler).
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { generateAgentToken } from '../../src/identity/agent-token.js';
import { canary } from '../helpers/canary.js';
import { eventually } from '../helpers/operator.js';
import { rawGet, rawRequest } from '../helpers/raw-http.js';
import { startProxy, type ProxyFixture } from '../helpers/start-proxy.js';
import { startUpstream, type Upstream } from '../helpers/start-upstream.js';

const key = canary('suffix');
const agent = generateAgentToken();
let upstream: Upstream;
let proxy: ProxyFixture;

beforeAll(async () => {
  upstream = await startUpstream();
  proxy = await startProxy(
    {
      services: {
        rails: {
          upstream: upstream.url,
          credential: { secret: 'env:KEY', inject: 'bearer' },
          routes: [
            { method: 'GET', path: '/v1/admin', scope: 'admin' },
            { method: 'GET', path: '/v1/openapi.json', scope: 'docs' },
            { method: 'GET', path: '/v1/models/:model', scope: 'read' },
            { method: 'GET', path: '/v1/projects/internal/settings', scope: 'admin' },
            { method: 'GET', path: '/v1/projects/:project/settings.json', scope: 'read' },
            { method: 'GET', path: '/v1/*', scope: 'read' },
          ],
        },
      },
      agents: { tester: { tokens: [agent.hash], credentials: [{ service: 'rails', max_scope: ['read', 'docs'] }] } },
      anomalies: { enabled: false },
    },
    { env: { KEY: key } },
  );
});

afterAll(async () => {
  await proxy.close();
  await upstream.close();
});

async function send(target: string): Promise<{ status: number; forwarded: boolean; requestId: string; body: string }> {
  const before = upstream.requests.length;
  const answer = await rawRequest(proxy.url, rawGet(target, { authorization: `Bearer ${agent.token}`, 'content-length': '0' }));
  return { status: answer.status, forwarded: upstream.requests.length > before, requestId: answer.headers['x-airlock-request-id']?.[0] ?? '', body: answer.body };
}

describe('a format suffix (Rails, Spring MVC < 5.3)', () => {
  it('control: /v1/admin itself is refused (scope admin not granted)', async () => {
    expect(await send('/rails/v1/admin')).toMatchObject({ status: 403, forwarded: false });
  });

  it('control: /v1/other.json, whose reading without the suffix selects the same route, is forwarded', async () => {
    expect(await send('/rails/v1/other.json')).toMatchObject({ status: 200, forwarded: true });
  });

  it('a route spelling the dot (/v1/openapi.json) is served under its own scope, though /v1/openapi is /v1/*', async () => {
    expect(await send('/rails/v1/openapi.json')).toMatchObject({ status: 200, forwarded: true });
    expect(upstream.requests.at(-1)?.target).toBe('/v1/openapi.json');
  });

  it('a :name holding a dot (gpt-4.1) stays its route', async () => {
    expect(await send('/rails/v1/models/gpt-4.1')).toMatchObject({ status: 200, forwarded: true });
  });

  it('a dotfile (/v1/.well-known) has no suffix', async () => {
    expect(await send('/rails/v1/.admin')).toMatchObject({ status: 200, forwarded: true });
  });

  it.each(['/rails/v1/admin.json', '/rails/v1/admin.xml', '/rails/v1/Admin.json', '/rails/v1/admin.json/', '/rails/v1/admin.tar.gz'])('%s, which such an upstream serves as /v1/admin, is not forwarded', async (target) => {
    const { status, forwarded, requestId, body } = await send(target);
    expect(JSON.parse(body)).toMatchObject({ code: 'invalid_request', detail: expect.stringContaining('without a format suffix') });
    expect(forwarded).toBe(false);
    expect(status).toBe(400);
    const record = await eventually('its audit record', async () => (await proxy.waitForAudit(1)).find((r) => r.request_id === requestId));
    expect(record).toMatchObject({ decision: 'deny', code: 'invalid_request' });
  });

  it('a route spelling the dot is no blanket exemption: /v1/projects/internal/settings.json, served as the admin route, is 400', async () => {
    expect(await send('/rails/v1/projects/internal/settings')).toMatchObject({ status: 403, forwarded: false });
    expect(await send('/rails/v1/projects/acme/settings.json')).toMatchObject({ status: 200, forwarded: true });
    const { status, forwarded, body } = await send('/rails/v1/projects/internal/settings.json');
    expect({ status, forwarded }).toEqual({ status: 400, forwarded: false });
    expect(JSON.parse(body)).toMatchObject({ code: 'invalid_request', detail: expect.stringContaining('(/v1/projects/internal/settings)') });
  });
});
