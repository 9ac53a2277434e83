/**
 * `airlock secrets rekey`: every file: secret sealed again under a new master key while Airlock keeps
 * serving. With data_dir/master.key a new key is made, and the old one opens nothing; with
 * AIRLOCK_MASTER_KEY the new key is AIRLOCK_MASTER_KEY_NEXT, and an Airlock given both serves on. An
 * entry that does not decrypt, or a rekey cut short, is refused with what to do, and nothing changes.
 */
import { spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { once } from 'node:events';
import { existsSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { EncryptedSecretFile, SecretFileError } from '../../src/credentials/encrypted-secret-file.js';
import { decodeMasterKey } from '../../src/credentials/master-key.js';
import { createFileSource } from '../../src/credentials/file-source.js';
import { generateAgentToken } from '../../src/identity/agent-token.js';
import { assertNoLeak } from '../helpers/assert-no-leak.js';
import { canary } from '../helpers/canary.js';
import { runCliCapture, sleep, writeConfigFile, type CliRun } from '../helpers/operator.js';
import { sendRequest } from '../helpers/send-request.js';
import { DIST_MAIN } from '../helpers/spawn-serve.js';
import { startProxy, tempDir, type ProxyFixture } from '../helpers/start-proxy.js';
import { startUpstream, type Upstream } from '../helpers/start-upstream.js';

const agent = generateAgentToken();
const seen: string[] = [];

function cli(args: string[], env: Record<string, string> = {}, stdinText = ''): Promise<CliRun> {
  return runCliCapture(args, env, seen, process.cwd(), stdinText);
}

function services(upstream: Upstream): Record<string, unknown> {
  return {
    services: { api: { upstream: upstream.url, credential: { secret: 'file:api-key' }, routes: [{ method: 'GET', path: '/v1/*', scope: 'read' }] } },
    agents: { bot: { tokens: [agent.hash], credentials: [{ service: 'api', max_scope: ['read'] }] } },
  };
}

describe('secrets rekey with data_dir/master.key', () => {
  const value = canary('rekey-file');
  const other = canary('rekey-other');
  let upstream: Upstream;
  let proxy: ProxyFixture;
  let dataDir: string;
  let config: string;

  beforeAll(async () => {
    upstream = await startUpstream();
    dataDir = tempDir('airlock-rekey-');
    config = writeConfigFile(dataDir, { data_dir: dataDir, ...services(upstream) }, 'cli.yaml');
    expect((await cli(['secrets', 'set', 'api-key', '--config', config], {}, value)).code).toBe(0);
    expect((await cli(['secrets', 'set', 'other-key', '--config', config], {}, other)).code).toBe(0);
    proxy = await startProxy(services(upstream), { dataDir });
  });

  afterAll(async () => {
    assertNoLeak([value, other, agent.token], [
      { name: 'CLI output', text: seen.join('\n') },
      { name: 'logs', text: proxy.logLines.join('') },
      { name: 'audit', text: proxy.auditText() },
    ]);
    await proxy?.close();
    await upstream?.close();
    rmSync(dataDir, { recursive: true, force: true });
  });

  const call = (path: string) => sendRequest(`${proxy.url}/api${path}`, { headers: { authorization: `Bearer ${agent.token}` } });

  it('seals every secret under a new key while requests go on; the old key opens nothing; dates (generations) are kept', async () => {
    const keyPath = join(dataDir, 'master.key');
    const oldKey = decodeMasterKey(readFileSync(keyPath, 'utf8'), keyPath);
    const before = new EncryptedSecretFile(dataDir, oldKey).readAll();
    expect((await call('/v1/before')).status).toBe(200);

    // Requests all through the rekey and for 2.5 s after it (the file is re-read every second).
    let stop = false;
    const statuses: number[] = [];
    const traffic = (async () => {
      for (let i = 0; !stop && i < 2_000; i++) statuses.push((await call(`/v1/during-${i}`)).status);
    })();
    await sleep(100);
    const run = await cli(['secrets', 'rekey', '--config', config]);
    expect(run.code, run.stderr).toBe(0);
    expect(run.stdout).toContain(`Re-encrypted 2 secrets in ${join(dataDir, 'secrets.json')} under a new master key, now in ${keyPath}; the old key no longer opens the file.`);
    await sleep(2_500);
    stop = true;
    await traffic;
    expect(statuses.length).toBeGreaterThan(10);
    expect(statuses.filter((s) => s !== 200)).toEqual([]);
    // The last request went out with the value it always had.
    expect(upstream.requests.at(-1)?.header('authorization')).toEqual([`Bearer ${value}`]);

    expect(existsSync(`${keyPath}.next`)).toBe(false);
    const newKey = decodeMasterKey(readFileSync(keyPath, 'utf8'), keyPath);
    expect(newKey.equals(oldKey)).toBe(false);
    expect(() => new EncryptedSecretFile(dataDir, oldKey).readAll()).toThrow(SecretFileError);
    const after = new EncryptedSecretFile(dataDir, newKey).readAll();
    expect([...after.entries()]).toEqual([...before.entries()]);
    const listed = await cli(['secrets', 'list', '--config', config]);
    expect(listed.code, listed.stderr).toBe(0);
    expect(listed.stdout).toContain(`api-key\t${before.get('api-key')?.updatedAt as string}\tused by services.api.credential`);
  });

  it('a rekey cut short between its renames: Airlock and the CLI still open the file with master.key.next, and rekey says how to finish', async () => {
    const keyPath = join(dataDir, 'master.key');
    const current = readFileSync(keyPath, 'utf8');
    // As if the crash came after secrets.json was sealed under the next key and before the last rename.
    writeFileSync(`${keyPath}.next`, current, { mode: 0o600 });
    writeFileSync(keyPath, `${randomBytes(32).toString('base64')}\n`, { mode: 0o600 });
    await sleep(1_200);
    expect((await call('/v1/cut-short')).status).toBe(200);
    expect((await cli(['secrets', 'list', '--config', config])).code).toBe(0);
    const refused = await cli(['secrets', 'rekey', '--config', config]);
    expect(refused.code).toBe(1);
    expect(refused.stderr).toContain(`${keyPath}.next exists: an earlier rekey was cut short. If ${join(dataDir, 'secrets.json')} opens with it alone (it was replaced), finish that rekey:  mv ${keyPath}.next ${keyPath}`);
    writeFileSync(keyPath, current, { mode: 0o600 });
    expect((await cli(['secrets', 'rekey', '--config', config])).code).toBe(1);
    rmSync(`${keyPath}.next`);
    expect((await cli(['secrets', 'rekey', '--config', config])).code).toBe(0);
  });

  it('refuses while an entry does not decrypt, naming it, and changes nothing', async () => {
    const file = join(dataDir, 'secrets.json');
    const document = JSON.parse(readFileSync(file, 'utf8')) as { secrets: Record<string, { updated_at: string }> };
    (document.secrets['other-key'] as { updated_at: string }).updated_at = '2000-01-01T00:00:00.000Z';
    const damaged = `${JSON.stringify(document, null, 2)}\n`;
    writeFileSync(file, damaged);
    const keyBefore = readFileSync(join(dataDir, 'master.key'), 'utf8');
    const run = await cli(['secrets', 'rekey', '--config', config]);
    expect(run.code).toBe(1);
    expect(run.stderr).toContain('an entry does not decrypt (other-key), and a new key would lose it for good');
    expect(readFileSync(file, 'utf8')).toBe(damaged);
    expect(readFileSync(join(dataDir, 'master.key'), 'utf8')).toBe(keyBefore);
  });
});

describe('secrets rekey with AIRLOCK_MASTER_KEY', () => {
  const value = canary('rekey-env');
  const oldKey = randomBytes(32).toString('base64');
  const newKey = randomBytes(32).toString('hex');
  let upstream: Upstream;
  let ready: ProxyFixture;
  let dataDir: string;
  let config: string;

  beforeAll(async () => {
    upstream = await startUpstream();
    dataDir = tempDir('airlock-rekey-env-');
    config = writeConfigFile(dataDir, { data_dir: dataDir, ...services(upstream) }, 'cli.yaml');
    expect((await cli(['secrets', 'set', 'api-key', '--config', config], { AIRLOCK_MASTER_KEY: oldKey }, value)).code).toBe(0);
    // Given the next key before the rekey, as the README says.
    ready = await startProxy(services(upstream), { dataDir, env: { AIRLOCK_MASTER_KEY: oldKey, AIRLOCK_MASTER_KEY_NEXT: newKey } });
  });

  afterAll(async () => {
    assertNoLeak([value, oldKey, newKey, agent.token], [
      { name: 'CLI output', text: seen.join('\n') },
      { name: 'logs', text: ready.logLines.join('') },
    ]);
    await ready?.close();
    await upstream?.close();
    rmSync(dataDir, { recursive: true, force: true });
  });

  it('needs AIRLOCK_MASTER_KEY_NEXT, then seals under it; an Airlock given both serves on', async () => {
    const without = await cli(['secrets', 'rekey', '--config', config], { AIRLOCK_MASTER_KEY: oldKey });
    expect(without.code).toBe(1);
    expect(without.stderr).toContain('set AIRLOCK_MASTER_KEY_NEXT to it');
    const same = await cli(['secrets', 'rekey', '--config', config], { AIRLOCK_MASTER_KEY: oldKey, AIRLOCK_MASTER_KEY_NEXT: oldKey });
    expect(same.code).toBe(1);
    const run = await cli(['secrets', 'rekey', '--config', config], { AIRLOCK_MASTER_KEY: oldKey, AIRLOCK_MASTER_KEY_NEXT: newKey });
    expect(run.code, run.stderr).toBe(0);
    expect(run.stdout).toContain('Re-encrypted 1 secret in');
    expect(run.stdout).toContain('Now make that key AIRLOCK_MASTER_KEY wherever Airlock and its CLI run');
    expect(existsSync(join(dataDir, 'master.key'))).toBe(false);
    await sleep(1_200);
    const response = await sendRequest(`${ready.url}/api/v1/after`, { headers: { authorization: `Bearer ${agent.token}` } });
    expect(response.status, response.text).toBe(200);
    expect(upstream.requests.at(-1)?.header('authorization')).toEqual([`Bearer ${value}`]);
    expect((await cli(['secrets', 'list', '--config', config], { AIRLOCK_MASTER_KEY: oldKey })).code).toBe(1);
    expect((await cli(['secrets', 'list', '--config', config], { AIRLOCK_MASTER_KEY: newKey })).code).toBe(0);
  });
});

// Found by review: a reader between rekey's steps saw master.key.next vanish (ENOENT), or the file
// replaced after it had read the keys, and reported the store unreadable for a moment.
describe('a reader polling the file source while rekeys run', () => {
  it('never fails to read a secret', async () => {
    const dir = tempDir('airlock-rekey-race-');
    const value = canary('rekey-race');
    const config = writeConfigFile(dir, { data_dir: dir }, 'cli.yaml');
    expect((await cli(['secrets', 'set', 'api-key', '--config', config], {}, value)).code).toBe(0);
    const source = createFileSource({ dataDir: dir, env: {}, recheckMs: 0 });
    let stop = false;
    let reads = 0;
    const failures: string[] = [];
    const reader = (async () => {
      while (!stop) {
        try {
          expect((await source.fetchSecret('api-key', 'file:api-key')).reveal()).toBe(value);
          reads++;
        } catch (error) {
          failures.push(String((error as Error).cause ?? error));
        }
        await new Promise((resolve) => setImmediate(resolve));
      }
    })();
    // Each rekey in a process of its own, as an operator runs it, so the reader here reads meanwhile.
    for (let i = 0; i < 12; i++) {
      const child = spawn(process.execPath, [DIST_MAIN, 'secrets', 'rekey', '--config', config], { stdio: 'ignore', env: { PATH: process.env['PATH'] ?? '' } });
      const [code] = (await once(child, 'exit')) as [number | null];
      expect(code).toBe(0);
    }
    stop = true;
    await reader;
    expect(reads).toBeGreaterThan(100);
    expect(failures).toEqual([]);
    rmSync(dir, { recursive: true, force: true });
  });
});
