/**
 * Found by review: a reload must not take over an OAuth2 client's secret that is a Vault lease (vault-lease:, e.g. the
 * azure secrets engine's client_id/client_secret): that lease belongs to the previous broker, which
 * revokes it when it retires (seedFrom's own rule for vault-lease: values). afa9ac5 seeded the
 * "bootstrap" references of kept OAuth2 clients whatever their kind, so the new configuration held,
 * and would mint tokens with, a client secret from a revoked lease, fresh until 3/4 of the lease's life.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { generateAgentToken } from '../../src/identity/agent-token.js';
import { assertNoLeak, proxySurfaces } from '../helpers/assert-no-leak.js';
import { canary } from '../helpers/canary.js';
import { adminClient, eventually, type AdminClient } from '../helpers/operator.js';
import { sendRequest } from '../helpers/send-request.js';
import { startProxy, type ProxyFixture } from '../helpers/start-proxy.js';
import { startUpstream, type Upstream } from '../helpers/start-upstream.js';
import { startOAuth2Server, type OAuth2Server } from '../support/oauth2-server.js';
import { startVaultServer, type VaultServer } from '../support/vault-server.js';

const ROLE = 'azure/creds/crm';
const SECRET_REF = `vault-lease:${ROLE}#client_secret`;
const agent = generateAgentToken();
const oncall = generateAgentToken();
const clientSecrets: string[] = [];
let vault: VaultServer;
let idp: OAuth2Server;
let upstream: Upstream;
let proxy: ProxyFixture;
let admin: AdminClient;
let vaultToken: string;

beforeAll(async () => {
  vault = await startVaultServer();
  idp = await startOAuth2Server();
  vault.addLeaseRole(ROLE, () => {
    const clientSecret = canary(`azure-sp-${clientSecrets.length}`);
    clientSecrets.push(clientSecret);
    idp.addClient({ clientId: 'crm-client', clientSecret });
    return { client_id: 'crm-client', client_secret: clientSecret };
  });
  vaultToken = vault.createToken();
  upstream = await startUpstream();
  proxy = await startProxy(
    {
      admin: { listen: '127.0.0.1:0', tokens: [{ name: 'oncall', hash: oncall.hash }] },
      secrets: {
        vault: { address: vault.url, timeout: 2, auth: { method: 'token', token: 'env:VAULT_TOKEN' } },
        oauth2: { crm: { token_url: idp.tokenUrl, client_id: `vault-lease:${ROLE}#client_id`, client_secret: SECRET_REF, timeout: 5 } },
      },
      services: { crm: { upstream: upstream.url, credential: { secret: 'oauth2:crm', inject: 'bearer' }, routes: [{ method: 'GET', path: '/v1/*', scope: 'crm:read' }] } },
      agents: { bot: { tokens: [agent.hash], credentials: [{ service: 'crm', max_scope: ['*'] }] } },
    },
    { env: { VAULT_TOKEN: vaultToken } },
  );
  admin = adminClient(() => proxy.airlock.adminUrl as string, oncall.token);
});

afterAll(async () => {
  assertNoLeak([vaultToken, ...clientSecrets, ...idp.issued], [{ name: 'admin answers', text: admin.seen.join('\n') }, ...proxySurfaces(proxy)]);
  await proxy?.close();
  await upstream?.close();
  await idp?.close();
  await vault?.close();
});

describe('a reload with an OAuth2 client whose secret is a Vault lease', () => {
  it('does not keep the client secret of the lease the previous configuration revokes', async () => {
    const first = await sendRequest(`${proxy.url}/crm/v1/x`, { headers: { authorization: `Bearer ${agent.token}` } });
    expect(first.status, first.text).toBe(200);
    expect(vault.leases()).toHaveLength(1);
    const oldLease = vault.leases()[0]!;
    expect((await proxy.airlock.reload(proxy.config)).ok).toBe(true);
    // The previous configuration retires and revokes its lease.
    await eventually('the previous configuration to revoke its lease', () => vault.leases().find((l) => l.id === oldLease.id)?.revoked === true, 5_000, 50);
    // Whatever the new configuration holds for the client secret is not the revoked lease's.
    const held = (await admin.call('GET', '/v1/credentials')).json<{ credentials: Array<{ ref: string; generation: string | null }> }>().credentials.find((c) => c.ref === SECRET_REF);
    const revokedGeneration = oldLease.id.slice(oldLease.id.lastIndexOf('/') + 1);
    expect(held?.generation ?? null).not.toBe(revokedGeneration);
    // And an OAuth2 token minted now (an operator's rotate) is made with a live lease's secret.
    const rotated = await admin.call('POST', '/v1/credentials/refresh', { ref: 'oauth2:crm' });
    expect(rotated.status).toBe(200);
    const minted = idp.tokenRequests.at(-1);
    expect(minted?.status).toBe(200);
    const live = vault.leases().filter((l) => !l.revoked).map((l) => l.data['client_secret']);
    const usedGeneration = (await admin.call('GET', '/v1/credentials')).json<{ credentials: Array<{ ref: string; generation: string | null }> }>().credentials.find((c) => c.ref === SECRET_REF)?.generation;
    expect(vault.leases().find((l) => l.id.endsWith(`/${usedGeneration}`))?.revoked).toBe(false);
    expect(live.length).toBeGreaterThan(0);
  });
});
