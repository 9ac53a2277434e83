/**
 * Found by review: node's own text for a file this user may not read ("EACCES: permission denied, open
 * '/x/y'") reached users of the CLI and serve as it was, saying neither what Airlock was doing nor what
 * to do: a config file (and then "pass --config FILE or create it", for a file that is there), the
 * secrets file and the master key (`secrets list`, `set`, `rm`), an audit log (`audit verify`), the
 * embedded state file (serve); serve's summary said a secret of a file it could not read was "not set
 * yet". Each now says what file, that
 * permission was denied (and where, when a directory above it is the one shut), and what to do.
 *
 * The built CLI (dist/main.js; `npm test` builds first) runs in a child process: as nobody (uid 65534)
 * when the suite runs as root, as CI does, since root reads any file whatever its mode; as this user
 * otherwise. Never skipped.
 */
import { spawnSync } from 'node:child_process';
import { chmodSync, chownSync, mkdirSync, rmSync, writeFileSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { assertNoLeak } from '../helpers/assert-no-leak.js';
import { canary } from '../helpers/canary.js';
import { runCliCapture, writeConfigFile } from '../helpers/operator.js';
import { tempDir } from '../helpers/start-proxy.js';

const REPO = resolve(fileURLToPath(import.meta.url), '../../..');
const DIST_MAIN = join(REPO, 'dist/main.js');
const asRoot = process.getuid?.() === 0;
/** Who the CLI runs as, as its messages name it. */
const uid = asRoot ? 65534 : (process.getuid?.() ?? 0);
const secret = canary('perm-denied');
const seen: string[] = [];
let dir: string;

/** A file or directory the CLI's user may not read (or enter). */
function deny(path: string, directory = false): void {
  if (asRoot) {
    chownSync(path, 0, 0);
    chmodSync(path, directory ? 0o700 : 0o600);
  } else {
    chmodSync(path, 0o000);
  }
}

/** A file or directory the CLI's user owns (root made it). */
function own(path: string): void {
  if (asRoot) chownSync(path, 65534, 65534);
}

interface Run {
  readonly code: number | null;
  readonly stdout: string;
  readonly stderr: string;
}

function airlock(args: readonly string[], options: { input?: string; timeoutMs?: number } = {}): Run {
  const child = spawnSync(process.execPath, [DIST_MAIN, ...args], {
    encoding: 'utf8',
    cwd: dir,
    env: { PATH: process.env['PATH'] ?? '' },
    input: options.input ?? '',
    timeout: options.timeoutMs ?? 20_000,
    killSignal: 'SIGTERM',
    ...(asRoot ? { uid: 65534, gid: 65534 } : {}),
  });
  seen.push(child.stdout, child.stderr);
  return { code: child.status, stdout: child.stdout, stderr: child.stderr };
}

const service = { upstream: 'https://api.example.com', credential: { secret: 'file:api-key' }, routes: [{ method: 'GET', path: '/v1/x', scope: 'x:read' }] };

/** A config in its own directory, with a data_dir whose secrets file holds api-key (stored as root, before any mode is changed). */
async function setUp(name: string): Promise<{ home: string; file: string; dataDir: string }> {
  const home = join(dir, name);
  mkdirSync(home);
  chmodSync(home, 0o755);
  const file = writeConfigFile(home, { listen: '127.0.0.1:0', data_dir: './data', services: { api: service }, agents: {} });
  chmodSync(file, 0o644);
  const set = await runCliCapture(['secrets', 'set', 'api-key', '--config', file], {}, seen, home, secret);
  expect(set.code, set.stderr).toBe(0);
  const dataDir = join(home, 'data');
  chmodSync(dataDir, 0o755);
  own(dataDir);
  own(join(dataDir, 'master.key'));
  own(join(dataDir, 'secrets.json'));
  return { home, file, dataDir };
}

function expectNoRawErrno(run: Run): void {
  expect(run.stdout + run.stderr).not.toMatch(/EACCES|EPERM|permission denied, open/);
}

beforeAll(() => {
  dir = tempDir('airlock-perm-denied-');
  chmodSync(dir, 0o755);
});

afterAll(() => {
  rmSync(dir, { recursive: true, force: true });
  assertNoLeak([secret], seen.map((text, i) => ({ name: `output ${i}`, text })));
});

describe('a file the user running airlock may not read', () => {
  it('the config file: check and serve name it, say permission was denied and what to do', async () => {
    const { file } = await setUp('config');
    deny(file);
    for (const command of ['check', 'serve', 'secrets']) {
      const run = airlock(command === 'secrets' ? ['secrets', 'list', '--config', file] : [command, '--config', file]);
      expect(run.code, run.stderr).toBe(1);
      expect(run.stdout + run.stderr).toContain(`cannot read ${file}: permission denied; make the user running airlock (uid ${uid}) its owner (chown; a file holding a secret stays mode 600)`);
      expect(run.stdout + run.stderr).not.toContain('create it');
      expectNoRawErrno(run);
    }
  });

  it('the config file behind a directory this user may not enter: names that directory', async () => {
    const { home, file } = await setUp('shut');
    deny(home, true);
    const run = airlock(['check', '--config', file]);
    expect(run.code, run.stderr).toBe(1);
    expect(run.stdout + run.stderr).toContain(`cannot read ${file}: permission denied: the user running airlock (uid ${uid}) may not enter ${home}`);
    expectNoRawErrno(run);
  });

  it('the secrets file: secrets list, set and rm say so, and serve does not call its secrets "not set yet"', async () => {
    const { file, dataDir } = await setUp('secrets');
    const secretsFile = join(dataDir, 'secrets.json');
    deny(secretsFile);
    const said = `cannot read ${secretsFile}: permission denied; make the user running airlock (uid ${uid}) its owner (chown; a file holding a secret stays mode 600)`;
    for (const args of [['secrets', 'list'], ['secrets', 'set', 'other'], ['secrets', 'rm', 'api-key']]) {
      const run = airlock([...args, '--config', file], { input: canary('other-secret') });
      expect(run.code, run.stderr).toBe(1);
      expect(run.stderr).toContain(said);
      expectNoRawErrno(run);
    }
    // serve starts (its other services work), and its summary says why api-key cannot be served.
    const serve = airlock(['serve', '--config', file], { timeoutMs: 6_000 });
    expect(serve.stderr).toContain('Airlock is listening');
    expect(serve.stderr).toContain(said);
    expect(serve.stderr).not.toContain('not set yet');
    expectNoRawErrno(serve);
  });

  it('the master key: secrets list says so', async () => {
    const { file, dataDir } = await setUp('key');
    const keyFile = join(dataDir, 'master.key');
    deny(keyFile);
    const run = airlock(['secrets', 'list', '--config', file]);
    expect(run.code, run.stderr).toBe(1);
    expect(run.stderr).toContain(`cannot read ${keyFile}: permission denied; make the user running airlock (uid ${uid}) its owner (chown; a file holding a secret stays mode 600)`);
    expectNoRawErrno(run);
  });

  it('the embedded state file: serve stops, saying so', async () => {
    const { file, dataDir } = await setUp('state');
    const state = join(dataDir, 'state.jsonl');
    writeFileSync(state, '');
    deny(state);
    const run = airlock(['serve', '--config', file], { timeoutMs: 10_000 });
    expect(run.code, run.stderr).toBe(1);
    expect(run.stderr).toContain(`cannot read ${state}: permission denied; make the user running airlock (uid ${uid}) its owner (chown; a file holding a secret stays mode 600)`);
    expectNoRawErrno(run);
  });

  it('an audit log: audit verify says so, named or found through the config', async () => {
    const { file, dataDir } = await setUp('audit');
    const log = join(dataDir, 'audit.jsonl');
    writeFileSync(log, '');
    deny(log);
    for (const args of [['audit', 'verify', log], ['audit', 'verify', '--config', file]]) {
      const run = airlock(args);
      expect(run.code, run.stderr).toBe(1);
      expect(run.stderr).toContain(`cannot read ${log}: permission denied; make the user running airlock (uid ${uid}) its owner (chown; a file holding a secret stays mode 600)`);
      expectNoRawErrno(run);
    }
  });
});
