import { describe, expect, it } from 'vitest';
import { decodeUnreservedEscapes, escapesUnreserved, isUnreserved, UNRESERVED_HEX } from '../../src/ingress/percent-escapes.js';
import { canonicalizeTarget } from '../../src/pipeline/canonicalize-target.js';
import { parseRouteTemplate } from '../../src/policy/route-template.js';

// One definition of "an escape of an unreserved character" serves canonicalization, route templates
// and the audit record of a refused target; these rows hold the three to the same answer.
describe('escapes of unreserved characters (RFC 3986 2.3, 6.2.2.2)', () => {
  it.each([
    ['%41', 'A'], ['%5a', 'Z'], ['%61', 'a'], ['%7A', 'z'], ['%30', '0'], ['%39', '9'],
    ['%2D', '-'], ['%2e', '.'], ['%5F', '_'], ['%7e', '~'],
  ])('%s spells %s', (escape, char) => {
    expect(decodeUnreservedEscapes(`/v1/${escape}x`)).toBe(`/v1/${char}x`);
    expect(escapesUnreserved(escape)).toBe(true);
    expect(isUnreserved(char.charCodeAt(0))).toBe(true);
    expect(canonicalizeTarget(`/v1/${escape}x`).path).toBe(`/v1/${char}x`);
  });

  it.each(['%40', '%5B', '%60', '%7B', '%2F', '%20', '%2C', '%3A', '%C3%A9'])('%s is not one, and is kept', (escape) => {
    expect(decodeUnreservedEscapes(`/v1/${escape}`)).toBe(`/v1/${escape}`);
    expect(escapesUnreserved(escape)).toBe(false);
  });

  it('a route template may not escape an unreserved character, since a canonical path never does', () => {
    expect(parseRouteTemplate('/v1/%61bc')).toMatchObject({ ok: false });
    expect(parseRouteTemplate('/v1/%3Abc')).toMatchObject({ ok: true });
  });

  it('the test is repeatable (no state left between calls by the global regular expression)', () => {
    for (let i = 0; i < 3; i++) expect(escapesUnreserved('/a/%41')).toBe(true);
    // A short text after a long one, and after decoding (which uses the global expression).
    expect(escapesUnreserved('/a/long/path/%41')).toBe(true);
    expect(escapesUnreserved('%41')).toBe(true);
    expect(decodeUnreservedEscapes('/a/long/path/%41/%7e')).toBe('/a/long/path/A/~');
    expect(escapesUnreserved('%7e')).toBe(true);
  });

  it('UNRESERVED_HEX (also read as \\u00XX by the approval preview) spells exactly the unreserved bytes, in either hex case', () => {
    const hex = new RegExp(`^${UNRESERVED_HEX}$`);
    for (let byte = 0; byte < 256; byte++) {
      const digits = byte.toString(16).padStart(2, '0');
      expect(hex.test(digits.toUpperCase()), digits).toBe(isUnreserved(byte));
      expect(hex.test(digits.toLowerCase()), digits).toBe(isUnreserved(byte));
    }
  });
});
