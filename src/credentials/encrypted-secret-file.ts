/**
 * The embedded secrets file, data_dir/secrets.json: one AES-256-GCM ciphertext per secret (seal-text.ts),
 * each with a fresh 96-bit IV and the secret's name and `updated_at` as additional authenticated data,
 * so a ciphertext moved under another name, or given another date, fails to decrypt. The date is the
 * `generation` audit records show for a `file:` secret; in format 1 it was outside the AAD, so whoever
 * could edit the file could change it (found by review). A format-1 file is still read as it was, and
 * is rewritten as format 2, every entry re-sealed, by the next `secrets set` or `rm`. Writes go to a
 * temporary file that is synced and renamed over the old one, so a crash never leaves half a file.
 */
import { closeSync, constants, existsSync, fstatSync, openSync, readFileSync, rmSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileAccessProblem } from '../config/file-access-problem.js';
import { shellWord } from '../config/shell-word.js';
import { looksLikeKey } from '../redaction/key-patterns.js';
import { openText, sealText } from './seal-text.js';
import { makePrivateDir } from '../state/make-private-dir.js';
import { replaceFileSync } from '../state/write-durably.js';

const LOCK_WAIT_MS = 10_000;

/** Far above what any number of secrets makes (each entry is under a few KiB): a bound on a file put in its place. */
const MAX_FILE_BYTES = 64 * 1024 * 1024;

export const SECRETS_FILE = 'secrets.json';
const FORMAT = 'airlock-secrets/2';
/** Entries sealed with the name alone as AAD; read, and rewritten as FORMAT by the next change. */
const FORMAT_1 = 'airlock-secrets/1';
const KEY_CHECK = 'airlock-key-check';

interface SealedValue {
  iv: string;
  tag: string;
  ciphertext: string;
  updated_at?: string;
}

interface SecretsDocument {
  format: typeof FORMAT | typeof FORMAT_1;
  key_check: SealedValue;
  secrets: Record<string, SealedValue>;
}

export class SecretFileError extends Error {
  override name = 'SecretFileError';
}

/**
 * A secret's name as Airlock prints it to operators (`secrets list`, the proxy's warning of damaged
 * entries): a name that looks like a key may be the key itself, so it is not repeated.
 */
export function shownSecretName(name: string): string {
  return looksLikeKey(name) ? '(a name that looks like a key, not shown)' : name;
}

function seal(key: Buffer, aad: string, plaintext: string): SealedValue {
  return sealText(key, Buffer.from(aad, 'utf8'), plaintext);
}

function open(key: Buffer, aad: string, sealed: SealedValue): string {
  return openText(key, Buffer.from(aad, 'utf8'), sealed);
}

/** An entry's AAD: its name, and in format 2 its date (a missing or edited date fails to decrypt). */
function entryAad(format: SecretsDocument['format'], name: string, sealed: SealedValue): string {
  if (format === FORMAT_1) return `secret:${name}`;
  return `secret:${name}\nupdated_at:${typeof sealed.updated_at === 'string' ? sealed.updated_at : ''}`;
}

function opensKeyCheck(key: Buffer, sealed: SealedValue): boolean {
  try {
    return open(key, 'key-check', sealed) === KEY_CHECK;
  } catch {
    return false;
  }
}

function sealEntry(key: Buffer, name: string, value: string, updatedAt: string | undefined): SealedValue {
  const dated: SealedValue = { iv: '', tag: '', ciphertext: '', ...(updatedAt === undefined ? {} : { updated_at: updatedAt }) };
  return { ...seal(key, entryAad(FORMAT, name, dated), value), ...(updatedAt === undefined ? {} : { updated_at: updatedAt }) };
}

export interface SecretEntry {
  readonly value: string;
  readonly updatedAt: string | null;
}

export class EncryptedSecretFile {
  readonly path: string;
  /** The master keys that may open the file, the current one first (master-key.ts loadMasterKeyring). */
  readonly #keys: readonly Buffer[];
  /** The key that opened the file last read (changes are sealed with it), else the first. */
  #key: Buffer;

  /** How long a change waits for another's lock before it gives up. */
  readonly #lockWaitMs: number;

  constructor(dataDir: string, keys: Buffer | readonly Buffer[], lockWaitMs = LOCK_WAIT_MS) {
    this.path = join(dataDir, SECRETS_FILE);
    this.#keys = Buffer.isBuffer(keys) ? [keys] : keys;
    if (this.#keys.length === 0) throw new Error('no master key');
    this.#key = this.#keys[0] as Buffer;
    this.#lockWaitMs = lockWaitMs;
  }

  /** Decrypts every entry, refusing the file when one is damaged; a missing file is an empty store. */
  readAll(): Map<string, SecretEntry> {
    const { entries, damaged } = this.readIntact();
    const first = damaged.values().next();
    if (first.done !== true) throw new SecretFileError(first.value);
    return entries;
  }

  /**
   * Every entry that decrypts, and for each that does not (edited, or moved under another name) what to
   * tell the operator, by name. What the proxy reads (file-source.ts): one damaged entry costs its own
   * name only, not every file: secret (found by a fresh-user walkthrough). A missing file is an empty
   * store; a file that is not a secrets file, or that the master key does not open, throws.
   */
  readIntact(): { readonly entries: Map<string, SecretEntry>; readonly damaged: Map<string, string> } {
    const document = this.#readDocument();
    const entries = new Map<string, SecretEntry>();
    const damaged = new Map<string, string>();
    if (document === null) return { entries, damaged };
    for (const [name, sealed] of Object.entries(document.secrets)) {
      try {
        entries.set(name, { value: open(this.#key, entryAad(document.format, name, sealed), sealed), updatedAt: sealed.updated_at ?? null });
      } catch {
        damaged.set(name, this.#damagedProblem(name));
      }
    }
    return { entries, damaged };
  }

  /**
   * A name that looks like a key (one stored before `secrets set` refused such names, or a key pasted
   * where the name went) is not repeated: this message reaches the terminal, the log and the audit record.
   */
  #damagedProblem(name: string): string {
    if (looksLikeKey(name)) {
      return `a secret in ${this.path} whose name looks like a key (not repeated here) does not decrypt: the file was edited or its entry moved; \`npx airlock secrets list\` marks it DAMAGED; remove it with \`npx airlock secrets rm\` and that name, and store the key under a plain name`;
    }
    return `secret "${name}" in ${this.path} does not decrypt: the file was edited or its entry moved; set it again with \`npx airlock secrets set ${name}\``;
  }

  /**
   * Every entry's name and date, and whether it decrypts, for `secrets list`: one damaged entry does not
   * hide the others.
   */
  inventory(): Array<{ readonly name: string; readonly updatedAt: string | null; readonly damaged: boolean }> {
    const document = this.#readDocument();
    if (document === null) return [];
    return Object.entries(document.secrets).map(([name, sealed]) => {
      const updatedAt = typeof sealed === 'object' && sealed !== null && typeof sealed.updated_at === 'string' ? sealed.updated_at : null;
      try {
        open(this.#key, entryAad(document.format, name, sealed), sealed);
        return { name, updatedAt, damaged: false };
      } catch {
        return { name, updatedAt, damaged: true };
      }
    });
  }

  names(): string[] {
    const document = this.#readDocument();
    return document === null ? [] : Object.keys(document.secrets).sort();
  }

  set(name: string, value: string, now: Date): void {
    this.#locked(() => {
      const document = this.#resealed(this.#readDocument()) ?? { format: FORMAT, key_check: seal(this.#key, 'key-check', KEY_CHECK), secrets: {} };
      document.secrets[name] = sealEntry(this.#key, name, value, now.toISOString());
      this.#write(document);
    });
  }

  remove(name: string): boolean {
    return this.#locked(() => {
      const document = this.#resealed(this.#readDocument());
      if (document === null || !(name in document.secrets)) return false;
      delete document.secrets[name];
      this.#write(document);
      return true;
    });
  }

  /**
   * A change is a read, a change and a rename: two `secrets set` at once each wrote the file as it read
   * it, and one of the two secrets was lost (or a rotated-out value came back) while both printed
   * "stored" (found by review). Changes take `secrets.json.lock` (created exclusively) in turn. A lock
   * is never taken over, as git never takes over index.lock: two commands judging the same lock stale
   * could each remove the other's and both write (found by the next review). One left by a command that
   * crashed is named in the error, for the operator to remove. Readers need no lock: the rename gives
   * them the old file or the new one whole.
   */
  #locked<T>(change: () => T): T {
    this.#makeDir();
    const lock = `${this.path}.lock`;
    const deadline = Date.now() + this.#lockWaitMs;
    for (;;) {
      try {
        closeSync(openSync(lock, 'wx', 0o600));
        break;
      } catch (error) {
        if ((error as NodeJS.ErrnoException).code !== 'EEXIST') throw new SecretFileError(`${fileAccessProblem(lock, error, 'write')} (each change of the secrets file takes this lock)`, { cause: error });
      }
      if (Date.now() > deadline) {
        throw new SecretFileError(`${lock} exists: another \`airlock secrets\` command is changing the file, or one crashed while it did. Run this one again once the other is done; if none is running, remove ${lock} and run it again`);
      }
      // A synchronous pause: the commands that change the file are synchronous, and short.
      Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0, 10);
    }
    try {
      return change();
    } finally {
      rmSync(lock, { force: true });
    }
  }

  #readDocument(): SecretsDocument | null {
    let fd: number;
    try {
      // Non-blocking: a FIFO put in its place would hold the read, and with it the process (the read is
      // synchronous, on the request path once a second), until someone wrote to it (found by review).
      fd = openSync(this.path, constants.O_RDONLY | constants.O_NONBLOCK);
    } catch (error) {
      if ((error as NodeJS.ErrnoException).code === 'ENOENT') return null;
      // node said "EACCES: permission denied, open ..." (found by review). The code stays in the cause
      // (fileErrorCode: check-secret-presence.ts decides by it).
      throw new SecretFileError(fileAccessProblem(this.path, error), { cause: error });
    }
    let text: string;
    try {
      const stat = fstatSync(fd);
      if (!stat.isFile()) throw new SecretFileError(`${this.path} is not a regular file; move it away and set the secrets again`);
      if (stat.size > MAX_FILE_BYTES) throw new SecretFileError(`${this.path} is larger than ${MAX_FILE_BYTES / (1024 * 1024)} MiB, more than any secrets file Airlock writes; restore it from a backup`);
      try {
        text = readFileSync(fd, 'utf8');
      } catch (error) {
        throw new SecretFileError(fileAccessProblem(this.path, error), { cause: error });
      }
    } finally {
      closeSync(fd);
    }
    let document: SecretsDocument;
    try {
      document = JSON.parse(text) as SecretsDocument;
    } catch {
      throw new SecretFileError(`${this.path} is not valid JSON; restore it from a backup or remove it and set the secrets again`);
    }
    // JSON.parse gives null, a number or an array for a file that was overwritten or truncated by hand.
    if (document === null || typeof document !== 'object' || (document.format !== FORMAT && document.format !== FORMAT_1) || typeof document.secrets !== 'object' || document.secrets === null || document.key_check === undefined) {
      throw new SecretFileError(`${this.path} is not an Airlock secrets file (format ${FORMAT}); restore it from a backup, or move it away and set the secrets again`);
    }
    const opener = this.#keys.find((key) => opensKeyCheck(key, document.key_check));
    if (opener === undefined) {
      // The key's origin is not known here; the message covers both, as AIRLOCK_MASTER_KEY overrides the
      // file (found by a walkthrough: "restore master.key" did nothing while the variable was set).
      const keyFile = join(dirname(this.path), 'master.key');
      // A `secrets rekey` cut short between its two renames leaves the new key beside the old.
      const cutShort = existsSync(`${keyFile}.next`) ? ` A \`secrets rekey\` was cut short: the file is sealed with ${keyFile}.next; finish it with  mv ${shellWord(`${keyFile}.next`)} ${shellWord(keyFile)}` : '';
      throw new SecretFileError(
        `the master key does not open ${this.path}: if AIRLOCK_MASTER_KEY is set, it is used instead of ${keyFile}: set it to the key the file was written with, or unset it to use ${keyFile}; otherwise restore ${keyFile} from a backup.${cutShort}`,
      );
    }
    this.#key = opener;
    return document;
  }

  /**
   * Seals every entry again under `newKey` (`secrets rekey`), each keeping its date (the generation
   * audit records show), and replaces the file; `beforeReplace` runs first, under the lock (the new key
   * is written there, durably, before any secret depends on it). Refused while an entry does not
   * decrypt: it would be lost. Returns how many entries were sealed again.
   */
  rekey(newKey: Buffer, beforeReplace: () => void): number {
    return this.#locked(() => {
      const document = this.#resealed(this.#readDocument());
      if (document === null) {
        beforeReplace();
        return 0;
      }
      const secrets: Record<string, SealedValue> = Object.create(null) as Record<string, SealedValue>;
      const damaged: string[] = [];
      for (const [name, sealed] of Object.entries(document.secrets)) {
        try {
          const updatedAt = typeof sealed.updated_at === 'string' ? sealed.updated_at : undefined;
          secrets[name] = sealEntry(newKey, name, open(this.#key, entryAad(FORMAT, name, sealed), sealed), updatedAt);
        } catch {
          damaged.push(shownSecretName(name));
        }
      }
      if (damaged.length > 0) {
        throw new SecretFileError(`${damaged.length === 1 ? 'an entry does' : `${damaged.length} entries do`} not decrypt (${damaged.join(', ')}), and a new key would lose ${damaged.length === 1 ? 'it' : 'them'} for good: set each again (\`npx airlock secrets set NAME\`) or remove it (\`secrets rm NAME\`), then run rekey again; nothing was changed`);
      }
      beforeReplace();
      this.#write({ format: FORMAT, key_check: seal(newKey, 'key-check', KEY_CHECK), secrets });
      this.#key = newKey;
      return Object.keys(secrets).length;
    });
  }

  /** A format-1 document as format 2: each entry re-sealed with its date bound (a damaged one is kept as it is, still damaged). */
  #resealed(document: SecretsDocument | null): SecretsDocument | null {
    if (document === null || document.format === FORMAT) return document;
    // No prototype: a secret named __proto__ stays an entry.
    const secrets: Record<string, SealedValue> = Object.create(null) as Record<string, SealedValue>;
    for (const [name, sealed] of Object.entries(document.secrets)) {
      try {
        const updatedAt = typeof sealed.updated_at === 'string' ? sealed.updated_at : undefined;
        secrets[name] = sealEntry(this.#key, name, open(this.#key, entryAad(FORMAT_1, name, sealed), sealed), updatedAt);
      } catch {
        secrets[name] = sealed;
      }
    }
    return { format: FORMAT, key_check: document.key_check, secrets };
  }

  #write(document: SecretsDocument): void {
    this.#makeDir();
    try {
      replaceFileSync(this.path, `${JSON.stringify(document, null, 2)}\n`);
    } catch (error) {
      throw new SecretFileError(fileAccessProblem(this.path, error, 'write'), { cause: error });
    }
  }

  /** data_dir, made if missing (0700), or what stops it said (not node's "EACCES: permission denied, mkdir ..."). */
  #makeDir(): void {
    const dir = dirname(this.path);
    try {
      makePrivateDir(dir);
    } catch (error) {
      throw new SecretFileError(`${fileAccessProblem(dir, error, 'make')} (data_dir, where the secrets are kept)`, { cause: error });
    }
  }
}
