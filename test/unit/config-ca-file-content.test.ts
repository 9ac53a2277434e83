/**
 * What a CA file holds: a service's `ca`, the Vault's `ca_file` and an OAuth2 client's `ca`. node's TLS
 * reads the PEM certificates of the text it is given and ignores everything else without a word: a file
 * holding no certificate (a key, a DER file, a wrong file, an empty one) passed `airlock check`, and the
 * connection then failed at the first request (an upstream's 502, a Vault or token fetch's 503) with a
 * certificate error that did not name the file. A block that does not parse is worse: OpenSSL stops
 * reading there, so every certificate after it was dropped too. check now reads each block.
 */
import { X509Certificate } from 'node:crypto';
import { rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, describe, expect, it, vi } from 'vitest';
import { formatPath } from '../../src/config/config-problem.js';
import { buildConfig } from '../../src/config/load-config.js';
import { tempDir } from '../helpers/start-proxy.js';
import { FIXED_CA_PEM } from '../helpers/test-certificates.js';

const baseDir = tempDir('airlock-ca-content-');
afterAll(() => rmSync(baseDir, { recursive: true, force: true }));

/** The three places a CA file is named, all naming `file`. */
function stores(file: string): Record<string, unknown> {
  return {
    listen: '127.0.0.1:0',
    data_dir: 'data',
    services: { api: { upstream: 'https://api.example.com', ca: file, credential: { secret: 'env:API_KEY' }, routes: [{ method: 'GET', path: '/v1/items', scope: 'items:read' }] } },
    secrets: {
      vault: { address: 'https://vault.internal:8200', ca_file: file, auth: { method: 'token', token: 'env:VAULT_TOKEN' } },
      oauth2: { crm: { token_url: 'https://login.example.com/oauth2/token', client_id: 'env:CRM_ID', client_secret: 'env:CRM_SECRET', ca: file } },
    },
  };
}

const PATHS = ['services.api.ca', 'secrets.vault.ca_file', 'secrets.oauth2.crm.ca'];

/** Writes `content` as a CA file; the config's errors, as {path, message}. */
function errorsFor(name: string, content: string | Buffer): Array<{ path: string; message: string }> {
  writeFileSync(join(baseDir, name), content);
  const loaded = buildConfig(stores(name), { baseDir });
  return loaded.problems.filter((p) => p.severity === 'error').map((p) => ({ path: formatPath(p.path), message: p.message }));
}

const CORRUPT_BLOCK = '-----BEGIN CERTIFICATE-----\nMIIBpzCCAU2gAwIBAgIUImN87zF00QDAeoMt\n-----END CERTIFICATE-----\n';
const DER = new X509Certificate(FIXED_CA_PEM).raw;

describe('a CA file must hold PEM certificates node can read', () => {
  it.each([
    ['empty', ''],
    ['text that is no certificate', 'this is the CA, ask ops\n'],
    ['a public key instead of a certificate', '-----BEGIN PUBLIC KEY-----\nMFkwEwYHKoZIzj0CAQYIKoZIzj0DAQcDQgAEjRQKrdVVF03VBD7MftJ5iOJFj9CQ\nvpFp4g45V3AvCzszF5STE5i8LalSBEfJGjPsnn4G7mW711LiRuCGC6+Nvw==\n-----END PUBLIC KEY-----\n'],
  ])('%s: refused at each place, saying it holds no PEM certificate and what to give', (_name, content) => {
    const errors = errorsFor(`none-${_name.length}.pem`, content);
    expect(errors.map((e) => e.path)).toEqual(PATHS);
    for (const error of errors) {
      expect(error.message).toMatch(/^CA file \/.+ holds no PEM certificate \(a BEGIN CERTIFICATE block\): node's TLS would ignore it without a word and trust no private CA, so the connection would fail at the first request; give the CA's certificate in PEM form$/);
    }
  });

  it('a DER (binary) certificate: refused, saying how to convert it', () => {
    const errors = errorsFor('ca.der', DER);
    expect(errors.map((e) => e.path)).toEqual(PATHS);
    for (const error of errors) expect(error.message).toMatch(/holds no PEM certificate .*; it looks like DER \(binary\): convert it with openssl x509 -inform der -in .+ -out \/.+\/ca\.pem and name that file here$/);
  });

  it('a block that does not parse, after a good one: refused, naming the block', () => {
    const errors = errorsFor('bundle-corrupt-2.pem', `${FIXED_CA_PEM}${CORRUPT_BLOCK}`);
    expect(errors.map((e) => e.path)).toEqual(PATHS);
    for (const error of errors) expect(error.message).toMatch(/^CA file \/.+: certificate 2 of 2 cannot be read \(cut short, or not a certificate\); node's TLS stops reading the file there without a word, so it and every certificate after it would not be trusted: replace it with the CA's certificate in PEM form, or remove it$/);
  });

  it('a block that does not parse before a good one: refused (node would drop the good one after it)', () => {
    const errors = errorsFor('bundle-corrupt-1.pem', `${CORRUPT_BLOCK}${FIXED_CA_PEM}`);
    expect(errors.map((e) => e.path)).toEqual(PATHS);
    for (const error of errors) expect(error.message).toMatch(/: certificate 1 of 2 cannot be read/);
  });

  it('a block cut short (no END line) before a good one: refused', () => {
    const cut = FIXED_CA_PEM.split('\n').slice(0, 4).join('\n');
    const errors = errorsFor('bundle-cut.pem', `${cut}\n${FIXED_CA_PEM}`);
    expect(errors.map((e) => e.path)).toEqual(PATHS);
    for (const error of errors) expect(error.message).toMatch(/: certificate 1 of 2 cannot be read \(cut short, or not a certificate\)/);
  });

  it('the last block cut short at the end of the file: refused', () => {
    const cut = FIXED_CA_PEM.split('\n').slice(0, 4).join('\n');
    const errors = errorsFor('tail-cut.pem', `${FIXED_CA_PEM}${cut}`);
    expect(errors.map((e) => e.path)).toEqual(PATHS);
    for (const error of errors) expect(error.message).toMatch(/: certificate 2 of 2 cannot be read/);
  });

  it.each([
    ['one certificate', FIXED_CA_PEM],
    ['a bundle with comments between the blocks (as ca-certificates writes them)', `# Airlock Test Fixed CA\n${FIXED_CA_PEM}\n# again\n${FIXED_CA_PEM}`],
    ['CRLF line ends', FIXED_CA_PEM.replaceAll('\n', '\r\n')],
    ['the TRUSTED CERTIFICATE label, which node reads too', FIXED_CA_PEM.replaceAll('CERTIFICATE', 'TRUSTED CERTIFICATE')],
    ['a key block beside the certificate (node skips it)', `-----BEGIN PUBLIC KEY-----\nMFkwEwYHKoZIzj0CAQYIKoZIzj0DAQcDQgAEjRQKrdVVF03VBD7MftJ5iOJFj9CQ\nvpFp4g45V3AvCzszF5STE5i8LalSBEfJGjPsnn4G7mW711LiRuCGC6+Nvw==\n-----END PUBLIC KEY-----\n${FIXED_CA_PEM}`],
  ])('%s: accepted', (_name, content) => {
    expect(errorsFor(`good-${_name.length}.pem`, content)).toEqual([]);
  });
});

describe('a CA file whose every certificate has expired', () => {
  it('is a warning that fails --strict, at each place; a current one is not', () => {
    writeFileSync(join(baseDir, 'current.pem'), FIXED_CA_PEM);
    const warningsAt = (): Array<{ path: string; message: string; strict: boolean }> =>
      buildConfig(stores('current.pem'), { baseDir })
        .problems.filter((p) => p.severity === 'warning' && p.message.includes('has expired'))
        .map((p) => ({ path: formatPath(p.path), message: p.message, strict: p.strict === true }));
    expect(warningsAt()).toEqual([]);
    // The fixed CA ends in 2126: a day later, every certificate in the file has expired.
    vi.useFakeTimers({ toFake: ['Date'] });
    try {
      vi.setSystemTime(Date.parse(new X509Certificate(FIXED_CA_PEM).validTo) + 86_400_000);
      const warnings = warningsAt();
      expect(warnings.map((w) => w.path)).toEqual(PATHS);
      for (const warning of warnings) {
        expect(warning.strict).toBe(true);
        expect(warning.message).toMatch(/^every certificate in CA file \/.+current\.pem has expired \(the last on 2126-11-05T13:08:55\.000Z\), so no server certificate chains to it any more; put the CA's current certificate in it \(fails check --strict\)$/);
      }
    } finally {
      vi.useRealTimers();
    }
  });
});
