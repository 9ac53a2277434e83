/**
 * A command the CLI suggests names the config it used (`--config F`); F is a path, and a path may hold
 * a space, a quote or a `$` (`/home/me/My Configs/airlock.yaml`). Found by review: the directory hint
 * (`--config DIR` naming a directory) and the admin-target refusal (a config found in the current
 * directory naming another host) printed F as it is, so the suggestion, pasted, split the path or
 * expanded part of it; the secrets and serve hints quoted it. Each is now one POSIX shell word, which a
 * real sh reads back as the path; a path of plain characters is printed as it is.
 */
import { spawnSync } from 'node:child_process';
import { mkdirSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { generateAgentToken } from '../../src/identity/agent-token.js';
import { assertNoLeak } from '../helpers/assert-no-leak.js';
import { runCliCapture, writeConfigFile } from '../helpers/operator.js';
import { tempDir } from '../helpers/start-proxy.js';

const admin = generateAgentToken();
const seen: string[] = [];
let dir: string;
/** A directory name a shell would split and expand: a space, a quote and a `$`. */
const AWKWARD = "it's my $HOME dir";

/** The words sh makes of `text` (the rest of a suggested command line), one per line. */
function wordsBySh(text: string): string[] {
  const run = spawnSync('sh', ['-c', `printf '%s\\n' ${text}`], { encoding: 'utf8', env: { HOME: '/home/someone', PATH: process.env['PATH'] ?? '' } });
  expect(run.status, run.stderr).toBe(0);
  return run.stdout.split('\n').slice(0, -1);
}

/** What follows `--config ` in `output`, up to the end of the line or the closing backtick or ` or `. */
function configArgument(output: string): string {
  const match = /--config ((?:'[^']*'|\\'|[^\s`'])+)/.exec(output);
  expect(match, output).not.toBeNull();
  return match?.[1] as string;
}

beforeAll(() => {
  dir = tempDir('airlock-quoted-config-');
});

afterAll(() => {
  rmSync(dir, { recursive: true, force: true });
  assertNoLeak([admin.token], [{ name: 'cli output', text: seen.join('\n') }]);
});

const services = { api: { upstream: 'http://127.0.0.1:9', credential: { secret: 'file:api-key' }, routes: [{ method: 'GET', path: '/v1/*', scope: 'read' }] } };

describe('a suggested --config path with characters a shell reads specially', () => {
  it('secrets set with nothing on stdin: the suggestion, pasted, names the same file', async () => {
    const home = join(dir, AWKWARD, 'secrets');
    mkdirSync(home, { recursive: true });
    const file = writeConfigFile(home, { listen: '127.0.0.1:0', data_dir: join(home, 'data'), services, agents: {} });
    const run = await runCliCapture(['secrets', 'set', 'api-key', '--config', file], {}, seen, dir);
    expect(run.code).toBe(1);
    expect(wordsBySh(configArgument(run.stderr))).toEqual([file]);
  });

  it('--config naming a directory: the files it suggests, pasted, are those files', async () => {
    const home = join(dir, AWKWARD, 'directory');
    mkdirSync(home, { recursive: true });
    const file = writeConfigFile(home, { services: {}, agents: {} }, 'prod config.yaml');
    const run = await runCliCapture(['check', '--config', home], {}, seen, dir);
    expect(run.code).toBe(1);
    expect(run.stderr).toContain('it is a directory; name the YAML config file in it: --config ');
    expect(wordsBySh(configArgument(run.stderr))).toEqual([file]);
  });

  it('a config found in the current directory naming another admin host: the --config it says to pass, pasted, is that file', async () => {
    const home = join(dir, AWKWARD, 'checkout');
    mkdirSync(join(home, 'config'), { recursive: true });
    const file = writeConfigFile(join(home, 'config'), { listen: '127.0.0.1:0', admin: { listen: '192.0.2.10:7701', tokens: [admin.hash] }, services: {}, agents: {} });
    const run = await runCliCapture(['approvals', 'list'], { AIRLOCK_ADMIN_TOKEN: admin.token }, seen, home);
    expect(run.code).toBe(1);
    expect(run.stderr).toContain('found in the current directory');
    expect(wordsBySh(configArgument(run.stderr))).toEqual([file]);
  });

  it('a path of characters no shell reads specially (: = @ % + ,) is printed as it is', async () => {
    const home = join(dir, 'host:8080', 'a=b,c+d@e%f');
    mkdirSync(home, { recursive: true });
    const file = writeConfigFile(home, { listen: '127.0.0.1:0', data_dir: join(home, 'data'), services, agents: {} });
    const run = await runCliCapture(['secrets', 'set', 'api-key', '--config', file], {}, seen, dir);
    expect(run.code).toBe(1);
    expect(run.stderr).toContain(`npx airlock secrets set api-key --config ${file}\n`);
  });
});
