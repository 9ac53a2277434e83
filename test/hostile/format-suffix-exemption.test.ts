/**
 * Found by review: the format-suffix reading is skipped for any route whose last literal spells a dot
 * (spellsDotLast), whatever the reading then selects. Twin routes are exempt elsewhere only when the
 * reading makes their templates the same; here `/v1/projects/:project/settings.json` (read) without its
 * suffix is `/v1/projects/:project/settings`, not the operator's `/v1/projects/internal/settings`
 * (admin). On a Rails / Spring MVC < 5.3 upstream `/v1/projects/internal/settings.json` is served by the
 * handler of `/v1/projects/internal/settings`, so an agent holding only `read` reaches the admin route.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { generateAgentToken } from '../../src/identity/agent-token.js';
import { canary } from '../helpers/canary.js';
import { rawGet, rawRequest } from '../helpers/raw-http.js';
import { startProxy, type ProxyFixture } from '../helpers/start-proxy.js';
import { startUpstream, type Upstream } from '../helpers/start-upstream.js';

const key = canary('suffix-exempt');
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
            { method: 'GET', path: '/v1/projects/internal/settings', scope: 'admin' },
            { method: 'GET', path: '/v1/projects/:project/settings.json', scope: 'read' },
            { method: 'GET', path: '/v1/openapi.json', scope: 'read' },
            { method: 'GET', path: '/v1/*', scope: 'read' },
          ],
        },
      },
      agents: { tester: { tokens: [agent.hash], credentials: [{ service: 'rails', max_scope: ['read'] }] } },
      anomalies: { enabled: false },
    },
    { env: { KEY: key } },
  );
});

afterAll(async () => {
  await proxy.close();
  await upstream.close();
});

async function send(target: string): Promise<{ status: number; forwarded: boolean }> {
  const before = upstream.requests.length;
  const answer = await rawRequest(proxy.url, rawGet(target, { authorization: `Bearer ${agent.token}`, 'content-length': '0' }));
  return { status: answer.status, forwarded: upstream.requests.length > before };
}

describe('a route spelling a dot is no blanket exemption from the format-suffix reading', () => {
  it('control: /v1/projects/internal/settings itself is refused (scope admin not granted)', async () => {
    expect(await send('/rails/v1/projects/internal/settings')).toMatchObject({ status: 403, forwarded: false });
  });

  it('control: another project\'s settings.json is forwarded', async () => {
    expect(await send('/rails/v1/projects/acme/settings.json')).toMatchObject({ status: 200, forwarded: true });
  });

  it('control: /v1/openapi.json (its suffix-less reading is the broader /v1/*, which also holds it) is forwarded', async () => {
    expect(await send('/rails/v1/openapi.json')).toMatchObject({ status: 200, forwarded: true });
  });

  it('/v1/projects/internal/settings.json, which such an upstream serves as the admin route, is not forwarded', async () => {
    const { status, forwarded } = await send('/rails/v1/projects/internal/settings.json');
    expect(forwarded).toBe(false);
    expect(status).toBe(400);
  });
});
