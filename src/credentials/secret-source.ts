/**
 * A place secrets come from. One method; one backend per file (env-source.ts, file-source.ts).
 * A source that cannot produce the value throws AirlockError('credential_unavailable') with a detail
 * that says how to fix it, and never includes the value.
 */
import type { Credential } from './credential.js';

export interface SecretSource {
  fetchSecret(name: string, ref: string): Promise<Credential>;
}
