/**
 * audit.file naming a directory: `audit: {file: ""}` or `"."` (data_dir itself), or a directory
 * already there (an audit/ folder meant to hold the log). check took a directory at that path for a
 * device or a FIFO (which it leaves alone) and said OK; serve then refused to start with
 * "EISDIR: illegal operation on a directory". check says so now, with the place and the fix.
 */
import { mkdirSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { runCliCapture } from '../helpers/operator.js';
import { tempDir } from '../helpers/start-proxy.js';

const root = tempDir('airlock-audit-dir-');
afterAll(() => rmSync(root, { recursive: true, force: true }));

describe('audit.file naming a directory', () => {
  const seen: string[] = [];

  it.each([
    ['empty (data_dir itself)', '""', 'data'],
    ['"." (data_dir itself)', '"."', 'data'],
    ['a directory already there', 'logs', join('data', 'logs')],
  ])('%s: check refuses it with its line, as serve would', async (_name, written, directory) => {
    const dir = join(root, `config-${seen.length}`);
    mkdirSync(join(dir, 'data', 'logs'), { recursive: true });
    const file = join(dir, 'airlock.yaml');
    writeFileSync(file, `listen: 127.0.0.1:0\nlog: {level: silent}\ndata_dir: ./data\naudit:\n  file: ${written}\n`);
    const check = await runCliCapture(['check', '--config', file], {}, seen);
    expect(check.stderr).toContain(`${file}:5:3: error at audit.file: the audit log ${join(dir, directory)} is a directory; set audit.file to a file, such as audit.jsonl (relative to data_dir)`);
    expect(check.code).toBe(1);
    const serve = await runCliCapture(['serve', '--config', file], {}, seen);
    expect(serve.code).toBe(1);
  });
});
