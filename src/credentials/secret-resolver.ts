/**
 * Turns a secret reference into a Credential by asking the source of its kind, and tells the secret
 * catalogue about every value it hands out: responses, logs and audit are scrubbed of them.
 */
import { AirlockError } from '../errors.js';
import type { SecretCatalog } from '../redaction/secret-catalog.js';
import type { Credential } from './credential.js';
import { parseSecretRef, type SecretRefKind } from './secret-ref.js';
import type { SecretSource } from './secret-source.js';

export interface SecretResolver {
  resolve(ref: string): Promise<Credential>;
}

export function createSecretResolver(sources: Readonly<Record<SecretRefKind, SecretSource>>, catalog: SecretCatalog): SecretResolver {
  return {
    async resolve(refText) {
      const parsed = parseSecretRef(refText);
      if (!parsed.ok) throw new AirlockError('credential_unavailable', `The credential reference ${refText} is invalid: ${parsed.problem}.`);
      const credential = await sources[parsed.ref.kind].fetchSecret(parsed.ref.name, refText);
      catalog.remember(credential);
      return credential;
    },
  };
}
