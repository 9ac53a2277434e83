/**
 * AES-256-GCM records are opened only with their full 16-byte tag. node's decipher, unless told the tag
 * length, takes a tag cut to 4, 8 or 12 to 15 bytes and checks only those bytes, so a genuine record
 * with its tag truncated opened, and a forger editing secrets.json or a Redis value needed to match 32
 * bits, not 128. Shown on seal-text.ts itself and on the secrets file a running proxy reads.
 */
import { randomBytes } from 'node:crypto';
import { readFileSync, rmSync, writeFileSync } from 'node:fs';
import { afterAll, describe, expect, it } from 'vitest';
import { EncryptedSecretFile, SecretFileError } from '../../src/credentials/encrypted-secret-file.js';
import { openText, sealText } from '../../src/credentials/seal-text.js';
import { canary } from '../helpers/canary.js';
import { tempDir } from '../helpers/start-proxy.js';

const dirs: string[] = [];

afterAll(() => {
  for (const dir of dirs) rmSync(dir, { recursive: true, force: true });
});

function truncated(tag: string, bytes: number): string {
  return Buffer.from(tag, 'base64').subarray(0, bytes).toString('base64');
}

describe('a sealed record with a truncated tag', () => {
  const key = randomBytes(32);
  const aad = Buffer.from('secret:openai', 'utf8');
  const secret = canary('seal-tag');

  it('opens with its full tag, which is 16 bytes', () => {
    const sealed = sealText(key, aad, secret);
    expect(Buffer.from(sealed.tag, 'base64')).toHaveLength(16);
    expect(openText(key, aad, sealed)).toBe(secret);
  });

  for (const bytes of [4, 8, 12, 15]) {
    it(`is refused with its tag cut to ${bytes} bytes`, () => {
      const sealed = sealText(key, aad, secret);
      expect(() => openText(key, aad, { ...sealed, tag: truncated(sealed.tag, bytes) })).toThrow();
    });
  }

  it('is refused with an empty tag or a longer one', () => {
    const sealed = sealText(key, aad, secret);
    expect(() => openText(key, aad, { ...sealed, tag: '' })).toThrow();
    expect(() => openText(key, aad, { ...sealed, tag: Buffer.concat([Buffer.from(sealed.tag, 'base64'), Buffer.alloc(1)]).toString('base64') })).toThrow();
  });

  it('in the secrets file: the entry does not decrypt, and the proxy refuses the file', () => {
    const dir = tempDir('airlock-seal-tag-');
    dirs.push(dir);
    const fileKey = randomBytes(32);
    const store = new EncryptedSecretFile(dir, fileKey);
    store.set('openai', secret, new Date());
    const document = JSON.parse(readFileSync(store.path, 'utf8')) as { secrets: Record<string, { tag: string }> };
    const entry = document.secrets['openai'];
    if (entry === undefined) throw new Error('no entry written');
    entry.tag = truncated(entry.tag, 4);
    writeFileSync(store.path, JSON.stringify(document));
    expect(() => store.readAll()).toThrow(SecretFileError);
    expect(store.inventory()).toEqual([expect.objectContaining({ name: 'openai', damaged: true })]);
  });
});
