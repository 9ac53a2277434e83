/**
 * Debugging switches in the environment that would print credentials outside the scrubbed log or turn
 * certificate checks off (src/config/assess-environment.ts), read the way node and the `debug` package
 * read them, so that start-up refuses exactly those that would take effect.
 */
import { describe, expect, it } from 'vitest';
import { environmentProblems, type EnvironmentInput } from '../../src/config/assess-environment.js';

const clean = { env: { PATH: '/usr/bin', NODE_ENV: 'production' }, usesRedis: true };

describe('the environment Airlock refuses to start in', () => {
  const refused: Array<[string, EnvironmentInput, RegExp]> = [
    ['certificate checks off', { env: { NODE_TLS_REJECT_UNAUTHORIZED: '0' }, usesRedis: false }, /^NODE_TLS_REJECT_UNAUTHORIZED=0 is set.*Unset it/],
    ["undici's debug log", { env: { NODE_DEBUG: 'undici' }, usesRedis: false }, /^NODE_DEBUG=undici turns on undici's debug log.*Remove undici and fetch from NODE_DEBUG/],
    ['fetch among other sections, any case', { env: { NODE_DEBUG: 'http,FETCH' }, usesRedis: false }, /^NODE_DEBUG=http,FETCH turns on/],
    ['a wildcard node debug', { env: { NODE_DEBUG: 'un*' }, usesRedis: false }, /^NODE_DEBUG=un\* turns on/],
    ['every node debug section', { env: { NODE_DEBUG: '*' }, usesRedis: false }, /^NODE_DEBUG=\* turns on/],
    ["ioredis's debug log, with Redis state", { env: { DEBUG: 'ioredis:*' }, usesRedis: true }, /^DEBUG=ioredis:\* turns on ioredis's debug log.*password of state\.url/],
    ['every debug namespace, with Redis state', { env: { DEBUG: 'express:*,*' }, usesRedis: true }, /^DEBUG=express:\*,\* turns on ioredis/],
    ['a TLS key log in NODE_OPTIONS', { env: { NODE_OPTIONS: '--max-old-space-size=512 --tls-keylog=/tmp/keys.log' }, usesRedis: false }, /^node was started with --tls-keylog=\/tmp\/keys\.log, which writes the keys of every TLS session/],
    ['a TLS key log among node flags', { env: {}, nodeFlags: ['--no-memory-reducer', '--tls_keylog=/tmp/k'], usesRedis: false }, /^node was started with --tls_keylog=\/tmp\/k/],
  ];
  it.each(refused)('%s', (_name, input, message) => {
    const problems = environmentProblems(input);
    expect(problems).toHaveLength(1);
    expect(problems[0]).toMatch(message);
  });

  it('lists every problem at once', () => {
    const problems = environmentProblems({ env: { NODE_TLS_REJECT_UNAUTHORIZED: '0', NODE_DEBUG: 'undici', DEBUG: '*', NODE_OPTIONS: '--tls-keylog=k' }, usesRedis: true });
    expect(problems.map((p) => p.split(' ')[0])).toEqual(['NODE_TLS_REJECT_UNAUTHORIZED=0', 'NODE_DEBUG=undici', 'DEBUG=*', 'node']);
  });

  const allowed: Array<[string, EnvironmentInput]> = [
    ['an ordinary environment', clean],
    ['checks on (any other value)', { env: { NODE_TLS_REJECT_UNAUTHORIZED: '1' }, usesRedis: false }],
    ["node debug sections that print no request targets", { env: { NODE_DEBUG: 'http,net,tls' }, usesRedis: false }],
    ['a section that only starts like undici', { env: { NODE_DEBUG: 'undici2' }, usesRedis: false }],
    // node takes the names as written: " fetch" names no section.
    ['a name node would not match (a space before it)', { env: { NODE_DEBUG: 'http, fetch' }, usesRedis: false }],
    ['DEBUG for other libraries', { env: { DEBUG: 'express:*,koa' }, usesRedis: true }],
    ['DEBUG=* without Redis state (ioredis is not loaded)', { env: { DEBUG: '*' }, usesRedis: false }],
    ['ioredis excluded from a wildcard', { env: { DEBUG: '*,-ioredis:*' }, usesRedis: true }],
    ['other node flags', { env: { NODE_OPTIONS: '--max-old-space-size=512' }, nodeFlags: ['--no-memory-reducer', '--heap-growing-percent=50'], usesRedis: false }],
  ];
  it.each(allowed)('allows %s', (_name, input) => {
    expect(environmentProblems(input)).toEqual([]);
  });
});
