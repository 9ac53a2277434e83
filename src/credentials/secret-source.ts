/**
 * A place secrets come from. One method; one backend per file (env-source.ts, file-source.ts).
 * A source that cannot produce the value throws AirlockError('credential_unavailable') with a detail
 * that says how to fix it, and never includes the value.
 */
import type { Credential } from './credential.js';

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
}

export interface SecretSource {
  fetchSecret(name: string, ref: string, options?: FetchOptions): Promise<Credential>;
}
