/**
 * makePrivateDir (src/state/make-private-dir.ts): mkdir -p with mode 0700, one level at a time, and an
 * error, never a spin, where the kernel will not make a directory whose parent exists (/proc).
 */
import { spawnSync } from 'node:child_process';
import { existsSync, statSync, symlinkSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { describe, expect, it } from 'vitest';
import { makePrivateDir } from '../../src/state/make-private-dir.js';
import { tempDir } from '../helpers/start-proxy.js';

describe('makePrivateDir', () => {
  it('makes every missing level, each 0700, and leaves an existing directory as it is', () => {
    const base = tempDir('private-dir-');
    const deep = join(base, 'a', 'b', 'c');
    makePrivateDir(deep);
    for (const dir of [join(base, 'a'), join(base, 'a', 'b'), deep]) expect(statSync(dir).mode & 0o777).toBe(0o700);
    const baseMode = statSync(base).mode & 0o777;
    makePrivateDir(base);
    makePrivateDir(deep);
    expect(statSync(base).mode & 0o777).toBe(baseMode);
  });

  it('refuses a path through a file with ENOTDIR, and a file at the path itself with EEXIST (as mkdir -p)', () => {
    const base = tempDir('private-dir-');
    writeFileSync(join(base, 'file'), 'x');
    expect(() => makePrivateDir(join(base, 'file', 'sub'))).toThrow(expect.objectContaining({ code: 'ENOTDIR' }));
    expect(() => makePrivateDir(join(base, 'file'))).toThrow(expect.objectContaining({ code: 'EEXIST' }));
  });

  it('refuses a symbolic link to nothing, itself or on the way, instead of passing it as made', () => {
    const base = tempDir('private-dir-');
    symlinkSync(join(base, 'gone'), join(base, 'dangling'));
    for (const target of [join(base, 'dangling'), join(base, 'dangling', 'sub')]) {
      expect(() => makePrivateDir(target)).toThrow(expect.objectContaining({ code: 'EEXIST', message: expect.stringMatching(/symbolic link to nothing/) }));
    }
    expect(existsSync(join(base, 'gone'))).toBe(false);
  });

  it.skipIf(!existsSync('/proc/self'))('answers a path under /proc with ENOENT at once (node\'s recursive mkdir spins there for ever)', () => {
    // In a child process with a deadline: were the spin back, this test would fail instead of hanging
    // the suite (a synchronous loop cannot be interrupted by vitest's own timeout).
    const module = fileURLToPath(new URL('../../src/state/make-private-dir.ts', import.meta.url));
    const script = `import(${JSON.stringify(module)}).then((m) => { try { m.makePrivateDir('/proc/airlock-no-such-dir/data'); console.log('made'); } catch (e) { console.log(e.code); } });`;
    const child = spawnSync(process.execPath, ['--import', 'tsx', '-e', script], { encoding: 'utf8', timeout: 20_000 });
    expect(child.error).toBeUndefined();
    expect(child.stdout.trim()).toBe('ENOENT');
  });
});
