/**
 * A Vault lease that Vault itself no longer knows (an operator's `vault lease revoke`, or its end passed)
 * is found at its next renewal, which Vault answers 400 "lease not found". The lease source dropped it
 * and logged that a new one would be taken, but the cache was not told: it went on injecting the dead
 * lease's value until its own refresh-ahead point (minutes for a one-hour lease). Found by review.
 *
 * Also here: a renewal that keeps failing while Vault is unreachable stops once the lease has ended
 * (found by review: it was retried every 100 ms from then on, a warning each, for as long as Vault was down).
 *
 * Real parts: Airlock (startProxy) with its broker, cache and lease source, the real node-vault client
 * against the Vault stand-in, a recording upstream. Leases of a few seconds, so that the renewal timer
 * fires within the test.
 */
import { afterEach, describe, expect, it } from 'vitest';
import { generateAgentToken } from '../../src/identity/agent-token.js';
import { assertNoLeak, proxySurfaces, responsesSurface } from '../helpers/assert-no-leak.js';
import { canary } from '../helpers/canary.js';
import { eventually, sleep } from '../helpers/operator.js';
import { sendRequest, type Problem, type SentResponse } from '../helpers/send-request.js';
import { startProxy, type ProxyFixture } from '../helpers/start-proxy.js';
import { startUpstream, type Upstream } from '../helpers/start-upstream.js';
import { startVaultServer, type VaultServer } from '../support/vault-server.js';

const ROLE = 'database/creds/ro';
const agent = generateAgentToken();

let vault: VaultServer;
let upstream: Upstream;
let proxy: ProxyFixture;
let passwords: string[];
let responses: SentResponse[];
/** While set, Vault cannot create a lease (its database is down: Vault answers 500). */
let backendDown: boolean;

async function start(leaseTtlSeconds: number): Promise<void> {
  passwords = [];
  responses = [];
  backendDown = false;
  vault = await startVaultServer();
  vault.addLeaseRole(
    ROLE,
    () => {
      if (backendDown) throw new Error('the database refused the connection');
      const password = canary(`gone-lease-${passwords.length}`);
      passwords.push(password);
      return { username: `v-ro-${passwords.length}`, password };
    },
    { ttl: leaseTtlSeconds, maxTtl: 3600 },
  );
  upstream = await startUpstream();
  proxy = await startProxy(
    {
      secrets: { vault: { address: vault.url, timeout: 2, auth: { method: 'token', token: 'env:VAULT_TOKEN' } } },
      services: {
        db: { upstream: upstream.url, credential: { secret: `vault-lease:${ROLE}#password`, inject: 'bearer' }, routes: [{ method: 'GET', path: '/v1/*', scope: 'db:read' }] },
      },
      agents: { bot: { tokens: [agent.hash], credentials: [{ service: 'db', max_scope: ['*'] }] } },
    },
    { env: { VAULT_TOKEN: vault.createToken() } },
  );
}

afterEach(async () => {
  await proxy.close();
  await upstream.close();
  await vault.close();
  assertNoLeak([...passwords, ...vault.issuedTokens()], [...proxySurfaces(proxy), responsesSurface(responses)]);
});

/** A request from the agent; the password the upstream saw for it (undefined when none was sent). */
async function call(): Promise<{ response: SentResponse; password: string | undefined }> {
  const before = upstream.requests.length;
  const response = await sendRequest(`${proxy.url}/db/v1/rows`, { headers: { authorization: `Bearer ${agent.token}` } });
  responses.push(response);
  const sent = upstream.requests.slice(before).at(-1)?.header('authorization')[0];
  return { response, password: sent?.replace(/^Bearer /, '') };
}

/** What an operator's `vault lease revoke LEASE_ID` sends. */
async function revokeInVault(leaseId: string): Promise<void> {
  const answer = await fetch(`${vault.url}/v1/sys/leases/revoke`, {
    method: 'PUT',
    headers: { 'x-vault-token': vault.createToken(), 'content-type': 'application/json' },
    body: JSON.stringify({ lease_id: leaseId }),
  });
  expect(answer.status).toBe(204);
}

function logged(message: string): Array<Record<string, unknown>> {
  return proxy.logRecords().filter((record) => record['msg'] === message);
}

describe('a Vault lease that Vault revoked', () => {
  it('is not injected once its renewal finds it gone: the next request takes a new lease', async () => {
    // 4 s leases: renewed at about 2.7 s (2/3, with jitter); the cache would serve a value until its end.
    await start(4);
    const first = await call();
    expect(first.response.status).toBe(200);
    expect(first.password).toBe(passwords[0]);
    const [lease] = vault.leases();
    await revokeInVault(lease?.id as string);

    await eventually('the renewal to find the lease gone', () => logged('vault lease is gone; a new one will be taken').length > 0, 5_000, 10);
    const next = await call();
    expect(next.response.status, next.response.text).toBe(200);
    expect(next.password).not.toBe(passwords[0]);
    expect(next.password).toBe(passwords[1]);
    expect(vault.leases().filter((l) => !l.revoked)).toHaveLength(1);
  });

  it('fails closed (503 credential_unavailable) while Vault cannot give a new one, and takes one when it can', async () => {
    await start(4);
    expect((await call()).password).toBe(passwords[0]);
    const [lease] = vault.leases();
    await revokeInVault(lease?.id as string);
    backendDown = true;

    await eventually('the renewal to find the lease gone', () => logged('vault lease is gone; a new one will be taken').length > 0, 5_000, 10);
    // The re-fetch that followed failed: nothing is served, and the log says so.
    const refetch = await eventually('the re-fetch of the dead lease to fail', () => proxy.logRecords().find((r) => String(r['msg']).startsWith('refetching a field of a')), 2_000, 10);
    expect(refetch['msg']).not.toContain('serving the last good value');
    expect(refetch['msg']).toContain('requests get 503 credential_unavailable');
    const refused = await call();
    expect(refused.response.status, refused.response.text).toBe(503);
    expect(refused.response.json<Problem>().code).toBe('credential_unavailable');
    expect(refused.password).toBeUndefined();

    backendDown = false;
    await sleep(600); // the cache's first backoff (0.5 s)
    const recovered = await call();
    expect(recovered.response.status, recovered.response.text).toBe(200);
    expect(recovered.password).toBe(passwords[1]);
    // Across the whole test, the revoked lease's password went upstream once: before its revocation.
    expect(upstream.requests.filter((r) => r.header('authorization')[0] === `Bearer ${passwords[0]}`)).toHaveLength(1);
  });
});

describe('a Vault lease whose renewals fail while Vault is unreachable', () => {
  it('stops being renewed at its end, rather than every 100 ms for as long as Vault is down', async () => {
    // 2 s leases: renewed at about 1.3 s; Vault is down from before that until well past the lease's end.
    await start(2);
    expect((await call()).password).toBe(passwords[0]);
    await vault.setDown(true, 'refuse');
    await sleep(4_000);
    await vault.setDown(false);
    // Retries before the end: a handful (backoff of a third of what is left, at least 100 ms). After it,
    // none: Vault renews no lease past its end.
    const failures = logged('vault lease renewal failed; retrying');
    expect(failures.length).toBeGreaterThan(0);
    expect(failures.length).toBeLessThan(10);
    // And the next request takes a new lease.
    const next = await call();
    expect(next.response.status, next.response.text).toBe(200);
    expect(next.password).toBe(passwords[1]);
  });
});
