/**
 * The host in state.url. `redis://` (or `redis:///0`, `redis://?db=1`) passed check, and ioredis, which
 * fills in what a URL leaves out, connected to localhost:6379 without a word: a replica meant to share
 * state with the others shared it with whatever Redis ran beside it, or refused to start saying it could
 * not reach 127.0.0.1. A URL node cannot parse at all (`redis://:6379`, a port past 65535) passed too, and
 * serve failed with ioredis's bare "Invalid URL". Both are refused with the path, the URL not repeated (it
 * may hold a password).
 */
import { rmSync } from 'node:fs';
import { afterAll, describe, expect, it } from 'vitest';
import { formatPath } from '../../src/config/config-problem.js';
import { buildConfig } from '../../src/config/load-config.js';
import { canary } from '../helpers/canary.js';
import { tempDir } from '../helpers/start-proxy.js';

const baseDir = tempDir('airlock-redis-host-');
afterAll(() => rmSync(baseDir, { recursive: true, force: true }));

const password = canary('redis-host-password').replace(/[^A-Za-z0-9]/g, '');

function problemsFor(url: string): Array<{ severity: string; path: string; message: string }> {
  const loaded = buildConfig({ state: { type: 'redis', url } }, { baseDir });
  return loaded.problems.map((p) => ({ severity: p.severity, path: formatPath(p.path), message: p.message }));
}

describe('state.url host', () => {
  it.each(['redis://', 'rediss://', 'redis:///0', 'redis://?db=1', `redis://#${password}`])('%s names no host: refused, saying ioredis would use localhost', (url) => {
    expect(problemsFor(url)).toEqual([
      {
        severity: 'error',
        path: 'state.url',
        message: 'names no host, and ioredis fills in localhost:6379 without a word, so every replica would share state with whatever Redis runs beside it: write redis://HOST:PORT/N, e.g. redis://redis.internal:6379/0 (rediss:// for TLS)',
      },
    ]);
  });

  it.each(['redis://:6379', 'redis://:6379/0', `redis://:${password}@/0`, 'redis://redis.internal:99999', 'redis://redis internal:6379', 'redis://[::1:6379'])('%s does not parse: refused, not repeated', (url) => {
    const problems = problemsFor(url);
    expect(problems).toEqual([
      {
        severity: 'error',
        path: 'state.url',
        message: expect.stringMatching(/^is not a URL node can parse \(no host before the port, a port above 65535, a space or an unclosed \[\): write redis:\/\/\[USER:PASSWORD@\]HOST:PORT\/N, percent-encoding any other character in the password; ioredis refuses it at start-up with a bare "Invalid URL"$/),
      },
    ]);
    expect(JSON.stringify(problems)).not.toContain(password.slice(0, 16));
  });

  it('a hostless state.url leaves the operator commands no config to fall back on (they would reach localhost)', () => {
    const loaded = buildConfig({ state: { type: 'redis', url: 'redis://' } }, { baseDir });
    expect(loaded.config).toBeNull();
    expect(loaded.fallback).toBeNull();
  });

  it.each(['redis://127.0.0.1:6379', 'redis://localhost', 'rediss://redis.internal:6380/7', 'redis://[::1]:6379/2', `redis://:${password}@redis.internal:6379`])('%s is accepted', (url) => {
    expect(problemsFor(url)).toEqual([]);
  });
});
