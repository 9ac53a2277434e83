/**
 * Certificates for tests, made with the openssl CLI (Debian package `openssl`, which .ci/run installs):
 * a CA, and server certificates for 127.0.0.1 and localhost signed by it.
 */
import { execFileSync, spawnSync } from 'node:child_process';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';

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
  };
}
