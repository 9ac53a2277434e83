/**
 * A CA file named by a service (`ca`), the Vault (`ca_file`) or an OAuth2 client (`ca`) that exists but
 * cannot be read as a file: a directory (a mounted Secret's folder rather than its key), or one this user
 * may not read. `airlock check` only asked whether it existed and said OK; serve then failed at start-up
 * (or a reload failed) with node's bare "EISDIR: illegal operation on a directory, read", no path; the
 * Vault's and OAuth2's failed on their first fetch, long after start-up.
 */
import { spawnSync } from 'node:child_process';
import { chmodSync, mkdirSync, rmSync, writeFileSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';
import { afterAll, describe, expect, it } from 'vitest';
import { formatPath } from '../../src/config/config-problem.js';
import { buildConfig } from '../../src/config/load-config.js';
import { startAirlock } from '../../src/app.js';
import { tempDir } from '../helpers/start-proxy.js';
import { FIXED_CA_PEM } from '../helpers/test-certificates.js';

const REPO = resolve(fileURLToPath(import.meta.url), '../../..');
const baseDir = tempDir('airlock-ca-kind-');
afterAll(() => rmSync(baseDir, { recursive: true, force: true }));

const PEM = FIXED_CA_PEM;

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

/** The config's errors as the user nobody gets them: the built load-config.js (npm test builds first), in a child process. */
function errorsAsNobody(raw: Record<string, unknown>): Array<{ path: string; message: string }> {
  chmodSync(baseDir, 0o755);
  const script = `
    const { buildConfig } = await import(${JSON.stringify(pathToFileURL(join(REPO, 'dist/config/load-config.js')).href)});
    const { formatPath } = await import(${JSON.stringify(pathToFileURL(join(REPO, 'dist/config/config-problem.js')).href)});
    const loaded = buildConfig(${JSON.stringify(raw)}, { baseDir: ${JSON.stringify(baseDir)} });
    process.stdout.write(JSON.stringify(loaded.problems.filter((p) => p.severity === 'error').map((p) => ({ path: formatPath(p.path), message: p.message }))));
  `;
  const child = spawnSync(process.execPath, ['--input-type=module', '-e', script], { uid: 65534, gid: 65534, encoding: 'utf8', cwd: '/' });
  expect(child.status, child.stderr).toBe(0);
  return JSON.parse(child.stdout) as Array<{ path: string; message: string }>;
}

describe('a CA file must be a file Airlock can read', () => {
  it('a directory is refused at each place, saying to name the PEM file in it', () => {
    mkdirSync(join(baseDir, 'ca-dir'), { recursive: true });
    writeFileSync(join(baseDir, 'ca-dir', 'ca.crt'), PEM);
    const loaded = buildConfig(stores('ca-dir'), { baseDir });
    expect(loaded.config).toBeNull();
    const errors = loaded.problems.filter((p) => p.severity === 'error');
    expect(errors.map((p) => formatPath(p.path))).toEqual(PATHS);
    for (const problem of errors) expect(problem.message).toMatch(/is a directory; name the PEM file in it/);
  });

  // Root reads any file whatever its mode: run as root (CI is), the check runs in a child process as
  // nobody (65534), which the mode does stop, rather than being skipped.
  it('a file this user may not read is refused, saying to fix its owner or mode', () => {
    const file = join(baseDir, 'locked.pem');
    writeFileSync(file, PEM);
    chmodSync(file, 0o000);
    const errors = process.getuid?.() === 0 ? errorsAsNobody(stores('locked.pem')) : buildConfig(stores('locked.pem'), { baseDir }).problems.filter((p) => p.severity === 'error').map((p) => ({ path: formatPath(p.path), message: p.message }));
    expect(errors.map((p) => p.path)).toEqual(PATHS);
    for (const problem of errors) expect(problem.message).toMatch(/this user may not read it; fix its owner or mode/);
  });

  it('a readable file is taken, and serve starts with it', async () => {
    writeFileSync(join(baseDir, 'ca.pem'), PEM);
    const loaded = buildConfig(stores('ca.pem'), { baseDir });
    expect(loaded.problems.filter((p) => p.severity === 'error')).toEqual([]);
    const airlock = await startAirlock(loaded.config!, { env: { API_KEY: 'k'.repeat(24) }, logDestination: { write: () => undefined } });
    await airlock.close(0);
  });
});
