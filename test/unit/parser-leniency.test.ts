import { describe, expect, it } from 'vitest';
import { hasMalformedName, parserReadsMalformedNames } from '../../src/ingress/parser-leniency.js';

describe('parser leniency by llhttp version', () => {
  it.each([
    ['8.1.2', true],
    ['9.2.1', false],
    ['9.4.4', false],
    ['10.0.0', false],
    [undefined, true],
    ['', true],
    ['garbage', true],
  ])('llhttp %s reads malformed header names: %s', (version, expected) => {
    expect(parserReadsMalformedNames(version)).toBe(expected);
  });
});

describe('malformed header names (RFC 9110 5.6.2 tokens)', () => {
  it.each([
    [['Host', 'a', 'X-A ', 'y'], true],
    [['Host', 'a', '', 'y'], true],
    [['Host', 'a', 'X(A)', 'y'], true],
    [['Host', 'a', 'X\tA', 'y'], true],
    [['Host', 'a', 'Caf\u00e9', 'y'], true],
    [['Host', 'a', "X-A!#$%&'*+-.^_`|~09az", 'y'], false],
    [['Host', 'a'], false],
    [[], false],
  ])('%j: %s', (raw, expected) => {
    expect(hasMalformedName(raw)).toBe(expected);
  });
});
