/**
 * The key that encrypts the embedded secrets file: AIRLOCK_MASTER_KEY (64 hex digits or base64 of 32
 * bytes) or, failing that, data_dir/master.key, generated with mode 0600 the first time a secret is set.
 * Like ssh with private keys, a key file readable by group or others is refused.
 */
import { randomBytes } from 'node:crypto';
import { existsSync, readFileSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { fileAccessProblem, fileErrorCode } from '../config/file-access-problem.js';
import { shellWord } from '../config/shell-word.js';
import { SECRETS_FILE } from './encrypted-secret-file.js';
import { makePrivateDir } from '../state/make-private-dir.js';
import { createFileSync } from '../state/write-durably.js';

export const MASTER_KEY_FILE = 'master.key';

export class MasterKeyError extends Error {
  override name = 'MasterKeyError';
}

export function decodeMasterKey(text: string, origin: string): Buffer {
  const trimmed = text.trim();
  if (/^[0-9a-fA-F]{64}$/.test(trimmed)) return Buffer.from(trimmed, 'hex');
  if (/^[A-Za-z0-9+/_-]{43}=?$/.test(trimmed)) {
    const key = Buffer.from(trimmed, 'base64');
    if (key.length === 32) return key;
  }
  throw new MasterKeyError(`${origin} is not a 32-byte key: write 64 hex digits or 44 base64 characters (\`openssl rand -base64 32\`)`);
}

export interface MasterKeyOptions {
  dataDir: string;
  env: Readonly<Record<string, string | undefined>>;
  /** Generate data_dir/master.key when there is no key yet. */
  create: boolean;
}

/** The key, or null when none exists and `create` is false. */
export function loadMasterKey(options: MasterKeyOptions): Buffer | null {
  const fromEnv = options.env['AIRLOCK_MASTER_KEY'];
  if (fromEnv !== undefined && fromEnv !== '') return decodeMasterKey(fromEnv, 'AIRLOCK_MASTER_KEY');
  const path = join(options.dataDir, MASTER_KEY_FILE);
  let mode: number;
  try {
    mode = statSync(path).mode;
  } catch (error) {
    // A directory above it this user may not enter: said as such, the code kept in the cause.
    if ((error as NodeJS.ErrnoException).code !== 'ENOENT') throw new MasterKeyError(fileAccessProblem(path, error), { cause: error });
    // Secrets stored under a key that is gone: saying "nothing stored" (and, for a set, making a new key
    // that cannot open them) would send the operator to set every secret again.
    const secrets = join(options.dataDir, SECRETS_FILE);
    if (existsSync(secrets)) {
      throw new MasterKeyError(
        `${path} is missing, but ${secrets} holds secrets encrypted with it: restore that key file (from a backup, or the machine it came from) or set AIRLOCK_MASTER_KEY to it; a new key could not open them. To start over instead, move ${SECRETS_FILE} away.`,
      );
    }
    if (!options.create) return null;
    try {
      makePrivateDir(options.dataDir);
    } catch (error) {
      throw new MasterKeyError(`${fileAccessProblem(options.dataDir, error, 'make')} (data_dir, where the master key and the secrets are kept)`, { cause: error });
    }
    const key = randomBytes(32);
    // Synced before the secrets it opens are written: a key lost to a power cut loses them all.
    try {
      createFileSync(path, `${key.toString('base64')}\n`);
    } catch (error) {
      // EEXIST: another command made one meanwhile (never replaced: the secrets it seals would be lost).
      if ((error as NodeJS.ErrnoException).code === 'EEXIST') throw new MasterKeyError(`${path} was made by another command at the same moment; run this one again`, { cause: error });
      throw new MasterKeyError(fileAccessProblem(path, error, 'write'), { cause: error });
    }
    return key;
  }
  return readKeyFile(path, mode);
}

/** A key file, refused when group or others may read it. */
function readKeyFile(path: string, knownMode?: number): Buffer {
  // Owned by the user Airlock runs as (mode 600), read by another, or behind a directory this one may
  // not enter: node said only "EACCES: permission denied, open ..." (found by review). The code stays in
  // the cause (fileErrorCode: check-secret-presence.ts and the keyring below decide by it).
  let mode: number;
  try {
    mode = knownMode ?? statSync(path).mode;
  } catch (error) {
    throw new MasterKeyError(fileAccessProblem(path, error), { cause: error });
  }
  if ((mode & 0o077) !== 0) {
    throw new MasterKeyError(`${path} is readable by other users (mode ${(mode & 0o777).toString(8)}); run \`chmod 600 ${shellWord(path)}\``);
  }
  let text: string;
  try {
    text = readFileSync(path, 'utf8');
  } catch (error) {
    throw new MasterKeyError(fileAccessProblem(path, error), { cause: error });
  }
  return decodeMasterKey(text, path);
}

/** Where `secrets rekey` writes the new key before the secrets it opens (master.key's is beside it). */
export const NEXT_KEY_ENV = 'AIRLOCK_MASTER_KEY_NEXT';

export function nextKeyFile(dataDir: string): string {
  return join(dataDir, `${MASTER_KEY_FILE}.next`);
}

/**
 * The keys that may open the secrets file, the current one first: loadMasterKey's, then the next one a
 * `secrets rekey` moves the file to. With AIRLOCK_MASTER_KEY, the next is AIRLOCK_MASTER_KEY_NEXT, set
 * on every Airlock before the rekey so that none stops opening the file; with data_dir/master.key, it is
 * master.key.next, which rekey writes first and renames over master.key last, so that a reader between
 * the two renames (or after a crash there) still opens the file. Null when there is no key yet.
 */
export function loadMasterKeyring(options: MasterKeyOptions): Buffer[] | null {
  const current = loadMasterKey(options);
  if (current === null) return null;
  const fromEnv = options.env['AIRLOCK_MASTER_KEY'];
  if (fromEnv !== undefined && fromEnv !== '') {
    const next = options.env[NEXT_KEY_ENV];
    return next === undefined || next === '' ? [current] : [current, decodeMasterKey(next, NEXT_KEY_ENV)];
  }
  // Read, not tested then read: a rekey removes it once it is master.key (found by review: a reader
  // between the two saw ENOENT and reported the store unreadable).
  try {
    return [current, readKeyFile(nextKeyFile(options.dataDir))];
  } catch (error) {
    if (fileErrorCode(error) === 'ENOENT') return [current];
    throw error;
  }
}
