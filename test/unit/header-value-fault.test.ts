/**
 * headerValueFault (injection/injector.ts): the one check that keeps a credential out of a header,
 * used at injection (503 credential_unavailable) and by `secrets set` (refused before it is stored).
 */
import { describe, expect, it } from 'vitest';
import { headerValueFault } from '../../src/injection/injector.js';

const LINE_BREAK = 'a line break or NUL';
const CONTROL = 'a control character (such as ESC or DEL)';

describe('headerValueFault', () => {
  it.each([
    ['a CR', 'sk-abc\rdef', LINE_BREAK],
    ['an LF', 'sk-abc\ndef', LINE_BREAK],
    ['a NUL', 'sk-abc\0def', LINE_BREAK],
    ['an escape sequence', 'sk-abc\x1b[D', CONTROL],
    ['a DEL', 'sk-abc\x7f', CONTROL],
    ['SOH', '\x01sk-abc', CONTROL],
    ['a vertical tab', 'sk-\x0babc', CONTROL],
    ['plain', 'sk-live-0123456789abcdef', null],
    ['a TAB inside (RFC 9110 5.5 allows it)', 'abc\tdef', null],
    ['spaces and obs-text', 'pass word \u00e9', null],
  ])('%s: %j', (_name, value, fault) => {
    expect(headerValueFault(value)).toBe(fault);
  });
});
