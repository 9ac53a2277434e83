/**
 * The database in state.url. Found by review: ioredis reads the path after the host as the database
 * with parseInt, so `redis://host/abc` (NaN) used database 0 without a word and `redis://host/1x` used 1;
 * a whole number Redis does not have (`/99` with the default 16) is refused by Redis at start-up
 * (test/integration/redis-database-refused.test.ts). Config validation refuses what is not a whole
 * number, and warns of one above 15 (Redis's default `databases` 16; it can be raised, so not an error).
 */
import { rmSync } from 'node:fs';
import { afterAll, describe, expect, it } from 'vitest';
import { formatPath } from '../../src/config/config-problem.js';
import { buildConfig } from '../../src/config/load-config.js';
import { canary } from '../helpers/canary.js';
import { tempDir } from '../helpers/start-proxy.js';

const baseDir = tempDir('airlock-redis-db-');
afterAll(() => rmSync(baseDir, { recursive: true, force: true }));

const password = canary('redis-db-password').replace(/[^A-Za-z0-9]/g, '');

function problemsFor(url: string): Array<{ severity: string; path: string; message: string }> {
  const loaded = buildConfig({ state: { type: 'redis', url } }, { baseDir });
  return loaded.problems.map((p) => ({ severity: p.severity, path: formatPath(p.path), message: p.message }));
}

describe('state.url database', () => {
  it.each(['redis://127.0.0.1:6379', 'redis://127.0.0.1:6379/', 'redis://127.0.0.1:6379/0', 'redis://127.0.0.1:6379/15', `redis://:${password}@127.0.0.1:6379/3`, 'rediss://redis.internal:6380/7'])('%s is accepted', (url) => {
    expect(problemsFor(url)).toEqual([]);
  });

  it.each([
    'redis://127.0.0.1:6379/abc',
    'redis://127.0.0.1:6379/1x',
    'redis://127.0.0.1:6379/-1',
    'redis://127.0.0.1:6379/1.5',
    'redis://127.0.0.1:6379/2/extra',
    'redis://127.0.0.1:6379/?db=abc',
  ])('%s is refused, saying the database is a whole number', (url) => {
    expect(problemsFor(url)).toEqual([
      {
        severity: 'error',
        path: 'state.url',
        message: `the database (the path after the host, or ?db=) is not a whole number: write redis://HOST:PORT/N with N from 0 (the default) to 15, or higher if the Redis databases setting is raised (ioredis reads as much of it as is a number, and database 0 when none is, without a word)`,
      },
    ]);
  });

  it('a database above 15 is a warning: Redis has 16 unless its databases setting is raised, and serve stops if Redis refuses it', () => {
    expect(problemsFor('redis://127.0.0.1:6379/99')).toEqual([
      {
        severity: 'warning',
        path: 'state.url',
        message: 'database 99: Redis has 16 (0 to 15) unless its databases setting is raised; if it is not, serve refuses to start (Redis answers ERR DB index is out of range)',
      },
    ]);
  });

  // A raw "/" in the user info moves the rest of it into the path (WHATWG URL): the path is not repeated.
  it('a secret that a raw "/" put in the path is not repeated in the problem', () => {
    const problems = problemsFor(`redis://x/${password}@127.0.0.1:6379`);
    expect(problems.map((p) => p.path)).toEqual(['state.url']);
    expect(JSON.stringify(problems)).not.toContain(password.slice(0, 16));
  });
});
