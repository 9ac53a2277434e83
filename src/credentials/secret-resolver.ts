/**
 * Turns a secret reference into a Credential by asking the source of its kind, and tells the
 * known-secrets catalogue about every value it hands out so logs and audit can scrub it as a backstop.
 */
import { AirlockError } from '../errors.js';
import type { KnownSecrets } from '../redaction/known-secrets.js';
import type { Credential } from './credential.js';
import { parseSecretRef, type SecretRefKind } from './secret-ref.js';
import type { SecretSource } from './secret-source.js';

export interface SecretResolver {
  resolve(ref: string): Promise<Credential>;
}

export function createSecretResolver(sources: Readonly<Record<SecretRefKind, SecretSource>>, knownSecrets: KnownSecrets): SecretResolver {
  return {
    async resolve(refText) {
      const parsed = parseSecretRef(refText);
      if (!parsed.ok) throw new AirlockError('credential_unavailable', `The credential reference ${refText} is invalid: ${parsed.problem}.`);
      const credential = await sources[parsed.ref.kind].fetchSecret(parsed.ref.name, refText);
      knownSecrets.remember(credential);
      return credential;
    },
  };
}
