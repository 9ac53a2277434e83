/**
 * vault:MOUNT/PATH#FIELD - a field of a HashiCorp Vault KV version 2 secret (GET MOUNT/data/PATH).
 * The KV version read becomes the credential's generation, which audit records carry.
 */
import { AirlockError } from '../errors.js';
import { Credential } from './credential.js';
import { splitVaultName } from './secret-ref.js';
import type { SecretSource } from './secret-source.js';
import type { VaultSession } from './vault-session.js';

interface KvReadResponse {
  data?: { data?: Record<string, unknown>; metadata?: { version?: number } };
}

export function createVaultKvSource(session: VaultSession): SecretSource {
  return {
    async fetchSecret(name, ref) {
      const { mount, rest, field } = splitVaultName(name);
      let response: KvReadResponse;
      try {
        response = (await session.call((client) => client.read(`${mount}/data/${rest}`))) as KvReadResponse;
      } catch (error) {
        throw session.failure(error, ref);
      }
      const value = response.data?.data?.[field];
      if (typeof value !== 'string' || value === '') {
        throw new AirlockError('credential_unavailable', `The Vault secret behind ${ref} has no non-empty string field "${field}".`);
      }
      const version = response.data?.metadata?.version;
      return new Credential(ref, value, typeof version === 'number' ? String(version) : null);
    },
  };
}
