/**
 * A header credential or strip_headers entry whose configured name holds "_" (RFC 9110 5.1 allows it in
 * a token): every agent copy, spelled with "_" or "-" (one variable to CGI-style servers, CVE-2024-45614),
 * is removed before the credential is set. Found by review: the configured name was compared as written
 * with the agent's names read with "_" as "-", so no agent copy ever matched it, not even one spelled
 * exactly as configured, and the upstream got the agent's value first, beside the injected one.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { generateAgentToken } from '../../src/identity/agent-token.js';
import { canary } from '../helpers/canary.js';
import { sendRequest } from '../helpers/send-request.js';
import { startProxy, type ProxyFixture } from '../helpers/start-proxy.js';
import { startUpstream, type Upstream } from '../helpers/start-upstream.js';

const serviceKey = canary('underscore-service');
const agentOwn = canary('underscore-agent-own');
const agent = generateAgentToken();

let upstream: Upstream;
let proxy: ProxyFixture;

beforeAll(async () => {
  upstream = await startUpstream();
  const routes = [{ method: 'GET', path: '/v1/*', scope: 'api:read' }];
  proxy = await startProxy(
    {
      services: {
        api: {
          upstream: upstream.url,
          credential: { secret: 'env:SERVICE_KEY', inject: { header: 'X_Custom_Key', value: '${secret}' } },
          strip_headers: ['X_Session'],
          routes,
        },
      },
      agents: { bot: { tokens: [agent.hash], credentials: [{ service: 'api', max_scope: ['*'] }] } },
    },
    { env: { SERVICE_KEY: serviceKey } },
  );
});

afterAll(async () => {
  await proxy?.close();
  await upstream?.close();
});

/** Every header the upstream got whose name, read with "_" as "-", is `name`. */
function seenAs(name: string): string[] {
  const raw = upstream.requests.at(-1)?.rawHeaders ?? [];
  const out: string[] = [];
  for (let i = 0; i < raw.length; i += 2) if ((raw[i] as string).toLowerCase().replaceAll('_', '-') === name) out.push(`${raw[i]}: ${raw[i + 1]}`);
  return out;
}

describe('a configured header name with "_"', () => {
  it("replaces the agent's copies of the injected header, in either spelling", async () => {
    const response = await sendRequest(`${proxy.url}/api/v1/items`, {
      headers: { authorization: `Bearer ${agent.token}`, x_custom_key: agentOwn, 'x-custom-key': agentOwn },
    });
    expect(response.status, response.text).toBe(200);
    expect(seenAs('x-custom-key')).toEqual([`x_custom_key: ${serviceKey}`]);
  });

  it('strips every copy of a strip_headers entry, in either spelling', async () => {
    const response = await sendRequest(`${proxy.url}/api/v1/items`, {
      headers: { authorization: `Bearer ${agent.token}`, x_session: agentOwn, 'X-Session': agentOwn },
    });
    expect(response.status, response.text).toBe(200);
    expect(seenAs('x-session')).toEqual([]);
  });
});
