/**
 * OAuth2 tokens shared by replicas through Redis: a distributed single flight, so N replicas never
 * stampede a token endpoint. The first replica to need a token takes a lock (SET NX PX), fetches it and
 * stores it, sealed with AES-256-GCM under the master key every replica shares (AIRLOCK_MASTER_KEY), until
 * it expires; the others wait for it and use it. Without a shared master key the token is not stored in
 * Redis at all: the lock still keeps replicas from fetching at the same moment.
 *
 * A forced fetch (an operator's rotate, an upstream's 401) does not take the token it is to replace (the
 * caller's, else the one stored when it was asked): it takes the lock, fetches a new token and stores it
 * in place of the old one, so every replica moves to it. A stored token other than that one is already a
 * replacement (another replica's) and is taken instead: replicas forced at the same moment, or one whose
 * 401 comes after another's rotate, make one token request between them.
 *
 * A token is shared under its client's name and a digest of the client's settings, and sealed with both:
 * a reload that points secrets.oauth2.NAME at another endpoint, client, scope, audience, params or auth
 * method makes a new client, whose replicas must not take the old client's token (broader scopes,
 * another tenant) for as long as it lives.
 */
import { createHash, randomUUID } from 'node:crypto';
import type { Redis } from 'ioredis';
import type { OAuth2ClientSpec } from '../config/schema.js';
import type { DeepReadonly } from '../config/types.js';
import { AirlockError } from '../errors.js';
import { Credential, EXPIRY_MARGIN_MS } from './credential.js';
import { fetchCancelled, type SecretSource } from './secret-source.js';
import { openText, sealText } from './seal-text.js';

const LOCK_MS = 15_000;
const POLL_MS = 50;

const RELEASE = `if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) else return 0 end`;

interface SealedToken {
  iv: string;
  tag: string;
  data: string;
  expiresAt: number;
  generation: string | null;
}

/**
 * What makes a token one client's rather than another's: everything the token request sends, the
 * client id and secret as their references (config text, never the values; a secret rotated under the
 * same reference is the same client). Not `ca`, `timeout` or `refresh_skew`: they change how a token is
 * fetched, not which. Hex of a SHA-256, so the settings (params may be sensitive) cannot be read back.
 */
function clientDigest(client: DeepReadonly<OAuth2ClientSpec>): string {
  const params = Object.entries(client.params).sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0));
  const settings = ['oauth2-client', client.token_url, client.client_id, client.client_secret, client.scope ?? null, client.audience ?? null, params, client.auth_method];
  return createHash('sha256').update(JSON.stringify(settings), 'utf8').digest('hex');
}

/**
 * Authenticated with the token: which client it is for (name and settings digest), until when it is
 * valid and its generation. Whoever can write to Redis cannot move a token to another reference or
 * client, stretch its life (replicas would keep sending an expired token) or relabel what the audit
 * records as its generation.
 */
function associatedData(name: string, digest: string, expiresAt: number, generation: string | null): Buffer {
  return Buffer.from(JSON.stringify(['oauth2', name, digest, expiresAt, generation]), 'utf8');
}

function seal(key: Buffer, name: string, digest: string, token: string, expiresAt: number, generation: string | null): SealedToken {
  const { iv, tag, ciphertext } = sealText(key, associatedData(name, digest, expiresAt, generation), token);
  // The ciphertext is stored as "data", the field name shared records have always used.
  return { iv, tag, data: ciphertext, expiresAt, generation };
}

/** The token, or null for anything that is not a record sealed by a replica with this key. */
function open(key: Buffer, name: string, digest: string, raw: string): SealedToken & { token: string } | null {
  try {
    const sealed = JSON.parse(raw) as Partial<SealedToken>;
    const { iv, tag, data, expiresAt, generation } = sealed;
    if (typeof iv !== 'string' || typeof tag !== 'string' || typeof data !== 'string' || typeof expiresAt !== 'number' || !(typeof generation === 'string' || generation === null)) return null;
    const token = openText(key, associatedData(name, digest, expiresAt, generation), { iv, tag, ciphertext: data });
    return { iv, tag, data, expiresAt, generation, token };
  } catch {
    // Not JSON, a field missing, or a tag that does not verify: as if nothing were stored, so this
    // replica fetches a token and stores it in its place (a bad record must not refuse until it expires).
    return null;
  }
}

export function createSharedTokenSource(
  inner: SecretSource,
  clients: Readonly<Record<string, DeepReadonly<OAuth2ClientSpec>>>,
  redis: Redis,
  prefix: string,
  masterKey: Buffer | null,
  now: () => number = Date.now,
  cancelled?: AbortSignal,
): SecretSource {
  redis.defineCommand('airlockReleaseLock', { numberOfKeys: 1, lua: RELEASE });
  const digests = new Map(Object.entries(clients).map(([name, client]) => [name, clientDigest(client)]));
  // An unknown name gets no key of its own: the inner source refuses it before anything is stored.
  const digestOf = (name: string): string => digests.get(name) ?? 'unknown-client';

  /** The stored token, unless it is the one a forced fetch is to replace. */
  async function shared(name: string, ref: string, replacing: Credential | null): Promise<Credential | null> {
    if (masterKey === null) return null;
    const raw = await redis.get(`${prefix}oauth2:${name}:${digestOf(name)}`);
    if (raw === null) return null;
    const opened = open(masterKey, name, digestOf(name), raw);
    // Less life left than the margin: fetched anew.
    if (opened === null || opened.expiresAt - now() < EXPIRY_MARGIN_MS) return null;
    const credential = new Credential(ref, opened.token, opened.generation, opened.expiresAt);
    return replacing !== null && credential.sameValueAs(replacing) ? null : credential;
  }

  return {
    async fetchSecret(name, ref, options) {
      const deadline = now() + LOCK_MS;
      const forced = options?.forced === true;
      const replacing = forced ? (options?.replacing ?? (await shared(name, ref, null))) : null;
      for (;;) {
        const existing = await shared(name, ref, replacing);
        if (existing !== null) return existing;
        const owner = randomUUID();
        const lockKey = `${prefix}lock:oauth2:${name}:${digestOf(name)}`;
        if ((await redis.set(lockKey, owner, 'PX', LOCK_MS, 'NX')) === 'OK') {
          try {
            // Another replica may have stored one between our look and our lock.
            const raced = await shared(name, ref, replacing);
            if (raced !== null) return raced;
            const credential = await inner.fetchSecret(name, ref);
            // Only a finite expiry is stored: Redis refuses PX Infinity, and JSON would seal it as null.
            if (masterKey !== null && credential.expiresAt !== null && Number.isFinite(credential.expiresAt) && credential.expiresAt > now()) {
              const sealed = seal(masterKey, name, digestOf(name), credential.reveal(), credential.expiresAt, credential.generation);
              await redis.set(`${prefix}oauth2:${name}:${digestOf(name)}`, JSON.stringify(sealed), 'PX', Math.ceil(Math.max(1, credential.expiresAt - now())));
            }
            return credential;
          } finally {
            await (redis as unknown as { airlockReleaseLock(key: string, owner: string): Promise<number> }).airlockReleaseLock(lockKey, owner).catch(() => 0);
          }
        }
        if (now() > deadline) throw new AirlockError('credential_unavailable', `Another replica has been fetching the OAuth2 token ${ref} for too long; retry shortly.`);
        // The broker closed while this waited for another replica's token: no one is waiting for it any more.
        if (cancelled?.aborted === true) throw fetchCancelled(ref);
        await new Promise((resolve) => setTimeout(resolve, POLL_MS));
        // Without a shared key nothing is stored: once the lock is free, fetch our own.
      }
    },
  };
}
