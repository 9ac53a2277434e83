/**
 * data_dir/secrets.json that is not a regular file (found by review): a FIFO put in its place held the
 * synchronous read, and with it the whole process, until someone wrote to it. It is refused at once.
 */
import { execFileSync, spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { mkdirSync, rmSync } from 'node:fs';
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
