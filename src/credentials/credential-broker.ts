/**
 * The credential broker: every secret reference resolved through one cache (credential-cache.ts) in
 * front of the source of its kind, and every value handed out registered with the secret catalogue so
 * responses, logs and audit are scrubbed of it. Built once by the composition root.
 *
 * Cache defaults per kind: env: values cannot change while the process runs (cached for good); file:
 * values are re-read within a second of `airlock secrets set`; vault:, vault-lease: and oauth2: use
 * secrets.cache (expiring values also stop at their own expiry). A credential's own `ttl` and
 * `max_staleness` override these.
 */
import { setMaxListeners } from 'node:events';
import type { Logger } from 'pino';
import type { AirlockConfig } from '../config/types.js';
import { AirlockError } from '../errors.js';
import type { CredentialPlan } from '../policy/compile-policy.js';
import type { SecretCatalog } from '../redaction/secret-catalog.js';
import type { Credential } from './credential.js';
import { CredentialCache, type CachePolicy, type CredentialStatus, type LastGood } from './credential-cache.js';
import { createEnvSource } from './env-source.js';
import { createFileSource } from './file-source.js';
import { createOAuth2Source } from './oauth2-source.js';
import { parseSecretRef, splitVaultName, type SecretRefKind } from './secret-ref.js';
import { fetchCancelled, type SecretSource } from './secret-source.js';
import { createVaultKvSource } from './vault-kv-source.js';
import { createVaultLeaseSource } from './vault-lease-source.js';
import { VaultSession } from './vault-session.js';
import { createKeptTokenSource } from './kept-token-source.js';
import { createSharedTokenSource } from './shared-token-source.js';
import type { Redis } from 'ioredis';

export interface CredentialBroker {
  /**
   * The value to inject now (cached, refreshed ahead, last known good within bounds) or 503: the
   * credential itself when cached, a native Promise when the store must be asked (the request path
   * tells the two apart with `instanceof Promise`).
   */
  resolve(ref: string): Credential | Promise<Credential>;
  /**
   * Fetches a reference again now: after an upstream 401, or an operator's rotate. The source is forced
   * to replace a value it keeps (a new Vault lease, a new OAuth2 token, stored in Redis for the other
   * replicas). With `minAgeMs`, a forced refetch that found the same value less than that ago is not
   * repeated (a stream of 401s for a key that did not rotate is not a stream of fetches), and within
   * `minAgeMs` of a forced one the source's current value is taken instead of forcing another; while
   * refusals keep coming, that wait doubles with each forced fetch (credential-cache.ts, `refresh`).
   */
  refresh(ref: string, minAgeMs?: number): Promise<Credential>;
  status(): CredentialStatus[];
  /** The last value fetched for a reference and when, for the broker of the next configuration (BrokerOptions.previous). */
  lastGood(ref: string): LastGood | null;
  /**
   * Called as this broker's configuration takes over from the previous one: the values taken from the
   * previous broker when this one was built are taken again as that broker holds them now. While this
   * configuration was built (seconds, with a slow store), the running one went on: an operator's rotate
   * or a withdrawal reached the previous broker only (found by review: the old value came back, for up
   * to its ttl). Called with nothing in between it and the switch; then the previous broker is let go.
   */
  adoptLatest(): void;
  close(): Promise<void>;
}

export interface BrokerOptions {
  readonly env: Readonly<Record<string, string | undefined>>;
  readonly catalog: SecretCatalog;
  readonly logger: Logger;
  readonly plans: readonly CredentialPlan[];
  readonly now?: () => number;
  /** Cache hits, stale serves, misses and failed fetches (metrics). */
  readonly onCacheEvent?: (event: 'hit' | 'stale' | 'miss' | 'refresh_failure') => void;
  /**
   * The broker of the configuration this one replaces, and that configuration: its last good values of
   * `vault:` and `oauth2:` references whose store is configured alike are taken over (seedFrom).
   */
  readonly previous?: { readonly broker: CredentialBroker; readonly config: AirlockConfig };
  /** Replicas sharing OAuth2 tokens through Redis (a distributed single flight). */
  readonly sharedTokens?: { readonly redis: Redis; readonly prefix: string; readonly masterKey: Buffer | null };
  /**
   * Shutdown's cut (the end of shutdown_timeout): fetches under way are given up as at close(), so a
   * request waiting on one is answered 503 before its connection is closed, not cut with no answer. The
   * broker itself closes later, once the last requests are recorded.
   */
  readonly cut?: AbortSignal;
}

const FOREVER_MS = 365 * 24 * 3600 * 1000;

function unconfigured(kind: string, what: string): SecretSource {
  return {
    async fetchSecret(_name, ref) {
      throw new AirlockError('credential_unavailable', `The credential ${ref} needs ${what}, which is not configured (${kind}).`);
    },
  };
}

export function createCredentialBroker(config: AirlockConfig, options: BrokerOptions): CredentialBroker {
  const { catalog, logger } = options;
  const now = options.now ?? Date.now;
  const cacheDefaults = config.secrets.cache;

  const overrides = new Map<string, { ttl: number | undefined; maxStaleness: number | undefined }>();
  for (const plan of options.plans) {
    const previous = overrides.get(plan.ref);
    const pick = (a: number | undefined, b: number | undefined): number | undefined => (a === undefined ? b : b === undefined ? a : Math.min(a, b));
    overrides.set(plan.ref, { ttl: pick(previous?.ttl, plan.ttl), maxStaleness: pick(previous?.maxStaleness, plan.maxStaleness) });
  }
  const policyOf = (ref: string): CachePolicy => {
    const kind = ref.slice(0, ref.indexOf(':'));
    const own = overrides.get(ref);
    // env: cannot change; file: is cheap to re-read; expiring values (oauth2:, vault-lease:) live until
    // their own expiry minus a skew; the rest use secrets.cache.ttl.
    const ttlMs =
      own?.ttl !== undefined ? own.ttl * 1000 : kind === 'env' || kind === 'oauth2' || kind === 'vault-lease' ? FOREVER_MS : kind === 'file' ? 1000 : cacheDefaults.ttl * 1000;
    const stalenessMs = (own?.maxStaleness ?? (kind === 'env' ? FOREVER_MS / 1000 : cacheDefaults.max_staleness)) * 1000;
    // A value is servable at least as long as it is fresh; but an oauth2: token's "until its expiry" is
    // no duration to raise the operator's max_staleness to (that served a token without expires_in for
    // a year). Every token has an expiry (oauth2-source.ts gives one without expires_in its ttl), and
    // the cache serves nothing past it. Vault leases keep the old rule: their expiry is always Vault's.
    const maxStalenessMs = kind === 'oauth2' && own?.ttl === undefined ? stalenessMs : Math.max(ttlMs, stalenessMs);
    return { ttlMs, maxStalenessMs };
  };
  /** How long a token whose answer gives no usable expires_in is taken to live: its ttl, else secrets.cache.ttl. */
  const lifetimeWithoutExpiry = (ref: string): number => (overrides.get(ref)?.ttl ?? cacheDefaults.ttl) * 1000;

  // Store logins and OAuth2 clients read their own credentials through the broker too (cached, and
  // scrubbed from every output like any secret); revealing them is this layer's job.
  // One that is not well-formed text is refused as an injected one is (resolve-credential.ts): it could
  // not be scrubbed, and would be sent altered.
  const resolveValue = async (ref: string): Promise<string> => {
    const credential = await broker.resolve(ref);
    if (!credential.wellFormed) throw new Error(`the credential ${ref} is not well-formed text (an unpaired UTF-16 surrogate); fix the value in its store`);
    return credential.reveal();
  };

  const vaultConfig = config.secrets.vault;
  const vault = vaultConfig === undefined ? null : new VaultSession(vaultConfig, resolveValue, logger, (credential) => catalog.remember(credential));
  // A lease replaced or withdrawn by any fetch, a background refresh included, or found gone from Vault
  // at its renewal, takes the other fields cached from it along (found by review: after a refresh ahead
  // replaced a lease, a sibling field kept the old lease's value, and was served after that lease was
  // revoked at the end of rotation_grace).
  const leases =
    vault === null || vaultConfig === undefined
      ? null
      : createVaultLeaseSource(vault, logger, {
          now,
          rotationGraceMs: vaultConfig.rotation_grace * 1000,
          onReplaced(path, generation) {
            void followLease(path, generation);
          },
        });
  // Fired at close() or at shutdown's cut: every fetch under way is given up for the requests waiting on
  // it (fetchCancelled, 503), and none is started after it. Found by review: closing waited for a token
  // request under way (an undici agent's close() waits), so a token endpoint that held its answer held
  // shutdown for the client's whole timeout, and the request waiting on it was cut with no answer.
  const closed = new AbortController();
  // Each OAuth2 token request under way listens on it (read-store-answer.ts), one per client at most:
  // node's warning past 10 listeners would be noise for a config with more clients.
  setMaxListeners(0, closed.signal);
  const cut = options.cut;
  // Names the controller alone: the listener on the long-lived cut signal must not keep this broker alive.
  const onCut = (): void => closed.abort();
  if (cut?.aborted === true) closed.abort();
  else cut?.addEventListener('abort', onCut, { once: true });
  /** What ends each fetch under way for its waiters when the broker closes: one listener for them all. */
  const waiting = new Set<() => void>();
  closed.signal.addEventListener(
    'abort',
    function cancelWaiting() {
      for (const cancel of waiting) cancel();
      waiting.clear();
    },
    { once: true },
  );
  /**
   * The source's answer, or fetchCancelled as soon as the broker closes, whichever comes first. For
   * every kind of store: an oauth2: token request is cancelled outright (its undici signal), the others
   * end on their own deadlines, unwaited for.
   */
  function untilClosed(ref: string, fetching: Promise<Credential>): Promise<Credential> {
    return new Promise((resolve, reject) => {
      const cancel = (): void => reject(fetchCancelled(ref));
      waiting.add(cancel);
      fetching.then(resolve, reject).finally(() => waiting.delete(cancel));
    });
  }

  const oauth2 = createOAuth2Source(config.secrets.oauth2, resolveValue, lifetimeWithoutExpiry, { now, cancelled: closed.signal });

  /** Where the token in use is kept: Redis for every replica (sealed under the shared master key), else this process. */
  // Read once here: a closure that named `options` would keep it, and with it the previous broker
  // (options.previous) and that one's previous, alive for as long as this broker (found by review:
  // 300 reloads, 26 -> 286 MB of heap).
  const sharedTokens = options.sharedTokens;
  const oauth2Tokens = (): SecretSource => {
    const shared = sharedTokens;
    if (shared === undefined) return createKeptTokenSource(oauth2, now);
    const lockedFetch = createSharedTokenSource(oauth2, config.secrets.oauth2, shared.redis, shared.prefix, shared.masterKey, now, closed.signal);
    return shared.masterKey === null ? createKeptTokenSource(lockedFetch, now) : lockedFetch;
  };

  const sources: Readonly<Record<SecretRefKind, SecretSource>> = {
    env: createEnvSource(options.env),
    // The cache above already limits how often the file is read; the source itself re-stats on every fetch.
    file: createFileSource({
      dataDir: config.data_dir,
      env: options.env,
      now,
      recheckMs: 0,
      // Said when the file is first read (start-up warms every configured secret, app.ts) and again when it
      // changes, so the operator learns of the damage before an agent does; names as `secrets list` prints them.
      onDamaged(names, path) {
        logger.warn(
          { secrets_file: path, damaged: names },
          'entries of the secrets file do not decrypt (the file was edited, or an entry moved): requests that need them get 503 credential_unavailable (once a value fetched before is past its max_staleness), the other file: secrets are served; set each again with `npx airlock secrets set NAME` (`npx airlock secrets list` marks them DAMAGED)',
        );
      },
    }),
    vault: vault === null ? unconfigured('vault', 'secrets.vault') : createVaultKvSource(vault),
    'vault-lease': leases ?? unconfigured('vault-lease', 'secrets.vault'),
    oauth2: oauth2Tokens(),
  };

  const cache = new CredentialCache(
    async (ref, fetchOptions) => {
      if (closed.signal.aborted) throw fetchCancelled(ref);
      const parsed = parseSecretRef(ref);
      if (!parsed.ok) throw new AirlockError('credential_unavailable', `The credential reference ${ref} is invalid: ${parsed.problem}.`);
      return untilClosed(ref, sources[parsed.ref.kind].fetchSecret(parsed.ref.name, ref, fetchOptions));
    },
    policyOf,
    {
      now,
      ...(options.onCacheEvent === undefined ? {} : { onEvent: options.onCacheEvent }),
      onBackgroundError(ref, error) {
        // A refresh given up because this broker closed is no store failure, and nothing is served from
        // this broker any more.
        if (closed.signal.aborted) logger.debug({ credential: ref }, 'a credential refresh under way was given up: its configuration closed');
        else logger.warn({ credential: ref, err: error }, `refreshing a credential failed; ${servedAfterFailure(ref)}`);
      },
    },
  );

  /** The previous configuration's broker, until the values taken from it are checked once more (`adoptLatest`). */
  let handover = options.previous ?? null;
  const handoverRefs = handover === null ? [] : seedFrom(cache, handover, config, options.plans);

  /**
   * What a failed fetch leaves served, for the log: the last good value, unless the store said it is gone
   * (found by review: "serving the last good value" was logged for a withdrawn path, where nothing is).
   */
  function servedAfterFailure(ref: string): string {
    return cache.lastGood(ref) === null
      ? 'nothing is served: requests get 503 credential_unavailable until a fetch succeeds'
      : 'serving the last good value while within max_staleness';
  }

  /**
   * Every field of a Vault path comes from one lease. When a fetch of one field took a new lease, the
   * other fields cached from the old one are fetched again at once: the old lease is revoked after its
   * grace period, and a user name of the old lease must not go out with a password of the new one. With
   * `generation` null (the path withdrawn, or the lease gone from Vault) the old lease's values are not
   * served again even if that fetch fails: Vault said they are no good.
   */
  async function followLease(path: string, generation: string | null, except?: string): Promise<void> {
    const siblings = cache.status().filter((s) => {
      const other = parseSecretRef(s.ref);
      return s.ref !== except && s.state !== 'missing' && s.generation !== generation && other.ok && other.ref.kind === 'vault-lease' && splitVaultName(other.ref.name).path === path;
    });
    if (generation === null) for (const { ref: sibling } of siblings) cache.discard(sibling);
    await Promise.all(
      siblings.map(async ({ ref: sibling }) => {
        try {
          catalog.remember(await cache.reload(sibling));
        } catch (error) {
          logger.warn({ credential: sibling, err: error }, `refetching a field of a ${generation === null ? 'withdrawn or revoked' : 'replaced'} vault lease failed; ${servedAfterFailure(sibling)}`);
        }
      }),
    );
  }

  /** Every value handed out is known to the catalogue first, so it is redacted wherever it shows up. */
  const remembered = (credential: Credential): Credential => {
    catalog.remember(credential);
    return credential;
  };

  // A file: secret's health follows the file without traffic: one missing, failing or past its 1 s of
  // freshness is read again every FILE_RECHECK_MS (a stat; a decrypt once the file changed), so the
  // admin API, /_airlock/ready and airlock_credential_failing clear once `secrets set` stored it, and
  // show it gone once `secrets rm` removed it (found by a fresh-user walkthrough: they
  // stayed failing until an agent's request needed it). Other stores' failing references are asked
  // again once their backoff is over (0.5 s doubling to 30 s: one call per reference per 30 s to a store
  // that stays down), so their health clears without traffic too (found by an ops walkthrough: a rotate
  // refused while Vault was down left the reference failing until a request came past refresh-ahead).
  const rememberRechecked = (credential: Credential | null): void => {
    if (credential !== null) catalog.remember(credential);
  };
  const recheck = setInterval(function recheckFailingSecrets() {
    for (const entry of cache.status()) {
      if (entry.ref.startsWith('file:')) {
        if (entry.failing || entry.state !== 'fresh') void cache.recheck(entry.ref).then(rememberRechecked);
      } else if (entry.failing) {
        void cache.retryIfDue(entry.ref).then(rememberRechecked);
      }
    }
  }, FILE_RECHECK_MS);
  recheck.unref();

  const broker: CredentialBroker = {
    resolve(ref) {
      const found = cache.get(ref);
      if (found instanceof Promise) return found.then(remembered);
      return remembered(found);
    },
    async refresh(ref, minAgeMs = 0) {
      const credential = await cache.refresh(ref, minAgeMs);
      catalog.remember(credential);
      const parsed = parseSecretRef(ref);
      if (parsed.ok && parsed.ref.kind === 'vault-lease') await followLease(splitVaultName(parsed.ref.name).path, credential.generation, ref);
      return credential;
    },
    status() {
      return cache.status();
    },
    lastGood(ref) {
      return cache.lastGood(ref);
    },
    adoptLatest() {
      if (handover === null) return;
      for (const ref of handoverRefs) cache.reseed(ref, handover.broker.lastGood(ref));
      handover = null;
    },
    async close() {
      clearInterval(recheck);
      cut?.removeEventListener('abort', onCut);
      // First, so the token requests under way end now and the agents below close at once.
      closed.abort();
      // Leases are revoked through the Vault session, so it closes after them.
      await leases?.close();
      await vault?.close();
      await oauth2.close();
    },
  };
  return broker;
}

const FILE_RECHECK_MS = 2_000;

/**
 * A reload builds a new broker with an empty cache; without this, a reload during a store outage threw
 * away every last known good value, and requests the running configuration served got 503 from then on
 * (found by review). Taken over: `vault:` and `oauth2:` values whose store is configured exactly as
 * before (a Vault address, namespace or login changed, or a client changed, means values from elsewhere),
 * each served under the new configuration's ttl and max_staleness counted from when it was fetched.
 * Not taken over: `vault-lease:` values (their lease belongs to the old broker, which revokes it when it
 * retires), and `env:`/`file:` ones (read locally again at once).
 */
function seedFrom(cache: CredentialCache, previous: { readonly broker: CredentialBroker; readonly config: AirlockConfig }, config: AirlockConfig, plans: readonly CredentialPlan[]): string[] {
  const taken: string[] = [];
  const same = (a: unknown, b: unknown): boolean => JSON.stringify(a) === JSON.stringify(b);
  const vaultAlike = same(previous.config.secrets.vault, config.secrets.vault);
  const clientAlike = (name: string): boolean => same(previous.config.secrets.oauth2[name], config.secrets.oauth2[name]) && vaultAlike;
  const take = (ref: string): void => {
    const last = previous.broker.lastGood(ref);
    if (last !== null) cache.seed(ref, last.credential, last.fetchedAt, last);
    taken.push(ref);
  };
  for (const ref of new Set(plans.map((plan) => plan.ref))) {
    const parsed = parseSecretRef(ref);
    if (!parsed.ok) continue;
    const { kind, name } = parsed.ref;
    if (kind === 'vault' ? vaultAlike : kind === 'oauth2' ? clientAlike(name) : false) take(ref);
  }
  // The secrets a kept Vault login and kept OAuth2 clients were made with: the new broker asks for them
  // only when it logs in or mints anew, so until then they were missing from /v1/credentials and
  // airlock_credential_failing, and an alert on one went silent at any reload (found by an ops walkthrough).
  const bootstrap: string[] = [];
  const auth = config.secrets.vault?.auth;
  if (vaultAlike && auth?.method === 'token') bootstrap.push(auth.token);
  if (vaultAlike && auth?.method === 'approle') bootstrap.push(auth.role_id, auth.secret_id);
  for (const [name, client] of Object.entries(config.secrets.oauth2)) if (clientAlike(name)) bootstrap.push(client.client_id, client.client_secret);
  // Only what the new broker would read the same way: not a vault-lease: one (an OAuth2 client's secret
  // from Vault's azure engine, say), whose lease the previous broker revokes when it retires, and not an
  // oauth2: one, which stands on another client's settings (found by review).
  for (const ref of new Set(bootstrap)) {
    const parsed = parseSecretRef(ref);
    if (!taken.includes(ref) && parsed.ok && parsed.ref.kind !== 'vault-lease' && parsed.ref.kind !== 'oauth2') take(ref);
  }
  return taken;
}
