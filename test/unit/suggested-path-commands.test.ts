/**
 * The other commands Airlock suggests with a path in them (`chmod 600 F` for a master key or a TLS key
 * other users can read, `mv F.next F` or `rm F.next` after a rekey cut short) write it as one shell word, as the
 * suggested `--config F` does (shell-word.ts): a path with a space or a quote, pasted as printed, ran
 * chmod or mv on other files.
 */
import { spawnSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { chmodSync, mkdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { EncryptedSecretFile } from '../../src/credentials/encrypted-secret-file.js';
import { loadMasterKey } from '../../src/credentials/master-key.js';
import { readTlsIdentity } from '../../src/ingress/tls-identity.js';
import { assertNoLeak } from '../helpers/assert-no-leak.js';
import { canary } from '../helpers/canary.js';
import { runCliCapture, writeConfigFile } from '../helpers/operator.js';
import { tempDir } from '../helpers/start-proxy.js';
import { HAVE_OPENSSL, makeTestCa, warnWithoutOpenssl } from '../helpers/test-certificates.js';

warnWithoutOpenssl('suggested-path-commands.test.ts', 'the TLS key case');

const base = tempDir('airlock-suggested-paths-');
afterAll(() => rmSync(base, { recursive: true, force: true }));

/** A directory a shell would split and expand the name of. */
function awkwardDir(name: string): string {
  const dir = join(base, `${name} it's $HOME`);
  mkdirSync(dir, { recursive: true });
  return dir;
}

/** The arguments sh passes to a command written as `command`. */
function argumentsBySh(command: string): string[] {
  const run = spawnSync('sh', ['-c', `printf '%s\\n' ${command.replace(/^\S+\s+/, '')}`], { encoding: 'utf8', env: { HOME: '/home/someone', PATH: process.env['PATH'] ?? '' } });
  expect(run.status, run.stderr).toBe(0);
  return run.stdout.split('\n').slice(0, -1);
}

function thrown(action: () => unknown): string {
  try {
    action();
  } catch (error) {
    return (error as Error).message;
  }
  throw new Error('expected it to throw');
}

describe('a suggested command with a path', () => {
  it('chmod 600 for a master key other users can read', () => {
    const dataDir = awkwardDir('key');
    const keyFile = join(dataDir, 'master.key');
    writeFileSync(keyFile, `${randomBytes(32).toString('base64')}\n`);
    chmodSync(keyFile, 0o644);
    const message = thrown(() => loadMasterKey({ dataDir, env: {}, create: false }));
    const command = /`(chmod 600 [^`]+)`/.exec(message)?.[1];
    expect(command, message).toBeDefined();
    expect(argumentsBySh(command as string)).toEqual(['600', keyFile]);
  });

  it('mv to finish a rekey cut short', () => {
    const dataDir = awkwardDir('rekey');
    const old = randomBytes(32);
    const secret = canary('rekey-mv');
    new EncryptedSecretFile(dataDir, old).set('api-key', secret, new Date());
    writeFileSync(join(dataDir, 'master.key.next'), 'a key\n');
    const message = thrown(() => new EncryptedSecretFile(dataDir, randomBytes(32)).names());
    const command = /finish it with {2}(mv .+)$/.exec(message)?.[1];
    expect(command, message).toBeDefined();
    expect(argumentsBySh(command as string)).toEqual([join(dataDir, 'master.key.next'), join(dataDir, 'master.key')]);
    assertNoLeak([secret], [{ name: 'error', text: message }]);
  });

  it('mv and rm for the master.key.next a rekey cut short left, as secrets rekey suggests them', async () => {
    const home = awkwardDir('cli rekey');
    const dataDir = join(home, 'data');
    const file = writeConfigFile(home, { listen: '127.0.0.1:0', data_dir: dataDir, services: {}, agents: {} });
    const seen: string[] = [];
    const secret = canary('rekey-paths');
    expect((await runCliCapture(['secrets', 'set', 'api-key', '--config', file], {}, seen, home, secret)).code).toBe(0);
    writeFileSync(join(dataDir, 'master.key.next'), `${randomBytes(32).toString('base64')}\n`, { mode: 0o600 });
    const run = await runCliCapture(['secrets', 'rekey', '--config', file], {}, seen, home);
    expect(run.code).toBe(1);
    const mv = /finish that rekey: {2}(mv [^;]+);/.exec(run.stderr)?.[1];
    const rm = /remove it: {2}(rm .+)\. Then/.exec(run.stderr)?.[1];
    expect(mv, run.stderr).toBeDefined();
    expect(rm, run.stderr).toBeDefined();
    expect(argumentsBySh(mv as string)).toEqual([join(dataDir, 'master.key.next'), join(dataDir, 'master.key')]);
    expect(argumentsBySh(rm as string)).toEqual([join(dataDir, 'master.key.next')]);
    assertNoLeak([secret], seen.map((text, i) => ({ name: `output ${i}`, text })));
  });

  it.skipIf(!HAVE_OPENSSL)('chmod 600 for a TLS key other users can read', () => {
    const dir = awkwardDir('tls');
    const issued = makeTestCa(dir).issue('good', 30);
    const key = join(dir, 'good copy.key');
    writeFileSync(key, readFileSync(issued.key));
    chmodSync(key, 0o644);
    const { problems } = readTlsIdentity({ cert_file: issued.cert, key_file: key, min_version: 'TLSv1.2' }, Date.now());
    const message = problems.map((p) => p.message).join('\n');
    const command = /`(chmod 600 [^`]+)`/.exec(message)?.[1];
    expect(command, message).toBeDefined();
    expect(argumentsBySh(command as string)).toEqual(['600', key]);
  });
});
