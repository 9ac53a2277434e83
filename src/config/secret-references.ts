/**
 * The env: and file: references a config reads, each with the YAML paths that use it: a service's or a
 * grant's credential, a Vault login (secrets.vault.auth) and an OAuth2 client (secrets.oauth2.NAME). The
 * CLI names them (`secrets list`, serve's next steps); a list of credentials alone left out the secrets
 * a Vault login or an OAuth2 client needs, which fail only once a request reaches that store.
 */
import { parseSecretRef } from '../credentials/secret-ref.js';
import type { AirlockConfig } from './types.js';

export interface LocalSecretReference {
  readonly kind: 'env' | 'file';
  /** The variable's or the stored secret's name. */
  readonly name: string;
  /** Where the config uses it, e.g. services.openai.credential, secrets.vault.auth.secret_id. */
  readonly usedBy: readonly string[];
}

/** In config order; one entry per reference however many places use it. */
export function localSecretReferences(config: AirlockConfig): LocalSecretReference[] {
  const found = new Map<string, { kind: 'env' | 'file'; name: string; usedBy: string[] }>();
  const note = (text: string, where: string): void => {
    const parsed = parseSecretRef(text);
    if (!parsed.ok || (parsed.ref.kind !== 'env' && parsed.ref.kind !== 'file')) return;
    const entry = found.get(parsed.ref.text) ?? { kind: parsed.ref.kind, name: parsed.ref.name, usedBy: [] };
    entry.usedBy.push(where);
    found.set(parsed.ref.text, entry);
  };
  for (const service of Object.values(config.services)) note(service.credential.secret, `services.${service.name}.credential`);
  for (const agent of Object.values(config.agents)) {
    agent.credentials.forEach((grant, index) => {
      if (grant.credential !== undefined) note(grant.credential.secret, `agents.${agent.name}.credentials[${index}].credential`);
    });
  }
  const auth = config.secrets.vault?.auth;
  if (auth?.method === 'token') note(auth.token, 'secrets.vault.auth.token');
  if (auth?.method === 'approle') {
    note(auth.role_id, 'secrets.vault.auth.role_id');
    note(auth.secret_id, 'secrets.vault.auth.secret_id');
  }
  for (const [name, client] of Object.entries(config.secrets.oauth2)) {
    note(client.client_id, `secrets.oauth2.${name}.client_id`);
    note(client.client_secret, `secrets.oauth2.${name}.client_secret`);
  }
  return [...found.values()];
}
