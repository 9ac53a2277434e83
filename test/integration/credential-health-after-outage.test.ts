/**
 * A reference's health clears once its store is back, without traffic (found by an ops walkthrough):
 * an operator's rotate refused while Vault was down marked the reference failing, and nothing asked
 * Vault again until a request came past refresh-ahead (3/4 of its ttl), so the admin API,
 * airlock_credential_failing and `status` kept reporting a failure for minutes after Vault was back,
 * while requests were served its fresh value all along.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { generateAgentToken } from '../../src/identity/agent-token.js';
import { assertNoLeak, proxySurfaces } from '../helpers/assert-no-leak.js';
import { canary } from '../helpers/canary.js';
import { adminClient, eventually, type AdminClient } from '../helpers/operator.js';
import { sendRequest } from '../helpers/send-request.js';
import { startProxy, type ProxyFixture } from '../helpers/start-proxy.js';
import { startUpstream, type Upstream } from '../helpers/start-upstream.js';
import { startVaultServer, type VaultServer } from '../support/vault-server.js';

const REF = 'vault:secret/stripe#api_key';
const agent = generateAgentToken();
const oncall = generateAgentToken();
const apiKey = canary('health-after-outage');
let vault: VaultServer;
let upstream: Upstream;
let proxy: ProxyFixture;
let admin: AdminClient;

beforeAll(async () => {
  vault = await startVaultServer();
  vault.putSecret('secret', 'stripe', { api_key: apiKey });
  upstream = await startUpstream();
  proxy = await startProxy(
    {
      admin: { listen: '127.0.0.1:0', tokens: [{ name: 'oncall', hash: oncall.hash }] },
      secrets: { vault: { address: vault.url, timeout: 1, auth: { method: 'token', token: 'env:VAULT_TOKEN' } }, cache: { ttl: 300, max_staleness: 3600 } },
      services: { stripe: { upstream: upstream.url, credential: { secret: REF, inject: 'bearer' }, routes: [{ method: 'GET', path: '/v1/*', scope: 'stripe:read' }] } },
      agents: { bot: { tokens: [agent.hash], credentials: [{ service: 'stripe', max_scope: ['*'] }] } },
    },
    { env: { VAULT_TOKEN: vault.createToken() } },
  );
  admin = adminClient(() => proxy.airlock.adminUrl as string, oncall.token);
});

afterAll(async () => {
  assertNoLeak([apiKey], [{ name: 'admin answers', text: admin.seen.join('\n') }, ...proxySurfaces(proxy)]);
  await proxy?.close();
  await upstream?.close();
  await vault?.close();
});

async function failing(): Promise<boolean | undefined> {
  const answer = await admin.call('GET', '/v1/credentials');
  return answer.json<{ credentials: Array<{ ref: string; failing: boolean }> }>().credentials.find((c) => c.ref === REF)?.failing;
}

describe('a rotate refused while the store was down', () => {
  it('leaves the reference failing only until the store is back, with no request needed', async () => {
    const first = await sendRequest(`${proxy.url}/stripe/v1/charges`, { headers: { authorization: `Bearer ${agent.token}` } });
    expect(first.status).toBe(200);
    await vault.setDown(true, 'refuse');
    const rotated = await admin.call('POST', '/v1/credentials/refresh', { ref: REF });
    expect(rotated.status).not.toBe(200);
    expect(await failing()).toBe(true);
    await vault.setDown(false);
    // The broker's sweep (every 2 s) asks once the backoff (0.5 s after one failure) is over.
    await eventually('the reference healthy again', async () => (await failing()) === false, 8_000, 200);
    const after = await sendRequest(`${proxy.url}/stripe/v1/charges`, { headers: { authorization: `Bearer ${agent.token}` } });
    expect(after.status).toBe(200);
    expect(upstream.requests.at(-1)?.header('authorization')).toEqual([`Bearer ${apiKey}`]);
  });
});
