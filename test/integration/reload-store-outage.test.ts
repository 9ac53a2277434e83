/**
 * A reload while Vault is unreachable (found by review): each configuration generation built its broker
 * with an empty cache, so the reload threw away the last known good value the running configuration was
 * serving within max_staleness, and every request got 503 from then on. Now the new broker takes over
 * the last good `vault:` values when Vault is configured as before, under the new config's bounds; with
 * Vault configured differently (another address) nothing is taken over: values from elsewhere.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { generateAgentToken } from '../../src/identity/agent-token.js';
import { assertNoLeak } from '../helpers/assert-no-leak.js';
import { canary } from '../helpers/canary.js';
import { sendRequest, type Problem, type SentResponse } from '../helpers/send-request.js';
import { startProxy, type ProxyFixture } from '../helpers/start-proxy.js';
import { startUpstream, type Upstream } from '../helpers/start-upstream.js';
import { startVaultServer, type VaultServer } from '../support/vault-server.js';

describe('a reload while the credential store is down', () => {
  const agent = generateAgentToken();
  const apiKey = canary('reload-outage');
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
    assertNoLeak([apiKey], [
      { name: 'responses', text: seen.map((r) => `${JSON.stringify(r.headers)}\n${r.text}`).join('\n') },
      { name: 'logs', text: proxy.logLines.join('\n') },
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
});
