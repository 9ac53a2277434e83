/**
 * Found by a security review (2026-11-29): match-route checked each other reading of a path (%2F as
 * "/", no trailing "/", lower case) alone, never together; never read escapes such as %3A decoded; and
 * compared a lower-case path with templates as written. Each let an agent holding a catch-all's scope
 * reach a stronger route on an upstream that reads paths loosely (ASP.NET Core ignores case and a
 * trailing "/" at once; Go's net/http, Express and Google's front ends decode %3A before routing). Each
 * target below is refused 400 and reaches no upstream; the controls beside them still go through.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { generateAgentToken } from '../../src/identity/agent-token.js';
import { assertNoLeak } from '../helpers/assert-no-leak.js';
import { canary } from '../helpers/canary.js';
import { rawGet, rawRequest, type RawResponse } from '../helpers/raw-http.js';
import { startProxy, type ProxyFixture } from '../helpers/start-proxy.js';
import { startUpstream, type Upstream } from '../helpers/start-upstream.js';

const key = canary('readings');
const agent = generateAgentToken();
let upstream: Upstream;
let proxy: ProxyFixture;
const answers: RawResponse[] = [];

beforeAll(async () => {
  upstream = await startUpstream();
  const service = (routes: unknown[]) => ({ upstream: upstream.url, credential: { secret: 'env:KEY', inject: 'bearer' }, routes });
  proxy = await startProxy(
    {
      services: {
        files: service([
          { method: 'GET', path: '/v1/files/:id/raw', scope: 'files:raw' },
          { method: 'GET', path: '/v1/files/*', scope: 'files:read' },
        ]),
        gemini: service([
          { method: 'POST', path: '/v1beta/models/gemini-ultra:generateContent', scope: 'ultra' },
          { method: 'GET', path: '/v1/odata/Orders(1)', scope: 'orders:admin' },
          { method: ['POST', 'GET'], path: '/v1beta/models/*', scope: 'generate' },
          { method: 'GET', path: '/v1/odata/*', scope: 'odata:read' },
          { method: 'GET', path: '/v1/tuned/:model', scope: 'generate' },
        ]),
        // An ASP.NET API, spelled in the case the API uses.
        shop: service([
          { method: 'GET', path: '/api/Orders/Export', scope: 'orders:export' },
          { method: 'GET', path: '/api/Orders/:id', scope: 'orders:read' },
          { method: 'GET', path: '/api/Admin/*', scope: 'admin' },
          { method: 'GET', path: '/api/:area/*', scope: 'area:read' },
          // Two routes told apart by case alone: the operator's word that the upstream tells them apart.
          { method: 'GET', path: '/v1/Reports', scope: 'reports:admin' },
          { method: 'GET', path: '/v1/reports', scope: 'reports:read' },
        ]),
      },
      agents: {
        tester: {
          tokens: [agent.hash],
          credentials: [
            { service: 'files', max_scope: ['files:read'] },
            { service: 'gemini', max_scope: ['generate', 'odata:read'] },
            { service: 'shop', max_scope: ['orders:read', 'area:read', 'reports:read', 'reports:admin'] },
          ],
        },
      },
      anomalies: { enabled: false },
    },
    { env: { KEY: key } },
  );
});

afterAll(async () => {
  assertNoLeak([key, agent.token], [
    { name: 'responses', text: answers.map((answer) => answer.raw).join('\n') },
    { name: 'log', text: proxy.logLines.join('') },
    { name: 'audit', text: proxy.auditText() },
  ]);
  await proxy.close();
  await upstream.close();
});

async function send(method: string, target: string): Promise<{ status: number; forwarded: boolean; detail: string }> {
  const before = upstream.requests.length;
  const answer = await rawRequest(proxy.url, rawGet(target, { authorization: `Bearer ${agent.token}`, 'content-length': '0' }, method));
  answers.push(answer);
  const detail = answer.status === 400 ? (JSON.parse(answer.body) as { detail: string }).detail : '';
  return { status: answer.status, forwarded: upstream.requests.length > before, detail };
}

describe('readings combined', () => {
  it.each([
    ['/files/v1/files/ab/RAW/', /in lower case/, /without its trailing/],
    ['/files/v1/files/ab%2FRAW', /encoded slash/, /in lower case/],
    ['/files/v1/files/ab%2Fraw/', /encoded slash/, /without its trailing/],
  ])('refuses %s, which two readings together take to /v1/files/:id/raw', async (target, first, second) => {
    const result = await send('GET', target);
    expect(result).toMatchObject({ status: 400, forwarded: false });
    expect(result.detail).toMatch(first);
    expect(result.detail).toMatch(second);
    expect(result.detail).toContain('route 0 (/v1/files/:id/raw)');
  });

  it('still forwards what every reading takes to the same route', async () => {
    expect(await send('GET', '/files/v1/files/ab/Content/')).toMatchObject({ status: 200, forwarded: true });
    expect(await send('GET', '/files/v1/files/docs%2FREADME.md')).toMatchObject({ status: 200, forwarded: true });
  });
});

describe('escapes a server decodes before routing', () => {
  it.each([
    ['POST', '/gemini/v1beta/models/gemini-ultra%3AgenerateContent'],
    ['GET', '/gemini/v1/odata/Orders%281%29'],
  ])('refuses %s %s, which reaches the literal route decoded', async (method, target) => {
    const result = await send(method, target);
    expect(result).toMatchObject({ status: 400, forwarded: false });
    expect(result.detail).toMatch(/escapes such as %3A decoded/);
  });

  it('still forwards another model\'s custom method, escaped or not, and refuses the literal route on scope', async () => {
    expect(await send('POST', '/gemini/v1beta/models/gemini-pro%3AgenerateContent')).toMatchObject({ status: 200, forwarded: true });
    expect(await send('POST', '/gemini/v1beta/models/gemini-pro:generateContent')).toMatchObject({ status: 200, forwarded: true });
    expect(await send('POST', '/gemini/v1beta/models/gemini-ultra:generateContent')).toMatchObject({ status: 403, forwarded: false });
  });
});

describe('an id holding a "/" under a `:name` route', () => {
  it('is refused with a detail that tells the operator the fix (found by the SDK walkthrough)', async () => {
    const result = await send('GET', '/gemini/v1/tuned/meta-llama%2FLlama-3-8b');
    expect(result).toMatchObject({ status: 400, forwarded: false });
    expect(result.detail).toContain('an operator ends the route with "*" instead (services.gemini.routes[4])');
  });
});

describe('lower case, compared with the templates in lower case', () => {
  it.each([
    // Matched :id as sent; a case-insensitive upstream serves Export (the route spelling capitals no
    // longer exempts its paths).
    '/shop/api/Orders/export',
    // No capital in the path, matched /api/:area/*; the upstream serves /api/Admin/*.
    '/shop/api/admin/users',
  ])('refuses %s', async (target) => {
    const result = await send('GET', target);
    expect(result).toMatchObject({ status: 400, forwarded: false });
    expect(result.detail).toMatch(/in lower case, .* selects route (0|2) \(\/api\/(Orders\/Export|Admin\/\*)\)/);
  });

  it('still forwards paths in the API\'s own case, and routes told apart by case alone each under its own', async () => {
    expect(await send('GET', '/shop/api/Orders/Export')).toMatchObject({ status: 403, forwarded: false });
    expect(await send('GET', '/shop/api/Orders/1234')).toMatchObject({ status: 200, forwarded: true });
    expect(await send('GET', '/shop/api/Billing/invoices')).toMatchObject({ status: 200, forwarded: true });
    expect(await send('GET', '/shop/v1/reports')).toMatchObject({ status: 200, forwarded: true });
    expect(await send('GET', '/shop/v1/Reports')).toMatchObject({ status: 200, forwarded: true });
    const records = await proxy.waitForAudit(answers.length);
    const reports = records.filter((record) => record.route === '/v1/reports' || record.route === '/v1/Reports');
    expect(reports.map((record) => `${record.route} ${record.scope}`)).toEqual(['/v1/reports reports:read', '/v1/Reports reports:admin']);
  });
});
