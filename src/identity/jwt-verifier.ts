/**
 * Workload identity: agents that present a signed JWT (a Kubernetes projected service-account token,
 * a SPIFFE JWT-SVID, a CI OIDC token) instead of an Airlock token, verified with `jose`.
 *
 * - Algorithms are pinned per agent and asymmetric only: HMAC would mean sharing a secret, and allowing
 *   it next to RSA is the classic key-confusion attack (a public key used as an HMAC secret). `none`
 *   is never accepted (jose refuses unsecured tokens in jwtVerify).
 * - iss, aud, exp and nbf are checked (with 30 s of clock tolerance), then sub and the configured claims,
 *   then the typ header against the agent's list (jwt-typ.ts; RFC 8725 3.11): a logout token or a
 *   security event signed by the same issuer is not a credential.
 * - A token that verified is cached by its hash until it expires, so the request path pays for a
 *   signature check once per token, not once per request.
 * Candidates are the agents whose issuer equals the token's (unverified) iss; the one whose keys,
 * audience, subject and claims all match is the agent, and a token that more than one matches is refused.
 */
import { createHash, createPublicKey, type KeyObject as NodeKeyObject } from 'node:crypto';
import { createRemoteJWKSet, customFetch, decodeJwt, decodeProtectedHeader, jwtVerify, type JWTPayload, type JWTVerifyGetKey, type KeyObject } from 'jose';
import { LRUCache } from 'lru-cache';
import type { JwtSpec } from '../config/schema.js';
import type { DeepReadonly } from '../config/types.js';
import { typAcceptor } from './jwt-typ.js';

const CLOCK_TOLERANCE_S = 30;

/**
 * A JWKS is a few public keys (a Kubernetes issuer's is ~2 KB). jose reads the whole answer before
 * parsing it, so an endpoint that answered with an endless or huge body (compromised, or a wrong URL
 * pointing at a download) would be buffered whole in the proxy's memory; past this it is refused, read
 * no further, and the JWT fails verification (401), as when the endpoint is down.
 */
const JWKS_MAX_BYTES = 256 * 1024;

/** jose's fetch with a byte cap on the answer (the options, redirect: manual included, passed as given). */
async function fetchBoundedJwks(url: string, options: RequestInit): Promise<Response> {
  const response = await fetch(url, options);
  if (Number(response.headers.get('content-length')) > JWKS_MAX_BYTES) {
    await response.body?.cancel();
    throw new Error(`the JWKS at ${url} is larger than ${JWKS_MAX_BYTES} bytes`);
  }
  const chunks: Uint8Array[] = [];
  let total = 0;
  if (response.body !== null) {
    // Leaving the loop early cancels the stream, so the rest is never read.
    for await (const chunk of response.body) {
      total += chunk.byteLength;
      if (total > JWKS_MAX_BYTES) throw new Error(`the JWKS at ${url} is larger than ${JWKS_MAX_BYTES} bytes`);
      chunks.push(chunk);
    }
  }
  return new Response(Buffer.concat(chunks), { status: response.status, statusText: response.statusText, headers: response.headers });
}

/** After a failed JWKS fetch, how long lookups that need one are refused without asking again. */
const JWKS_RETRY_AFTER_MS = 5_000;

/**
 * fetchBoundedJwks for one key set, which after a failure (no answer, or not 2xx) refuses for
 * JWKS_RETRY_AFTER_MS without asking. jose's own cooldown starts only after a fetch that succeeded
 * (found by review): while the endpoint was down, every JWT with an unknown kid, which an
 * unauthenticated caller chooses, was one more fetch to an identity provider already failing, and one
 * more request held up to the 5 s timeout. Date.now, the clock jose's cooldown reads.
 */
function fetchBackingOff(): (url: string, options: RequestInit) => Promise<Response> {
  let failedAt = -Infinity;
  return async function fetchUnlessFailedLately(url, options) {
    const since = Date.now() - failedAt;
    if (since >= 0 && since < JWKS_RETRY_AFTER_MS) throw new Error(`the JWKS at ${url} failed ${Math.round(since / 100) / 10} s ago; it is asked again ${JWKS_RETRY_AFTER_MS / 1000} s after a failure`);
    try {
      const response = await fetchBoundedJwks(url, options);
      if (!response.ok) failedAt = Date.now();
      return response;
    } catch (error) {
      failedAt = Date.now();
      throw error;
    }
  };
}

interface Candidate {
  readonly agent: string;
  readonly spec: DeepReadonly<JwtSpec>;
  readonly keys: ReadonlyArray<{ readonly key: KeyObject; readonly thumbprint: string }>;
  readonly jwks: JWTVerifyGetKey | null;
  readonly typ: ReturnType<typeof typAcceptor>;
}

/**
 * A public key's identity: SHA-256 of its SPKI DER, base64url (RFC 7638's role, for keys given as PEM):
 * the same key in another PEM wrapping, or a certificate and its key, give the same thumbprint.
 */
export function keyThumbprint(key: NodeKeyObject): string {
  return createHash('sha256').update(key.export({ type: 'spki', format: 'der' })).digest('base64url');
}

export interface JwtVerdict {
  readonly agent: string | null;
  /**
   * Why no agent accepted it, for the operator (the log line and the audit record), never for the
   * caller: it says whether an issuer is configured and which claims are checked in what order, which
   * tells an unauthenticated caller how to shape a forgery (found by review). Never the token.
   */
  readonly reason: string;
  /** Of an accepted token: its issuer and subject, what a session minted with it records (SessionMinter). */
  readonly issuer: string | null;
  readonly subject: string | null;
  /** Of an accepted token: until when (ms) it is accepted (its exp, or iat + max_token_age), so a session it mints ends by then. */
  readonly expiresAt: number | null;
  /** Of an accepted token: the thumbprint of the listed key that verified it; null when the JWKS did. */
  readonly key: string | null;
}

function refusedVerdict(reason: string): JwtVerdict {
  return { agent: null, reason, issuer: null, subject: null, expiresAt: null, key: null };
}

export class JwtVerifier {
  readonly #byIssuer = new Map<string, Candidate[]>();
  readonly #cache = new LRUCache<string, { agent: string; issuer: string; subject: string | null; expiresAt: number; key: string | null }>({ max: 10_000 });
  readonly #now: () => number;

  constructor(agents: ReadonlyArray<{ readonly name: string; readonly jwt?: DeepReadonly<JwtSpec> | undefined }>, now: () => number = Date.now) {
    this.#now = now;
    // One key set per URL, shared by the agents that name it (found by review: many agents of one issuer,
    // a Kubernetes cluster's service accounts, each had a cache of their own, and a JWT is tried against
    // every agent of its issuer, so each token, and each unknown kid a caller chose, fetched the same key
    // set once per agent, one after another, each fetch up to its timeout when the endpoint hangs).
    const keySets = new Map<string, JWTVerifyGetKey>();
    const keySet = (url: string): JWTVerifyGetKey => {
      const href = new URL(url).href;
      let set = keySets.get(href);
      if (set === undefined) {
        set = createRemoteJWKSet(new URL(href), { timeoutDuration: 5_000, cooldownDuration: 30_000, [customFetch]: fetchBackingOff() });
        keySets.set(href, set);
      }
      return set;
    };
    for (const agent of agents) {
      if (agent.jwt === undefined) continue;
      const spec = agent.jwt;
      const candidate: Candidate = {
        agent: agent.name,
        spec,
        keys: spec.keys.map((pem) => {
          const key = createPublicKey(pem);
          return { key, thumbprint: keyThumbprint(key) };
        }),
        jwks: spec.jwks_url === undefined ? null : keySet(spec.jwks_url),
        typ: typAcceptor(spec.typ),
      };
      const list = this.#byIssuer.get(spec.issuer) ?? [];
      list.push(candidate);
      this.#byIssuer.set(spec.issuer, list);
    }
  }

  get enabled(): boolean {
    return this.#byIssuer.size > 0;
  }

  async verify(token: string): Promise<JwtVerdict> {
    const cacheKey = createHash('sha256').update(token).digest('base64url');
    const cached = this.#cache.get(cacheKey);
    if (cached !== undefined && cached.expiresAt > this.#now()) return { agent: cached.agent, reason: 'cached', issuer: cached.issuer, subject: cached.subject, expiresAt: cached.expiresAt, key: cached.key };
    let issuer: string | undefined;
    let typ: unknown;
    try {
      issuer = decodeJwt(token).iss;
      typ = decodeProtectedHeader(token).typ;
    } catch {
      return refusedVerdict('the JWT cannot be decoded');
    }
    const candidates = issuer === undefined ? undefined : this.#byIssuer.get(issuer);
    if (issuer === undefined || candidates === undefined) return refusedVerdict('no agent accepts JWTs from this issuer');
    // The reason kept is that of the candidate the token came closest to (verified, then its subject
    // matched, then a claim did not): with several agents on one issuer, the last one's reason ("another
    // subject") hid the claim that failed for the agent the token was meant for.
    let reason = 'no agent accepts this JWT';
    let closest = 0;
    const note = (closeness: number, why: string): void => {
      if (closeness < closest) return;
      closest = closeness;
      reason = why;
    };
    const matched: Array<{ candidate: Candidate; payload: JWTPayload; key: string | null }> = [];
    // The key a key set gives for this token's header, looked up once for all the candidates that share
    // the set (found by review: with the JWKS endpoint down, each candidate's lookup of an unknown kid
    // fetched again, so one token made one fetch per agent of the issuer, one after another).
    const lookups = new Map<JWTVerifyGetKey, ReturnType<JWTVerifyGetKey>>();
    for (const candidate of candidates) {
      const verified = await this.#verifyFor(candidate, token, lookups).catch((error: unknown) => {
        // The code, not jose's message: some messages repeat what the token says (a "crit" parameter's name).
        // No code (a TypeError, a key fetch that failed oddly): a fixed text, never a message that may quote the token.
        note(1, `the JWT was refused: ${(error as { code?: string }).code ?? 'its verification failed'}`);
        return null;
      });
      if (verified === null) continue;
      const { payload, key } = verified;
      const mismatch = this.#claimsMismatch(candidate.spec, payload);
      if (mismatch !== null) {
        note(candidate.spec.subject === undefined || payload.sub === candidate.spec.subject ? 3 : 2, mismatch);
        continue;
      }
      // Checked last, so that the reason kept is this one when all else matched (a logout token of the
      // agent's own subject), rather than another agent's "another subject". Said with the agent's list,
      // not the token's typ, which is the caller's text.
      if (!candidate.typ.accepts(typ)) {
        note(4, `the JWT typ header marks another kind of token than this agent accepts (typ: ${candidate.typ.described}); RFC 8725 3.11`);
        continue;
      }
      matched.push({ candidate, payload, key });
    }
    // One token names one agent. Config validation refuses two agents with the same rules, but rules
    // that differ can still both match (claims {repo} and {repo, ref}; an aud list naming both
    // audiences); the first listed then took every such token, silently (found by review).
    if (matched.length > 1) {
      // The caller learns no agent names; the operator finds them with `airlock explain` or the config.
      return refusedVerdict("the JWT matches more than one agent's rules; an operator narrows their subject or claims so that a token names one");
    }
    const only = matched[0];
    if (only === undefined) return refusedVerdict(reason);
    const { candidate, payload, key } = only;
    // Cached no longer than the token is acceptable: its exp, and its max_token_age when one is set.
    let expiresAt = typeof payload.exp === 'number' ? (payload.exp + CLOCK_TOLERANCE_S) * 1000 : this.#now() + 60_000;
    if (candidate.spec.max_token_age !== undefined && typeof payload.iat === 'number') {
      expiresAt = Math.min(expiresAt, (payload.iat + candidate.spec.max_token_age + CLOCK_TOLERANCE_S) * 1000);
    }
    const subject = typeof payload.sub === 'string' ? payload.sub : null;
    this.#cache.set(cacheKey, { agent: candidate.agent, issuer, subject, expiresAt, key });
    return { agent: candidate.agent, reason: 'verified', issuer, subject, expiresAt, key };
  }

  /** The verified claims, and the thumbprint of the listed key that verified them (null: the JWKS). */
  async #verifyFor(candidate: Candidate, token: string, lookups: Map<JWTVerifyGetKey, ReturnType<JWTVerifyGetKey>>): Promise<{ payload: JWTPayload; key: string | null }> {
    const options = {
      issuer: candidate.spec.issuer,
      audience: candidate.spec.audience,
      algorithms: [...candidate.spec.algorithms],
      clockTolerance: CLOCK_TOLERANCE_S,
      currentDate: new Date(this.#now()),
      requiredClaims: ['exp'],
      ...(candidate.spec.max_token_age === undefined ? {} : { maxTokenAge: candidate.spec.max_token_age }),
    };
    let lastError: unknown = new Error('no key to verify with');
    for (const { key, thumbprint } of candidate.keys) {
      try {
        return { payload: (await jwtVerify(token, key, options)).payload, key: thumbprint };
      } catch (error) {
        lastError = error;
      }
    }
    const jwks = candidate.jwks;
    if (jwks !== null) {
      // One token, one protected header: the set's answer for it is the same for every candidate.
      const lookedUp: JWTVerifyGetKey = function lookedUp(header, input) {
        let found = lookups.get(jwks);
        if (found === undefined) {
          found = jwks(header, input);
          lookups.set(jwks, found);
        }
        return found;
      };
      return { payload: (await jwtVerify(token, lookedUp, options)).payload, key: null };
    }
    throw lastError;
  }

  #claimsMismatch(spec: DeepReadonly<JwtSpec>, payload: JWTPayload): string | null {
    if (spec.subject !== undefined && payload.sub !== spec.subject) return 'the JWT subject is not the one this agent accepts';
    for (const [claim, expected] of Object.entries(spec.claims)) {
      if (payload[claim] !== expected) return `the JWT claim ${claim} does not match`;
    }
    return null;
  }
}
