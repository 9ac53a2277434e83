/**
 * file:NAME - a secret from the embedded encrypted file (encrypted-secret-file.ts).
 *
 * The running proxy picks up `npx airlock secrets set` without a restart: the file is re-read when its
 * size, mtime or inode changes, checked at most once per `recheckMs` so the request path does not
 * stat the disk on every call.
 *
 * An entry that does not decrypt (the file was edited, or the entry moved under another name) costs its
 * own name only: the other entries are served, and a request that needs it gets 503 (found by a
 * fresh-user walkthrough: one damaged entry made every file: secret unavailable). Like a file that
 * cannot be read at all, a damaged entry is a fault, not an operator's withdrawal (that is `secrets rm`,
 * CredentialWithdrawn): a value fetched before the damage keeps serving up to its max_staleness
 * (credential-cache.ts), with the failure logged and shown in the admin API meanwhile. What is served
 * then is the value an operator set, never one an edit chose (the name is the ciphertext's additional
 * data, so an entry moved under this name does not decrypt as it), and dropping it at once would turn a
 * slip of an editor into an outage.
 *
 * What the agent is told is fixed; the file's path, the entry's name and what to run are the operator's
 * (an OperatorReason: the audit record's reason and the log line), as they name data_dir and other secrets.
 */
import { createHash } from 'node:crypto';
import { stat } from 'node:fs/promises';
import { AirlockError, OPERATOR_FINDS_WHY, OperatorReason } from '../errors.js';
import { Credential } from './credential.js';
import { EncryptedSecretFile, shownSecretName, type SecretEntry } from './encrypted-secret-file.js';
import { loadMasterKeyring } from './master-key.js';
import { CredentialWithdrawn, type SecretSource } from './secret-source.js';

export interface FileSourceOptions {
  dataDir: string;
  env: Readonly<Record<string, string | undefined>>;
  recheckMs?: number;
  now?: () => number;
  /**
   * Called when a read of the file finds entries that do not decrypt (at start-up, and again whenever the
   * file changes and some still do not): their names as `secrets list` prints them, and the file.
   */
  onDamaged?: (shownNames: readonly string[], path: string) => void;
}

interface Snapshot {
  stamp: string;
  entries: Map<string, SecretEntry> | null;
  /** Entries that do not decrypt: what to tell the operator, by name. */
  damaged: ReadonlyMap<string, string>;
  problem: string | null;
}

function unavailable(ref: string, operatorReason: string): AirlockError {
  return new AirlockError('credential_unavailable', `The credential ${ref} is unavailable: its store could not be read, and the request was not sent. ${OPERATOR_FINDS_WHY}`, {
    cause: new OperatorReason(operatorReason),
  });
}

export function createFileSource(options: FileSourceOptions): SecretSource {
  const recheckMs = options.recheckMs ?? 1000;
  const now = options.now ?? Date.now;
  let snapshot: Snapshot | null = null;
  let checkedAt = -Infinity;
  let reloading: Promise<Snapshot> | null = null;

  async function currentStamp(path: string): Promise<string> {
    try {
      const s = await stat(path);
      return `${s.ino}:${s.size}:${s.mtimeMs}`;
    } catch (error) {
      if ((error as NodeJS.ErrnoException).code === 'ENOENT') return 'absent';
      throw error;
    }
  }

  /**
   * A read that found keys and file mismatched is made once more with the keys read again: a `secrets
   * rekey` may have replaced the file between the two reads (found by review: such a reader reported
   * "restore master.key from a backup" for a moment).
   */
  async function reload(): Promise<Snapshot> {
    const first = await readOnce();
    return first.entries === null && first.stamp !== 'key-error' ? readOnce() : first;
  }

  async function readOnce(): Promise<Snapshot> {
    let keys: Buffer[] | null;
    try {
      keys = loadMasterKeyring({ dataDir: options.dataDir, env: options.env, create: false });
    } catch (error) {
      return { stamp: 'key-error', entries: null, damaged: new Map(), problem: (error as Error).message };
    }
    if (keys === null) return { stamp: 'no-key', entries: new Map(), damaged: new Map(), problem: null };
    const file = new EncryptedSecretFile(options.dataDir, keys);
    // The keys are part of the stamp: a read that failed under the old key is not kept once a
    // `secrets rekey` brought the one that opens the file (the file itself may not change again).
    const stamp = `${await currentStamp(file.path)}|${createHash('sha256').update(Buffer.concat(keys)).digest('hex').slice(0, 16)}`;
    if (snapshot !== null && snapshot.stamp === stamp) return snapshot;
    let read: ReturnType<EncryptedSecretFile['readIntact']>;
    try {
      read = file.readIntact();
    } catch (error) {
      return { stamp, entries: null, damaged: new Map(), problem: (error as Error).message };
    }
    if (read.damaged.size > 0) options.onDamaged?.([...read.damaged.keys()].map(shownSecretName), file.path);
    return { stamp, entries: read.entries, damaged: read.damaged, problem: null };
  }

  async function fresh(): Promise<Snapshot> {
    if (snapshot !== null && now() - checkedAt < recheckMs) return snapshot;
    // One reload at a time: concurrent requests share it (no stampede on the disk).
    reloading ??= reload().finally(() => {
      reloading = null;
    });
    snapshot = await reloading;
    checkedAt = now();
    return snapshot;
  }

  return {
    async fetchSecret(name, ref) {
      const current = await fresh();
      if (current.entries === null) throw unavailable(ref, `The credential ${ref} is not available: the secrets file cannot be read (${current.problem ?? 'unknown problem'}).`);
      const damage = current.damaged.get(name);
      if (damage !== undefined) throw unavailable(ref, `The credential ${ref} is not available: ${damage}.`);
      const entry = current.entries.get(name);
      if (entry === undefined) {
        throw new CredentialWithdrawn(`The credential ${ref} is not set. An operator runs \`npx airlock secrets set ${name}\` (value on stdin) with the config this proxy was started with (\`--config\` when it was named) and retries; no restart is needed.`);
      }
      return new Credential(ref, entry.value, entry.updatedAt);
    },
  };
}
