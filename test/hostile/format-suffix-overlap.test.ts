/**
 * A route spelling a dot last stands against the suffix reading when the route that reading selects
 * also holds the dotted path: that is a file the operator carved out of a broader route (`/v1/openapi.json`
 * before `/v1/*`). Found by review: a route that only overlaps it there let the dotted path through.
 * With `/v1/projects/:project/settings.json` (read) before `/v1/projects/internal/:thing` (admin),
 * `/v1/projects/internal/settings.json` was forwarded with `read`, while a Rails upstream serves it as
 * `/v1/projects/internal/settings`, which the config guards with `admin`: `internal/:thing` holds the
 * dotted path only because its parameter takes `settings.json`, not because the settings route was carved
 * out of it (`/v1/projects/acme/settings.json` is no path of it).
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { generateAgentToken } from '../../src/identity/agent-token.js';
import { assertNoLeak } from '../helpers/assert-no-leak.js';
import { canary } from '../helpers/canary.js';
import { rawGet, rawRequest } from '../helpers/raw-http.js';
import { startProxy, type ProxyFixture } from '../helpers/start-proxy.js';
import { startUpstream, type Upstream } from '../helpers/start-upstream.js';

const KEY = canary('suffix-overlap');

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
            { method: 'GET', path: '/v1/projects/:project/settings.json', scope: 'read' },
            { method: 'GET', path: '/v1/projects/internal/:thing', scope: 'admin' },
            { method: 'GET', path: '/v1/projects/:project/files.json', scope: 'read' },
            { method: 'GET', path: '/v1/projects/:project/*', scope: 'admin' },
          ],
        },
      },
      agents: { tester: { tokens: [agent.hash], credentials: [{ service: 'rails', max_scope: ['read'] }] } },
      anomalies: { enabled: false },
    },
    { env: { KEY } },
  );
});

afterAll(async () => {
  assertNoLeak([KEY], [
    { name: 'log', text: proxy.logLines.join('') },
    { name: 'audit', text: proxy.auditText() },
  ]);
  await proxy.close();
  await upstream.close();
});

async function send(target: string): Promise<{ status: number; forwarded: boolean; body: string }> {
  const before = upstream.requests.length;
  const answer = await rawRequest(proxy.url, rawGet(target, { authorization: `Bearer ${agent.token}` }));
  return { status: answer.status, forwarded: upstream.requests.length > before, body: answer.body };
}

describe('a dotted route and a route that overlaps it only at the dotted path', () => {
  it('control: /v1/projects/internal/settings is the admin route (403)', async () => {
    expect(await send('/rails/v1/projects/internal/settings')).toMatchObject({ status: 403, forwarded: false });
  });

  it("/v1/projects/internal/settings.json, which a Rails upstream serves as the admin route's path, is 400", async () => {
    const { status, forwarded, body } = await send('/rails/v1/projects/internal/settings.json');
    expect({ status, forwarded }).toEqual({ status: 400, forwarded: false });
    expect(JSON.parse(body)).toMatchObject({ code: 'invalid_request', detail: expect.stringContaining('(/v1/projects/internal/:thing)') });
  });

  it("control: another project's settings.json is forwarded (read without the suffix it selects :project/*, which holds every settings.json)", async () => {
    expect(await send('/rails/v1/projects/acme/settings.json')).toMatchObject({ status: 200, forwarded: true });
  });

  it('control: a file carved out of :project/* (files.json) is forwarded under its own scope', async () => {
    expect(await send('/rails/v1/projects/acme/files.json')).toMatchObject({ status: 200, forwarded: true });
    expect(upstream.requests.at(-1)?.target).toBe('/v1/projects/acme/files.json');
  });
});
