/**
 * A place secrets come from. One method; one backend per file (env-source.ts, file-source.ts).
 * A source that cannot produce the value throws AirlockError('credential_unavailable') with a detail
 * that says how to fix it, and never includes the value.
 */
import { AirlockError } from '../errors.js';
import type { Credential } from './credential.js';

/**
 * The store answered, and the answer is that the value is gone or no longer Airlock's to read (removed
 * with `airlock secrets rm`, deleted in Vault, the Vault policy withdrawn). Unlike an outage, this is an
 * operator's decision: the last known good value is dropped, not served for max_staleness (found by
 * review: a removed secret was still injected for up to 15 minutes).
 */
export class CredentialWithdrawn extends AirlockError {
  constructor(detail: string, options: { cause?: unknown } = {}) {
    super('credential_unavailable', detail, options);
  }
}

/**
 * A fetch given up because the broker that made it closed (shutdown, or a reload that retired its
 * configuration), or shutdown cut what was still open: not a failure of the store, and what a request
 * waiting on it is told (503, fail closed) rather than being held until the store's own deadline.
 */
export function fetchCancelled(ref: string, cause?: unknown): AirlockError {
  return new AirlockError(
    'credential_unavailable',
    `Airlock is stopping, or a reload retired the configuration this request ran under, while the credential ${ref} was being fetched; the request was not sent upstream. Retry it.`,
    cause === undefined ? {} : { cause },
  );
}

export interface FetchOptions {
  /**
   * The caller wants a new value, not the one in use (an operator's rotate, an upstream's 401). A source
   * that keeps a value of its own past one fetch (a Vault lease, an OAuth2 token shared through Redis)
   * replaces it; a source that reads its store on every fetch anyway can ignore this.
   */
  readonly forced?: boolean;
  /**
   * With `forced`: the value the caller holds (null when none). A source whose shared value is already a
   * different one (another replica replaced it) returns that one instead of replacing it again.
   */
  readonly replacing?: Credential | null;
  /**
   * Not forced, and the caller wants the value in use rather than a new one (the credential cache,
   * between two forced fetches while an upstream keeps refusing). A source that would mint a new value
   * on every fetch (an OAuth2 token kept in no shared state) returns the one it minted last, while that
   * has life left; a source that reads its store on every fetch can ignore this.
   */
  readonly current?: boolean;
}

export interface SecretSource {
  fetchSecret(name: string, ref: string, options?: FetchOptions): Promise<Credential>;
}
