/**
 * A reload keeps the health of the secrets a kept Vault login and kept OAuth2 clients were made with
 * (found by an ops walkthrough): the new configuration asks for them only when it logs in or mints
 * anew, so after any reload they were gone from /v1/credentials and airlock_credential_failing, and an
 * alert on one of them went silent.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { generateAgentToken } from '../../src/identity/agent-token.js';
import { assertNoLeak, proxySurfaces } from '../helpers/assert-no-leak.js';
import { canary } from '../helpers/canary.js';
import { adminClient, type AdminClient } from '../helpers/operator.js';
import { sendRequest } from '../helpers/send-request.js';
import { startProxy, type ProxyFixture } from '../helpers/start-proxy.js';
import { startUpstream, type Upstream } from '../helpers/start-upstream.js';
import { startOAuth2Server, type OAuth2Server } from '../support/oauth2-server.js';
import { startVaultServer, type VaultServer } from '../support/vault-server.js';

const agent = generateAgentToken();
const oncall = generateAgentToken();
const apiKey = canary('reload-health-vault');
const clientSecret = canary('reload-health-client');
let vault: VaultServer;
let idp: OAuth2Server;
let upstream: Upstream;
let proxy: ProxyFixture;
let admin: AdminClient;
let vaultToken: string;

beforeAll(async () => {
  vault = await startVaultServer();
  vault.putSecret('secret', 'billing', { api_key: apiKey });
  vaultToken = vault.createToken();
  idp = await startOAuth2Server({ clients: [{ clientId: 'crm-client', clientSecret }] });
  upstream = await startUpstream();
  proxy = await startProxy(
    {
      admin: { listen: '127.0.0.1:0', tokens: [{ name: 'oncall', hash: oncall.hash }] },
      secrets: {
        vault: { address: vault.url, timeout: 2, auth: { method: 'token', token: 'env:VAULT_TOKEN' } },
        oauth2: { crm: { token_url: idp.tokenUrl, client_id: 'env:CRM_ID', client_secret: 'env:CRM_SECRET', timeout: 5 } },
      },
      services: {
        billing: { upstream: upstream.url, credential: { secret: 'vault:secret/billing#api_key', inject: 'bearer' }, routes: [{ method: 'GET', path: '/v1/*', scope: 'billing:read' }] },
        crm: { upstream: upstream.url, credential: { secret: 'oauth2:crm', inject: 'bearer' }, routes: [{ method: 'GET', path: '/v1/*', scope: 'crm:read' }] },
      },
      agents: { bot: { tokens: [agent.hash], credentials: [{ service: 'billing', max_scope: ['*'] }, { service: 'crm', max_scope: ['*'] }] } },
    },
    { env: { VAULT_TOKEN: vaultToken, CRM_ID: 'crm-client', CRM_SECRET: clientSecret } },
  );
  admin = adminClient(() => proxy.airlock.adminUrl as string, oncall.token);
});

afterAll(async () => {
  assertNoLeak([apiKey, clientSecret, vaultToken, ...idp.issued], [{ name: 'admin answers', text: admin.seen.join('\n') }, ...proxySurfaces(proxy)]);
  await proxy?.close();
  await upstream?.close();
  await idp?.close();
  await vault?.close();
});

async function listed(): Promise<string[]> {
  const answer = await admin.call('GET', '/v1/credentials');
  return answer
    .json<{ credentials: Array<{ ref: string }> }>()
    .credentials.map((c) => c.ref)
    .sort();
}

describe('a reload with the same Vault login and OAuth2 client', () => {
  it('keeps listing the secrets they were made with, and their health series', async () => {
    for (const service of ['billing', 'crm']) {
      const response = await sendRequest(`${proxy.url}/${service}/v1/x`, { headers: { authorization: `Bearer ${agent.token}` } });
      expect(response.status, response.text).toBe(200);
    }
    const before = await listed();
    expect(before).toEqual(['env:CRM_ID', 'env:CRM_SECRET', 'env:VAULT_TOKEN', 'oauth2:crm', 'vault:secret/billing#api_key']);
    expect((await proxy.airlock.reload(proxy.config)).ok).toBe(true);
    expect(await listed()).toEqual(before);
    const metrics = await proxy.airlock.metrics.registry.metrics();
    for (const ref of before) expect(metrics).toContain(`airlock_credential_failing{ref="${ref}"} 0`);
    // Nothing was fetched again for it: one token, one login.
    expect(idp.issued).toHaveLength(1);
  });
});
