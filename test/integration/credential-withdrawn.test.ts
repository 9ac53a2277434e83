/**
 * A secret its store says is gone stops being injected at once; a store that cannot be reached keeps
 * the last known good value up to max_staleness. Found by review: after `airlock secrets rm`, a Vault
 * `kv delete` or a withdrawn Vault policy, the removed value was still injected for up to 15 minutes
 * (the default max_staleness), while the CLI said such requests now get 503.
 *
 * Real parts: a real Airlock (startProxy) in front of a recording upstream; the file source's real
 * encrypted file; the real node-vault client against the Vault stand-in (test/support/vault-server.ts).
 */
import { rmSync } from 'node:fs';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { EncryptedSecretFile } from '../../src/credentials/encrypted-secret-file.js';
import { loadMasterKey } from '../../src/credentials/master-key.js';
import { generateAgentToken } from '../../src/identity/agent-token.js';
import { assertNoLeak } from '../helpers/assert-no-leak.js';
import { canary } from '../helpers/canary.js';
import { eventually } from '../helpers/operator.js';
import { sendRequest, type Problem, type SentResponse } from '../helpers/send-request.js';
import { startProxy, tempDir, type ProxyFixture } from '../helpers/start-proxy.js';
import { startUpstream, type Upstream } from '../helpers/start-upstream.js';
import { startVaultServer, type VaultServer } from '../support/vault-server.js';

const agent = generateAgentToken();
const fileKey = canary('withdrawn-file');
const vaultKey = canary('withdrawn-vault');
const deniedKey = canary('withdrawn-denied');
const roleId = canary('withdrawn-role-id');
const secretId = canary('withdrawn-secret-id');
const seen: string[] = [];
const routes = [{ method: 'GET', path: '/v1/*', scope: 'api:call' }];

let upstream: Upstream;
let vault: VaultServer;
let proxy: ProxyFixture;
/** The proxy's data_dir, made here (startProxy removes only a directory it made itself). */
let dataDir: string | undefined;

async function call(service: string): Promise<SentResponse> {
  const response = await sendRequest(`${proxy.url}/${service}/v1/items`, { headers: { authorization: `Bearer ${agent.token}` } });
  seen.push(`${response.status} ${JSON.stringify(response.headers)} ${response.text}`);
  return response;
}

/** How many upstream requests carried `key` so far. */
function injected(key: string): number {
  return upstream.requests.filter((r) => r.header('authorization')[0] === `Bearer ${key}`).length;
}

beforeAll(async () => {
  upstream = await startUpstream();
  vault = await startVaultServer();
  vault.putSecret('secret', 'withdrawn', { api_key: vaultKey });
  vault.putSecret('secret', 'denied', { api_key: deniedKey });
  vault.addAppRole(roleId, secretId);
  dataDir = tempDir();
  const masterKey = loadMasterKey({ dataDir, env: {}, create: true }) as Buffer;
  new EncryptedSecretFile(dataDir, masterKey).set('stored', fileKey, new Date());
  proxy = await startProxy(
    {
      // The default max_staleness (900 s) would keep a merely unreachable value for the whole test.
      secrets: { vault: { address: vault.url, timeout: 2, auth: { method: 'approle', role_id: 'env:ROLE_ID', secret_id: 'env:SECRET_ID' } } },
      services: {
        filed: { upstream: upstream.url, credential: { secret: 'file:stored', inject: 'bearer', ttl: 1 }, routes },
        vaulted: { upstream: upstream.url, credential: { secret: 'vault:secret/withdrawn#api_key', inject: 'bearer', ttl: 1 }, routes },
        denied: { upstream: upstream.url, credential: { secret: 'vault:secret/denied#api_key', inject: 'bearer', ttl: 1 }, routes },
      },
      agents: { bot: { tokens: [agent.hash], credentials: ['filed', 'vaulted', 'denied'].map((service) => ({ service, max_scope: ['*'] })) } },
    },
    { dataDir, env: { ROLE_ID: roleId, SECRET_ID: secretId } },
  );
});

afterAll(async () => {
  await proxy?.close();
  await vault?.close();
  await upstream?.close();
  if (dataDir !== undefined) rmSync(dataDir, { recursive: true, force: true });
});

describe('a withdrawn secret is not served as last known good', () => {
  it('file: after the secret is removed from the encrypted file, requests get 503 within seconds and the key is not sent again', async () => {
    expect((await call('filed')).status).toBe(200);
    expect(injected(fileKey)).toBe(1);
    new EncryptedSecretFile(proxy.dataDir, loadMasterKey({ dataDir: proxy.dataDir, env: {}, create: false }) as Buffer).remove('stored');
    // The file is rechecked at most once a second and the value is fresh for ttl: 1 s.
    const refused = await eventually('a 503 after the removal', async () => {
      const response = await call('filed');
      return response.status === 503 ? response : undefined;
    }, 8_000, 100);
    expect(refused.json<Problem>()).toMatchObject({ code: 'credential_unavailable' });
    expect(refused.json<Problem>().detail).toContain('npx airlock secrets set stored');
    const sentBefore = injected(fileKey);
    for (let i = 0; i < 5; i++) expect((await call('filed')).status).toBe(503);
    expect(injected(fileKey)).toBe(sentBefore);
  });

  it('vault: after `kv delete` (404), requests get 503 within seconds and the key is not sent again', async () => {
    expect((await call('vaulted')).status).toBe(200);
    vault.deleteSecret('secret', 'withdrawn');
    const refused = await eventually('a 503 after the deletion', async () => {
      const response = await call('vaulted');
      return response.status === 503 ? response : undefined;
    }, 8_000, 100);
    expect(refused.json<Problem>().detail).toContain('is not in Vault');
    const sentBefore = injected(vaultKey);
    for (let i = 0; i < 5; i++) expect((await call('vaulted')).status).toBe(503);
    expect(injected(vaultKey)).toBe(sentBefore);
  });

  it('vault: after the policy stops covering the path (403), requests get 503, and the denied reads do not log in again each time', async () => {
    expect((await call('denied')).status).toBe(200);
    vault.denyRead('secret', 'denied');
    const refused = await eventually('a 503 after the denial', async () => {
      const response = await call('denied');
      return response.status === 503 ? response : undefined;
    }, 8_000, 100);
    expect(refused.json<Problem>().detail).toContain('permission denied');
    const logins = vault.count('approle-login');
    const sentBefore = injected(deniedKey);
    // Past a few of the cache's backoff steps (0.5, 1, 2 s): each lets one read through to Vault.
    for (let i = 0; i < 8; i++) {
      expect((await call('denied')).status).toBe(503);
      await new Promise((resolve) => setTimeout(resolve, 500));
    }
    expect(vault.count('approle-login')).toBe(logins);
    expect(injected(deniedKey)).toBe(sentBefore);
    vault.denyRead('secret', 'denied', false);
  });

  it('vault: a store that cannot be reached still serves the last known good value (max_staleness)', async () => {
    vault.putSecret('secret', 'withdrawn', { api_key: vaultKey });
    await eventually('the value written again is served', async () => (await call('vaulted')).status === 200, 8_000, 100);
    const dropped = vault.droppedConnections;
    const answered = vault.requests.length;
    // 'reset': the port stays bound and each connection Airlock opens is cut at once (and counted).
    await vault.setDown(true, 'reset');
    try {
      // Past the 1 s ttl the cache asks Vault, which cannot be reached: an outage, not a withdrawal. Each
      // request meanwhile is served the last known good value.
      await eventually('Airlock to ask Vault during the outage', async () => {
        expect((await call('vaulted')).status).toBe(200);
        return vault.droppedConnections > dropped;
      }, 8_000, 100);
      const sentBefore = injected(vaultKey);
      for (let i = 0; i < 3; i++) expect((await call('vaulted')).status).toBe(200);
      expect(injected(vaultKey)).toBe(sentBefore + 3);
      // Vault answered nothing during the outage: the value sent is the one read before it.
      expect(vault.requests.length).toBe(answered);
    } finally {
      await vault.setDown(false);
    }
  });

  it('leaves no trace of either key in responses, logs or audit', () => {
    assertNoLeak([fileKey, vaultKey, deniedKey, roleId, secretId, agent.token, ...vault.issuedTokens()], [
      { name: 'responses', text: seen.join('\n') },
      { name: 'log', text: proxy.logLines.join('') },
      { name: 'audit', text: proxy.auditText() },
    ]);
  });
});
