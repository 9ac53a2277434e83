/**
 * The byte strings a secret can appear as when an upstream hands it back: raw; base64 in the standard
 * and URL alphabets at each of the three alignments it can have inside a longer payload (RFC 4648 4/5);
 * percent-encoded with upper- and lower-case hex, minimally (encodeURIComponent), with only RFC 3986's
 * unreserved characters left (Go's QueryEscape, Python's quote, PHP's rawurlencode also escape
 * !'()*) and fully (RFC 3986 2.1); JSON-escaped as JSON.stringify writes it, with "\/" (RFC 8259 7
 * allows it; PHP writes it), with only <, >, & and U+2028/U+2029 as \uXXXX (Go's json.Marshal), with
 * only non-ASCII as \uXXXX (Python's ensure_ascii, PHP's json_encode, also with "\/"), with every
 * non-alphanumeric character as \uXXXX and with every character as \uXXXX, each in both hex cases;
 * and hex of the UTF-8 bytes in both cases. The library styles were found missing by review: a secret
 * with one of those characters, echoed by such an upstream, matched no form.
 *
 * Base64 cores holding "+" or "/" also come JSON-escaped ("\/") and percent-encoded (%2B, %2F).
 *
 * For base64 only the characters fully determined by the secret's own bytes are used: the one or two
 * characters at each edge also carry bits of the neighbouring bytes, so they differ from payload to
 * payload. Masking the determined core leaves at most a few bits of the first and last byte.
 *
 * Pieces: an upstream that shows a secret cut short (an error page printing the request URL to a fixed
 * width, a log line clipped at a column) shows the start of one of its forms followed by other text,
 * which no whole form matches, and an agent can pad its request so the cut falls late in the key. So
 * each form also has a head: where its secret part starts (publicPrefixOf: after a published vendor
 * prefix or a JWT's header and claims) and then PIECE_CHARS characters of the secret in that form's
 * encoding. A piece is masked from the head on, through as much of the form as matches and the run of
 * key-like bytes (and of the bytes the form holds past its head) that follows, up to the form's length,
 * whether or not those bytes continue the key (needle-set.ts runTableOf): so fewer than PIECE_CHARS
 * characters past the prefix can show, and the marker's extent says nothing about how far a guess
 * matched (but at a bare quote or a line break).
 */

import { BUILTIN_RULES } from './key-patterns.js';

/** Forms shorter than this would match ordinary text; every form of an 8-character secret is longer. */
export const MIN_FORM_BYTES = 8;

/**
 * `text` with each character `pick` selects written as \uXXXX (UTF-16 units, as JSON escapes them: an
 * astral character as its surrogate pair). With the u flag, `pick` matches whole code points.
 */
function escapeSome(text: string, pick: RegExp, upper: boolean): string {
  return text.replace(pick, (ch) => {
    let out = '';
    for (let i = 0; i < ch.length; i++) {
      const hex = ch.charCodeAt(i).toString(16).padStart(4, '0');
      out += `\\u${upper ? hex.toUpperCase() : hex}`;
    }
    return out;
  });
}

/** RFC 3986 2.3: only ALPHA, DIGIT and -._~ left as they are. */
function unreservedOnly(minimal: string): string {
  return minimal.replace(/[!'()*]/g, (ch) => `%${ch.charCodeAt(0).toString(16).toUpperCase()}`);
}

/**
 * application/x-www-form-urlencoded as libraries write it: ASCII letters, digits and the bytes in
 * `raw` as they are, a space as "+", every other byte %XX. `*-._`: WHATWG URLSearchParams (what an
 * upstream's `new URL(...).searchParams` writes) and Java's URLEncoder; `-._~`: Python's quote_plus;
 * `-._`: PHP's urlencode. Found by review: a query-injected secret holding "~" (Azure AD client secrets
 * do) echoed back through URLSearchParams as %7E matched no form.
 */
function formEncoded(bytes: Buffer, raw: string, upper: boolean): string {
  let out = '';
  for (const byte of bytes) {
    const ch = String.fromCharCode(byte);
    if ((byte >= 0x30 && byte <= 0x39) || (byte >= 0x41 && byte <= 0x5a) || (byte >= 0x61 && byte <= 0x7a) || raw.includes(ch)) out += ch;
    else if (byte === 0x20) out += '+';
    else {
      const hex = byte.toString(16).padStart(2, '0');
      out += `%${upper ? hex.toUpperCase() : hex}`;
    }
  }
  return out;
}

function percentAll(bytes: Buffer, upper: boolean): string {
  let out = '';
  for (const byte of bytes) {
    const hex = byte.toString(16).padStart(2, '0');
    out += `%${upper ? hex.toUpperCase() : hex}`;
  }
  return out;
}

/**
 * Characters of a secret past its vendor prefix that a piece must hold to be masked. 8: the shortest
 * secret Airlock injects (MIN_SECRET_LENGTH), so a piece of a short secret is the whole of it; fewer
 * would match ordinary text (the start of a low-entropy value is a word).
 */
export const PIECE_CHARS = 8;

/** A form, and how many of its leading bytes a piece of it must match (its length: pieces are not masked). */
export interface SecretForm {
  readonly bytes: Buffer;
  readonly head: number;
}

/**
 * Published prefixes of key formats: the built-in shapes' own (key-patterns.ts) and those vendors
 * document for their key kinds. The same in every key of the vendor, so public: never part of a head's
 * 8 characters. A list, not a rule: a rule for "lower-case words and a separator" made the first words
 * of a passphrase public too (found by review).
 */
const VENDOR_PREFIXES: readonly string[] = [
  ...Object.values(BUILTIN_RULES).flatMap((rule) => (rule.kind === 'run' ? rule.prefixes.map((prefix) => prefix.toString('latin1')) : [])),
  ...['sk-proj-', 'sk-svcacct-', 'sk-admin-', 'sk-ant-api03-', 'sk-ant-admin01-', 'sk-ant-oat01-', 'sk-or-v1-', 'sk_test_', 'rk_test_', 'pk_live_', 'pk_test_', 'whsec_'],
  ...['glpat-', 'hvs.', 'hvb.', 'hvr.', 'npm_', 'pypi-', 'dop_v1_', 'shpat_', 'gsk_', 'hf_', 'r8_', 'pplx-', 'xai-', 'lin_api_', 'ya29.'],
];
/** A JWT (RFC 7519): header and claims are shared by every token of an issuer; only the signature is the secret part. */
const JWT = /^eyJ[A-Za-z0-9_-]*\.[A-Za-z0-9_-]*\.[A-Za-z0-9_-]+$/;

/**
 * How many of lower-case letters, upper-case letters and digits `text` holds at least two of (0 to
 * 3). Two of each of two kinds: one capital or one digit is a word (`Password`, `e_live_Z`; found by
 * review: `Password123!`'s head masked "Password must be set").
 */
function kindsIn(text: string): number {
  const twice = (pattern: RegExp): number => Number((text.match(pattern) ?? []).length >= 2);
  return twice(/[a-z]/g) + twice(/[A-Z]/g) + twice(/[0-9]/g);
}

/**
 * Where a secret's head starts: after a published vendor prefix (or a JWT's header and claims), and
 * past up to PIECE_CHARS more characters until the next PIECE_CHARS mix two kinds of character (two of
 * each). Eight characters of one kind (`correct `, `administ`, `12345678`, an unlisted vendor's `acme_liv`) are a
 * word or a number that ordinary text holds: masked wherever it appeared, a piece would eat responses
 * that never saw the secret (found by review). null: no such place, and the secret has no head (its
 * forms are masked whole only).
 */
export function publicPrefixOf(value: string): string | null {
  // Whitespace a value was stored with (a pasted key's leading space) comes before its vendor prefix
  // (found by review: " sk-proj-..." matched no prefix, and its head held two random characters).
  const space = value.length - value.trimStart().length;
  const rest = value.slice(space);
  let known = 0;
  if (JWT.test(rest.trimEnd())) known = rest.lastIndexOf('.') + 1;
  else for (const prefix of VENDOR_PREFIXES) if (prefix.length > known && rest.length > prefix.length && rest.startsWith(prefix)) known = prefix.length;
  known += space;
  for (let at = known; at <= known + PIECE_CHARS && at + PIECE_CHARS <= value.length; at++) {
    // Never between the halves of a surrogate pair: the prefix is encoded on its own (formsOfExactly).
    const code = value.charCodeAt(at);
    if (code >= 0xdc00 && code <= 0xdfff) continue;
    if (kindsIn(value.slice(at, at + PIECE_CHARS)) >= 2) return value.slice(0, at);
  }
  return null;
}

/** One way an upstream writes a value. Each writes a value's start from that start alone. */
interface Style {
  readonly encode: (value: string) => string;
}

const utf8 = (value: string): Buffer => Buffer.from(value, 'utf8');
const json = (value: string): string => JSON.stringify(value).slice(1, -1);
const lowerEscapes = (text: string): string => text.replace(/%[0-9A-F]{2}/g, (escape) => escape.toLowerCase());

/**
 * The base64 core of a value at one alignment inside a longer payload: only the characters its own
 * bytes determine.
 */
function base64Core(shift: number): (value: string) => string {
  return function core(value: string): string {
    const bytes = utf8(value);
    const encoded = Buffer.concat([Buffer.alloc(shift), bytes]).toString('base64');
    return encoded.slice(Math.ceil((shift * 4) / 3), Math.floor(((shift + bytes.length) * 4) / 3));
  };
}

/**
 * Each core in the standard and URL alphabets, and as an upstream that reflects Airlock's own Basic
 * header writes it inside JSON (PHP's "\/") or form-encoded (%2B, %2F); the last three are the core
 * itself, deduplicated away, when it holds neither "+" nor "/".
 */
const BASE64_STYLES: readonly Style[] = [0, 1, 2].flatMap((shift): Style[] => {
  const core = base64Core(shift);
  return [
    { encode: core },
    { encode: (value) => core(value).replace(/\+/g, '-').replace(/\//g, '_') },
    { encode: (value) => core(value).replace(/\//g, '\\/') },
    { encode: (value) => core(value).replace(/\+/g, '%2B').replace(/\//g, '%2F') },
    { encode: (value) => core(value).replace(/\+/g, '%2b').replace(/\//g, '%2f') },
  ];
});

const STYLES: readonly Style[] = [
  { encode: (value) => value },
  ...BASE64_STYLES,
  { encode: (value) => encodeURIComponent(value) },
  { encode: (value) => lowerEscapes(encodeURIComponent(value)) },
  { encode: (value) => percentAll(utf8(value), true) },
  { encode: (value) => percentAll(utf8(value), false) },
  { encode: json },
  { encode: (value) => json(value).replace(/\//g, '\\/') },
  { encode: (value) => escapeSome(json(value), /[<>&\u2028\u2029]/g, false) },
  { encode: (value) => escapeSome(json(value), /[<>&\u2028\u2029]/g, true) },
  { encode: (value) => escapeSome(json(value), /[^\x00-\x7f]/g, false) },
  { encode: (value) => escapeSome(json(value), /[^\x00-\x7f]/g, true) },
  { encode: (value) => escapeSome(json(value), /[^\x00-\x7f]/g, false).replace(/\//g, '\\/') },
  // The same in upper-case hex, as the README promises both cases for every \u style (found by review:
  // only lower case was here, and a key holding non-ASCII and "/" echoed so matched no form).
  { encode: (value) => escapeSome(json(value), /[^\x00-\x7f]/g, true).replace(/\//g, '\\/') },
  { encode: (value) => unreservedOnly(encodeURIComponent(value)) },
  { encode: (value) => lowerEscapes(unreservedOnly(encodeURIComponent(value))) },
  // Python's urllib.parse.quote with its default safe='/': "/" left as it is (found by review).
  { encode: (value) => unreservedOnly(encodeURIComponent(value)).replace(/%2F/g, '/') },
  // And in lower-case hex, as for every other percent style (found by review: a key with "/" in its
  // first 8 characters and "+" or "=" after, echoed so, matched no form and no head).
  { encode: (value) => lowerEscapes(unreservedOnly(encodeURIComponent(value)).replace(/%2F/g, '/')) },
  ...['*-._', '-._~', '-._'].flatMap((raw): Style[] => [
    { encode: (value) => formEncoded(utf8(value), raw, true) },
    { encode: (value) => formEncoded(utf8(value), raw, false) },
  ]),
  { encode: (value) => escapeSome(value, /[^A-Za-z0-9]/gu, false) },
  { encode: (value) => escapeSome(value, /[^A-Za-z0-9]/gu, true) },
  { encode: (value) => escapeSome(value, /[^]/gu, false) },
  { encode: (value) => escapeSome(value, /[^]/gu, true) },
  { encode: (value) => utf8(value).toString('hex') },
  { encode: (value) => utf8(value).toString('hex').toUpperCase() },
];

/**
 * Every form of a secret as bytes, deduplicated, none shorter than MIN_FORM_BYTES; for a value with
 * whitespace at an edge (a key pasted with a trailing space, a Vault value written from a file with
 * its newline), the forms of the value without it too: an injected header loses it on the wire (leading
 * and trailing whitespace is not part of a field value, RFC 9110 5.5), so an upstream that echoes the
 * header echoes the trimmed value.
 */
export function formsOf(value: string): Buffer[] {
  return secretForms(value).map((form) => form.bytes);
}

/** formsOf, each with its head. */
export function secretForms(value: string): SecretForm[] {
  const trimmed = value.trim();
  if (trimmed === value || trimmed.length === 0) return formsOfExactly(value);
  const seen = new Set<string>();
  return [...formsOfExactly(value), ...formsOfExactly(trimmed)].filter((form) => {
    const key = form.bytes.toString('latin1');
    if (seen.has(key)) return false;
    seen.add(key);
    return true;
  });
}

function formsOfExactly(value: string): SecretForm[] {
  const prefix = publicPrefixOf(value);
  // The prefix and PIECE_CHARS characters of the secret, never cut between the halves of a pair.
  let headEnd = prefix === null ? 0 : prefix.length + PIECE_CHARS;
  if (isHighSurrogate(value.charCodeAt(headEnd - 1))) headEnd++;
  const seen = new Set<string>();
  const forms: SecretForm[] = [];
  for (const style of STYLES) {
    const text = style.encode(value);
    if (text.length < MIN_FORM_BYTES || seen.has(text)) continue;
    seen.add(text);
    const bytes = Buffer.from(text, 'utf8');
    // The head is exactly what the style writes for those characters (found by review: counted as 8
    // bytes, or 8 bytes a character, a form escaping punctuation or holding non-ASCII got a head of
    // public characters alone, `\u0020sk\u002dp`, which every such key shares). Checked to begin the
    // form; when it does not, the form gets no head.
    const head = prefix === null ? '' : style.encode(value.slice(0, headEnd));
    forms.push({ bytes, head: head !== '' && text.startsWith(head) ? Math.min(bytes.length, Buffer.byteLength(head, 'utf8')) : bytes.length });
  }
  return forms;
}

function isHighSurrogate(code: number): boolean {
  return code >= 0xd800 && code <= 0xdbff;
}
