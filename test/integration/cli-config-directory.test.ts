/**
 * Found by review: `--config somedir` (a directory, such as the config/ of a checkout or a mounted
 * ConfigMap) printed node's raw "EISDIR: illegal operation on a directory, read". The command now says
 * it is a directory and to name the YAML file in it, naming the ones it holds.
 */
import { mkdirSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { runCliCapture } from '../helpers/operator.js';
import { tempDir } from '../helpers/start-proxy.js';

let dir: string;

beforeAll(() => {
  dir = tempDir('airlock-config-dir-');
  mkdirSync(join(dir, 'config'));
  writeFileSync(join(dir, 'config', 'airlock.yaml'), 'services: {}\nagents: {}\n');
  writeFileSync(join(dir, 'config', 'notes.txt'), 'not a config\n');
  mkdirSync(join(dir, 'empty'));
});

afterAll(() => {
  rmSync(dir, { recursive: true, force: true });
});

describe('--config naming a directory', () => {
  it.each([['check'], ['serve'], ['status'], ['secrets', 'list']])('airlock %s: says it is a directory and names the YAML file in it', async (...command) => {
    const run = await runCliCapture([...command, '--config', 'config'], {}, [], dir);
    expect(run.code).toBe(1);
    expect(run.stderr).toContain(`cannot read ${join(dir, 'config')}: it is a directory; name the YAML config file in it: --config ${join(dir, 'config', 'airlock.yaml')}`);
    expect(run.stderr).not.toContain('EISDIR');
  });

  it('a directory with no YAML file in it: says so', async () => {
    const run = await runCliCapture(['check', '--config', 'empty'], {}, [], dir);
    expect(run.code).toBe(1);
    expect(run.stderr).toContain(`cannot read ${join(dir, 'empty')}: it is a directory, and holds no .yaml or .yml file; name the config file with --config FILE (see config/airlock.example.yaml)`);
    expect(run.stderr).not.toContain('EISDIR');
  });

  it('AIRLOCK_CONFIG naming a directory: the same', async () => {
    const run = await runCliCapture(['check'], { AIRLOCK_CONFIG: join(dir, 'config') }, [], dir);
    expect(run.code).toBe(1);
    expect(run.stderr).toContain('it is a directory; name the YAML config file in it');
  });
});
