/**
 * Property tests of the streaming redactor: for random bodies with secrets planted in every encoding
 * and random chunkings, the output never contains a secret form and equals the input with exactly the
 * matched spans replaced, computed by a naive whole-body oracle independent of the scanner. With heads
 * (secretForms), a form cut short and followed by other text is masked from its head through as much
 * of the form as follows, then the run of key-like bytes and of bytes the form holds past its head (a
 * quote only escaped, no line break), up to the form's length (and the byte a trailing backslash
 * escapes), whatever the chunking.
 */
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { pushInChunks } from '../helpers/push-in-chunks.js';
import { NeedleSet, type SearchStrategy } from '../../src/redaction/needle-set.js';
import { PrefixFilter } from '../../src/redaction/prefix-filter.js';
import { MIN_MASKED_PARTIAL, RedactionMatcher } from '../../src/redaction/redaction-matcher.js';
import { formsOf, secretForms, type SecretForm } from '../../src/redaction/secret-forms.js';
import { REDACTION_MARKER, StreamRedactor } from '../../src/redaction/stream-redactor.js';

/**
 * What a piece's run goes on over (needle-set.ts): key-like bytes, and any byte its form holds past the
 * head but CR and LF, and a quote only after an odd number of backslashes (counted back to `from`).
 */
function isRunByte(input: Buffer, at: number, from: number, form: Buffer, head: number): boolean {
  const byte = input[at] as number;
  if (/[A-Za-z0-9\-_~+/=%\\]/.test(String.fromCharCode(byte))) return true;
  if (byte === 0x0d || byte === 0x0a || !form.subarray(head).includes(byte)) return false;
  if (byte !== 0x22) return true;
  let slashes = 0;
  while (at - slashes > from && input[at - slashes - 1] === 0x5c) slashes++;
  return slashes % 2 === 1;
}

/**
 * Whole-body reference: mask every occurrence of every form, every piece (a form's head where the whole
 * form is not: through as much of the form as follows, then the letters, digits, key punctuation and
 * bytes of the form past its head that follow, up to the form's length), plus a 4+ byte partial form at
 * the very end.
 */
function oracle(input: Buffer, headed: readonly SecretForm[]): Buffer {
  const forms = headed.map((form) => form.bytes);
  const mask = new Uint8Array(input.length);
  for (const { bytes: form, head } of headed) {
    const start = form.subarray(0, head);
    for (let at = input.indexOf(start); at !== -1; at = input.indexOf(start, at + 1)) {
      let end = at + form.length;
      if (!input.subarray(at, end).equals(form)) {
        const limit = Math.min(at + form.length, input.length);
        end = at + head;
        while (end < limit && input[end] === form[end - at]) end++;
        while (end < limit && isRunByte(input, end, at, form, head)) end++;
      }
      // A mask ending in an odd number of backslashes (from `at` on) takes the escaped byte after it.
      let slashes = 0;
      while (end - slashes > at && input[end - slashes - 1] === 0x5c) slashes++;
      if (slashes % 2 === 1 && end < input.length) end++;
      mask.fill(1, at, end);
    }
  }
  let partial = 0;
  for (const form of forms) {
    for (let length = Math.min(form.length - 1, input.length); length >= MIN_MASKED_PARTIAL; length--) {
      if (input.subarray(input.length - length).equals(form.subarray(0, length))) {
        partial = Math.max(partial, length);
        break;
      }
    }
  }
  if (partial > 0) mask.fill(1, input.length - partial);
  const parts: Buffer[] = [];
  let i = 0;
  while (i < input.length) {
    if (mask[i] === 1) {
      while (i < input.length && mask[i] === 1) i++;
      parts.push(REDACTION_MARKER);
    } else {
      const start = i;
      while (i < input.length && mask[i] === 0) i++;
      parts.push(input.subarray(start, i));
    }
  }
  return Buffer.concat(parts);
}

function redactInChunks(matcher: RedactionMatcher, input: Buffer, cuts: number[]): Buffer {
  return pushInChunks(new StreamRedactor(matcher), input, cuts);
}

// Quotes, commas, spaces and brackets too: a piece's run stops at them unless its form holds them.
const secretArb = fc.oneof(fc.stringMatching(/^[A-Za-z0-9_\-+/=:.~!$]{8,48}$/), fc.stringMatching(/^[A-Za-z0-9_\-+/=:.~!$" ,<}\n\\]{8,48}$/));
const fillerArb = fc.uint8Array({ minLength: 0, maxLength: 80 }).map((bytes) => Buffer.from(bytes));
const textFillerArb = fc.string({ maxLength: 60 }).map((s) => Buffer.from(s, 'utf8'));

const WHOLE_FORMS = (secret: string): SecretForm[] => formsOf(secret).map((bytes) => ({ bytes, head: bytes.length }));

for (const strategy of ['filter', 'indexOf', 'sampled'] as SearchStrategy[]) {
  describe(`stream redactor (${strategy} search)`, () => {
    // A 'filter' NeedleSet without WebAssembly falls back to indexOf: this run would repeat another.
    if (strategy === 'filter') it('has WebAssembly to run the filter', () => expect(PrefixFilter.available).toBe(true));
    for (const [what, formsWith] of [
      ['whole forms', WHOLE_FORMS],
      ['forms and pieces', secretForms],
    ] as const) {
      it(`equals the whole-body oracle for any chunking and leaks no form (${what})`, () => {
        fc.assert(
          fc.property(
            fc.array(secretArb, { minLength: 1, maxLength: 4 }),
            fc.array(fc.tuple(fc.oneof(fillerArb, textFillerArb), fc.nat(), fc.boolean()), { minLength: 1, maxLength: 8 }),
            fc.array(fc.nat(), { maxLength: 12 }),
            // Long inputs take the strategy's search, short ones the one-pass filter; 16,370 bytes of lead
            // put forms across the prefix filter's 16 KiB windows.
            fc.constantFrom(0, 1100, 16_370),
            (secrets, plan, cuts, lead) => {
              const headed = secrets.flatMap((s) => formsWith(s));
              const forms = headed.map((form) => form.bytes);
              // The sampled strategy needs >= 8-byte needles and heads, which secretForms guarantees.
              const matcher = new RedactionMatcher(new NeedleSet(headed, strategy), []);
              const pieces: Buffer[] = [Buffer.alloc(lead, 'q')];
              for (const [filler, pick, truncate] of plan) {
                pieces.push(filler);
                const form = forms[pick % forms.length] as Buffer;
                pieces.push(truncate ? form.subarray(0, Math.max(1, (pick % form.length) + 1)) : form);
              }
              const input = Buffer.concat(pieces);
              const output = redactInChunks(matcher, input, cuts);
              expect(output.equals(oracle(input, headed))).toBe(true);
              for (const form of forms) expect(output.includes(form)).toBe(false);
              // A whole value (header, buffered body) scanned once gives the same bytes.
              expect(new StreamRedactor(matcher).whole(input).equals(output)).toBe(true);
            },
          ),
          { numRuns: Number(process.env["FC_RUNS"] ?? 400) },
        );
      });
    }
  });
}

describe('stream redactor, targeted cases', () => {
  const secret = 'sk-canary-Ab3xQ9wLm2Pz7Rt5Kc';
  const matcher = new RedactionMatcher(new NeedleSet(formsOf(secret)), []);

  it('masks a secret split over three chunks, emitting nothing live early', () => {
    const redactor = new StreamRedactor(matcher);
    const a = redactor.push(Buffer.from('{"key":"sk-canary-'));
    expect(a.toString()).toBe('{"key":"');
    const b = redactor.push(Buffer.from('Ab3xQ9wLm'));
    expect(b.toString()).toBe('');
    const c = redactor.push(Buffer.from('2Pz7Rt5Kc"}'));
    expect(Buffer.concat([a, b, c, redactor.end()]).toString()).toBe('{"key":"[REDACTED]"}');
    expect(redactor.redactions).toBe(1);
  });

  it('holds nothing back when no partial match is live (SSE events pass at once)', () => {
    const redactor = new StreamRedactor(matcher);
    const event = Buffer.from('data: {"delta":"hello"}\n\n');
    expect(redactor.push(event).equals(event)).toBe(true);
    expect(redactor.held).toBe(0);
  });

  it('masks a 4+ byte partial secret when the stream ends, flushes a shorter one', () => {
    const long = new StreamRedactor(matcher);
    expect(Buffer.concat([long.push(Buffer.from('tail sk-ca')), long.end()]).toString()).toBe('tail [REDACTED]');
    const short = new StreamRedactor(matcher);
    expect(Buffer.concat([short.push(Buffer.from('tail sk-')), short.end()]).toString()).toBe('tail sk-');
  });

  it('finds base64 of a secret embedded at every alignment of a longer payload', () => {
    for (let shift = 0; shift < 3; shift++) {
      const payload = Buffer.concat([Buffer.alloc(shift, 0x7a), Buffer.from(`user:${secret}`), Buffer.from('tail')]).toString('base64');
      const redactor = new StreamRedactor(matcher);
      const out = Buffer.concat([redactor.push(Buffer.from(payload)), redactor.end()]).toString();
      expect(out).toContain('[REDACTED]');
      expect(redactor.redactions).toBeGreaterThan(0);
    }
  });
});
