/**
 * A Credential cannot print itself (DESIGN.md style rule 7, invariant 1): every way JavaScript and Node turn a
 * value into text gives "[REDACTED]" or leaves the value out; only reveal() returns it.
 */
import { Console } from 'node:console';
import { Writable } from 'node:stream';
import { format, inspect } from 'node:util';
import { describe, expect, it } from 'vitest';
import { Credential } from '../../src/credentials/credential.js';
import { assertNoLeak, findLeaks } from '../helpers/assert-no-leak.js';
import { canary } from '../helpers/canary.js';

function fresh(label = 'cred'): { value: string; credential: Credential } {
  const value = canary(label);
  return { value, credential: new Credential('file:openai', value, 'v7') };
}

/** Text written through a real Console, as console.log would write it to stdout. */
function consoleOutput(...args: unknown[]): string {
  const chunks: string[] = [];
  const sink = new Writable({
    write(chunk: Buffer, _encoding, callback) {
      chunks.push(chunk.toString('utf8'));
      callback();
    },
  });
  const console = new Console({ stdout: sink, stderr: sink, colorMode: false });
  console.log(...args);
  console.error(...args);
  console.info('%s %o %O %j', ...args, ...args, ...args, ...args);
  console.dir(args[0], { showHidden: true, depth: null });
  console.table([{ c: args[0] }]);
  return chunks.join('');
}

describe('Credential', () => {
  it('reveal() returns the value; ref, generation and length are there without it', () => {
    const { value, credential } = fresh();
    expect(credential.reveal()).toBe(value);
    expect(credential.ref).toBe('file:openai');
    expect(credential.generation).toBe('v7');
    expect(credential.length).toBe(value.length);
    expect(new Credential('env:K', value).generation).toBeNull();
  });

  it.each([
    ['String()', (c: Credential) => String(c)],
    ['template literal', (c: Credential) => `${c}`],
    ['concatenation', (c: Credential) => 'x' + c],
    ['toString()', (c: Credential) => c.toString()],
    ['toLocaleString()', (c: Credential) => c.toLocaleString()],
    ['Array join', (c: Credential) => [c, c].join(',')],
    ['JSON.stringify', (c: Credential) => JSON.stringify(c)],
    ['JSON.stringify nested', (c: Credential) => JSON.stringify({ request: { headers: [{ auth: c }] }, list: [c] })],
    ['JSON.stringify with indent', (c: Credential) => JSON.stringify({ c }, null, 2)],
    ['util.inspect', (c: Credential) => inspect(c)],
    ['util.inspect nested', (c: Credential) => inspect({ a: { b: { c: { d: c } } } }, { depth: null })],
    ['util.inspect showHidden', (c: Credential) => inspect(c, { showHidden: true, depth: null })],
    ['util.inspect nested showHidden', (c: Credential) => inspect({ list: [c], map: new Map([['k', c]]) }, { showHidden: true, depth: null })],
    ['util.inspect customInspect: false', (c: Credential) => inspect(c, { customInspect: false, showHidden: true, depth: null })],
    ['util.format %s %o %O %j %d', (c: Credential) => format('%s %o %O %j', c, c, c, c)],
    ['Error message and cause', (c: Credential) => inspect(new Error(`failed with ${c}`, { cause: { credential: c } }), { depth: null })],
    ['Buffer.from', (c: Credential) => Buffer.from(c as unknown as string).toString('utf8')],
    ['spread copy', (c: Credential) => JSON.stringify({ ...c }) + inspect({ ...c }, { showHidden: true })],
    ['Object.keys / entries / own names / symbols', (c: Credential) =>
      JSON.stringify([Object.keys(c), Object.entries(c), Object.getOwnPropertyNames(c), Reflect.ownKeys(c).map(String)])],
    ['for...in', (c: Credential) => {
      const seen: unknown[] = [];
      for (const key in c) seen.push(key, (c as unknown as Record<string, unknown>)[key]);
      return JSON.stringify(seen);
    }],
    ['Object.getOwnPropertyDescriptors', (c: Credential) => inspect(Object.getOwnPropertyDescriptors(c), { depth: null })],
    ['console.log / error / info / dir / table', (c: Credential) => consoleOutput(c)],
  ])('%s never shows the value', (_how, render) => {
    const { value, credential } = fresh();
    const text = render(credential);
    expect(text.length).toBeGreaterThan(0);
    assertNoLeak([value], [{ name: _how, text }]);
  });

  it('prints as [REDACTED], and inspects as its reference', () => {
    const { credential } = fresh();
    expect(String(credential)).toBe('[REDACTED]');
    expect(JSON.stringify({ c: credential })).toBe('{"c":"[REDACTED]"}');
    expect(inspect(credential)).toBe('Credential(file:openai) [REDACTED]');
    expect(inspect({ nested: [credential] })).toBe("{ nested: [ Credential(file:openai) [REDACTED] ] }");
  });

  it('own enumerable keys are only ref, generation and expiresAt', () => {
    const { credential } = fresh();
    expect(Object.keys(credential)).toEqual(['ref', 'generation', 'expiresAt']);
    expect(Object.entries(credential)).toEqual([['ref', 'file:openai'], ['generation', 'v7'], ['expiresAt', null]]);
  });

  it('structuredClone copies ref, generation and expiresAt into a plain object and drops the value', () => {
    const { value, credential } = fresh();
    const clone = structuredClone(credential) as unknown as Record<string, unknown>;
    expect(clone).not.toBeInstanceOf(Credential);
    expect(clone).toEqual({ ref: 'file:openai', generation: 'v7', expiresAt: null });
    expect('reveal' in clone).toBe(false);
    assertNoLeak([value], [{ name: 'structuredClone', text: inspect(clone, { showHidden: true, depth: null }) + JSON.stringify(clone) }]);
  });

  it('is frozen: no property can be added or redefined to print the value', () => {
    const { credential } = fresh();
    expect(Object.isFrozen(credential)).toBe(true);
    expect(() => {
      (credential as unknown as Record<string, unknown>)['toJSON'] = () => credential.reveal();
    }).toThrow(TypeError);
    expect(() => {
      (credential as unknown as { ref: string }).ref = 'x';
    }).toThrow(TypeError);
    expect(JSON.stringify(credential)).toBe('"[REDACTED]"');
  });

  it('the leak check itself finds the value when it is printed (so the tests above can fail)', () => {
    const { value, credential } = fresh();
    expect(findLeaks([value], [{ name: 'revealed', text: `Bearer ${credential.reveal()}` }])).not.toEqual([]);
    expect(findLeaks([value], [{ name: 'b64', text: Buffer.from(`u:${credential.reveal()}`).toString('base64') }])).not.toEqual([]);
  });
});

describe('Credential.wellFormed', () => {
  it.each([
    ['plain ASCII', 'sk-live-0123456789abcdef', true],
    ['a proper surrogate pair (an emoji)', 'sk-live-\u{1F511}-0123456789', true],
    ['a lone high surrogate, as a JSON "\\ud800" escape gives', 'sk-live-\ud800-0123456789', false],
    ['a lone low surrogate', 'sk-live-\udc00-0123456789', false],
    ['a pair written backwards', 'sk-live-\udc00\ud800-0123456789', false],
  ])('%s: %s', (_what, value, expected) => {
    expect(new Credential('vault:secret/x#k', value).wellFormed).toBe(expected);
  });
});
