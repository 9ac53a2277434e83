/**
 * data_dir or the audit log on a read-only file system (a container's read-only root, a ro volume):
 * `check` and `serve` say so, and that a writable volume is the fix. Found by the ops walkthrough:
 * `serve` stopped on a raw "EROFS: read-only file system, open '.../audit.jsonl'", and `check` said this
 * user may not write there, which sent the operator to fix an owner or mode that cannot help.
 *
 * A read-only bind mount of a scratch directory stands in for the read-only volume; making one needs
 * root (CI runs as root, as on the development machines), so elsewhere the file is skipped, loudly.
 */
import { spawnSync } from 'node:child_process';
import { mkdirSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { runCliCapture } from '../helpers/operator.js';
import { tempDir } from '../helpers/start-proxy.js';

const root = tempDir('airlock-ro-');
const source = join(root, 'source');
const readOnly = join(root, 'read-only');
mkdirSync(join(source, 'existing'), { recursive: true });
mkdirSync(readOnly);
const mounted = spawnSync('mount', ['--bind', '-o', 'ro', source, readOnly], { encoding: 'utf8' });
const canMount = mounted.status === 0;
if (!canMount) {
  console.warn(`\n[read-only-data-dir] SKIPPED: a read-only bind mount could not be made (it needs root): ${(mounted.stderr || String(mounted.error)).trim()}\n`);
}

describe.skipIf(!canMount)('data_dir or the audit log on a read-only file system', () => {
  const seen: string[] = [];

  afterAll(() => {
    spawnSync('umount', [readOnly]);
    rmSync(root, { recursive: true, force: true });
  });

  function configWith(yaml: string): string {
    const dir = join(root, `config-${seen.length}`);
    mkdirSync(dir, { recursive: true });
    const file = join(dir, 'airlock.yaml');
    writeFileSync(file, `listen: 127.0.0.1:0\nlog: {level: silent}\n${yaml}`);
    return file;
  }

  it.each([
    ['a data_dir to be made there', `data_dir: ${join(readOnly, 'data')}\n`, `data_dir ${join(readOnly, 'data')} cannot be made: ${readOnly} is on a read-only file system (in a container, mount a writable volume there)`, `data_dir ${join(readOnly, 'data')} cannot be made: it would be on a read-only file system`],
    ['a data_dir that is there', `data_dir: ${join(readOnly, 'existing')}\n`, `data_dir ${join(readOnly, 'existing')} is on a read-only file system (in a container, mount a writable volume there)`, `data_dir ${join(readOnly, 'existing')} is on a read-only file system`],
    ['an audit file there', `data_dir: ./data\naudit: {file: ${join(readOnly, 'existing', 'audit.jsonl')}}\n`, `the audit log's directory ${join(readOnly, 'existing')} is on a read-only file system`, `the audit log ${join(readOnly, 'existing', 'audit.jsonl')} cannot be opened: it is on a read-only file system; set audit.file to a path Airlock can write`],
  ])('%s: check and serve say read-only, not a permission', async (_name, yaml, checkSays, serveSays) => {
    const file = configWith(yaml);
    const check = await runCliCapture(['check', '--config', file], {}, seen);
    expect(check.code).toBe(1);
    expect(check.stderr).toContain(checkSays);
    expect(check.stderr).not.toMatch(/may not|owner or mode/);
    const serve = await runCliCapture(['serve', '--config', file], {}, seen);
    expect(serve.code).toBe(1);
    expect(serve.stderr).toContain(serveSays);
    expect(serve.stderr).not.toContain('EROFS');
  });
});
