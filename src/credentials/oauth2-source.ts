/**
 * oauth2:NAME - an access token from the client-credentials grant (RFC 6749 4.4) of a client declared
 * under secrets.oauth2.NAME. The client id and secret are themselves references (env:, file:, vault:).
 *
 * The cache in front of this source keeps the token until `expires_in` minus a skew and refreshes it
 * ahead, one fetch at a time, so a burst of requests causes exactly one token request. An answer
 * without a finite positive `expires_in` (RFC 6749 5.1 makes it optional) is taken to live the
 * credential's ttl, and no answer is believed past MAX_EXPIRES_IN_S. An answer that
 * says the client itself is wrong (invalid_client, invalid_grant, unauthorized_client, invalid_scope;
 * RFC 6749 5.2) is a clear 503 at once, and the cache's backoff keeps a burst from becoming a retry
 * storm. The token endpoint's own words never reach agents.
 */
import type { Agent } from 'undici';
import type { OAuth2ClientSpec } from '../config/schema.js';
import type { DeepReadonly } from '../config/types.js';
import { AirlockError } from '../errors.js';
import { Credential } from './credential.js';
import { readStoreAnswer, storeAgent } from './read-store-answer.js';
import { fetchCancelled, type SecretSource } from './secret-source.js';

/**
 * The longest `expires_in` believed, in seconds: a day, the longest default among common token
 * endpoints (Auth0 issues 24 h access tokens; Entra ID, Google and Okta 1 h). Believing a longer one
 * saves at most one token request a day, while a bogus huge value would keep a token its client has
 * since lost (revoked, re-scoped) in use for years, and overflow to Infinity (1e306 s in ms), which
 * Redis refuses as a PX and JSON writes as null in a sealed record's bound data.
 */
const MAX_EXPIRES_IN_S = 86_400;

/** RFC 6749 5.2 errors that no retry will fix. */
const CLIENT_ERRORS: ReadonlySet<string> = new Set(['invalid_client', 'invalid_grant', 'unauthorized_client', 'invalid_scope', 'unsupported_grant_type', 'invalid_request']);

export type ReferenceResolver = (ref: string) => Promise<string>;

interface TokenResponse {
  access_token?: unknown;
  expires_in?: unknown;
  token_type?: unknown;
  error?: unknown;
}

/** RFC 6749 2.3.1: client id and secret are form-urlencoded before they are joined for Basic. */
function formEncode(value: string): string {
  return encodeURIComponent(value).replace(/%20/g, '+');
}

export interface OAuth2Source extends SecretSource {
  close(): Promise<void>;
}

export interface OAuth2SourceOptions {
  readonly now?: () => number;
  /**
   * Fired when the broker closes (or shutdown cuts what is still open): token requests under way are
   * cancelled, and none is started after it. The undici agents' close() waits for requests under way,
   * so a token endpoint that held its answer held the close for the client's whole `timeout`.
   */
  readonly cancelled?: AbortSignal;
}

/**
 * `lifetimeWithoutExpiry`: how long, in ms, a token whose answer gives no usable `expires_in` is taken to
 * live (the credential's ttl, else secrets.cache.ttl: the broker knows which).
 */
export function createOAuth2Source(
  clients: Readonly<Record<string, DeepReadonly<OAuth2ClientSpec>>>,
  resolve: ReferenceResolver,
  lifetimeWithoutExpiry: (ref: string) => number,
  options: OAuth2SourceOptions = {},
): OAuth2Source {
  const now = options.now ?? Date.now;
  const cancelled = options.cancelled;
  const agents = new Map<string, Agent>();
  const agentFor = (name: string, client: DeepReadonly<OAuth2ClientSpec>): Agent => {
    let agent = agents.get(name);
    if (agent === undefined) {
      agent = storeAgent(client.timeout * 1000, client.ca);
      agents.set(name, agent);
    }
    return agent;
  };

  return {
    async fetchSecret(name, ref) {
      const client = clients[name];
      if (client === undefined) throw new AirlockError('credential_unavailable', `No OAuth2 client named ${name} under secrets.oauth2 for ${ref}.`);
      const [clientId, clientSecret] = await Promise.all([resolve(client.client_id), resolve(client.client_secret)]);
      const form = new URLSearchParams({ grant_type: 'client_credentials' });
      if (client.scope !== undefined) form.set('scope', client.scope);
      if (client.audience !== undefined) form.set('audience', client.audience);
      for (const [key, value] of Object.entries(client.params)) form.set(key, value);
      const headers: Record<string, string> = { 'content-type': 'application/x-www-form-urlencoded', accept: 'application/json' };
      if (client.auth_method === 'basic') {
        headers['authorization'] = `Basic ${Buffer.from(`${formEncode(clientId)}:${formEncode(clientSecret)}`).toString('base64')}`;
      } else {
        form.set('client_id', clientId);
        form.set('client_secret', clientSecret);
      }
      const requestedAt = now();
      let status: number;
      let body: TokenResponse;
      try {
        const answer = await readStoreAnswer(client.token_url, {
          method: 'POST',
          headers,
          body: form.toString(),
          dispatcher: agentFor(name, client),
          deadlineMs: client.timeout * 1000,
          ...(cancelled === undefined ? {} : { cancel: cancelled }),
        });
        status = answer.status;
        try {
          body = JSON.parse(answer.text) as TokenResponse;
        } catch {
          body = {};
        }
      } catch (error) {
        if (cancelled?.aborted === true) throw fetchCancelled(ref, error);
        throw new AirlockError('credential_unavailable', `The token endpoint of OAuth2 client ${name} did not answer (${ref}); no valid token is cached.`, { cause: error });
      }
      if (status !== 200 || typeof body.access_token !== 'string' || body.access_token === '') {
        const code = typeof body.error === 'string' ? body.error : null;
        if (code !== null && CLIENT_ERRORS.has(code)) {
          throw new AirlockError('credential_unavailable', `The token endpoint of OAuth2 client ${name} refused its credentials (${code}); an operator fixes secrets.oauth2.${name}. Not retried for a while.`);
        }
        throw new AirlockError('credential_unavailable', `The token endpoint of OAuth2 client ${name} answered ${status} without an access token (${ref}).`);
      }
      const expiresIn = typeof body.expires_in === 'number' ? body.expires_in : typeof body.expires_in === 'string' ? Number(body.expires_in) : NaN;
      // No usable expires_in (missing, 0, negative, not a number, or 1e400, which JSON.parse makes
      // Infinity): the token is taken to live the credential's ttl, so it is fetched again like any
      // cached value and, while the endpoint fails, never served past that (nor past max_staleness).
      // Never "no expiry": that kept a token for a year, whatever max_staleness said.
      // The skew takes at most half of a short token's life: at expires_in <= refresh_skew + 5 s the token
      // was never fresh, and every request asked the endpoint for a new one (found by review).
      const believed = Math.min(expiresIn, MAX_EXPIRES_IN_S);
      const lifetimeMs = Number.isFinite(expiresIn) && expiresIn > 0 ? (believed - Math.min(client.refresh_skew, believed / 2)) * 1000 : lifetimeWithoutExpiry(ref);
      // The generation names the token by when it was issued: nothing derived from the token itself.
      return new Credential(ref, body.access_token, `issued ${new Date(requestedAt).toISOString()}`, requestedAt + Math.max(1000, lifetimeMs));
    },
    async close() {
      await Promise.all([...agents.values()].map((agent) => agent.close()));
    },
  };
}
