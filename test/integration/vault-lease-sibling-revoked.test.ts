/**
 * Every field of a Vault path comes from one lease (vault-lease-source.ts). When a fetch of one field
 * takes a new lease, the old one is revoked after `rotation_grace`, so the other fields cached from it
 * must follow at once. The broker did that after a forced refresh (followLease) only: a lease replaced
 * ahead of its end by an ordinary background refresh (a non-renewable lease past two thirds of its
 * life) left the sibling field cached with the old lease's value, served after that lease was revoked.
 *
 * Real parts: the broker, its cache and lease source, the real VaultSession (node-vault) against the
 * Vault stand-in; the broker's clock is a fake one, so the lease's life passes without waiting.
 */
import { rmSync } from 'node:fs';
import { afterAll, afterEach, describe, expect, it } from 'vitest';
import { buildConfig } from '../../src/config/load-config.js';
import { createCredentialBroker, type CredentialBroker } from '../../src/credentials/credential-broker.js';
import { createLogging } from '../../src/observability/logger.js';
import { allCredentialPlans, compilePolicy } from '../../src/policy/compile-policy.js';
import { SecretCatalog } from '../../src/redaction/secret-catalog.js';
import { generateAgentToken } from '../../src/identity/agent-token.js';
import { assertNoLeak } from '../helpers/assert-no-leak.js';
import { canary } from '../helpers/canary.js';
import { eventually } from '../helpers/operator.js';
import { tempDir } from '../helpers/start-proxy.js';
import { startVaultServer, type VaultServer } from '../support/vault-server.js';

const ROLE = 'database/creds/ro';
const USER = `vault-lease:${ROLE}#username`;
const PASS = `vault-lease:${ROLE}#password`;
const agent = generateAgentToken();
const minted: string[] = [];
const logLines: string[] = [];
const dirs: string[] = [];
let vault: VaultServer | undefined;
let broker: CredentialBroker | undefined;

afterEach(async () => {
  await broker?.close();
  await vault?.close();
});

afterAll(() => {
  for (const dir of dirs) rmSync(dir, { recursive: true, force: true });
  assertNoLeak(minted, [{ name: 'log', text: logLines.join('') }]);
});

describe('fields of one Vault lease', () => {
  it('a field cached from a lease replaced by a background refresh is not served once that lease is revoked', async () => {
    vault = await startVaultServer();
    vault.addLeaseRole(
      ROLE,
      () => {
        const username = canary(`sibling-user-${minted.length}`);
        const password = canary(`sibling-pass-${minted.length}`);
        minted.push(username, password);
        return { username, password };
      },
      { ttl: 300, renewable: false },
    );
    const token = vault.createToken();
    const dataDir = tempDir('airlock-lease-sibling-');
    dirs.push(dataDir);
    const routes = [{ method: 'GET', path: '/v1/*', scope: 'db:read' }];
    const built = buildConfig(
      {
        listen: '127.0.0.1:0',
        data_dir: dataDir,
        secrets: { vault: { address: vault.url, rotation_grace: 0.05, auth: { method: 'token', token: 'env:VAULT_TOKEN' } } },
        services: {
          dbuser: { upstream: 'http://127.0.0.1:9', credential: { secret: USER, inject: 'bearer' }, routes },
          dbpass: { upstream: 'http://127.0.0.1:9', credential: { secret: PASS, inject: 'bearer' }, routes },
        },
        agents: { bot: { tokens: [agent.hash], credentials: [{ service: 'dbuser', max_scope: ['*'] }, { service: 'dbpass', max_scope: ['*'] }] } },
      },
      { baseDir: dataDir },
    );
    if (built.config === null) throw new Error(JSON.stringify(built.problems));
    const catalog = new SecretCatalog();
    const { logger } = createLogging('debug', { write: (line) => void logLines.push(line) }, catalog);
    let clock = Date.now();
    broker = createCredentialBroker(built.config, { env: { VAULT_TOKEN: token }, catalog, logger, plans: allCredentialPlans(compilePolicy(built.config)), now: () => clock });

    const user1 = (await broker.resolve(USER)).reveal();
    const pass1 = (await broker.resolve(PASS)).reveal();
    expect([user1, pass1]).toEqual(minted.slice(0, 2));
    const [first] = vault.leases();

    // Past 3/4 of the password's fresh life: served from cache, refreshed in the background; the lease
    // has less than a third of its life left, so the source takes a new one and retires the first.
    clock += 226_000;
    await broker.resolve(PASS);
    await eventually('a second lease', () => vault?.leases().length === 2);
    await eventually('the first lease to be revoked', () => vault?.leases().find((lease) => lease.id === first?.id)?.revoked === true);

    // The user name is still within its own fresh life: it must not be the revoked lease's.
    clock += 30_000;
    const user = (await broker.resolve(USER)).reveal();
    expect(user).not.toBe(user1);
    expect(user).toBe(minted[2]);
  });
});
