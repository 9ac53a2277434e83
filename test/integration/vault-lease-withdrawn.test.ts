/**
 * A Vault lease whose path Vault withdraws (Airlock's policy no longer covers it: 403, or the role is
 * gone: 404) is not served again. The cache drops the value when the store answers that it is gone
 * (CredentialWithdrawn), but the lease source kept the lease it held for the path, and the next plain
 * fetch (no Vault read: the lease was not near its end) handed the withdrawn lease's value back, and
 * the source went on renewing it.
 *
 * Real parts: the cache, the lease source and the real VaultSession (node-vault) against the Vault
 * stand-in, reached through a small HTTP relay that answers 403 for a path once its read is denied
 * (the stand-in's own `denyRead` covers KV paths only).
 */
import { once } from 'node:events';
import { createServer, request as httpRequest, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { pino } from 'pino';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { CredentialCache } from '../../src/credentials/credential-cache.js';
import { createVaultLeaseSource, type VaultLeaseSource } from '../../src/credentials/vault-lease-source.js';
import { VaultSession } from '../../src/credentials/vault-session.js';
import { assertNoLeak } from '../helpers/assert-no-leak.js';
import { canary } from '../helpers/canary.js';
import { eventually } from '../helpers/operator.js';
import { startVaultServer, type VaultServer } from '../support/vault-server.js';

const ROLE = 'database/creds/ro';
const REF = `vault-lease:${ROLE}#password`;

let vault: VaultServer;
let relay: Server;
let relayUrl: string;
/** Paths (as sent, e.g. /v1/database/creds/ro) the relay answers 403 for, as a withdrawn policy would. */
const denied = new Set<string>();
let session: VaultSession;
let source: VaultLeaseSource;
let cache: CredentialCache;
let logLines: string[];
const passwords: string[] = [];

beforeEach(async () => {
  logLines = [];
  denied.clear();
  vault = await startVaultServer();
  vault.addLeaseRole(ROLE, () => {
    const password = canary(`withdrawn-lease-${passwords.length}`);
    passwords.push(password);
    return { username: 'airlock', password };
  });
  const target = new URL(vault.url);
  relay = createServer((req, res) => {
    const path = (req.url ?? '').split('?')[0] as string;
    if (req.method === 'GET' && denied.has(path)) {
      req.resume();
      res.writeHead(403, { 'content-type': 'application/json' }).end('{"errors":["permission denied"]}');
      return;
    }
    const upstream = httpRequest({ host: target.hostname, port: target.port, method: req.method, path: req.url, headers: req.headers }, (answer) => {
      res.writeHead(answer.statusCode ?? 502, answer.headers);
      answer.pipe(res);
    });
    upstream.on('error', () => res.destroy());
    req.pipe(upstream);
  });
  relay.listen(0, '127.0.0.1');
  await once(relay, 'listening');
  relayUrl = `http://127.0.0.1:${(relay.address() as AddressInfo).port}`;
  const logger = pino({ level: 'info' }, { write: (line: string) => void logLines.push(line) });
  const token = vault.createToken();
  session = new VaultSession({ address: relayUrl, timeout: 5, rotation_grace: 60, auth: { method: 'token', token: 'env:VAULT_TOKEN' } } as never, () => Promise.resolve(token), logger);
  source = createVaultLeaseSource(session, logger, { rotationGraceMs: 60_000 });
  cache = new CredentialCache((ref, options) => source.fetchSecret(ref.slice('vault-lease:'.length), ref, options), () => ({ ttlMs: 3_600_000, maxStalenessMs: 3_600_000 }));
});

afterEach(async () => {
  await source.close();
  await session.close();
  relay.closeAllConnections();
  relay.close();
  await vault.close();
  assertNoLeak(passwords, [{ name: 'log', text: logLines.join('') }]);
});

describe('a Vault lease whose path is withdrawn', () => {
  it('is not handed back by the next plain fetch once a forced fetch found the path denied (403)', async () => {
    const first = await cache.get(REF);
    expect(first.reveal()).toBe(passwords[0]);
    denied.add(`/v1/${ROLE}`);
    // An operator's rotate (or an upstream's 401 with retry_on): Vault refuses the read of a new lease.
    await expect(cache.refresh(REF)).rejects.toMatchObject({ code: 'credential_unavailable' });
    expect(cache.lastGood(REF)).toBeNull();
    // Past the cache's backoff, the next request asks the source again: it must not get the old lease.
    await new Promise((resolve) => setTimeout(resolve, 600));
    const next = await Promise.resolve(cache.get(REF)).then(
      (credential) => credential.reveal() === passwords[0],
      () => false,
    );
    expect(next).toBe(false);
    // And the withdrawn lease is not Airlock's to keep: it is no longer held (nor renewed), and it is revoked.
    expect(source.leaseCount()).toBe(0);
  });

  it('is revoked, not left to run to its TTL unowned', async () => {
    source.close();
    source = createVaultLeaseSource(session, pino({ level: 'silent' }), { rotationGraceMs: 50 });
    cache = new CredentialCache((ref, options) => source.fetchSecret(ref.slice('vault-lease:'.length), ref, options), () => ({ ttlMs: 3_600_000, maxStalenessMs: 3_600_000 }));
    await cache.get(REF);
    const [held] = vault.leases();
    denied.add(`/v1/${ROLE}`);
    await expect(cache.refresh(REF)).rejects.toMatchObject({ code: 'credential_unavailable' });
    await eventually('the withdrawn lease to be revoked', () => vault.leases().find((lease) => lease.id === held?.id)?.revoked === true, 3_000, 20);
  });
});
