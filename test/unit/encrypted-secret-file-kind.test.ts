/**
 * data_dir/secrets.json that is not a regular file (found by review): a FIFO put in its place held the
 * synchronous read, and with it the whole process, until someone wrote to it. It is refused at once.
 */
import { execFileSync, spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { existsSync, mkdirSync, rmSync, utimesSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { EncryptedSecretFile, SecretFileError } from '../../src/credentials/encrypted-secret-file.js';
import { canary } from '../helpers/canary.js';
import { tempDir } from '../helpers/start-proxy.js';

const dirs: string[] = [];
afterAll(() => {
  for (const dir of dirs) rmSync(dir, { recursive: true, force: true });
});

describe('a secrets file that is not a regular file', () => {
  it('a FIFO is refused at once, without waiting for a writer', () => {
    const dir = tempDir('airlock-secrets-fifo-');
    dirs.push(dir);
    const file = new EncryptedSecretFile(dir, randomBytes(32));
    file.set('openai', canary('fifo'), new Date());
    rmSync(file.path);
    execFileSync('mkfifo', ['-m', '600', file.path]);
    // Were a read to block, this writer ends it (each read, up to five) after a second, so the test fails
    // on time rather than hangs.
    const writer = spawn('sh', ['-c', `for i in 1 2 3 4 5; do sleep 1; printf '{}' > '${file.path}'; done`], { stdio: 'ignore' });
    try {
      const startedAt = Date.now();
      expect(() => file.readIntact()).toThrow(SecretFileError);
      expect(() => file.names()).toThrow(/not a regular file/);
      expect(Date.now() - startedAt).toBeLessThan(1_000);
    } finally {
      writer.kill();
    }
  });

  it('a directory is refused the same way', () => {
    const dir = tempDir('airlock-secrets-dir-');
    dirs.push(dir);
    const file = new EncryptedSecretFile(dir, randomBytes(32));
    mkdirSync(join(dir, 'secrets.json'));
    expect(() => file.names()).toThrow(/not a regular file/);
  });
});

describe('the lock a change takes', () => {
  it('a lock left behind is never taken over: the change is refused, naming the lock to remove, and the file is untouched', () => {
    const dir = tempDir('airlock-secrets-lock-');
    dirs.push(dir);
    const file = new EncryptedSecretFile(dir, randomBytes(32), 200);
    file.set('kept', canary('kept'), new Date());
    writeFileSync(`${file.path}.lock`, '');
    // Old enough that a takeover by age would have taken it (found by review: two takeovers raced).
    utimesSync(`${file.path}.lock`, new Date(Date.now() - 3_600_000), new Date(Date.now() - 3_600_000));
    expect(() => file.set('lost', canary('lost'), new Date())).toThrow(/remove .*secrets\.json\.lock/);
    expect(file.names()).toEqual(['kept']);
    rmSync(`${file.path}.lock`);
    file.set('after', canary('after'), new Date());
    expect(file.names()).toEqual(['after', 'kept']);
    expect(existsSync(`${file.path}.lock`)).toBe(false);
  });
});
