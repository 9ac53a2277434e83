/**
 * headerValueFault (injection/injector.ts): the one check that keeps a credential out of a header,
 * used at injection (503 credential_unavailable) and by `secrets set` (refused before it is stored).
 */
import { describe, expect, it } from 'vitest';
import { headerValueFault } from '../../src/injection/injector.js';

describe('headerValueFault', () => {
  it.each([
    ['a CR', 'sk-abc\rdef'],
    ['an LF', 'sk-abc\ndef'],
    ['a NUL', 'sk-abc\0def'],
  ])('%s is a line break or NUL', (_name, value) => {
    expect(headerValueFault(value)).toBe('a line break or NUL');
  });

  it.each([
    ['an escape sequence', 'sk-abc\x1b[D'],
    ['a DEL', 'sk-abc\x7f'],
    ['SOH', '\x01sk-abc'],
    ['a vertical tab', 'sk-\x0babc'],
  ])('%s is another control character', (_name, value) => {
    expect(headerValueFault(value)).toBe('a control character (such as ESC or DEL)');
  });

  it.each([
    ['plain', 'sk-live-0123456789abcdef'],
    ['a TAB inside (RFC 9110 5.5 allows it)', 'abc\tdef'],
    ['spaces and obs-text', 'pass word é'],
  ])('%s passes', (_name, value) => {
    expect(headerValueFault(value)).toBeNull();
  });
});
