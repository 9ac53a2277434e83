/**
 * Behind a load balancer (`trusted_proxies`), the agent's address is the one the balancer forwarded in
 * X-Forwarded-For: the audit record's `client`, the span's client.address and what the upstream is sent
 * in X-Forwarded-For name it, so audit and the new_client_address rule see agents rather than the
 * balancer. Without the setting, or from a peer that is not listed, the header is the agent's own words:
 * ignored, and never forwarded as sent. This test's connections come from 127.0.0.1, which plays the
 * balancer when listed.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { generateAgentToken } from '../../src/identity/agent-token.js';
import { buildConfig } from '../../src/config/load-config.js';
import { assertNoLeak } from '../helpers/assert-no-leak.js';
import { canary } from '../helpers/canary.js';
import { sendRequest } from '../helpers/send-request.js';
import { startProxy, type ProxyFixture } from '../helpers/start-proxy.js';
import { startUpstream, type Upstream } from '../helpers/start-upstream.js';

const agent = generateAgentToken();

describe('trusted_proxies', () => {
  const key = canary('trusted-proxies');
  let upstream: Upstream;
  let behind: ProxyFixture;
  let direct: ProxyFixture;
  const seen: string[] = [];

  beforeAll(async () => {
    upstream = await startUpstream();
    const input = (extra: Record<string, unknown>): Record<string, unknown> => ({
      ...extra,
      services: { echo: { upstream: upstream.url, credential: { secret: 'env:XFF_KEY' }, routes: [{ method: 'GET', path: '/v1/*', scope: 'read' }] } },
      agents: { bot: { tokens: [agent.hash], credentials: [{ service: 'echo', max_scope: ['read'] }] } },
    });
    behind = await startProxy(input({ trusted_proxies: ['127.0.0.0/8', '::1'] }), { env: { XFF_KEY: key } });
    direct = await startProxy(input({}), { env: { XFF_KEY: key } });
  });

  afterAll(async () => {
    assertNoLeak([key, agent.token], [
      { name: 'responses', text: seen.join('\n') },
      { name: 'audit', text: behind.auditText() + direct.auditText() },
      { name: 'logs', text: behind.logLines.join('') + direct.logLines.join('') },
    ]);
    await behind?.close();
    await direct?.close();
    await upstream?.close();
  });

  async function call(proxy: ProxyFixture, path: string, forwardedFor?: string): Promise<{ client: string | null; upstreamSaw: string[] | undefined }> {
    const response = await sendRequest(`${proxy.url}/echo${path}`, { headers: { authorization: `Bearer ${agent.token}`, ...(forwardedFor === undefined ? {} : { 'x-forwarded-for': forwardedFor }) } });
    seen.push(response.text);
    expect(response.status, response.text).toBe(200);
    const id = response.headers['x-airlock-request-id'];
    const records = await proxy.waitForAudit(1);
    const record = await (async () => {
      for (let i = 0; i < 100; i++) {
        const found = proxy.auditRecords().find((r) => r.request_id === id);
        if (found !== undefined) return found;
        await new Promise((resolve) => setTimeout(resolve, 10));
      }
      throw new Error(`no audit record for ${String(id)} among ${records.length}`);
    })();
    const sent = upstream.requests.find((r) => r.target === `/v1${path.slice(3)}`);
    return { client: record.client, upstreamSaw: sent?.header('x-forwarded-for') };
  }

  it('behind a listed balancer, the forwarded address is the client, in the audit record and upstream', async () => {
    expect(await call(behind, '/v1/from-lb', '203.0.113.7')).toEqual({ client: '203.0.113.7', upstreamSaw: ['203.0.113.7'] });
  });

  it('what the agent wrote left of the balancer\'s hop is not believed', async () => {
    expect(await call(behind, '/v1/spoofed', '192.0.2.66, 203.0.113.8')).toEqual({ client: '203.0.113.8', upstreamSaw: ['203.0.113.8'] });
  });

  it('without the setting the header is ignored: the peer is the client, and the upstream is sent the peer', async () => {
    expect(await call(direct, '/v1/direct', '203.0.113.9')).toEqual({ client: '127.0.0.1', upstreamSaw: ['127.0.0.1'] });
  });

  it('with no header behind the balancer, the balancer is the client', async () => {
    expect(await call(behind, '/v1/no-header')).toEqual({ client: '127.0.0.1', upstreamSaw: ['127.0.0.1'] });
  });

  it('warns (strict) of a range wide enough to hold agents too', () => {
    const built = buildConfig({ trusted_proxies: ['0.0.0.0/0', '10.0.0.0/8', '::/0', 'fd00:1::/48', '192.0.2.7'] }, { baseDir: '/tmp' });
    expect(built.config).not.toBeNull();
    expect(built.problems.map((p) => [p.path.join('.'), p.strict])).toEqual([
      ['trusted_proxies.0', true],
      ['trusted_proxies.2', true],
    ]);
    expect(built.problems[0]?.message).toMatch(/^0\.0\.0\.0\/0 is wider than a load balancer's range: an agent inside it can set the address/);
  });

  it('refuses an entry that is neither an address nor a CIDR range, naming it', () => {
    const built = buildConfig({ trusted_proxies: ['10.0.0.0/33', 'lb.internal', '10.0.0.0/8'] }, { baseDir: '/tmp' });
    expect(built.config).toBeNull();
    expect(built.problems.map((p) => [p.path.join('.'), p.message])).toEqual([
      ['trusted_proxies.0', 'an IP address or a CIDR range, such as 10.0.0.0/8 or fd00:1::/48'],
      ['trusted_proxies.1', 'an IP address or a CIDR range, such as 10.0.0.0/8 or fd00:1::/48'],
    ]);
  });
});
