/**
 * A path in a suggested command (`--config F`) is printed as one POSIX shell word, so that the command
 * can be pasted as it is: quoted when it holds anything but [A-Za-z0-9_./:=@%+,-] (characters no POSIX
 * shell treats specially inside a word), as it is otherwise. Each word is read back by a real sh.
 */
import { spawnSync } from 'node:child_process';
import { describe, expect, it } from 'vitest';
import { shellWord } from '../../src/config/shell-word.js';

/** What sh makes of `word`: the one argument it passes on. */
function readBySh(word: string): string {
  const run = spawnSync('sh', ['-c', `printf '%s' ${word}`], { encoding: 'utf8', env: { HOME: '/home/someone', PATH: process.env['PATH'] ?? '' } });
  expect(run.status, run.stderr).toBe(0);
  return run.stdout;
}

describe('shellWord', () => {
  it.each([
    '/etc/airlock/airlock.yaml',
    '/srv/conf-1_2/prod.v2.yaml',
    '/mnt/host:8080/a=b/user@site/50%/c++/x,y.yaml',
  ])('leaves %j as it is: nothing in it is special to a shell', (path) => {
    expect(shellWord(path)).toBe(path);
    expect(readBySh(shellWord(path))).toBe(path);
  });

  it.each([
    '/home/me/My Configs/airlock.yaml',
    "/home/me/it's/airlock.yaml",
    '/home/$USER/airlock.yaml',
    '/home/me/`id`/airlock.yaml',
    '~/airlock.yaml',
    '/tmp/a*b?/[c]/airlock.yaml',
    '/tmp/a;b&c|d>e<f/airlock.yaml',
    '/tmp/"quoted"\\back/airlock.yaml',
    '/tmp/new\nline/airlock.yaml',
    '/tmp/#hash/!bang/{x,y}/airlock.yaml',
    '/tmp/naïve/airlock.yaml',
    '=airlock.yaml',
    '',
  ])('quotes %j so that sh reads it back whole', (path) => {
    const word = shellWord(path);
    expect(word).not.toBe(path);
    expect(word.startsWith("'")).toBe(true);
    expect(readBySh(word)).toBe(path);
  });
});
