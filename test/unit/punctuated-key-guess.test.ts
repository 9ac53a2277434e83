/**
 * A key that holds punctuation outside the run's alphabet past its head (".", "!", a quote, a space):
 * a piece's run used to go on over such a byte only where the key held it, so a guess of "." at each
 * offset answered where the key holds one, and the key read back one guess at a time wherever it held
 * such bytes (found by review; README Known limits said so). Now the run goes on over every byte the
 * key's form holds past its head, wherever it stands (a quote only escaped, as JSON writes it): what an
 * agent gets back depends on which bytes the key holds, never on where, but for a bare quote. Here the same echoes are redacted under the key and under a key with
 * the same head and the same bytes in another order, and must read the same, in every form an upstream
 * may echo the guess in.
 */
import { randomBytes } from 'node:crypto';
import { describe, expect, it } from 'vitest';
import { NeedleSet } from '../../src/redaction/needle-set.js';
import { RedactionMatcher } from '../../src/redaction/redaction-matcher.js';
import { publicPrefixOf, secretForms } from '../../src/redaction/secret-forms.js';
import { SseDeltaRedactor } from '../../src/redaction/sse-delta-redactor.js';
import { StreamRedactor } from '../../src/redaction/stream-redactor.js';
import { assertNoLeak } from '../helpers/assert-no-leak.js';

const HEAD_TEXT = 'sk-proj-Ab12Cd34';
const PUNCTUATION = '.!#" ,:@;*()';

/** A canary: the head, then random characters with each punctuation byte somewhere among them. */
function punctuatedKey(): string {
  const chars = [...randomBytes(30).toString('base64url').replace(/[-_]/g, 'q'), ...PUNCTUATION];
  for (let i = chars.length - 1; i > 0; i--) {
    const j = randomBytes(1)[0]! % (i + 1);
    [chars[i], chars[j]] = [chars[j]!, chars[i]!];
  }
  return HEAD_TEXT + chars.join('');
}

/** The same head and bytes, every character past the head moved (a rotation by one). */
function moved(key: string): string {
  const tail = key.slice(HEAD_TEXT.length);
  return HEAD_TEXT + tail.slice(1) + tail[0];
}

const KEY = punctuatedKey();
const OTHER = moved(KEY);
const redactors = [KEY, OTHER].map((key) => new RedactionMatcher(new NeedleSet(secretForms(key)), []));
const seen: string[] = [];

function redact(matcher: RedactionMatcher, text: string): string {
  const out = new StreamRedactor(matcher).whole(Buffer.from(text, 'utf8')).toString('utf8');
  seen.push(out);
  return out;
}

/** Where an upstream may echo what the agent sent: plain text, a JSON string, a query, \u escapes. */
const ECHOES: Record<string, (sent: string) => string> = {
  text: (sent) => `echo: ${sent}zz0 end`,
  json: (sent) => JSON.stringify({ m: `${sent}zz0`, n: 1 }),
  query: (sent) => `GET /v1?q=${encodeURIComponent(`${sent}zz0`)}&n=1`,
  unicode: (sent) => `{"m":"${[...sent].map((c) => `\\u${c.charCodeAt(0).toString(16).padStart(4, '0')}`).join('')}zz0"}`,
};

describe('guesses at a key holding punctuation past its head', () => {
  it('the key has a public prefix, a head, and punctuation that differs in place from the moved key', () => {
    expect(publicPrefixOf(KEY)).toBe('sk-proj-');
    const differing = [...KEY].filter((c, i) => PUNCTUATION.includes(c) && OTHER[i] !== c);
    expect(differing.length).toBeGreaterThan(0);
  });

  it('an echo of the head and a guess at each next character reads the same under both keys', () => {
    const guesses = `${PUNCTUATION}aZ9$`;
    for (let at = HEAD_TEXT.length; at < KEY.length; at += 1) {
      for (const guess of guesses) {
        for (const [name, echo] of Object.entries(ECHOES)) {
          // A bare quote (or line break) goes on only where the key goes on with it (needle-set.ts
          // runTableOf): a plain-text echo holding one still tells whether what comes before it matched;
          // escaped (JSON, a query, \u) it does not.
          if (name === 'text' && (KEY.slice(0, at) + guess).includes('"')) continue;
          const text = echo(KEY.slice(0, at) + guess);
          expect(redact(redactors[0]!, text), `${name} at ${at}, guess ${guess}`).toBe(redact(redactors[1]!, text));
        }
      }
    }
  });

  it('a piece in a JSON string keeps the quote that closes it: the body parses', () => {
    for (let at = HEAD_TEXT.length + 1; at < KEY.length; at += 1) {
      // Unless the key goes on with a quote there: the closing quote then matches it, and is masked.
      if (KEY[at] === '"') continue;
      const out = redact(redactors[0]!, JSON.stringify({ m: KEY.slice(0, at), n: 1 }));
      expect((JSON.parse(out) as { n: number }).n, out).toBe(1);
    }
  });

  it('the whole key, and a piece of it, are masked in every echo', () => {
    for (const echo of Object.values(ECHOES)) {
      for (const sent of [KEY, KEY.slice(0, -5), KEY.slice(0, HEAD_TEXT.length + 3)]) {
        const out = redact(redactors[0]!, echo(sent));
        expect(out).toContain('[REDACTED');
        expect(out).not.toContain(sent.slice(HEAD_TEXT.length - 4));
      }
    }
    assertNoLeak([KEY, OTHER], [{ name: 'answers', text: seen.join('\n') }]);
  });
});

// Found by review of the change above, which first let a piece's run go over every byte its key held:
// a key holding a quote ran over the quote closing a JSON string (the SSE event no longer parsed, and
// its other fields were not joined across events, so a key split in another field showed), and a value
// kept with its trailing newline ran over the line breaks after every piece of it (two events became one).
describe('what a piece of a key holding a quote or a newline leaves in place', () => {
  const head = HEAD_TEXT.length;
  const pipeline = (key: string, chunks: readonly string[]): string => {
    const matcher = new RedactionMatcher(new NeedleSet(secretForms(key)), []);
    const bytes = new StreamRedactor(matcher);
    const events = new SseDeltaRedactor(matcher.needles, 'sse');
    const out = chunks.map((chunk) => events.push(bytes.push(Buffer.from(chunk, 'utf8'))));
    out.push(events.push(bytes.end()), events.end());
    return Buffer.concat(out).toString('utf8');
  };
  const event = (data: unknown): string => `data: ${JSON.stringify(data)}\n\n`;

  it('a cut piece in one field of an event leaves the event parsing, and a key split in another field is joined', () => {
    const key = `${HEAD_TEXT}${randomBytes(6).toString('hex')}"${randomBytes(9).toString('hex')}`;
    const out = pipeline(key, [event({ a: `cut: ${key.slice(0, head + 2)}`, b: key.slice(0, 12) }), event({ b: key.slice(12) })]);
    expect(out).not.toContain(key.slice(-10));
    for (const line of out.split('\n').filter((l) => l.startsWith('data: '))) expect(() => JSON.parse(line.slice(6)) as unknown, line).not.toThrow();
    assertNoLeak([key], [{ name: 'events', text: out }]);
  });

  it('a piece of a value kept with its trailing newline stops at the line break', () => {
    const key = `${HEAD_TEXT}${randomBytes(12).toString('hex')}\n`;
    const matcher = new RedactionMatcher(new NeedleSet(secretForms(key)), []);
    const out = new StreamRedactor(matcher).whole(Buffer.from(`data: ${key.slice(0, head + 2)}\n\ndata: next\n\n`)).toString('utf8');
    expect(out).toBe('data: [REDACTED]\n\ndata: next\n\n');
  });
});
