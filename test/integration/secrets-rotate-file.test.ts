/**
 * `secrets rotate file:NAME` when the admin API cannot be asked (no AIRLOCK_ADMIN_TOKEN, or nothing
 * listening): the value is stored, a running Airlock reads it within a second anyway, so the command
 * says so and exits 0 (found by an ops walkthrough: it exited 1, and `set -e` scripts stopped on a
 * rotation that had happened). Another kind of reference is fetched again only when asked: exit 1.
 */
import { describe, expect, it } from 'vitest';
import { EncryptedSecretFile } from '../../src/credentials/encrypted-secret-file.js';
import { loadMasterKeyring } from '../../src/credentials/master-key.js';
import { assertNoLeak } from '../helpers/assert-no-leak.js';
import { canary } from '../helpers/canary.js';
import { freePort, runCliCapture, writeConfigFile, type CliRun } from '../helpers/operator.js';
import { tempDir } from '../helpers/start-proxy.js';
import { generateAgentToken } from '../../src/identity/agent-token.js';

const seen: string[] = [];
const cli = (args: string[], stdinText: string): Promise<CliRun> => runCliCapture(args, {}, seen, process.cwd(), stdinText);

describe('secrets rotate without a reachable admin API', () => {
  it('a file: secret is stored and the command exits 0, saying the running Airlock takes it anyway', async () => {
    const dir = tempDir('airlock-rotate-file-');
    const value = canary('rotate-file');
    const config = writeConfigFile(dir, {
      data_dir: dir,
      admin: { listen: `127.0.0.1:${await freePort()}`, tokens: [generateAgentToken().hash] },
      services: { api: { upstream: 'https://api.example.com', credential: { secret: 'file:api-key' }, routes: [{ method: 'GET', path: '/v1/*', scope: 'read' }] } },
    });
    const run = await cli(['secrets', 'rotate', 'file:api-key', '--config', config], value);
    expect(run.code, run.stderr).toBe(0);
    expect(run.stdout).toContain('Stored secret api-key');
    expect(run.stderr).toContain('The value is stored all the same, and a running Airlock uses it within a second.');
    const keys = loadMasterKeyring({ dataDir: dir, env: {}, create: false });
    expect(new EncryptedSecretFile(dir, keys ?? []).readAll().get('api-key')?.value).toBe(value);
    const env = await cli(['secrets', 'rotate', 'env:API_KEY', '--config', config], '');
    expect(env.code).toBe(1);
    // A name the config does not use is refused before anything is stored (found by the ops walkthrough:
    // it was stored, then the admin API answered 404, and an entry nothing reads was left).
    const other = canary('rotate-unused');
    const unused = await cli(['secrets', 'rotate', 'file:nosuch', '--config', config], other);
    expect(unused.code).toBe(1);
    expect(unused.stderr).toContain('This config uses no file:nosuch, so a running Airlock would not pick it up, and nothing was stored.');
    expect(new EncryptedSecretFile(dir, loadMasterKeyring({ dataDir: dir, env: {}, create: false }) ?? []).names()).toEqual(['api-key']);
    assertNoLeak([value, other], [{ name: 'CLI output', text: run.stdout + run.stderr + env.stdout + env.stderr + unused.stdout + unused.stderr }]);
  });
});
