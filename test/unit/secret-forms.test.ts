/**
 * The forms of a secret (src/redaction/secret-forms.ts) include what common libraries write when they
 * echo it: found by review, a secret with one of these characters, echoed this way, matched no form and
 * reached the agent whole. Each echo is scrubbed by the real catalogue, in a JSON body as an upstream
 * would send it.
 */
import { randomBytes } from 'node:crypto';
import { describe, expect, it } from 'vitest';
import { Credential } from '../../src/credentials/credential.js';
import { SecretCatalog } from '../../src/redaction/secret-catalog.js';
import { formsOf, PIECE_CHARS, publicPrefixOf, secretForms } from '../../src/redaction/secret-forms.js';

const echoes: Array<[string, string, string]> = [
  ["Go's json.Marshal (<, >, & as \\u00XX)", 'Xk7&q-Zr92!mP<z>', 'Xk7\\u0026q-Zr92!mP\\u003cz\\u003e'],
  ["Go's json.Marshal, upper-case hex", 'Xk7<q-Zr92!mP', 'Xk7\\u003Cq-Zr92!mP'],
  ["Python's json.dumps (ensure_ascii: only non-ASCII escaped)", 'Pässwort-2024!x', 'P\\u00e4sswort-2024!x'],
  ["PHP's json_encode (non-ASCII escaped, and \\/)", 'Pä/sswort-2024!x', 'P\\u00e4\\/sswort-2024!x'],
  ["Go's QueryEscape, Python's quote (only unreserved left)", "Tr0ub4dor!x9Q'z(1)*", 'Tr0ub4dor%21x9Q%27z%281%29%2A'],
  ['the same, lower-case hex', 'Tr0ub4dor*x9Qz', 'Tr0ub4dor%2ax9Qz'],
  // Found by review: form encoding (space as +, ~ escaped) matched no form.
  ['WHATWG URLSearchParams and Java URLEncoder (form encoding)', 'AbcDEF8Q~xyz+/=a b', new URLSearchParams({ k: 'AbcDEF8Q~xyz+/=a b' }).toString().slice(2)],
  ["Python's quote_plus (~ kept, space as +)", 'AbcDEF8Q~xyz/=a b', 'AbcDEF8Q~xyz%2F%3Da+b'],
  ["PHP's urlencode (~ escaped, * escaped)", 'Ab*cD~ef 9Qz', 'Ab%2AcD%7Eef+9Qz'],
  // Found by review: Python's quote keeps "/" by default (safe='/'), so a key with "/" and "+" or "=" in
  // it (base64-style keys, AWS secret keys) matched no form.
  ["Python's quote (default safe='/': / kept)", 'Xy7/Kp+2Qw9zLm4N/Rt5Vb8=Hj3', 'Xy7/Kp%2B2Qw9zLm4N/Rt5Vb8%3DHj3'],
  // Found by review: the README promises both hex cases for every percent style and for the \u escapes,
  // but "/" kept came in upper case only, and PHP's style (non-ASCII escaped, and \/) in lower case only.
  // A key whose "/" falls within its first 8 characters (no head of another form to catch a piece)
  // matched nothing and reached the agent whole.
  ["the same, lower-case hex", 'Xy/7Kp+2Qw9zLm4N/Rt5Vb8=Hj3', 'Xy/7Kp%2b2Qw9zLm4N/Rt5Vb8%3dHj3'],
  ["PHP's style, upper-case hex", 'Pä/sswort-2024!x', 'P\\u00E4\\/sswort-2024!x'],
];

describe('forms of a secret as libraries echo it', () => {
  it.each(echoes)('%s', (_style, secret, echoed) => {
    expect(formsOf(secret).map((form) => form.toString('utf8'))).toContain(echoed);
    const catalog = new SecretCatalog();
    catalog.remember(new Credential('env:LIBRARY_KEY', secret));
    const scrubbed = catalog.scrub(`{"echo":"${echoed}","ok":true}`);
    expect(scrubbed).toBe('{"echo":"[REDACTED]","ok":true}');
  });
});

describe('heads: what a piece of a form must hold to be masked', () => {
  const jwt = `eyJhbGciOiJSUzI1NiJ9.eyJpc3MiOiJodHRwczovL2lkcC5leGFtcGxlIn0.${'Q7'.repeat(10)}x7Kp2Zr9mWq4Tv`;
  it.each([
    ['a vendor prefix in lower-case words', 'sk-proj-Zr92mPq7XkLw4Tb8', 'sk-proj-'],
    ['several words and a version', 'sk-ant-api03-Zr92mPq7XkLw4Tb8', 'sk-ant-api03-'],
    ['a dotted prefix (Vault)', 'hvs.Ab3dE5gH7jK9mN1pQ3sT', 'hvs.'],
    ['a built-in shape prefix in capitals', 'AKIAZR92MPQ7XKLW4TB8', 'AKIA'],
    ["a JWT: header and claims are the issuer's", jwt, jwt.slice(0, jwt.lastIndexOf('.') + 1)],
    ['no prefix: a random value', 'Zr92mPq7XkLw4Tb8Vn3c', ''],
    ['capitals or digits first are not a word prefix', 'Ab-Zr92mPq7XkLw4Tb8', ''],
    ['an unlisted vendor prefix counts until 8 characters hold two of each of two kinds', 'acme_live_Zr92mPq7XkLw', 'acme_l'],
  ])('%s', (_what, secret, prefix) => {
    expect(publicPrefixOf(secret)).toBe(prefix);
    const raw = secretForms(secret).find((form) => form.bytes.toString('utf8') === secret);
    expect(raw?.head).toBe(prefix.length + PIECE_CHARS);
  });

  it.each([
    ['a passphrase', 'correct horse battery staple', 'Your answer is correct and the result is final.'],
    ['words and a year', 'administrator-password-2024', '{"role":"administrator"}'],
    ['a number', '12345678901234567890', '{"id":1234567890123,"n":12345678}'],

  ])('%s has no head: eight characters of one kind are in ordinary text (found by review)', (_what, secret, text) => {
    expect(publicPrefixOf(secret)).toBeNull();
    for (const form of secretForms(secret)) expect(form.head).toBe(form.bytes.length);
    const catalog = new SecretCatalog();
    catalog.remember(new Credential('env:WORDY_KEY', secret));
    expect(catalog.scrub(text)).toBe(text);
    expect(catalog.scrub(`x ${secret} y`)).toBe('x [REDACTED] y');
  });

  it.each([
    ['a capitalised word and a number (found by review)', 'Password123!', 'Password12', '{"error":"Password must be set","hint":"Passwords expire"}'],
    ['a word and a year', 'Postgres2024!', 'Postgres20', 'Connect to Postgres 16 with Postgres2 drivers'],
  ])('%s: the head starts where two of each of two kinds do, so the word alone is left', (_what, secret, head, text) => {
    const raw = secretForms(secret).find((form) => form.bytes.toString('utf8') === secret);
    expect(raw?.bytes.subarray(0, raw.head).toString('utf8')).toBe(head);
    const catalog = new SecretCatalog();
    catalog.remember(new Credential('env:WORD_KEY', secret));
    expect(catalog.scrub(text)).toBe(text);
    expect(catalog.scrub(`{"p":"${head}zz"}`)).toBe('{"p":"[REDACTED]"}');
  });

  it.each([
    ['pasted with a leading space', (random: string) => ` sk-proj-${random}`],
    ['with punctuation every escaping form writes long', (random: string) => `${random.slice(0, 2)}@${random.slice(2, 4)}/${random.slice(4)}`],
  ])('heads hold characters of the secret in every form, %s (found by review: a head could be public characters alone)', (_what, shape) => {
    const keys = Array.from({ length: 40 }, () => shape(randomBytes(18).toString('base64url')));
    for (const [i, key] of keys.entries()) {
      const heads = secretForms(key)
        .filter((form) => form.head < form.bytes.length)
        .map((form) => form.bytes.subarray(0, form.head));
      for (const other of keys.slice(i + 1)) {
        for (const form of secretForms(other)) expect(heads.some((head) => form.bytes.subarray(0, head.length).equals(head))).toBe(false);
      }
    }
  });

  it('never starts a head between the halves of a surrogate pair (found by the scrub property test: the prefix is encoded alone)', () => {
    const secret = 'a\u{1F600}AbcdefGhij2kLm';
    expect(() => secretForms(secret)).not.toThrow();
    const prefix = publicPrefixOf(secret);
    expect(prefix).toBe('a\u{1F600}');
  });

  it('is counted in characters of the secret, whatever bytes the form writes a character as', () => {
    const secret = 'Zr92mPq7XkLw4Tb8Vn3c';
    const headOf = (text: string): number | undefined => secretForms(secret).find((form) => form.bytes.toString('utf8') === text)?.head;
    expect(headOf(Buffer.from(secret).toString('hex'))).toBe(2 * PIECE_CHARS);
    expect(headOf([...secret].map((ch) => `%${ch.charCodeAt(0).toString(16).toUpperCase()}`).join(''))).toBe(3 * PIECE_CHARS);
    expect(headOf([...secret].map((ch) => `\\u${ch.charCodeAt(0).toString(16).padStart(4, '0')}`).join(''))).toBe(6 * PIECE_CHARS);
  });

  it('is the whole form when the secret has no more than PIECE_CHARS characters past its prefix', () => {
    for (const form of secretForms('AKIAZR92MPQ7')) expect(form.head).toBe(form.bytes.length);
    for (const form of secretForms('Zr92mPq7')) expect(form.head).toBe(form.bytes.length);
  });

  it('masks a piece cut short in a body, through the key-like bytes after it, and keeps the vendor prefix alone', () => {
    const secret = 'sk-proj-Zr92mPq7XkLw4Tb8Vn3c';
    const catalog = new SecretCatalog();
    catalog.remember(new Credential('env:PIECE_KEY', secret));
    expect(catalog.scrub(`<p>GET /v1?key=${secret.slice(0, 20)}...</p>`)).toBe('<p>GET /v1?key=[REDACTED]...</p>');
    expect(catalog.scrub(`{"key":"${secret.slice(0, 16)}","n":1}`)).toBe('{"key":"[REDACTED]","n":1}');
    // A right and a wrong next character read the same: the marker's extent answers no guess.
    expect(catalog.scrub(`{"q":"${secret.slice(0, 16)}Qzz"}`)).toBe('{"q":"[REDACTED]"}');
    // Fewer than PIECE_CHARS past the prefix, or the prefix alone (an SDK's error text), stay.
    const advice = `use a key like ${secret.slice(0, 15)}, not sk-proj- alone`;
    expect(catalog.scrub(advice)).toBe(advice);
    // The run stops at what closes a JSON string or separates fields (above), except for a key that
    // holds those characters past its head: there it goes on over them wherever they stand, up to the
    // key's length, so a guess cannot tell where the key holds one (a bare quote aside). Other
    // punctuation still ends it.
    const quoted = new SecretCatalog();
    const odd = 'Zr92mPq7Xk,"Lw 4Tb8Vn3c';
    quoted.remember(new Credential('env:ODD_KEY', odd));
    expect(quoted.scrub('a=Zr92mPq7Xz, b=1')).toBe('a=[REDACTED]');
    expect(quoted.scrub('a=Zr92mPq7Xk,"Lw 4T, b=1')).toBe('a=[REDACTED]');
    expect(quoted.scrub('a=Zr92mPq7Xz. b=1')).toBe('a=[REDACTED]. b=1');
    // A bare quote is the one exception: it goes on only where the key does, so a JSON string keeps
    // the quote that closes it.
    expect(quoted.scrub('{"q":"Zr92mPq7Xz","n":1}')).toBe('{"q":"[REDACTED]","n":1}');
    // A base64 core of the key cut short, as an echoed Basic header would be: the characters that
    // encode "user:" are not the key's and stay.
    const basic = Buffer.from(`user:${secret}`).toString('base64');
    expect(catalog.scrub(`auth=${basic.slice(0, 30)}; done`)).toBe(`auth=${basic.slice(0, 7)}[REDACTED]; done`);
  });
});
