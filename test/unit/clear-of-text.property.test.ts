/**
 * The string fast path of the redaction matcher (clearOfText, and the request guard's
 * textHoldsNoNeedle): log lines, audit records, header values and request targets are checked from
 * the string itself, without encoding them to bytes. Property: whenever it answers "clear", the byte
 * scanner finds nothing in the same text's UTF-8 or Latin-1 bytes; and on clean ASCII text it does
 * answer "clear", so the fast path really runs.
 */
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { BUILTIN_RULE_NAMES, BUILTIN_RULES } from '../../src/redaction/key-patterns.js';
import { NeedleSet } from '../../src/redaction/needle-set.js';
import { RedactionMatcher } from '../../src/redaction/redaction-matcher.js';
import { formsOf, secretForms } from '../../src/redaction/secret-forms.js';
import { StreamRedactor } from '../../src/redaction/stream-redactor.js';
import { plainCanary } from '../helpers/canary.js';
import { plantedText, secretArb, type Plant } from '../helpers/planted-secrets.js';

const RULES = BUILTIN_RULE_NAMES.map((name) => BUILTIN_RULES[name]);
// Characters above U+00FF whose low byte is ASCII ("ų" is U+0173: Latin-1 writes 0x73, "s"), rule
// prefixes, and long fillers that take the RegExp path (over 64 characters).
const fillerArb = fc.oneof(
  fc.string({ maxLength: 40 }),
  fc.string({ unit: 'binary', maxLength: 20 }),
  fc.constantFrom('{"path":"/v1/x"}', 'é', '\u00ff', '\u0173', '\u0161k-', 'sk-', 'AKIA', '-----BEGIN ', 'x'.repeat(200)),
);

function maskedBytes(matcher: RedactionMatcher, text: string, encoding: 'utf8' | 'latin1'): number {
  const redactor = new StreamRedactor(matcher);
  redactor.whole(Buffer.from(text, encoding));
  return redactor.redactions;
}

describe('matcher string fast path', () => {
  it('answers "clear" only when the byte scanner finds nothing, in UTF-8 and Latin-1, with and without shape rules', () => {
    const runs = Number(process.env['FC_RUNS'] ?? 1000);
    let answered = 0;
    let dirty = 0;
    fc.assert(
      fc.property(
        fc.array(secretArb, { minLength: 1, maxLength: 3 }),
        fc.array(fc.tuple(fillerArb, fc.nat(), fc.constantFrom<Plant>('none', 'none', 'none', 'none', 'whole', 'prefix')), { minLength: 1, maxLength: 4 }),
        fc.boolean(),
        fc.constantFrom('utf8' as const, 'latin1' as const),
        (secrets, plan, withRules, encoding) => {
          const matcher = new RedactionMatcher(new NeedleSet(secrets.flatMap((s) => secretForms(s))), withRules ? RULES : []);
          const text = plantedText(secrets.flatMap((s) => formsOf(s)).map((f) => f.toString(encoding)), plan);
          const masked = maskedBytes(matcher, text, encoding);
          if (masked > 0) dirty++;
          if (matcher.clearOfText(text, encoding)) {
            answered++;
            expect(masked).toBe(0);
          }
        },
      ),
      { numRuns: runs },
    );
    // Both answers occurred often enough to mean something (a share of the runs, so FC_RUNS may change).
    expect(answered).toBeGreaterThan(runs / 20);
    expect(dirty).toBeGreaterThan(runs / 20);
  });

  it('says "no needle" for the request guard only when the bytes hold no whole form', () => {
    fc.assert(
      fc.property(fc.array(secretArb, { minLength: 1, maxLength: 2 }), fc.array(fc.tuple(fillerArb, fc.nat(), fc.constantFrom<Plant>('none', 'whole', 'prefix')), { minLength: 1, maxLength: 5 }), (secrets, plan) => {
        const forms = secrets.flatMap((s) => formsOf(s));
        const matcher = new RedactionMatcher(new NeedleSet(secrets.flatMap((s) => secretForms(s))), []);
        const text = plantedText(forms.map((f) => f.toString('latin1')), plan);
        const found: number[] = [];
        matcher.needles.findMatches(Buffer.from(text, 'latin1'), found);
        if (matcher.textHoldsNoNeedle(text, 'latin1', Infinity)) expect(found).toEqual([]);
      }),
      { numRuns: Number(process.env['FC_RUNS'] ?? 600) },
    );
  });

  it('with ten secrets: finds any form of any of them in a long line; past the pattern bounds leaves long lines to the byte scanner', () => {
    const secrets = Array.from({ length: 10 }, (_, i) => plainCanary(`many${i}`));
    const forms = secrets.flatMap((s) => formsOf(s));
    const matcher = new RedactionMatcher(new NeedleSet(forms), []);
    const line = `{"msg":"request","path":"/v1/${'x'.repeat(300)}"}`;
    expect(matcher.clearOfText(line, 'utf8')).toBe(true);
    for (const form of forms) expect(matcher.clearOfText(`${line.slice(0, 100)}${form.toString('latin1')}${line.slice(100)}`, 'utf8')).toBe(false);
    // 16 KiB of forms in all, or one form over 1 KiB (a JWT's): long lines go to the byte scanner, short
    // header values still take the one-pass check.
    const tooMany = new RedactionMatcher(new NeedleSet(Array.from({ length: 20 }, (_, i) => plainCanary(`more${i}`)).flatMap((s) => formsOf(s))), []);
    const tooLong = new RedactionMatcher(new NeedleSet(formsOf(`${plainCanary('jwt')}.${'e'.repeat(1200)}`)), []);
    for (const wide of [tooMany, tooLong]) {
      expect(wide.clearOfText(line, 'utf8')).toBe(false);
      expect(wide.clearOfText('application/json', 'latin1')).toBe(true);
    }
  });

  it('answers "clear" for clean ASCII lines of any length, and not for a secret, its start at the end, or a shape', () => {
    const secret = plainCanary('clear-of-text');
    const matcher = new RedactionMatcher(new NeedleSet(formsOf(secret)), RULES);
    const short = '{"status":200,"path":"/v1/models"}';
    const long = `{"request_id":"${'0'.repeat(36)}","path":"/v1/chat/completions","note":"${'lorem ipsum '.repeat(40)}"}`;
    for (const clean of [short, long, 'application/json; charset=utf-8', 'é clean', '']) expect(matcher.clearOfText(clean, 'utf8')).toBe(true);
    for (const line of [short, long]) {
      expect(matcher.clearOfText(`${line}${secret}`, 'utf8')).toBe(false);
      expect(matcher.clearOfText(`${line} ${secret.slice(0, 5)}`, 'utf8')).toBe(false);
      expect(matcher.clearOfText(`${line} ${Buffer.from(secret).toString('hex')}`, 'latin1')).toBe(false);
      expect(matcher.clearOfText(`${line} AKIAABCDEFGHIJKLMNOP`, 'latin1')).toBe(false);
    }
    // Three characters of a secret at the end are below the partial-masking minimum.
    expect(matcher.clearOfText(`${short} ${secret.slice(0, 3)}`, 'utf8')).toBe(true);
    // Latin-1 keeps only the low byte of U+0173 ("s"): such text goes to the byte scanner.
    expect(matcher.clearOfText('\u0173k-abc', 'latin1')).toBe(false);
    expect(matcher.clearOfText('\u0173k-abc', 'utf8')).toBe(true);
  });
});
