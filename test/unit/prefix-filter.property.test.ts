/**
 * The WebAssembly prefix filter may report positions where no prefix starts, never miss one where one
 * does; and a RuleSet that searches with it answers exactly as the one that searches with its RegExp.
 * Data is drawn from a small alphabet (and bytes above 0x7f) so prefixes occur often, and is long
 * enough to cross the filter's 16 KiB windows, with prefixes planted across the window ends. A matcher
 * searching secrets and shapes in one joint pass answers as the two separate searches. Where
 * WebAssembly cannot run, the older searches redact the same.
 */
import { spawnSync } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { BUILTIN_RULE_NAMES, BUILTIN_RULES, RuleSet, customRule, type KeyRule } from '../../src/redaction/key-patterns.js';
import { NeedleSet } from '../../src/redaction/needle-set.js';
import { PrefixFilter } from '../../src/redaction/prefix-filter.js';
import { RedactionMatcher } from '../../src/redaction/redaction-matcher.js';
import { secretForms } from '../../src/redaction/secret-forms.js';
import { assertNoLeak } from '../helpers/assert-no-leak.js';
import { plainCanary } from '../helpers/canary.js';

const RUNS = Number(process.env['FC_RUNS'] ?? 2000);
const WINDOW = 16 * 1024;
const alphabet = [0x61, 0x62, 0x2d, 0x5f, 0x41, 0x20, 0xc3, 0xa9, 0x00, 0xff];
const byteArb = fc.constantFrom(...alphabet);
const prefixArb = fc.uint8Array({ minLength: 1, maxLength: 6 }).map((bytes) => bytes.map((b) => alphabet[b % alphabet.length] as number));

function occurrences(data: Uint8Array, prefixes: readonly Uint8Array[]): number[] {
  const found = new Set<number>();
  const bytes = Buffer.from(data.buffer, data.byteOffset, data.length);
  for (const prefix of prefixes) for (let at = bytes.indexOf(prefix); at !== -1; at = bytes.indexOf(prefix, at + 1)) found.add(at);
  return [...found].sort((a, b) => a - b);
}

/** `length` bytes of `fill`, with each prefix written at each of the positions. */
function planted(length: number, fill: Uint8Array, prefixes: readonly Uint8Array[], positions: readonly number[]): Uint8Array {
  const data = new Uint8Array(length);
  for (let i = 0; i < length; i++) data[i] = fill[i % fill.length] as number;
  positions.forEach((position, i) => {
    const prefix = prefixes[i % prefixes.length] as Uint8Array;
    data.set(prefix.subarray(0, Math.max(0, length - position)), Math.min(position, length));
  });
  return data;
}

describe('prefix filter', () => {
  it('reports every position where a prefix starts, ascending, inside the data', () => {
    fc.assert(
      fc.property(
        fc.array(prefixArb, { minLength: 1, maxLength: 12 }),
        fc.uint8Array({ minLength: 1, maxLength: 64 }).map((bytes) => bytes.map((b) => alphabet[b % alphabet.length] as number)),
        fc.oneof(fc.nat(200), fc.integer({ min: WINDOW - 40, max: WINDOW + 40 }), fc.integer({ min: 2 * WINDOW - 8, max: 2 * WINDOW + 8 })),
        fc.array(fc.oneof(fc.nat(2 * WINDOW + 8), fc.integer({ min: WINDOW - 7, max: WINDOW + 1 })), { maxLength: 8 }),
        (prefixes, fill, length, positions) => {
          const filter = PrefixFilter.create(prefixes);
          expect(filter).not.toBeNull();
          const data = planted(length, fill, prefixes, positions);
          const candidates: number[] = [];
          filter?.candidates(data, candidates);
          const set = new Set(candidates);
          expect(occurrences(data, prefixes).filter((at) => !set.has(at))).toEqual([]);
          expect(candidates.every((at, i) => at >= 0 && at < data.length && (i === 0 || at > (candidates[i - 1] as number)))).toBe(true);
        },
      ),
      { numRuns: Math.max(50, RUNS / 10) },
    );
  });

  it('finds a prefix cut by every window end, and reports few false candidates in text', () => {
    const prefixes = ['sk-', 'gh' + 'p_', 'AK' + 'IA', '-----BEGIN '].map((p) => Buffer.from(p));
    const filter = PrefixFilter.create(prefixes) as PrefixFilter;
    const text = Buffer.from('The quick brown fox jumps over the lazy dog; {"id":"chatcmpl-9","object":"chat.completion"} '.repeat(2000));
    for (const offset of [-10, -3, -2, -1, 0, 1, 2]) {
      const data = Buffer.from(text);
      for (const window of [WINDOW, 2 * WINDOW, 3 * WINDOW]) prefixes[(window / WINDOW) % prefixes.length]?.copy(data, window + offset);
      const candidates: number[] = [];
      filter.candidates(data, candidates);
      const set = new Set(candidates);
      const found = occurrences(data, prefixes);
      expect(found.filter((at) => !set.has(at))).toEqual([]);
      expect(found.length).toBeGreaterThanOrEqual(3);
      // A filter that let most positions through would be correct and useless.
      expect(candidates.length).toBeLessThan(data.length / 100);
    }
  });

  it('shares its 8 buckets among more first bytes without missing any', () => {
    const prefixes = 'abcdefghijkl'.split('').map((c, i) => Buffer.from(`${c}${String.fromCharCode(0x80 + i)}_`, 'latin1'));
    const filter = PrefixFilter.create(prefixes) as PrefixFilter;
    const data = Buffer.concat(prefixes.flatMap((prefix) => [Buffer.from(' x '), prefix]));
    const candidates: number[] = [];
    filter.candidates(data, candidates);
    expect(occurrences(data, prefixes)).toHaveLength(12);
    expect(occurrences(data, prefixes).filter((at) => !candidates.includes(at))).toEqual([]);
  });

  it('an empty Buffer has no candidate', () => {
    const out: number[] = [];
    PrefixFilter.create([Buffer.from('sk-')])?.candidates(Buffer.alloc(0), out);
    expect(out).toEqual([]);
  });
});

describe('RuleSet: the filter search answers as the RegExp search', () => {
  // Without WebAssembly both sides would take the same fallback and agree vacuously.
  it('runs where WebAssembly does', () => expect(PrefixFilter.available).toBe(true));
  const pieces = ['aa_', 'hh_', 'ii_', 'jj_', 'sk-', 'sk_' + 'live_', 'gh' + 'p_', 'github_' + 'pat_', 'xox' + 'b-', 'AK' + 'IA', 'AI' + 'za', '-----BEGIN ', 'RSA PRIVATE KEY-----', '-----END ', 'itk_', 'é'];
  const pieceArb = fc.oneof(fc.constantFrom(...pieces), fc.stringMatching(/^[A-Za-z0-9_-]{1,40}$/), fc.constantFrom(' ', '"', '\n', 'a', '-'), fc.string({ maxLength: 8 }));
  const ruleSets: Array<[string, KeyRule[]]> = [
    ['built-in', BUILTIN_RULE_NAMES.map((name) => BUILTIN_RULES[name])],
    ['built-in + custom', [...BUILTIN_RULE_NAMES.map((name) => BUILTIN_RULES[name]), customRule('internal', 'itk_', 'A-Za-z0-9', 8, 64), customRule('accent', 'é-', 'a-z', 2, 10)]],
    // More first bytes than the filter's 8 buckets: buckets are shared.
    ['ten first bytes', 'abcdefghij'.split('').map((c, i) => customRule(`r${i}`, `${c}${c}_`, 'A-Za-z0-9', 3, 20))],
  ];

  for (const [label, rules] of ruleSets) {
    it(`${label}: same matches and held partial`, () => {
      const simd = new RuleSet(rules);
      const plain = new RuleSet(rules, { simd: false });
      fc.assert(
        fc.property(fc.array(pieceArb, { minLength: 1, maxLength: 40 }), fc.boolean(), fc.constantFrom(-1, 0x41, 0x20), fc.nat(3), (parts, final, before, copies) => {
          const unit = Buffer.from(parts.join(''), 'utf8');
          // Copies push the text across the 16 KiB windows.
          const data = copies === 0 ? unit : Buffer.concat([Buffer.alloc(WINDOW - 5 - (unit.length % 7), 0x20), ...Array.from({ length: copies }, () => unit)]);
          const a: number[] = [];
          const b: number[] = [];
          expect(simd.scan(data, before, final, a)).toEqual(plain.scan(data, before, final, b));
          expect(a).toEqual(b);
        }),
        { numRuns: Math.max(50, RUNS / 4) },
      );
    });
  }
});

describe('RedactionMatcher: one joint filter pass answers as the two separate searches', () => {
  // Without WebAssembly both sides would take the same fallback and agree vacuously.
  it('runs where WebAssembly does', () => expect(PrefixFilter.available).toBe(true));
  it('same spans and held bytes for secrets and key shapes together', () => {
    const rules = [...BUILTIN_RULE_NAMES.map((name) => BUILTIN_RULES[name]), customRule('internal', 'itk_', 'A-Za-z0-9', 8, 64)];
    fc.assert(
      fc.property(
        fc.array(fc.stringMatching(/^[A-Za-z0-9_\-+/=]{8,40}$/), { minLength: 1, maxLength: 3 }),
        fc.array(fc.tuple(fc.oneof(fc.constantFrom('sk-', 'gh' + 'p_', 'AK' + 'IA', '-----BEGIN ', 'itk_', ' ', '\n', 'x'), fc.stringMatching(/^[A-Za-z0-9_-]{0,30}$/)), fc.nat(), fc.nat(3)), { minLength: 1, maxLength: 12 }),
        fc.constantFrom(1100, WINDOW - 20),
        fc.boolean(),
        (secrets, plan, lead, final) => {
          // With heads: a form cut short mid-data is a piece both searches must settle alike.
          const headed = secrets.flatMap((secret) => secretForms(secret));
          const forms = headed.map((form) => form.bytes);
          const joint = new RedactionMatcher(new NeedleSet(headed), rules);
          const separate = new RedactionMatcher(new NeedleSet(headed), rules, { jointSearch: false });
          const pieces: Buffer[] = [Buffer.alloc(lead, ' ')];
          for (const [text, pick, cut] of plan) {
            pieces.push(Buffer.from(text));
            const form = forms[pick % forms.length] as Buffer;
            // Whole, or cut short at the end (a partial to hold), or absent.
            if (cut === 0) pieces.push(form);
            else if (cut === 1) pieces.push(form.subarray(0, Math.max(1, pick % form.length)));
          }
          const data = Buffer.concat(pieces);
          expect(new NeedleSet(forms).filters(data)).toBe(true);
          const a: number[] = [];
          const b: number[] = [];
          expect(joint.scan(data, -1, final, a)).toBe(separate.scan(data, -1, final, b));
          expect(spans(a)).toEqual(spans(b));
        },
      ),
      { numRuns: Math.max(50, RUNS / 4) },
    );
  });
});

/** [start, end) pairs, sorted: the searches may list them in another order. */
function spans(flat: readonly number[]): string[] {
  const pairs: string[] = [];
  for (let i = 0; i < flat.length; i += 2) pairs.push(`${flat[i]}-${flat[i + 1]}`);
  return pairs.sort();
}

describe('without WebAssembly (node --jitless)', () => {
  it('redacts with the RegExp and indexOf searches instead', () => {
    // The built files, as `npm test` builds before it runs the tests.
    const script = `
      const { formsOf } = await import('./dist/redaction/secret-forms.js');
      const { NeedleSet } = await import('./dist/redaction/needle-set.js');
      const { RedactionMatcher } = await import('./dist/redaction/redaction-matcher.js');
      const { StreamRedactor } = await import('./dist/redaction/stream-redactor.js');
      const { BUILTIN_RULES } = await import('./dist/redaction/key-patterns.js');
      const needles = new NeedleSet(formsOf(process.env.SECRET));
      const redactor = new StreamRedactor(new RedactionMatcher(needles, [BUILTIN_RULES.github]));
      const body = Buffer.concat([Buffer.alloc(3000, 32), Buffer.from(process.env.SECRET + ' gh' + 'p_' + 'a'.repeat(36) + ' ok')]);
      const out = Buffer.concat([redactor.push(body), redactor.end()]).toString();
      console.log(JSON.stringify({ wasm: typeof WebAssembly, strategy: needles.strategy, tail: out.slice(3000) }));
    `;
    const secret = plainCanary('jitless');
    const result = spawnSync(process.execPath, ['--jitless', '--input-type=module', '-e', script], { cwd: fileURLToPath(new URL('../..', import.meta.url)), env: { ...process.env, SECRET: secret }, encoding: 'utf8', timeout: 20_000 });
    expect(result.status, result.stderr).toBe(0);
    const answer = JSON.parse(result.stdout) as { wasm: string; strategy: string; tail: string };
    expect(answer).toEqual({ wasm: 'undefined', strategy: 'indexOf', tail: '[REDACTED] [REDACTED] ok' });
    assertNoLeak([secret], [{ name: 'redacted output', text: result.stdout }]);
  });
});
