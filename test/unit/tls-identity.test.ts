/**
 * readTlsIdentity: what `check`, start-up and a reload say of the tls files, each problem against the
 * setting to fix, and the key never printed.
 */
import { execFileSync } from 'node:child_process';
import { chmodSync, mkdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { inspect } from 'node:util';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { formatPath } from '../../src/config/config-problem.js';
import { buildConfig } from '../../src/config/load-config.js';
import { generateAgentToken } from '../../src/identity/agent-token.js';
import { EXPIRY_WARNING_DAYS, readTlsIdentity } from '../../src/ingress/tls-identity.js';
import { tempDir } from '../helpers/start-proxy.js';
import { HAVE_OPENSSL, makeTestCa, warnWithoutOpenssl } from '../helpers/test-certificates.js';

warnWithoutOpenssl('tls-identity.test.ts', 'the TLS file checks');

const DAY = 86_400_000;

describe.skipIf(!HAVE_OPENSSL)('readTlsIdentity', () => {
  let dir: string;
  let good: { key: string; cert: string };
  let other: { key: string; cert: string };
  const spec = (files: { key: string; cert: string }) => ({ cert_file: files.cert, key_file: files.key, min_version: 'TLSv1.2' as const });

  beforeAll(() => {
    dir = tempDir('airlock-tls-unit-');
    const authority = makeTestCa(dir);
    good = authority.issue('good', 30);
    other = authority.issue('other', 30);
  });
  afterAll(() => rmSync(dir, { recursive: true, force: true }));

  it('reads a matching chain and key, and prints neither the key nor its bytes', () => {
    const { identity, problems } = readTlsIdentity(spec(good), Date.now());
    expect(problems).toEqual([]);
    expect(identity?.subject).toBe('CN=good');
    expect(identity?.names).toContain('IP Address:127.0.0.1');
    const keyText = readFileSync(good.key, 'utf8');
    const body = keyText.split('\n')[1] as string;
    for (const shown of [String(identity), JSON.stringify({ identity }), inspect(identity, { depth: 5, showHidden: true })]) {
      expect(shown).toContain('[REDACTED]');
      expect(shown).not.toContain(body);
    }
  });

  it('refuses a key that is not the certificate\'s, against tls.key_file', () => {
    const { identity, problems } = readTlsIdentity(spec({ cert: good.cert, key: other.key }), Date.now());
    expect(identity).toBeNull();
    expect(problems).toEqual([expect.objectContaining({ severity: 'error', field: 'key_file', message: expect.stringMatching(/is not the key of the first certificate .*CN=good.*must come first/) })]);
  });

  it('refuses a chain whose first certificate is an intermediate, not the server\'s own', () => {
    const chain = join(dir, 'wrong-order.pem');
    writeFileSync(chain, readFileSync(join(dir, 'ca.pem'), 'utf8') + readFileSync(good.cert, 'utf8'));
    expect(readTlsIdentity(spec({ cert: chain, key: good.key }), Date.now()).problems[0]?.message).toMatch(/not the key of the first certificate .*Airlock Test CA/);
  });

  it.each([
    ['a missing certificate', () => ({ cert: join(dir, 'nowhere.pem'), key: good.key }), 'cert_file', /nowhere\.pem does not exist/],
    ['a missing key', () => ({ cert: good.cert, key: join(dir, 'nowhere.key') }), 'key_file', /nowhere\.key does not exist/],
    ['a key given as the certificate', () => ({ cert: good.key, key: good.key }), 'cert_file', /holds no PEM certificate/],
    ['a certificate given as the key', () => ({ cert: good.cert, key: good.cert }), 'key_file', /holds no PEM private key/],
    ['a directory', () => ({ cert: dir, key: good.key }), 'cert_file', /is a directory/],
  ] as const)('refuses %s', (_name, files, field, message) => {
    const { identity, problems } = readTlsIdentity(spec(files()), Date.now());
    expect(identity).toBeNull();
    expect(problems).toEqual([expect.objectContaining({ severity: 'error', field, message: expect.stringMatching(message) })]);
  });

  it('refuses a key encrypted with a passphrase, saying how to write it out', () => {
    const encrypted = join(dir, 'encrypted.key');
    execFileSync('openssl', ['pkey', '-in', good.key, '-out', encrypted, '-aes256', '-passout', 'pass:airlock-test']);
    const { problems } = readTlsIdentity(spec({ cert: good.cert, key: encrypted }), Date.now());
    expect(problems[0]).toMatchObject({ field: 'key_file', message: expect.stringMatching(/encrypted with a passphrase.*openssl pkey/) });
  });

  it('refuses a certificate past its end or before its start, and warns of one near its end', () => {
    const expired = readTlsIdentity(spec(good), Date.now() + 31 * DAY);
    expect(expired.identity).toBeNull();
    expect(expired.problems[0]?.message).toMatch(/expired on .*Renew it, then reload/);
    expect(readTlsIdentity(spec(good), Date.now() - 2 * DAY).problems[0]?.message).toMatch(/is not valid before .*clock/);
    const soon = readTlsIdentity(spec(good), Date.now() + (30 - EXPIRY_WARNING_DAYS + 4) * DAY);
    expect(soon.identity).not.toBeNull();
    expect(soon.problems).toEqual([expect.objectContaining({ severity: 'warning', strict: true, field: 'cert_file', message: expect.stringMatching(/expires on .* in (9|10) days/) })]);
  });

  it('lifts the plain-HTTP warning from the agent listeners it covers, not from the admin API', () => {
    const built = buildConfig(
      { listen: '0.0.0.0:7700', data_dir: join(dir, 'data'), tls: { cert_file: good.cert, key_file: good.key }, admin: { listen: '0.0.0.0:7701', tokens: [generateAgentToken().hash] }, services: {}, agents: {} },
      { baseDir: dir },
    );
    expect(built.problems.map((problem) => `${formatPath(problem.path)}: ${problem.message}`)).toEqual([expect.stringMatching(/^admin\.listen: the admin API \(admin\.listen\) listens on 0\.0\.0\.0:7701, beyond this machine, over plain HTTP/)]);
    expect(built.config?.tls).toEqual({ cert_file: good.cert, key_file: good.key, min_version: 'TLSv1.2' });
  });

  it('checks every certificate of the chain: an intermediate past its end is an error, one near it a warning, and the chain ends when it does', () => {
    // A leaf good for 60 days after a CA certificate good for 30 (found by the TLS walkthrough: an
    // expired intermediate passed check, and every client refused it).
    mkdirSync(join(dir, 'long'));
    const long = makeTestCa(join(dir, 'long')).issue('long', 60);
    const chained = join(dir, 'long', 'chain.pem');
    writeFileSync(chained, readFileSync(long.cert, 'utf8') + readFileSync(join(dir, 'long', 'ca.pem'), 'utf8'));
    const files = { cert: chained, key: long.key };
    const fine = readTlsIdentity(spec(files), Date.now());
    expect(fine.problems).toEqual([]);
    expect(Math.round(((fine.identity?.notAfter ?? 0) - Date.now()) / DAY)).toBe(30);
    expect(readTlsIdentity(spec(files), Date.now() + 20 * DAY).problems).toEqual([
      expect.objectContaining({ severity: 'warning', strict: true, message: expect.stringMatching(/^an intermediate of the chain in .*chain\.pem \(CN=Airlock Test CA\) expires on .* in (9|10) days/) }),
    ]);
    const expired = readTlsIdentity(spec(files), Date.now() + 31 * DAY);
    expect(expired.identity).toBeNull();
    expect(expired.problems[0]?.message).toMatch(/^certificate 2 of the chain in .*chain\.pem \(CN=Airlock Test CA\) expired on /);
  });

  it('says what is wrong with a damaged key or chain, in words the key-shape mask leaves whole', () => {
    const truncated = join(dir, 'truncated.key');
    writeFileSync(truncated, readFileSync(good.key, 'utf8').slice(0, 60));
    expect(readTlsIdentity(spec({ cert: good.cert, key: truncated }), Date.now()).problems[0]?.message).toBe(`${truncated} holds no PEM private key it can read (a BEGIN PRIVATE KEY block, or an RSA or EC one)`);
    const cut = join(dir, 'cut-chain.pem');
    writeFileSync(cut, `${readFileSync(good.cert, 'utf8')}-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n`);
    expect(readTlsIdentity(spec({ cert: cut, key: good.key }), Date.now()).problems[0]?.message).toMatch(/^certificate 2 of the chain in .*cut-chain\.pem cannot be read/);
    // An intermediate cut off before its END line is no block this file reads, but node's TLS reads the
    // whole file and refuses it (found by the TLS walkthrough: check said OK, serve failed).
    const unterminated = join(dir, 'unterminated-chain.pem');
    writeFileSync(unterminated, readFileSync(good.cert, 'utf8') + readFileSync(join(dir, 'ca.pem'), 'utf8').slice(0, 300));
    expect(readTlsIdentity(spec({ cert: unterminated, key: good.key }), Date.now()).problems).toEqual([
      expect.objectContaining({ severity: 'error', field: 'cert_file', message: expect.stringMatching(/unterminated-chain\.pem cannot be served: node's TLS refuses the chain \(.*\); check every certificate in it/) }),
    ]);
  });

  it('warns, strictly, of a key other users can read', () => {
    const loose = join(dir, 'loose');
    mkdirSync(loose);
    const key = join(loose, 'good.key');
    writeFileSync(key, readFileSync(good.key));
    chmodSync(key, 0o644);
    const { identity, problems } = readTlsIdentity(spec({ cert: good.cert, key }), Date.now());
    expect(identity).not.toBeNull();
    expect(problems).toEqual([expect.objectContaining({ severity: 'warning', strict: true, field: 'key_file', message: expect.stringMatching(/readable by other users \(mode 644\).*chmod 600/) })]);
  });
});
