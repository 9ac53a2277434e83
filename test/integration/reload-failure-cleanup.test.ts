/**
 * A reload whose new configuration fails to build after its credential broker took a Vault lease (found
 * by review): nothing closed the half-built generation, so that lease was renewed for ever and never
 * revoked, with its pools and timers, once per failed save of the file. Now whatever the build opened is
 * closed, the lease revoked, and the running configuration goes on with its own lease.
 *
 * The failure is made by handing reload() a config object without its `approvals` section, as a bug in a
 * later build step would fail; a config that `airlock check` refuses never gets that far.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { AirlockConfig } from '../../src/config/types.js';
import { generateAgentToken } from '../../src/identity/agent-token.js';
import { assertNoLeak } from '../helpers/assert-no-leak.js';
import { canary } from '../helpers/canary.js';
import { eventually } from '../helpers/operator.js';
import { sendRequest } from '../helpers/send-request.js';
import { startProxy, type ProxyFixture } from '../helpers/start-proxy.js';
import { startUpstream, type Upstream } from '../helpers/start-upstream.js';
import { startVaultServer, type VaultServer } from '../support/vault-server.js';

describe('a reload that fails while it is built', () => {
  const agent = generateAgentToken();
  const passwords: string[] = [];
  let vault: VaultServer;
  let upstream: Upstream;
  let proxy: ProxyFixture;

  beforeAll(async () => {
    vault = await startVaultServer();
    vault.addLeaseRole('database/creds/ro', () => {
      const password = canary(`lease-${passwords.length}`);
      passwords.push(password);
      return { username: `u${passwords.length}`, password };
    }, { ttl: 30, maxTtl: 3600 });
    upstream = await startUpstream();
    proxy = await startProxy(
      {
        secrets: { vault: { address: vault.url, timeout: 2, auth: { method: 'token', token: 'env:VAULT_TOKEN' } } },
        services: { db: { upstream: upstream.url, credential: { secret: 'vault-lease:database/creds/ro#password', inject: 'bearer' }, routes: [{ method: 'GET', path: '/v1/*', scope: 'db:read' }] } },
        agents: { bot: { tokens: [agent.hash], credentials: [{ service: 'db', max_scope: ['*'] }] } },
      },
      { env: { VAULT_TOKEN: vault.createToken() } },
    );
  });

  afterAll(async () => {
    await proxy?.close();
    await upstream?.close();
    await vault?.close();
  });

  it('closes what the build opened: the lease it took is revoked; the running config keeps its own and serves', async () => {
    expect(vault.leases()).toHaveLength(1);
    const broken = { ...proxy.config, approvals: undefined } as unknown as AirlockConfig;
    const result = await proxy.airlock.reload(broken);
    expect(result.ok).toBe(false);
    const [running, abandoned] = vault.leases();
    expect(abandoned, 'the failed build took a lease of its own').toBeDefined();
    await eventually('the failed build to revoke its lease', () => vault.leases()[1]?.revoked === true);
    expect(vault.leases().find((lease) => lease.id === running?.id)?.revoked).toBe(false);
    expect(vault.leases()).toHaveLength(2);

    const response = await sendRequest(`${proxy.url}/db/v1/rows`, { headers: { authorization: `Bearer ${agent.token}` } });
    expect(response.status, response.text).toBe(200);
    expect(upstream.requests.at(-1)?.header('authorization')).toEqual([`Bearer ${passwords[0]}`]);
    assertNoLeak(passwords, [
      { name: 'response', text: `${JSON.stringify(response.headers)}\n${response.text}` },
      { name: 'logs', text: proxy.logLines.join('\n') },
    ]);
  });

  // Found by review: a build's fetch of a value gives up after 2 s, but its Vault request (timeout 5 s)
  // goes on, and a lease Vault granted after the failed build had closed its broker was never revoked.
  it('a lease Vault grants after the failed build gave up waiting is revoked too', async () => {
    const slow = await startVaultServer();
    slow.addLeaseRole('database/creds/ro', () => {
      const password = canary(`slow-${passwords.length}`);
      passwords.push(password);
      return { username: 'u', password };
    }, { ttl: 30, maxTtl: 3600 });
    const patient = await startProxy(
      {
        secrets: { vault: { address: slow.url, timeout: 5, auth: { method: 'token', token: 'env:VAULT_TOKEN' } } },
        services: { db: { upstream: upstream.url, credential: { secret: 'vault-lease:database/creds/ro#password', inject: 'bearer' }, routes: [{ method: 'GET', path: '/v1/*', scope: 'db:read' }] } },
        agents: { bot: { tokens: [agent.hash], credentials: [{ service: 'db', max_scope: ['*'] }] } },
      },
      { env: { VAULT_TOKEN: slow.createToken() } },
    );
    try {
      expect(slow.leases()).toHaveLength(1);
      slow.setDelay(2_500);
      const result = await patient.airlock.reload({ ...patient.config, approvals: undefined } as unknown as AirlockConfig);
      expect(result.ok).toBe(false);
      await eventually('the late lease to be granted and revoked', () => slow.leases().length === 2 && slow.leases()[1]?.revoked === true, 8_000);
      expect(slow.leases()[0]?.revoked).toBe(false);
    } finally {
      slow.setDelay(0);
      await patient.close();
      await slow.close();
    }
  }, 20_000);
});
