/**
 * Secrets at rest (seal-text.ts, used by the embedded secrets file and the OAuth2 tokens replicas share
 * through Redis): what was sealed opens with the same key and associated data, and with nothing else;
 * and in the secrets file, an entry moved under another name does not decrypt, and `airlock secrets list`
 * (the real CLI) says which entries are damaged and what to do, without a value.
 */
import { randomBytes } from 'node:crypto';
import { readFileSync, rmSync, writeFileSync } from 'node:fs';
import { describe, expect, it } from 'vitest';
import { EncryptedSecretFile, SecretFileError } from '../../src/credentials/encrypted-secret-file.js';
import { openText, sealText } from '../../src/credentials/seal-text.js';
import { assertNoLeak } from '../helpers/assert-no-leak.js';
import { plainCanary } from '../helpers/canary.js';
import { runCliCapture, writeConfigFile } from '../helpers/operator.js';
import { tempDir } from '../helpers/start-proxy.js';

describe('sealText / openText', () => {
  const key = randomBytes(32);
  const aad = Buffer.from('secret:openai', 'utf8');

  it('opens what it sealed, and seals the same text differently each time (a fresh IV)', () => {
    const secret = plainCanary('seal');
    const first = sealText(key, aad, secret);
    const second = sealText(key, aad, secret);
    expect(openText(key, aad, first)).toBe(secret);
    expect(first.iv).not.toBe(second.iv);
    expect(first.ciphertext).not.toBe(second.ciphertext);
    assertNoLeak([secret], [{ name: 'sealed', text: JSON.stringify([first, second]) }]);
  });

  it('refuses another key, other associated data, and an altered tag or ciphertext', () => {
    const sealed = sealText(key, aad, plainCanary('refuse'));
    const flip = (b64: string): string => {
      const bytes = Buffer.from(b64, 'base64');
      bytes[0] = (bytes[0] as number) ^ 1;
      return bytes.toString('base64');
    };
    expect(() => openText(randomBytes(32), aad, sealed)).toThrow();
    expect(() => openText(key, Buffer.from('secret:github', 'utf8'), sealed)).toThrow();
    expect(() => openText(key, aad, { ...sealed, tag: flip(sealed.tag) })).toThrow();
    expect(() => openText(key, aad, { ...sealed, ciphertext: flip(sealed.ciphertext) })).toThrow();
  });
});

describe('the embedded secrets file', () => {
  it('refuses an entry moved under another name, naming the entry; `airlock secrets list` marks both and says what to do', async () => {
    const dir = tempDir('seal-file-');
    try {
      const key = randomBytes(32);
      const file = new EncryptedSecretFile(dir, key);
      const openai = plainCanary('openai');
      const github = plainCanary('github');
      file.set('openai', openai, new Date());
      file.set('github', github, new Date());
      expect(new Map([...file.readAll()].map(([name, entry]) => [name, entry.value]))).toEqual(new Map([['github', github], ['openai', openai]]));
      const document = JSON.parse(readFileSync(file.path, 'utf8')) as { secrets: Record<string, unknown> };
      [document.secrets['openai'], document.secrets['github']] = [document.secrets['github'], document.secrets['openai']];
      writeFileSync(file.path, JSON.stringify(document));
      let thrown: unknown;
      try {
        file.readAll();
      } catch (error) {
        thrown = error;
      }
      expect(thrown).toBeInstanceOf(SecretFileError);
      expect(String((thrown as Error).message)).toMatch(/secret "(openai|github)" .* does not decrypt/);
      // What the operator sees: the real CLI on that data_dir, with that master key.
      const masterKey = key.toString('hex');
      const configFile = writeConfigFile(dir, { listen: '127.0.0.1:0', data_dir: dir, services: {}, agents: {} });
      const listed = await runCliCapture(['secrets', 'list', '--config', configFile], { AIRLOCK_MASTER_KEY: masterKey }, []);
      expect(listed.code).toBe(1);
      expect(listed.stdout).toMatch(/^github\t.*\tDAMAGED: does not decrypt$/m);
      expect(listed.stdout).toMatch(/^openai\t.*\tDAMAGED: does not decrypt$/m);
      expect(listed.stderr).toContain('Damaged (the file was edited, or an entry moved): openai, github. Until each is set again, a running Airlock answers requests that need it with 503; the other file: secrets are served.');
      expect(listed.stderr).toContain('Set each again: npx airlock secrets set openai');
      assertNoLeak([openai, github, masterKey], [
        { name: 'error', text: String((thrown as Error).message) },
        { name: 'file', text: readFileSync(file.path, 'utf8') },
        { name: 'secrets list stdout', text: listed.stdout },
        { name: 'secrets list stderr', text: listed.stderr },
      ]);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });

  // Found by probing the CLI: `null` in secrets.json gave "Cannot read properties of null (reading 'format')".
  it.each([['null'], ['42'], ['[]'], ['{"format":"airlock-secrets/1","secrets":null,"key_check":"x"}']])('refuses %s as not a secrets file, saying what to do', (text) => {
    const dir = tempDir('seal-file-');
    try {
      const file = new EncryptedSecretFile(dir, randomBytes(32));
      writeFileSync(file.path, text);
      expect(() => file.readAll()).toThrow(SecretFileError);
      expect(() => file.readAll()).toThrow(/is not an Airlock secrets file .*restore it from a backup/);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });

  // Found by review: `updated_at`, the generation audit records show for a file: secret, was outside
  // the AAD, so whoever could edit the file could change it (or strip it) and the entry still opened.
  it('an entry whose date was edited or removed does not decrypt; the other entries still do', () => {
    const dir = tempDir('seal-file-');
    try {
      const file = new EncryptedSecretFile(dir, randomBytes(32));
      const [openai, github, stripe] = [plainCanary('dated-openai'), plainCanary('dated-github'), plainCanary('dated-stripe')];
      file.set('openai', openai, new Date('2026-11-01T00:00:00Z'));
      file.set('github', github, new Date('2026-11-02T00:00:00Z'));
      file.set('stripe', stripe, new Date('2026-11-03T00:00:00Z'));
      const document = JSON.parse(readFileSync(file.path, 'utf8')) as { format: string; secrets: Record<string, { updated_at?: string }> };
      expect(document.format).toBe('airlock-secrets/2');
      (document.secrets['openai'] as { updated_at?: string }).updated_at = '2026-12-31T00:00:00.000Z';
      delete (document.secrets['github'] as { updated_at?: string }).updated_at;
      writeFileSync(file.path, JSON.stringify(document));
      const { entries, damaged } = file.readIntact();
      expect([...damaged.keys()].sort()).toEqual(['github', 'openai']);
      expect(entries.get('stripe')).toEqual({ value: stripe, updatedAt: '2026-11-03T00:00:00.000Z' });
      expect(file.inventory().map((e) => [e.name, e.damaged])).toEqual([['openai', true], ['github', true], ['stripe', false]]);
      assertNoLeak([openai, github, stripe], [{ name: 'file', text: readFileSync(file.path, 'utf8') }, { name: 'problems', text: [...damaged.values()].join('\n') }]);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });

  it('a format-1 file is read as it was, and the next change rewrites it as format 2 with every date bound', () => {
    const dir = tempDir('seal-file-');
    try {
      const key = randomBytes(32);
      const file = new EncryptedSecretFile(dir, key);
      const [openai, github, fresh] = [plainCanary('v1-openai'), plainCanary('v1-github'), plainCanary('v1-fresh')];
      // As the release before wrote it: the name alone as AAD.
      const v1 = (name: string, value: string, updatedAt: string) => ({ ...sealText(key, Buffer.from(`secret:${name}`, 'utf8'), value), updated_at: updatedAt });
      writeFileSync(
        file.path,
        JSON.stringify({
          format: 'airlock-secrets/1',
          key_check: sealText(key, Buffer.from('key-check', 'utf8'), 'airlock-key-check'),
          secrets: { openai: v1('openai', openai, '2026-10-01T00:00:00.000Z'), github: v1('github', github, '2026-10-02T00:00:00.000Z') },
        }),
      );
      expect(file.readAll()).toEqual(new Map([['openai', { value: openai, updatedAt: '2026-10-01T00:00:00.000Z' }], ['github', { value: github, updatedAt: '2026-10-02T00:00:00.000Z' }]]));
      file.set('fresh', fresh, new Date('2026-11-28T00:00:00Z'));
      const document = JSON.parse(readFileSync(file.path, 'utf8')) as { format: string; secrets: Record<string, { updated_at?: string }> };
      expect(document.format).toBe('airlock-secrets/2');
      // Values and dates as they were; the old entries now open only with their dates.
      expect(file.readAll()).toEqual(new Map([['openai', { value: openai, updatedAt: '2026-10-01T00:00:00.000Z' }], ['github', { value: github, updatedAt: '2026-10-02T00:00:00.000Z' }], ['fresh', { value: fresh, updatedAt: '2026-11-28T00:00:00.000Z' }]]));
      (document.secrets['openai'] as { updated_at?: string }).updated_at = '2026-12-31T00:00:00.000Z';
      writeFileSync(file.path, JSON.stringify(document));
      expect([...file.readIntact().damaged.keys()]).toEqual(['openai']);
      // Set back to format 1, the re-sealed entries do not open either: no way back to unbound dates.
      writeFileSync(file.path, JSON.stringify({ ...document, format: 'airlock-secrets/1' }));
      expect([...file.readIntact().damaged.keys()].sort()).toEqual(['fresh', 'github', 'openai']);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});
