/**
 * An authenticated session with HashiCorp Vault, through node-vault.
 *
 * Logs in with a token, AppRole (role_id/secret_id) or a Kubernetes service-account JWT; learns the
 * token's TTL and renews it (renew-self) at about two thirds of it, with jitter, retrying with backoff
 * on transient failures; when Vault says the token is no longer good (403), logs in again once and
 * retries the call. Namespace (X-Vault-Namespace), a CA file for TLS, and a per-call timeout come from
 * config. Vault's own error text stays in logs; agents get a fixed sentence.
 */
import { readFile } from 'node:fs/promises';
import type createVaultClient from 'node-vault';
import type { Logger } from 'pino';
import { LONGEST_TIMER_MS, type VaultSpec } from '../config/schema.js';
import type { DeepReadonly } from '../config/types.js';
import { AirlockError, OPERATOR_FINDS_WHY, OperatorReason } from '../errors.js';
import { Credential } from './credential.js';
import { CredentialWithdrawn } from './secret-source.js';
import { createVaultTransport, type VaultTransport } from './vault-transport.js';

type VaultClient = ReturnType<typeof createVaultClient>;

export type BootstrapResolver = (ref: string) => Promise<string>;

interface VaultFailureShape {
  response?: { statusCode?: number; body?: { errors?: unknown[] } };
  code?: string;
}

/** Vault answered: with a status. Did not answer: null. */
export function vaultStatus(error: unknown): number | null {
  const status = (error as VaultFailureShape | null)?.response?.statusCode;
  return typeof status === 'number' ? status : null;
}

/** node-vault's debug output, discarded. */
function silent(): void {}

export class VaultSession {
  readonly address: string;
  readonly #spec: DeepReadonly<VaultSpec>;
  /** node-vault (and axios under it) load only when Vault is configured. */
  readonly #client: Promise<VaultClient>;
  readonly #transport: VaultTransport;
  readonly #resolve: BootstrapResolver;
  readonly #logger: Logger;
  /**
   * Makes a value the session came by itself known to the scrubber (secret-catalog.ts): the token a
   * login gave, the Kubernetes JWT it read. Vault's error text goes to the log as a failure's cause,
   * and Vault may repeat either in it (found by review: an AppRole login's token, echoed in a 500's
   * `errors`, reached the log; values read through the broker were already scrubbed).
   */
  readonly #remember: (credential: Credential) => void;
  #authenticated = false;
  #login: Promise<void> | null = null;
  #renewTimer: NodeJS.Timeout | null = null;
  #closed = false;
  readonly #random: () => number;

  constructor(spec: DeepReadonly<VaultSpec>, resolve: BootstrapResolver, logger: Logger, remember: (credential: Credential) => void = () => undefined, random: () => number = Math.random) {
    this.#spec = spec;
    this.address = spec.address.replace(/\/$/, '');
    this.#resolve = resolve;
    this.#logger = logger;
    this.#remember = remember;
    this.#random = random;
    // Every call goes through our transport: a deadline for the whole call and a size cap.
    this.#transport = createVaultTransport(spec.timeout, spec.ca_file);
    const namespace = spec.namespace;
    const transport = this.#transport;
    const endpoint = this.address;
    this.#client = import('node-vault').then(({ default: create }) => {
      // debug: node-vault otherwise logs each request's body through the `debug` package (DEBUG=node-vault
      // or *), AppRole secret_ids and Kubernetes JWTs with them, to stderr, outside the scrubbed log.
      const client = create({ endpoint, apiVersion: 'v1', ...(namespace === undefined ? {} : { namespace }), 'request-promise': transport, debug: silent });
      // node-vault falls back to the environment for what the options leave out: VAULT_TOKEN, and
      // VAULT_PREFIX (put before every request path) and VAULT_NAMESPACE (sent as X-Vault-Namespace).
      // Where Airlock reads its secrets, and as whom, comes from its config alone: none of them is used.
      const settable = client as VaultClient & { pathPrefix: string; namespace: string | undefined };
      settable.token = '';
      settable.pathPrefix = '';
      settable.namespace = namespace;
      return client;
    });
    // A failed load surfaces in the first call; it is not an unhandled rejection before that.
    this.#client.catch(() => undefined);
  }

  /**
   * Runs a Vault call with a valid token; after a 403 from a token Vault no longer honours it logs in
   * again once and retries. A 403 is also what a policy that does not cover the path answers: asking
   * Vault which it is costs one lookup (found by review: a login per denied read spent an AppRole
   * secret_id use, and left a token behind, every time the cache asked again).
   */
  async call<T>(operation: (client: VaultClient) => Promise<T>): Promise<T> {
    await this.#ensureLoggedIn();
    const client = await this.#client;
    const sent = client.token;
    try {
      return await operation(client);
    } catch (error) {
      if (vaultStatus(error) !== 403) throw error;
      // Another call logged in again while this one waited for its 403: the refusal was of the old
      // token, and asking Vault about the new one would take it for a denial by policy (found by
      // review: the credential was reported withdrawn, its last good value dropped). Once more, as is.
      if (client.token !== sent) {
        await this.#ensureLoggedIn();
        return await operation(client);
      }
      if (await this.#tokenHonoured(client)) throw error;
      this.#logger.warn({ vault: this.address }, 'vault refused the token (403); logging in again');
      this.#authenticated = false;
      await this.#ensureLoggedIn();
      return await operation(client);
    }
  }

  /** Whether Vault still accepts the token (a lookup of itself); a failure other than 403 is not a no. */
  async #tokenHonoured(client: VaultClient): Promise<boolean> {
    try {
      await client.tokenLookupSelf();
      return true;
    } catch (error) {
      return vaultStatus(error) !== 403;
    }
  }

  /** An AirlockError for a failed call, without Vault's own words (those go to the log as the cause). */
  failure(error: unknown, ref: string): AirlockError {
    // Already said, by the login (#logIn): a refused login is not an unreachable Vault (found by review:
    // a Kubernetes login Vault answered 400 reached the agent as "Vault did not answer").
    if (error instanceof AirlockError) return error;
    const status = vaultStatus(error);
    // Vault's answer, not an outage: the secret was deleted, or Airlock's policy no longer covers it.
    if (status === 404) return new CredentialWithdrawn(`The credential ${ref} is not in Vault (no secret at that path); an operator writes it or fixes the reference.`, { cause: error });
    if (status === 403) return new CredentialWithdrawn(`Vault refused to give Airlock the credential ${ref} (permission denied); check the policy of Airlock's Vault role.`, { cause: error });
    if (status !== null) return new AirlockError('credential_unavailable', `Vault answered ${status} when asked for the credential ${ref}.`, { cause: error });
    // Where Vault is, is the operator's to know (errors.ts OperatorReason), not the agent's.
    return new AirlockError('credential_unavailable', `Vault did not answer in time or is unreachable while fetching ${ref}. ${OPERATOR_FINDS_WHY}`, {
      cause: new OperatorReason(`Vault at ${this.address} did not answer in time or is unreachable while fetching ${ref}`, { cause: error }),
    });
  }

  async close(): Promise<void> {
    this.#closed = true;
    if (this.#renewTimer !== null) clearTimeout(this.#renewTimer);
    this.#renewTimer = null;
    await this.#transport.close();
  }

  #ensureLoggedIn(): Promise<void> {
    if (this.#authenticated) return Promise.resolve();
    this.#login ??= this.#logIn().finally(() => {
      this.#login = null;
    });
    return this.#login;
  }

  async #logIn(): Promise<void> {
    const auth = this.#spec.auth;
    let ttl = 0;
    let renewable = false;
    const client = await this.#client;
    try {
      if (auth.method === 'token') {
        client.token = await this.#resolve(auth.token);
        const lookup = (await client.tokenLookupSelf()) as { data?: { ttl?: number; renewable?: boolean } };
        ttl = lookup.data?.ttl ?? 0;
        renewable = lookup.data?.renewable ?? false;
      } else {
        let response: { auth?: { client_token?: string; lease_duration?: number; renewable?: boolean } };
        if (auth.method === 'approle') {
          client.token = '';
          response = (await client.approleLogin({ role_id: await this.#resolve(auth.role_id), secret_id: await this.#resolve(auth.secret_id), mount_point: auth.mount })) as typeof response;
        } else {
          client.token = '';
          const jwt = (await readFile(auth.jwt_file, 'utf8')).trim();
          this.#remember(new Credential('vault-session:kubernetes-jwt', jwt));
          response = (await client.kubernetesLogin({ role: auth.role, jwt, mount_point: auth.mount })) as typeof response;
        }
        if (typeof response.auth?.client_token !== 'string') throw new Error('Vault login answered without a client token');
        client.token = response.auth.client_token;
        ttl = response.auth.lease_duration ?? 0;
        // With its expiry, the catalogue keeps a token known for as long as Vault honours it, past later
        // logins (found by review: three quick reloads, each a login, and a live older token was unknown).
        this.#remember(new Credential('vault-session:token', response.auth.client_token, null, ttl > 0 ? Date.now() + ttl * 1000 : null));
        renewable = response.auth.renewable ?? false;
      }
    } catch (error) {
      if (error instanceof AirlockError) throw error;
      const status = vaultStatus(error);
      throw new AirlockError(
        'credential_unavailable',
        status === null ? `Vault did not answer Airlock's login. ${OPERATOR_FINDS_WHY}` : `Vault refused Airlock's ${auth.method} login (status ${status}); check the credentials under secrets.vault.auth.`,
        { cause: status === null ? new OperatorReason(`Vault at ${this.address} did not answer Airlock's login`, { cause: error }) : error },
      );
    }
    this.#authenticated = true;
    this.#logger.info({ vault: this.address, method: auth.method, ttl_s: ttl, renewable }, 'logged in to vault');
    if (ttl > 0 && renewable) this.#scheduleRenewal(ttl, 0);
  }

  /**
   * Renew at about 2/3 of the TTL, +-10% jitter so replicas do not renew in lockstep, and no later than
   * node's longest timer allows: past it node fires after 1 ms, and a long-lived token (a TTL over ~37
   * days) was renewed in a tight loop.
   */
  #scheduleRenewal(ttlSeconds: number, failures: number): void {
    if (this.#closed) return;
    if (this.#renewTimer !== null) clearTimeout(this.#renewTimer);
    const base = failures === 0 ? (ttlSeconds * 2) / 3 : Math.min(ttlSeconds / 4, 2 ** failures);
    const delayMs = Math.min(LONGEST_TIMER_MS, Math.max(250, base * 1000 * (0.9 + 0.2 * this.#random())));
    this.#renewTimer = setTimeout(() => void this.#renew(ttlSeconds, failures), delayMs);
    this.#renewTimer.unref();
  }

  async #renew(previousTtl: number, failures: number): Promise<void> {
    try {
      const response = (await (await this.#client).tokenRenewSelf({})) as { auth?: { lease_duration?: number; renewable?: boolean } };
      const ttl = response.auth?.lease_duration ?? 0;
      this.#logger.debug({ vault: this.address, ttl_s: ttl }, 'renewed vault token');
      if (ttl > 0 && response.auth?.renewable !== false) this.#scheduleRenewal(ttl, 0);
    } catch (error) {
      if (vaultStatus(error) === 403) {
        // The token is gone: the next call logs in again.
        this.#authenticated = false;
        this.#logger.warn({ vault: this.address }, 'vault token could not be renewed (403); will log in again on next use');
        return;
      }
      this.#logger.warn({ vault: this.address, err: error }, 'vault token renewal failed; retrying');
      this.#scheduleRenewal(previousTtl, failures + 1);
    }
  }
}
