/**
 * Certificates for tests, made with the openssl CLI (Debian package `openssl`, which .ci/run installs):
 * a CA, and server certificates for 127.0.0.1 and localhost signed by it.
 */
import { execFileSync, spawnSync } from 'node:child_process';
import { once } from 'node:events';
import { readFileSync, writeFileSync } from 'node:fs';
import { connect as tlsConnect, type TLSSocket } from 'node:tls';
import { join } from 'node:path';

/**
 * A self-signed CA certificate (EC P-256, CN=Airlock Test Fixed CA, valid 2026-2126), whose key was
 * thrown away: it is nobody's CA. For config tests that need a CA file that parses as a certificate
 * without running openssl (config validation reads every PEM block of a CA file, see ca-file-problem.ts).
 */
export const FIXED_CA_PEM = `-----BEGIN CERTIFICATE-----
MIIBpzCCAU2gAwIBAgIUImN87zF00QDAeoMtmttEyY6fQAQwCgYIKoZIzj0EAwIw
IDEeMBwGA1UEAwwVQWlybG9jayBUZXN0IEZpeGVkIENBMCAXDTI2MTEyOTEzMDg1
NVoYDzIxMjYxMTA1MTMwODU1WjAgMR4wHAYDVQQDDBVBaXJsb2NrIFRlc3QgRml4
ZWQgQ0EwWTATBgcqhkjOPQIBBggqhkjOPQMBBwNCAASNFAqt1VUXTdUEPsx+0nmI
4kWP0JC+kWniDjlXcC8LOzMXlJMTmLwtqVIER8kaM+yefgbuZbvXS+JG4IYLr42/
o2MwYTAdBgNVHQ4EFgQUC3AoJGidiLvChyIvkaaawHx9XxMwHwYDVR0jBBgwFoAU
C3AoJGidiLvChyIvkaaawHx9XxMwDwYDVR0TAQH/BAUwAwEB/zAOBgNVHQ8BAf8E
BAMCAQYwCgYIKoZIzj0EAwIDSAAwRQIhAPTJHBr+0QWyvxV8DHdo/ix7dpW46giw
fGkA6pbgBa0vAiBp6VUPiVADkF2Lup9rrxy/Y/f2VeB7SGyYRKN0tDdv9A==
-----END CERTIFICATE-----
`;

export const HAVE_OPENSSL = spawnSync('openssl', ['version'], { stdio: 'ignore' }).status === 0;

/** Logs a loud notice naming the package when openssl is missing (the caller skips its TLS tests). */
export function warnWithoutOpenssl(file: string, what: string): void {
  if (HAVE_OPENSSL) return;
  console.warn(`\n*** ${file}: the \`openssl\` command is missing, so ${what} are SKIPPED. Install the Debian package \`openssl\` (apt-get install openssl) to run them. ***\n`);
}

export interface TestCa {
  /** The CA certificate's file, for clients to trust. */
  readonly ca: string;
  /** A server certificate (and its key, mode 600) signed by the CA, valid for `days` from now. */
  issue(name: string, days?: number): { key: string; cert: string };
  /** A client certificate (extendedKeyUsage clientAuth) signed by the CA, for mTLS. */
  issueClient(name: string): { key: string; cert: string };
}

export function makeTestCa(dir: string): TestCa {
  const run = (...args: string[]): void => {
    execFileSync('openssl', args, { cwd: dir, stdio: 'pipe' });
  };
  const ec = ['-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:prime256v1', '-nodes'];
  run('req', '-x509', ...ec, '-keyout', 'ca.key', '-out', 'ca.pem', '-days', '30', '-subj', '/CN=Airlock Test CA', '-addext', 'basicConstraints=critical,CA:TRUE', '-addext', 'keyUsage=critical,keyCertSign,cRLSign');
  writeFileSync(join(dir, 'server.ext'), 'subjectAltName=IP:127.0.0.1,DNS:localhost\nbasicConstraints=CA:FALSE\nkeyUsage=critical,digitalSignature\nextendedKeyUsage=serverAuth\n');
  return {
    ca: join(dir, 'ca.pem'),
    issue(name, days = 2) {
      run('req', ...ec, '-keyout', `${name}.key`, '-out', `${name}.csr`, '-subj', `/CN=${name}`);
      run('x509', '-req', '-in', `${name}.csr`, '-CA', 'ca.pem', '-CAkey', 'ca.key', '-CAcreateserial', '-out', `${name}.pem`, '-days', String(days), '-extfile', 'server.ext');
      return { key: join(dir, `${name}.key`), cert: join(dir, `${name}.pem`) };
    },
    issueClient(name) {
      writeFileSync(join(dir, 'client.ext'), 'basicConstraints=CA:FALSE\nkeyUsage=critical,digitalSignature\nextendedKeyUsage=clientAuth\n');
      run('req', ...ec, '-keyout', `${name}.key`, '-out', `${name}.csr`, '-subj', `/CN=${name}`);
      run('x509', '-req', '-in', `${name}.csr`, '-CA', 'ca.pem', '-CAkey', 'ca.key', '-CAcreateserial', '-out', `${name}.pem`, '-days', '2', '-extfile', 'client.ext');
      return { key: join(dir, `${name}.key`), cert: join(dir, `${name}.pem`) };
    },
  };
}

/** The SHA-256 fingerprint of the certificate a fresh TLS connection to `url` is shown (trusting `caFile`, as localhost). */
export async function servedFingerprint(url: string, caFile: string): Promise<string> {
  const { hostname, port } = new URL(url);
  const socket: TLSSocket = tlsConnect({ host: hostname, port: Number(port), ca: readFileSync(caFile), servername: 'localhost' });
  await once(socket, 'secureConnect');
  const fingerprint = socket.getPeerCertificate().fingerprint256;
  socket.destroy();
  return fingerprint;
}
