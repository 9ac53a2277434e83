/**
 * Whether the secret a credential reference names is there to be injected, as far as this machine can
 * tell without calling out: `explain` says it beside the decision, since an allowed request whose secret
 * is missing is answered 503 credential_unavailable (found by a fresh-user walkthrough: on the shipped
 * config, whose file: secrets are not set yet, explain said ALLOW and every request got 503).
 * Nothing here reads a value into output: a file: entry is opened only to tell whether it decrypts.
 */
import { fileErrorCode } from '../config/file-access-problem.js';
import type { AirlockConfig } from '../config/types.js';
import { EncryptedSecretFile, SecretFileError, shownSecretName } from '../credentials/encrypted-secret-file.js';
import { loadMasterKeyring, MasterKeyError } from '../credentials/master-key.js';
import { parseSecretRef } from '../credentials/secret-ref.js';

export interface SecretPresence {
  /** false only when the secret is known to be missing or unusable here; env: is judged for this shell. */
  readonly present: boolean | 'unknown';
  readonly text: string;
}

/** `configFlag`: what a suggested command needs to act on this config (locate-config.ts configFlagFor). */
export function checkSecretPresence(ref: string, config: AirlockConfig, env: Readonly<Record<string, string | undefined>>, configFlag = ''): SecretPresence {
  const parsed = parseSecretRef(ref);
  // The config was validated, so a reference parses; were it not to, nothing is said about it.
  if (!parsed.ok) return { present: 'unknown', text: 'not checked' };
  const { kind, name } = parsed.ref;
  switch (kind) {
    case 'env': {
      const value = env[name];
      // The CLI's environment is not the server's: what it says is a hint, and says so.
      return value === undefined || value === ''
        ? { present: false, text: `${ref} is not set in this shell. Airlock reads the environment it was started in: if it is unset there too, such a request gets 503 credential_unavailable` }
        : { present: true, text: `${ref} is set in this shell (Airlock reads the environment it was started in)` };
    }
    case 'file':
      return filePresence(ref, name, config, env, configFlag);
    case 'vault':
    case 'vault-lease':
      return { present: 'unknown', text: `${ref} is read from Vault when a request needs it; not checked here (a running Airlock's state: admin API GET /v1/credentials)` };
    case 'oauth2':
      return { present: 'unknown', text: `${ref} is an access token fetched from secrets.oauth2.${name}.token_url when a request needs it; not checked here (a running Airlock's state: admin API GET /v1/credentials)` };
  }
}

function filePresence(ref: string, name: string, config: AirlockConfig, env: Readonly<Record<string, string | undefined>>, configFlag: string): SecretPresence {
  const shown = shownSecretName(name);
  const setIt = `npx airlock secrets set ${shown}${configFlag}`;
  let entry: ReturnType<EncryptedSecretFile['inventory']>[number] | undefined;
  try {
    const key = loadMasterKeyring({ dataDir: config.data_dir, env, create: false });
    entry = key === null ? undefined : new EncryptedSecretFile(config.data_dir, key).inventory().find((stored) => stored.name === name);
  } catch (error) {
    // The key or the file belongs to the user Airlock runs as, not this one (found by review: `check`
    // said OK, then failed with EACCES): this user cannot tell, which is not a problem of the config.
    // Asked first: the key and the file now say a refused read in their own words, its code in the cause.
    const code = fileErrorCode(error);
    if (code === 'EACCES' || code === 'EPERM') {
      return { present: 'unknown', text: `${ref} is not checked: this user cannot read ${config.data_dir}'s master key or secrets file (permission denied); run as the user Airlock runs as to check it` };
    }
    // Their messages name the file and the remedy, never a value.
    if (error instanceof MasterKeyError || error instanceof SecretFileError) return { present: false, text: `${ref} cannot be read: ${error.message}` };
    throw error;
  }
  if (entry === undefined) return { present: false, text: `${ref} is not stored in ${config.data_dir}: such a request gets 503 credential_unavailable; set it with  ${setIt}` };
  if (entry.damaged) return { present: false, text: `${ref} is stored but does not decrypt (damaged): such a request gets 503 credential_unavailable; set it again with  ${setIt}` };
  return { present: true, text: `${ref} is stored in ${config.data_dir}${entry.updatedAt === null ? '' : ` (set ${entry.updatedAt})`}` };
}
