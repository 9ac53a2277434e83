/**
 * Key shapes are found the same whatever the chunking: any split of a text into pushes gives the same
 * bytes as one whole() scan, and no complete sample key survives either. Texts are built from the
 * built-in prefixes, runs of key characters (long, short, cut), word characters before a prefix, and
 * PEM markers, so chunk ends fall inside prefixes, runs and blocks.
 */
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { pushInChunks } from '../helpers/push-in-chunks.js';
import { BUILTIN_RULE_NAMES, BUILTIN_RULES } from '../../src/redaction/key-patterns.js';
import { NeedleSet } from '../../src/redaction/needle-set.js';
import { RedactionMatcher } from '../../src/redaction/redaction-matcher.js';
import { StreamRedactor } from '../../src/redaction/stream-redactor.js';

const matcher = new RedactionMatcher(new NeedleSet([]), BUILTIN_RULE_NAMES.map((name) => BUILTIN_RULES[name]));

// Prefixes are spelled out in pieces so this file does not itself look like it holds keys.
const prefixes = ['sk-', 'sk-proj-', 'sk_' + 'live_', 'rk_' + 'live_', 'gh' + 'p_', 'github_' + 'pat_', 'xox' + 'b-', 'AK' + 'IA', 'AI' + 'za', '-----BEGIN ', 'PRIVATE KEY-----', '-----END '];
const pieceArb = fc.oneof(
  fc.constantFrom(...prefixes),
  fc.stringMatching(/^[A-Za-z0-9_-]{1,60}$/),
  fc.constantFrom(' ', '"', '\n', 'x', '-', ',', '{"k":"'),
  fc.string({ maxLength: 12 }),
);

function inChunks(input: Buffer, cuts: number[]): Buffer {
  return pushInChunks(new StreamRedactor(matcher), input, cuts);
}

describe('key shapes under any chunking', () => {
  it('push in chunks + end equals one whole() scan', () => {
    fc.assert(
      fc.property(fc.array(pieceArb, { minLength: 1, maxLength: 30 }), fc.array(fc.nat(), { maxLength: 16 }), (pieces, cuts) => {
        const input = Buffer.from(pieces.join(''), 'utf8');
        const whole = new StreamRedactor(matcher).whole(input);
        expect(inChunks(input, cuts).toString('latin1')).toBe(whole.toString('latin1'));
      }),
      { numRuns: Number(process.env['FC_RUNS'] ?? 2000) },
    );
  });

  it('a one-byte-at-a-time stream equals the whole scan for a text dense with prefixes', () => {
    const text = Buffer.from(`ask-me x sk- sk-proj-${'Ab3'.repeat(12)} "gh` + `p_${'a1B2c3D4e5'.repeat(4)}" AI` + 'za' + `${'y'.repeat(35)} xox` + `b-12-ab -----BEGIN `);
    const redactor = new StreamRedactor(matcher);
    const out: Buffer[] = [];
    for (let i = 0; i < text.length; i++) out.push(redactor.push(text.subarray(i, i + 1)));
    out.push(redactor.end());
    const streamed = Buffer.concat(out).toString('latin1');
    expect(streamed).toBe(new StreamRedactor(matcher).whole(text).toString('latin1'));
    expect(streamed).toContain('[REDACTED]');
    expect(streamed).not.toContain('Ab3Ab3Ab3');
  });
});
