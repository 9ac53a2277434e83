/**
 * The lease source's own decisions, with the real VaultSession against the fake Vault on loopback:
 * - what it does with its leases when its configuration is retired (a reload, a failed build,
 *   shutdown). Pinned because the reviews that shaped `close()` found (stop 27): a lease Vault granted
 *   after close read its list was never revoked; waiting for it first held back the revocation of the
 *   leases already held for as long as Vault took to answer; and a lease taken just before close read
 *   its list was revoked twice;
 * - a lease Vault gives no duration (found in stop 27, left then): it counted as expired at once, and
 *   every request took a new lease (a new database user).
 */
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { pino } from 'pino';
import { createVaultLeaseSource, type VaultLeaseSource } from '../../src/credentials/vault-lease-source.js';
import { VaultSession } from '../../src/credentials/vault-session.js';
import { assertNoLeak } from '../helpers/assert-no-leak.js';
import { canary } from '../helpers/canary.js';
import { eventually } from '../helpers/operator.js';
import { startVaultServer, type VaultServer } from '../support/vault-server.js';

const ROLE = 'database/creds/ro';

let vault: VaultServer;
let session: VaultSession;
let logLines: string[];
const passwords: string[] = [];

/** The lease source under test; `onLine` sees each log line as it is written (synchronously). */
function leaseSource(onLine: (line: string) => void = () => undefined, rotationGraceMs = 60_000): VaultLeaseSource {
  const logger = pino({ level: 'info' }, {
    write(line: string) {
      logLines.push(line);
      onLine(line);
    },
  });
  const token = vault.createToken();
  session = new VaultSession({ address: vault.url, timeout: 5, rotation_grace: 60, auth: { method: 'token', token: 'env:VAULT_TOKEN' } } as never, () => Promise.resolve(token), logger);
  return createVaultLeaseSource(session, logger, { rotationGraceMs });
}

/** How many times each lease was revoked, from the source's own log lines (Vault's records keep no body). */
function revokesById(): Map<string, number> {
  const counts = new Map<string, number>();
  for (const line of logLines) {
    const record = JSON.parse(line) as { msg?: string; lease?: string };
    if (record.msg !== 'revoked vault lease' || record.lease === undefined) continue;
    counts.set(record.lease, (counts.get(record.lease) ?? 0) + 1);
  }
  return counts;
}

beforeEach(async () => {
  logLines = [];
  vault = await startVaultServer();
  for (const path of [ROLE, 'database/creds/rw']) {
    vault.addLeaseRole(path, () => {
      const password = canary(`lease-password-${passwords.length}`);
      passwords.push(password);
      return { username: 'airlock', password };
    });
  }
});

afterEach(async () => {
  await session.close();
  await vault.close();
  assertNoLeak(passwords, [{ name: 'log', text: logLines.join('') }]);
});

describe('closing a Vault lease source', () => {
  it('revokes the leases it holds at once, without waiting for a lease Vault is still granting, and that one as it arrives', async () => {
    const source = leaseSource();
    await source.fetchSecret(`${ROLE}#password`, `vault-lease:${ROLE}#password`);
    expect(vault.leases()).toHaveLength(1);
    vault.setDelay(1_500);
    const slow = source.fetchSecret('database/creds/rw#password', 'vault-lease:database/creds/rw#password').catch((error: unknown) => error);
    await eventually('the slow lease read to reach Vault', () => vault.requests.some((r) => r.path.endsWith('/database/creds/rw')));
    vault.setDelay(0);
    const closing = source.close();
    const held = vault.leases()[0];
    await eventually('the held lease to be revoked', () => vault.leases().find((lease) => lease.id === held?.id)?.revoked === true, 1_000, 10);
    // Revoked while Vault was still answering the other read: close did not wait for it first.
    expect(vault.leases().filter((lease) => lease.path === 'database/creds/rw')).toHaveLength(0);
    await closing;
    const late = vault.leases().find((lease) => lease.path === 'database/creds/rw');
    expect(late?.revoked, 'the lease granted after close read its list is revoked too').toBe(true);
    expect(await slow, 'the read in flight still answered').not.toBeInstanceOf(Error);
    expect([...revokesById().values()]).toEqual([1, 1]);
    expect(vault.count('lease-revoke')).toBe(2);
    await expect(source.fetchSecret(`${ROLE}#password`, `vault-lease:${ROLE}#password`)).rejects.toMatchObject({ code: 'credential_unavailable' });
  });

  it('a lease taken just before close read its list is revoked once, not twice', async () => {
    let source: VaultLeaseSource | null = null;
    let closing: Promise<void> | null = null;
    // Close runs inside the log call that follows the lease's arrival: the lease is held and still
    // being taken at once, the moment the dedupe in close() exists for.
    source = leaseSource((line) => {
      if (closing === null && line.includes('obtained vault lease')) closing = source?.close() ?? null;
    });
    await source.fetchSecret(`${ROLE}#password`, `vault-lease:${ROLE}#password`);
    expect(closing).not.toBeNull();
    await closing;
    expect(vault.leases()).toHaveLength(1);
    expect(vault.leases()[0]?.revoked).toBe(true);
    expect([...revokesById().values()]).toEqual([1]);
    expect(vault.count('lease-revoke')).toBe(1);
  });
});

describe('a lease Vault gives no duration', () => {
  it('is kept for every request, not taken anew each time, until a forced fetch replaces it; the old one is revoked after the grace, the new one at close', async () => {
    vault.addLeaseRole('database/creds/forever', () => {
      const password = canary(`lease-password-${passwords.length}`);
      passwords.push(password);
      return { password };
    }, { ttl: 0, renewable: false });
    const source = leaseSource(undefined, 300);
    const ref = 'vault-lease:database/creds/forever#password';
    const first = await source.fetchSecret('database/creds/forever#password', ref);
    for (let i = 0; i < 4; i++) expect((await source.fetchSecret('database/creds/forever#password', ref)).sameValueAs(first)).toBe(true);
    expect(vault.leases()).toHaveLength(1);
    expect(first.expiresAt, 'no expiry known: the cache ttl applies').toBeNull();
    expect(logLines.some((line) => line.includes('vault gave the lease no duration'))).toBe(true);
    const forced = await source.fetchSecret('database/creds/forever#password', ref, { forced: true });
    expect(forced.sameValueAs(first)).toBe(false);
    expect(vault.leases()).toHaveLength(2);
    const [old, kept] = vault.leases();
    // Replaced, the old lease is revoked after the rotation grace like any other (it never expires on
    // its own, so nothing else would end it); the new one is kept, and revoked at close.
    expect(old?.revoked).toBe(false);
    await eventually('the replaced lease to be revoked after the grace', () => vault.leases()[0]?.revoked === true, 5_000, 20);
    expect(vault.leases()[1]?.revoked).toBe(false);
    expect((await source.fetchSecret('database/creds/forever#password', ref)).sameValueAs(forced)).toBe(true);
    await source.close();
    expect(vault.leases().map((lease) => lease.revoked)).toEqual([true, true]);
    expect(revokesById()).toEqual(new Map([[old?.id, 1], [kept?.id, 1]]));
  });
});
