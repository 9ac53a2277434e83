/**
 * A reload while Vault is unreachable (found by review): each configuration generation built its broker
 * with an empty cache, so the reload threw away the last known good value the running configuration was
 * serving within max_staleness, and every request got 503 from then on. Now the new broker takes over
 * the last good `vault:` values when Vault is configured as before, under the new config's bounds; with
 * Vault configured differently (another address) nothing is taken over: values from elsewhere.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { generateAgentToken } from '../../src/identity/agent-token.js';
import { assertNoLeak, proxySurfaces, responsesSurface } from '../helpers/assert-no-leak.js';
import { canary } from '../helpers/canary.js';
import { adminClient } from '../helpers/operator.js';
import { sendRequest, type Problem, type SentResponse } from '../helpers/send-request.js';
import { startProxy, type ProxyFixture } from '../helpers/start-proxy.js';
import { startUpstream, type Upstream } from '../helpers/start-upstream.js';
import { startOAuth2Server } from '../support/oauth2-server.js';
import { startVaultServer, type VaultServer } from '../support/vault-server.js';

describe('a reload while the credential store is down', () => {
  const agent = generateAgentToken();
  const apiKey = canary('reload-outage');
  const secrets = [apiKey];
  const seen: SentResponse[] = [];
  let vault: VaultServer;
  let upstream: Upstream;
  let proxy: ProxyFixture;

  beforeAll(async () => {
    vault = await startVaultServer();
    vault.putSecret('secret', 'stripe', { api_key: apiKey });
    upstream = await startUpstream();
    proxy = await startProxy(
      {
        secrets: { vault: { address: vault.url, timeout: 1, auth: { method: 'token', token: 'env:VAULT_TOKEN' } }, cache: { ttl: 300, max_staleness: 3600 } },
        services: { stripe: { upstream: upstream.url, credential: { secret: 'vault:secret/stripe#api_key', inject: 'bearer' }, routes: [{ method: 'GET', path: '/v1/*', scope: 'stripe:read' }] } },
        agents: { bot: { tokens: [agent.hash], credentials: [{ service: 'stripe', max_scope: ['*'] }] } },
      },
      { env: { VAULT_TOKEN: vault.createToken() } },
    );
  });

  afterAll(async () => {
    assertNoLeak(secrets, [
      responsesSurface(seen),
      ...proxySurfaces(proxy),
    ]);
    await proxy?.close();
    await upstream?.close();
    await vault?.close();
  });

  async function call(): Promise<SentResponse> {
    const response = await sendRequest(`${proxy.url}/stripe/v1/charges`, { headers: { authorization: `Bearer ${agent.token}` } });
    seen.push(response);
    return response;
  }

  it('the last good value is served across the reload, within max_staleness; another Vault address takes nothing over', async () => {
    expect((await call()).status).toBe(200);
    await vault.setDown(true, 'refuse');
    expect((await call()).status, 'served from the cache during the outage').toBe(200);

    // The same config, and one whose only change is the grant's scope list: the value goes on.
    expect((await proxy.airlock.reload(proxy.config)).ok).toBe(true);
    const after = await call();
    expect(after.status, after.text).toBe(200);
    expect(upstream.requests.at(-1)?.header('authorization')).toEqual([`Bearer ${apiKey}`]);

    // Vault somewhere else (its address changed): a value from the old one is not taken over.
    const moved = { ...proxy.config, secrets: { ...proxy.config.secrets, vault: { ...proxy.config.secrets.vault, address: 'http://127.0.0.1:9' } } } as typeof proxy.config;
    expect((await proxy.airlock.reload(moved)).ok).toBe(true);
    const refused = await call();
    expect(refused.status, refused.text).toBe(503);
    expect(refused.json<Problem>().code).toBe('credential_unavailable');
  });

  // Found by review: the values were taken when the new configuration's broker was built; a rotate that
  // reached the running broker while the build waited on a slow store was lost at the switch, and the
  // old key came back for up to its ttl. The build here waits on a slow OAuth2 token endpoint (its
  // client's scope changed, so that token is fetched anew) while Vault answers at once.
  it('a rotate made while a reload is being built is in force after the switch', async () => {
    const idp = await startOAuth2Server({ clients: [{ clientId: 'crm-client', clientSecret: 'crm-secret-0123456789' }] });
    const oncall = generateAgentToken();
    const v1 = canary('rotate-v1');
    const v2 = canary('rotate-v2');
    secrets.push(v1, v2);
    const rotating = await startVaultServer();
    rotating.putSecret('secret', 'billing', { api_key: v1 });
    const second = await startProxy(
      {
        admin: { listen: '127.0.0.1:0', tokens: [{ name: 'oncall', hash: oncall.hash }] },
        secrets: {
          vault: { address: rotating.url, timeout: 2, auth: { method: 'token', token: 'env:VAULT_TOKEN' } },
          cache: { ttl: 3600, max_staleness: 3600 },
          oauth2: { crm: { token_url: idp.tokenUrl, client_id: 'env:CRM_ID', client_secret: 'env:CRM_SECRET', scope: 'a', timeout: 5 } },
        },
        services: {
          billing: { upstream: upstream.url, credential: { secret: 'vault:secret/billing#api_key', inject: 'bearer' }, routes: [{ method: 'GET', path: '/v1/*', scope: 'billing:read' }] },
          crm: { upstream: upstream.url, credential: { secret: 'oauth2:crm', inject: 'bearer' }, routes: [{ method: 'GET', path: '/v1/*', scope: 'crm:read' }] },
        },
        agents: { bot: { tokens: [agent.hash], credentials: [{ service: 'billing', max_scope: ['*'] }, { service: 'crm', max_scope: ['*'] }] } },
      },
      { env: { VAULT_TOKEN: rotating.createToken(), CRM_ID: 'crm-client', CRM_SECRET: 'crm-secret-0123456789' } },
    );
    try {
      const billing = async (): Promise<string | undefined> => {
        const response = await sendRequest(`${second.url}/billing/v1/invoices`, { headers: { authorization: `Bearer ${agent.token}` } });
        seen.push(response);
        expect(response.status, response.text).toBe(200);
        return upstream.requests.at(-1)?.header('authorization')?.[0];
      };
      expect(await billing()).toBe(`Bearer ${v1}`);
      idp.setDelay(1_500);
      const next = { ...second.config, secrets: { ...second.config.secrets, oauth2: { crm: { ...second.config.secrets.oauth2['crm'], scope: 'a b' } } } } as typeof second.config;
      const reloading = second.airlock.reload(next);
      rotating.putSecret('secret', 'billing', { api_key: v2 });
      const rotated = await adminClient(() => second.airlock.adminUrl as string, oncall.token).call('POST', '/v1/credentials/refresh', { ref: 'vault:secret/billing#api_key' });
      expect(rotated.status, rotated.text).toBe(200);
      expect(await billing(), 'the running configuration uses the rotated key').toBe(`Bearer ${v2}`);
      expect((await reloading).ok).toBe(true);
      expect(await billing(), 'and so does the new one').toBe(`Bearer ${v2}`);
      // The client's scope changed: its token was fetched anew, not taken over (one at start, one now).
      expect(idp.issued).toHaveLength(2);
      secrets.push(...idp.issued);
    } finally {
      await second.close();
      await rotating.close();
      await idp.close();
    }
  });
});
