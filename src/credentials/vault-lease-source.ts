/**
 * vault-lease:PATH#FIELD - a field of a Vault dynamic secret (e.g. database/creds/readonly#password).
 *
 * One lease per path, shared by every field of it. A lease is renewed at about two thirds of its TTL
 * (with jitter; retried with backoff on failure) until Vault stops extending it; a new lease is taken
 * when the current one nears its end, or when a fetch is forced (an operator's rotate, an upstream's 401),
 * and the old one is revoked after a grace period ("rotated out").
 * A lease is never revoked because of a transient error (Vault Agent once did exactly that and took
 * working credentials away from running clients); all leases are revoked at shutdown.
 */
import type { Logger } from 'pino';
import { LONGEST_TIMER_MS } from '../config/schema.js';
import { AirlockError } from '../errors.js';
import { Credential } from './credential.js';
import { splitVaultName } from './secret-ref.js';
import { CredentialWithdrawn, type SecretSource } from './secret-source.js';
import { vaultStatus, type VaultSession } from './vault-session.js';

interface Lease {
  readonly id: string;
  readonly data: Readonly<Record<string, unknown>>;
  /** The duration Vault granted last (at creation or the latest renewal), ms. */
  grantedMs: number;
  expiresAt: number;
  renewable: boolean;
  timer: NodeJS.Timeout | null;
  failures: number;
}

interface LeaseResponse {
  lease_id?: string;
  lease_duration?: number;
  renewable?: boolean;
  data?: Record<string, unknown>;
}

export interface VaultLeaseSource extends SecretSource {
  /** Revokes every lease (shutdown). */
  close(): Promise<void>;
  leaseCount(): number;
}

/**
 * `rotationGraceMs`: how long a rotated-out lease lives on, so requests already sent with it can finish
 * (secrets.vault.rotation_grace; its default is the schema's, in one place).
 */
export function createVaultLeaseSource(
  session: VaultSession,
  logger: Logger,
  options: {
    now?: () => number;
    random?: () => number;
    rotationGraceMs: number;
    /**
     * The lease of `path` was replaced (`generation`: the new one's), whichever fetch did it, or is no
     * longer to be served (null): withdrawn, or gone from Vault (found at its renewal). Values cached from
     * the old lease, of other fields, are to be fetched again before it is revoked; with null, not served
     * again.
     */
    onReplaced?: (path: string, generation: string | null) => void;
  },
): VaultLeaseSource {
  const now = options.now ?? Date.now;
  const rotationGraceMs = options.rotationGraceMs;
  const random = options.random ?? Math.random;
  const onReplaced = options.onReplaced ?? (() => undefined);
  const leases = new Map<string, Lease>();
  const acquiring = new Map<string, Promise<Lease>>();
  const retiring = new Map<NodeJS.Timeout, Lease>();
  let closed = false;

  /** The audit generation of a lease's values: the last segment of its id. */
  function generationOf(lease: Lease): string {
    return lease.id.slice(lease.id.lastIndexOf('/') + 1);
  }

  function remaining(lease: Lease): number {
    return lease.expiresAt - now();
  }

  async function revoke(lease: Lease, why: string): Promise<void> {
    try {
      await session.call((client) => client.revoke({ lease_id: lease.id }));
      logger.info({ lease: lease.id, why }, 'revoked vault lease');
    } catch (error) {
      logger.warn({ lease: lease.id, err: error }, 'could not revoke vault lease; it expires on its own');
    }
  }

  function schedule(path: string, lease: Lease): void {
    if (closed || !lease.renewable) return;
    const left = remaining(lease);
    // Past its end Vault renews nothing (it answers "lease not found" once it is back): without this, the
    // retry below came every 100 ms, a warning each, for as long as Vault stayed unreachable (found by
    // review: 25 in a 4 s outage). The next fetch takes a new lease (`current`).
    if (left <= 0) return;
    const delay = lease.failures === 0 ? (left * 2) / 3 : Math.min(left / 3, 1000 * 2 ** lease.failures);
    // Capped as the session's renewal is (vault-session.ts): a longer delay would fire at once.
    lease.timer = setTimeout(() => void renew(path, lease), Math.min(LONGEST_TIMER_MS, Math.max(100, delay * (0.9 + 0.2 * random()))));
    lease.timer.unref();
  }

  async function renew(path: string, lease: Lease): Promise<void> {
    if (closed || leases.get(path) !== lease) return;
    try {
      const response = (await session.call((client) => client.renew({ lease_id: lease.id }))) as LeaseResponse;
      const duration = response.lease_duration ?? 0;
      lease.failures = 0;
      lease.renewable = response.renewable !== false && duration > 0;
      lease.expiresAt = now() + duration * 1000;
      lease.grantedMs = duration * 1000;
      logger.debug({ lease: lease.id, ttl_s: duration }, 'renewed vault lease');
      schedule(path, lease);
    } catch (error) {
      const status = vaultStatus(error);
      if (status === 400 || status === 404) {
        // Vault no longer knows the lease (expired, or revoked elsewhere: `vault lease revoke`): take a new
        // one on next use, and the values cached from it go too. Dropped here alone, the cache went on
        // injecting the dead lease's value until its own refresh-ahead point, minutes for a one-hour
        // lease (found by review).
        logger.warn({ lease: lease.id }, 'vault lease is gone; a new one will be taken');
        if (leases.get(path) === lease) {
          leases.delete(path);
          onReplaced(path, null);
        }
        return;
      }
      // Transient: keep the lease (never revoke on a transient error) and retry sooner.
      lease.failures++;
      logger.warn({ lease: lease.id, err: error, failures: lease.failures }, 'vault lease renewal failed; retrying');
      schedule(path, lease);
    }
  }

  /** Stops renewing a lease no longer handed out, and revokes it after the grace (or at close). */
  function retire(lease: Lease, why: string): void {
    if (lease.timer !== null) clearTimeout(lease.timer);
    const timer = setTimeout(() => {
      retiring.delete(timer);
      void revoke(lease, why);
    }, rotationGraceMs);
    timer.unref();
    retiring.set(timer, lease);
  }

  async function acquire(path: string, ref: string): Promise<Lease> {
    let response: LeaseResponse;
    try {
      response = (await session.call((client) => client.read(path))) as LeaseResponse;
    } catch (error) {
      const failure = session.failure(error, ref);
      // Vault answered that the path is no longer Airlock's to read (403 policy, 404 role gone): the
      // cache drops the value, and the lease held for the path goes with it. Kept, the next plain fetch
      // (which reads nothing while the lease has life left) handed the withdrawn value back, and its timer
      // went on renewing it (found by review). Revoked after the grace, as a rotated-out lease is.
      const held = leases.get(path);
      if (failure instanceof CredentialWithdrawn && held !== undefined) {
        leases.delete(path);
        retire(held, 'withdrawn');
        onReplaced(path, null);
      }
      throw failure;
    }
    if (typeof response.lease_id !== 'string' || response.lease_id === '' || response.data === undefined) {
      throw new AirlockError('credential_unavailable', `Vault's answer for ${ref} is not a lease (no lease_id); use vault: for static KV secrets.`);
    }
    // Vault gives a dynamic secret's lease its role's or mount's TTL, never 0. An answer without one (a
    // plugin's, something in front of Vault) would count as expired at once and take a new lease, a new
    // database user, for every request: it is kept instead until it is refused or rotated (`forced`).
    const duration = response.lease_duration ?? 0;
    const lease: Lease = {
      id: response.lease_id,
      data: response.data,
      grantedMs: duration > 0 ? duration * 1000 : Infinity,
      expiresAt: duration > 0 ? now() + duration * 1000 : Infinity,
      renewable: response.renewable === true && duration > 0,
      timer: null,
      failures: 0,
    };
    if (duration <= 0) logger.warn({ lease: lease.id }, 'vault gave the lease no duration; it is kept until refused or rotated');
    const previous = leases.get(path);
    leases.set(path, lease);
    schedule(path, lease);
    if (previous !== undefined) {
      retire(previous, 'rotated out');
      onReplaced(path, generationOf(lease));
    }
    logger.info({ lease: lease.id, ttl_s: response.lease_duration, renewable: lease.renewable }, 'obtained vault lease');
    return lease;
  }

  /**
   * The current lease of a path, or a new one when there is none, it is near its end, or `forced` (the
   * current one's credentials were refused, or an operator rotates them).
   */
  function current(path: string, ref: string, forced: boolean): Promise<Lease> {
    const lease = leases.get(path);
    // A renewable lease is kept and extended by its timer; only one Vault will no longer extend (or one
    // whose renewals keep failing, down to a tenth of its life) is replaced ahead of its end.
    const keepUntil = lease === undefined ? 0 : lease.renewable ? lease.grantedMs / 10 : lease.grantedMs / 3;
    if (!forced && lease !== undefined && (lease.expiresAt === Infinity || remaining(lease) > keepUntil)) return Promise.resolve(lease);
    // A lease being taken already replaces the current one, so a forced fetch joins it too.
    let pending = acquiring.get(path);
    if (pending === undefined) {
      pending = acquire(path, ref).finally(() => acquiring.delete(path));
      acquiring.set(path, pending);
    }
    return pending;
  }

  return {
    async fetchSecret(name, ref, options) {
      // Closed (its configuration retired or failed to build): no new lease nobody would revoke.
      if (closed) throw new AirlockError('credential_unavailable', `The configuration that fetched ${ref} has been replaced; the request was not sent.`);
      const { path, field } = splitVaultName(name);
      const lease = await current(path, ref, options?.forced === true);
      const value = lease.data[field];
      if (typeof value !== 'string' || value === '') {
        throw new AirlockError('credential_unavailable', `The Vault lease behind ${ref} has no non-empty string field "${field}".`);
      }
      return new Credential(ref, value, generationOf(lease), lease.expiresAt === Infinity ? null : lease.expiresAt);
    },
    leaseCount() {
      return leases.size;
    },
    async close() {
      closed = true;
      const pending = [...acquiring.values()];
      const all = [...leases.values(), ...retiring.values()];
      for (const timer of retiring.keys()) clearTimeout(timer);
      retiring.clear();
      leases.clear();
      for (const lease of all) if (lease.timer !== null) clearTimeout(lease.timer);
      // The leases held are revoked at once; one still being taken as it arrives (found by review: one
      // that arrived after close took the list was never revoked, and ran to its TTL; waiting for it
      // first held back the others' revocation for as long as Vault took to answer).
      await Promise.all([
        ...all.map((lease) => revoke(lease, 'shutdown')),
        ...pending.map((taking) =>
          taking.then(
            (lease) => {
              // Taken just before close read the list: revoked with the held ones already.
              if (all.includes(lease)) return undefined;
              for (const [path, held] of leases) if (held === lease) leases.delete(path);
              return revoke(lease, 'shutdown');
            },
            () => undefined,
          ),
        ),
      ]);
    },
  };
}
