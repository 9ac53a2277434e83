/**
 * file:NAME - a secret from the embedded encrypted file (encrypted-secret-file.ts).
 *
 * The running proxy picks up `npx airlock secrets set` without a restart: the file is re-read when its
 * size, mtime or inode changes, checked at most once per `recheckMs` so the request path does not
 * stat the disk on every call.
 */
import { stat } from 'node:fs/promises';
import { AirlockError } from '../errors.js';
import { Credential } from './credential.js';
import { EncryptedSecretFile, type SecretEntry } from './encrypted-secret-file.js';
import { loadMasterKey } from './master-key.js';
import { CredentialWithdrawn, type SecretSource } from './secret-source.js';

export interface FileSourceOptions {
  dataDir: string;
  env: Readonly<Record<string, string | undefined>>;
  recheckMs?: number;
  now?: () => number;
}

interface Snapshot {
  stamp: string;
  entries: Map<string, SecretEntry> | null;
  problem: string | null;
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

  async function reload(): Promise<Snapshot> {
    let key: Buffer | null;
    try {
      key = loadMasterKey({ dataDir: options.dataDir, env: options.env, create: false });
    } catch (error) {
      return { stamp: 'key-error', entries: null, problem: (error as Error).message };
    }
    if (key === null) return { stamp: 'no-key', entries: new Map(), problem: null };
    const file = new EncryptedSecretFile(options.dataDir, key);
    const stamp = await currentStamp(file.path);
    if (snapshot !== null && snapshot.stamp === stamp) return snapshot;
    try {
      return { stamp, entries: file.readAll(), problem: null };
    } catch (error) {
      return { stamp, entries: null, problem: (error as Error).message };
    }
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
      if (current.entries === null) {
        throw new AirlockError('credential_unavailable', `The credential ${ref} is not available: the secrets file cannot be read (${current.problem ?? 'unknown problem'}).`);
      }
      const entry = current.entries.get(name);
      if (entry === undefined) {
        throw new CredentialWithdrawn(`The credential ${ref} is not set. An operator runs \`npx airlock secrets set ${name}\` (value on stdin) and retries; no restart is needed.`);
      }
      return new Credential(ref, entry.value, entry.updatedAt);
    },
  };
}
