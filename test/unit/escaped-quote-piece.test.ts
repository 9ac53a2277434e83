/**
 * A masked piece of a key that ends in the backslash of a JSON escape (`\"`): the escaped byte is
 * masked with it, so the string stays whole and the body parses (found by review: the quote was left
 * to close the string early). The first fix left the backslash visible, counted past the bytes that
 * matched the key, which told a right guess at the key's next character from a wrong one through the
 * key's `\u`-escaped form (found by the next review: the whole key read back a character at a time).
 * Here: every guess reads the same, the body parses, and the answer does not depend on the chunking.
 */
import { randomBytes } from 'node:crypto';
import { describe, expect, it } from 'vitest';
import { NeedleSet } from '../../src/redaction/needle-set.js';
import { RedactionMatcher } from '../../src/redaction/redaction-matcher.js';
import { publicPrefixOf, secretForms } from '../../src/redaction/secret-forms.js';
import { StreamRedactor } from '../../src/redaction/stream-redactor.js';
import { assertNoLeak } from '../helpers/assert-no-leak.js';

/** A canary with a public prefix and a head: the prefix, then 8 characters of mixed kinds. */
const KEY = `sk-proj-Ab12Cd34${randomBytes(18).toString('base64url').replace(/[-_]/g, 'q')}`;
const HEAD = 'sk-proj-Ab12Cd34'.length;
const ALPHABET = 'ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_';
const matcher = new RedactionMatcher(new NeedleSet(secretForms(KEY)), []);
const seen: string[] = [];

function whole(text: string): string {
  const out = new StreamRedactor(matcher).whole(Buffer.from(text, 'latin1')).toString('latin1');
  seen.push(out);
  return out;
}

function streamed(text: string, cuts: readonly number[]): string {
  const redactor = new StreamRedactor(matcher);
  const parts: Buffer[] = [];
  let from = 0;
  for (const cut of [...cuts, text.length]) {
    parts.push(redactor.push(Buffer.from(text.slice(from, cut), 'latin1')));
    from = cut;
  }
  parts.push(redactor.end());
  const out = Buffer.concat(parts).toString('latin1');
  seen.push(out);
  return out;
}

/** Every character as a JSON \u escape, as some encoders write every non-alphanumeric (or all). */
const escaped = (text: string): string => [...text].map((c) => `\\u${c.charCodeAt(0).toString(16).padStart(4, '0')}`).join('');

describe('a masked piece before a JSON \\"', () => {
  it('the key has a public prefix and a head', () => {
    expect(publicPrefixOf(KEY)).toBe('sk-proj-');
  });

  it('a right and a wrong guess at each next character read the same, in the plain and the \\u-escaped form', () => {
    for (let at = HEAD; at < KEY.length - 1; at += 1) {
      const known = KEY.slice(0, at);
      const right = KEY[at] as string;
      const wrong = [...ALPHABET].filter((c) => c !== right).slice(0, 3);
      for (const form of [(t: string) => t, escaped]) {
        const answers = new Set([right, ...wrong].map((guess) => whole(`{"m":"${form(known + guess)}\\" x"}`)));
        expect(answers.size, `at ${at}`).toBe(1);
      }
    }
    assertNoLeak([KEY], [{ name: 'answers', text: seen.join('\n') }]);
  });

  it('the body still parses, the piece and the escaped quote masked', () => {
    const body = whole(JSON.stringify({ msg: `got ${KEY.slice(0, -3)}" done`, n: 1 }));
    const parsed = JSON.parse(body) as { msg: string; n: number };
    expect(parsed.n).toBe(1);
    expect(parsed.msg).toMatch(/^got \[REDACTED[^\]]*\] done$/);
    assertNoLeak([KEY], [{ name: 'body', text: body }]);
  });

  it('whole and streamed, cut anywhere, give the same bytes', () => {
    for (const text of [`{"m":"${KEY.slice(0, -1)}\\" done"}`, `{"m":"${KEY.slice(0, -3)}\\\\\\" done"}`, `{"m":"${escaped(KEY.slice(0, 20))}\\" x"}`]) {
      const expected = whole(text);
      for (let cut = 1; cut < text.length; cut += 1) expect(streamed(text, [cut]), `cut at ${cut}`).toBe(expected);
    }
    assertNoLeak([KEY], [{ name: 'answers', text: seen.join('\n') }]);
  });
});
