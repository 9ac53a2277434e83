/**
 * Secret references as written in config: KIND:NAME. The kinds are the sources Airlock has:
 *   env:NAME                         the proxy's environment
 *   file:NAME                        the embedded encrypted secrets file
 *   vault:MOUNT/PATH#FIELD           a field of a HashiCorp Vault KV v2 secret
 *   vault-lease:PATH#FIELD           a field of a Vault dynamic secret (a lease), e.g. database/creds/ro#password
 *   oauth2:NAME                      an access token from the OAuth2 client declared under secrets.oauth2.NAME
 */
import { looksLikeKey } from '../redaction/key-patterns.js';

export const SECRET_REF_KINDS = ['env', 'file', 'vault', 'vault-lease', 'oauth2'] as const;
export type SecretRefKind = (typeof SECRET_REF_KINDS)[number];

export interface SecretRef {
  readonly kind: SecretRefKind;
  readonly name: string;
  readonly text: string;
}

const ENV_NAME = /^[A-Za-z_][A-Za-z0-9_]*$/;
export const SECRET_NAME = /^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$/;
const VAULT_SEGMENT = '[A-Za-z0-9_.-]+';
const VAULT_PATH_FIELD = new RegExp(`^${VAULT_SEGMENT}(/${VAULT_SEGMENT})+#[A-Za-z0-9_.-]+$`);
const OAUTH2_NAME = /^[a-z0-9][a-z0-9_-]*$/;

/** vault:MOUNT/PATH#FIELD and vault-lease:PATH#FIELD, split. */
export function splitVaultName(name: string): { path: string; field: string; mount: string; rest: string } {
  const hash = name.lastIndexOf('#');
  const path = name.slice(0, hash);
  const slash = path.indexOf('/');
  return { path, field: name.slice(hash + 1), mount: path.slice(0, slash), rest: path.slice(slash + 1) };
}

export type ParsedSecretRef = { ok: true; ref: SecretRef } | { ok: false; problem: string };

export function parseSecretRef(text: string): ParsedSecretRef {
  const colon = text.indexOf(':');
  const kind = colon === -1 ? '' : text.slice(0, colon);
  const name = colon === -1 ? '' : text.slice(colon + 1);
  if (!(SECRET_REF_KINDS as readonly string[]).includes(kind)) {
    // Named only when it is plainly a word: what comes before a colon may be a pasted key.
    const said = /^[A-Za-z][A-Za-z0-9-]{0,15}$/.test(kind) && !looksLikeKey(kind) ? ` "${kind}"` : ' (not repeated here: it may be a key)';
    return { ok: false, problem: `unknown secret source${said}; use one of ${SECRET_REF_KINDS.map((k) => `${k}:`).join(', ')}` };
  }
  // The name is not repeated: one that is not a name may be a key pasted where the name goes.
  if (kind === 'env' && !ENV_NAME.test(name)) return { ok: false, problem: 'what follows env: is not an environment variable name (letters, digits and _, not starting with a digit)' };
  if (kind === 'file' && !SECRET_NAME.test(name)) {
    return { ok: false, problem: 'what follows file: is not a secret name (letters, digits, _ . -; set it with `npx airlock secrets set NAME`)' };
  }
  if (kind === 'vault' && !VAULT_PATH_FIELD.test(name)) {
    return { ok: false, problem: 'what follows vault: is not MOUNT/PATH#FIELD, e.g. vault:secret/stripe#api_key' };
  }
  if (kind === 'vault-lease' && !VAULT_PATH_FIELD.test(name)) {
    return { ok: false, problem: 'what follows vault-lease: is not PATH#FIELD, e.g. vault-lease:database/creds/readonly#password' };
  }
  if (kind === 'oauth2' && !OAUTH2_NAME.test(name)) return { ok: false, problem: 'what follows oauth2: is not an OAuth2 client name from secrets.oauth2' };
  // A reference is printed wherever the credential is named (audit records, metrics labels, admin and
  // CLI output), so one that is itself a key pasted where the name goes would be printed everywhere.
  if (name.split(/[/#]/).some(looksLikeKey)) {
    return { ok: false, problem: `what follows ${kind}: starts like a key (sk-, ghp_, AKIA, ...) or holds an Airlock token, so it is refused (not repeated here); name the secret for what it is, and put the value in the store` };
  }
  return { ok: true, ref: Object.freeze({ kind: kind as SecretRefKind, name, text }) };
}
