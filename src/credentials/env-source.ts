/**
 * env:NAME - a secret from the proxy's environment, read from the env object the composition root
 * hands in (never from process.env directly, so tests build proxies with their own environments).
 */
import { AirlockError } from '../errors.js';
import { Credential } from './credential.js';
import type { SecretSource } from './secret-source.js';

export function createEnvSource(env: Readonly<Record<string, string | undefined>>): SecretSource {
  return {
    async fetchSecret(name, ref) {
      const value = env[name];
      if (value === undefined || value === '') {
        throw new AirlockError('credential_unavailable', `The credential ${ref} is not available: environment variable ${name} is not set in the proxy's environment. Set it and restart Airlock.`);
      }
      return new Credential(ref, value);
    },
  };
}
