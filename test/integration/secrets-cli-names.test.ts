/**
 * `airlock secrets` when a key is typed where a name, a reference or an option goes: the command refuses
 * it, says what to do, and never prints it (nor stores anything under it). Names that look like a key
 * and were stored before this rule (or are referenced by the config) are never printed by list or rm.
 */
import { randomBytes } from 'node:crypto';
import { readFileSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import type { CliIo } from '../../src/cli/cli-io.js';
import { runCli } from '../../src/cli/run-cli.js';
import { EncryptedSecretFile } from '../../src/credentials/encrypted-secret-file.js';
import { loadMasterKey } from '../../src/credentials/master-key.js';
import { generateAgentToken } from '../../src/identity/agent-token.js';
import { assertNoLeak } from '../helpers/assert-no-leak.js';
import { canary } from '../helpers/canary.js';
import { tempDir } from '../helpers/start-proxy.js';

const ALNUM = 'ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789';
function run(alphabet: string, length: number): string {
  return [...randomBytes(length)].map((b) => alphabet[b % alphabet.length]).join('');
}

/** Keys of the built-in shapes, each a unique canary; the first is not even a valid name. */
const keys = {
  stripeWithPadding: `sk_live_51${run(ALNUM, 24)}+${run(ALNUM, 6)}/${run(ALNUM, 4)}==`,
  openai: canary('cli-name'),
  stripe: `sk_live_${run(ALNUM, 32)}`,
  github: `ghp_${run(ALNUM, 36)}`,
  aws: `AKIA${run('ABCDEFGHIJKLMNOPQRSTUVWXYZ234567', 16)}`,
  airlock: generateAgentToken().token,
};
const referenced = `ghp_${run(ALNUM, 36)}`;
const values = [canary('cli-value-1'), canary('cli-value-2')];
const seen: string[] = [];
const dirs: string[] = [];

function configDir(): { dir: string; file: string } {
  const dir = tempDir('airlock-cli-names-');
  dirs.push(dir);
  const file = join(dir, 'airlock.yaml');
  writeFileSync(file, JSON.stringify({ listen: '127.0.0.1:0', data_dir: dir, services: {}, agents: {} }));
  return { dir, file };
}

async function cli(args: string[], stdinText = ''): Promise<{ code: number; out: string; err: string }> {
  let out = '';
  let err = '';
  const io: CliIo = {
    args,
    env: {},
    cwd: process.cwd(),
    stdout: { write: (text: string) => (out += text) },
    stderr: { write: (text: string) => (err += text) },
    stdin: (async function* stdinChunks() {
      if (stdinText !== '') yield Buffer.from(stdinText, 'utf8');
    })(),
    stopRequested: new Promise<string>(() => undefined),
  };
  const code = await runCli(io);
  seen.push(out, err);
  return { code, out, err };
}

afterAll(() => {
  for (const dir of dirs) rmSync(dir, { recursive: true, force: true });
});

describe('airlock secrets never repeats a key typed where a name goes', () => {
  it('set: a key that is not a name is refused, unrepeated, with what to do', async () => {
    const { file } = configDir();
    const result = await cli(['secrets', 'set', keys.stripeWithPadding, '--config', file], values[0]);
    expect(result.code).toBe(1);
    expect(result.err).toContain('is not a secret name');
    expect(result.err).toContain('npx airlock secrets set openai');
  });

  for (const [shape, key] of Object.entries(keys).filter(([shape]) => shape !== 'stripeWithPadding')) {
    it(`set: a name shaped like a key (${shape}) is refused and nothing is stored`, async () => {
      const { dir, file } = configDir();
      const result = await cli(['secrets', 'set', key, '--config', file], values[0]);
      expect(result.code).toBe(1);
      expect(result.err).toContain('refused');
      expect(result.err).toContain('Name the secret for what it is');
      const masterKey = loadMasterKey({ dataDir: dir, env: {}, create: false });
      expect(masterKey === null ? [] : new EncryptedSecretFile(dir, masterKey).inventory()).toEqual([]);
    });
  }

  it('rotate: a key as a name, as a reference and as a reference kind is refused, unrepeated', async () => {
    const { file } = configDir();
    for (const ref of [keys.stripeWithPadding, keys.github, `vault:${keys.stripeWithPadding}`, `vault:secret/${keys.stripe}#api_key`, `${keys.aws}:x`, `file:${keys.openai}`]) {
      const result = await cli(['secrets', 'rotate', ref, '--config', file], values[1]);
      expect(result.code, result.err).toBe(1);
      expect(result.err).toMatch(/refused|not a secret reference|not a secret name/);
    }
  });

  it('an unknown option is refused without repeating it, and the message names the option there is', async () => {
    const { file } = configDir();
    for (const option of [`--${keys.stripe}`, `--${keys.stripeWithPadding}`, `-${keys.aws}`]) {
      const result = await cli(['secrets', 'set', option, '--config', file], values[0]);
      expect(result.code).toBe(1);
      expect(result.err).toContain('--config FILE');
    }
  });

  it('list and rm never print a stored or referenced name that looks like a key; rm still removes it', async () => {
    const { dir, file } = configDir();
    writeFileSync(
      file,
      JSON.stringify({
        listen: '127.0.0.1:0',
        data_dir: dir,
        services: { gh: { upstream: 'https://api.github.com', credential: { secret: `file:${referenced}`, inject: 'bearer' }, routes: [{ method: 'GET', path: '/*', scope: 'x' }] } },
        agents: {},
      }),
    );
    // A config that references a key-shaped name has a problem (secret-ref.ts), named unrepeated; the
    // operator commands go on without that service (locate-config.ts, use 'operator').
    const refused = await cli(['secrets', 'list', '--config', file]);
    expect(refused.code).toBe(0);
    expect(refused.err).toContain('starts like a key');
    expect(refused.err).toContain('This command goes on with the file\'s data_dir');
    expect(refused.out + refused.err).not.toContain(referenced);
    writeFileSync(file, readFileSync(file, 'utf8').replace(`file:${referenced}`, 'file:github-token'));

    // As an earlier version let `secrets set` store it.
    const masterKey = loadMasterKey({ dataDir: dir, env: {}, create: true });
    if (masterKey === null) throw new Error('no master key');
    new EncryptedSecretFile(dir, masterKey).set(keys.github, values[1] as string, new Date());
    expect((await cli(['secrets', 'set', 'openai', '--config', file], values[0])).code).toBe(0);

    const listed = await cli(['secrets', 'list', '--config', file]);
    expect(listed.out).toContain('openai');
    expect(listed.out).toContain('(a name that looks like a key, not shown)');
    expect(listed.out).toContain('Not set yet (requests that need them get 503): github-token');

    const removed = await cli(['secrets', 'rm', keys.github, '--config', file]);
    expect(removed.code, removed.err).toBe(0);
    expect(new EncryptedSecretFile(dir, masterKey).inventory().map((entry) => entry.name)).toEqual(['openai']);
    const again = await cli(['secrets', 'rm', keys.github, '--config', file]);
    expect(again.code).toBe(1);
    expect(again.err).toContain('No secret named (a name that looks like a key, not shown) is stored.');
  });

  it('no key, value or referenced name appears in any output', () => {
    assertNoLeak([...Object.values(keys), referenced, ...values], [{ name: 'CLI output', text: seen.join('\n') }]);
  });
});
