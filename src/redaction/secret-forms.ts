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
 */

/** Forms shorter than this would match ordinary text; every form of an 8-character secret is longer. */
export const MIN_FORM_BYTES = 8;

function base64Cores(bytes: Buffer): string[] {
  const cores: string[] = [];
  for (let shift = 0; shift < 3; shift++) {
    const encoded = Buffer.concat([Buffer.alloc(shift), bytes]).toString('base64');
    const core = encoded.slice(Math.ceil((shift * 4) / 3), Math.floor(((shift + bytes.length) * 4) / 3));
    cores.push(core, core.replace(/\+/g, '-').replace(/\//g, '_'));
    // A base64 value echoed inside JSON by PHP ("\/") or form-encoded (%2B, %2F): an upstream that
    // reflects Airlock's own Basic header writes it so.
    if (/[+/]/.test(core)) {
      cores.push(core.replace(/\//g, '\\/'));
      cores.push(core.replace(/\+/g, '%2B').replace(/\//g, '%2F'), core.replace(/\+/g, '%2b').replace(/\//g, '%2f'));
    }
  }
  return cores;
}

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
 * Every form of a secret as bytes, deduplicated, none shorter than MIN_FORM_BYTES; for a value with
 * whitespace at an edge (a key pasted with a trailing space, a Vault value written from a file with
 * its newline), the forms of the value without it too: an injected header loses it on the wire (leading
 * and trailing whitespace is not part of a field value, RFC 9110 5.5), so an upstream that echoes the
 * header echoes the trimmed value.
 */
export function formsOf(value: string): Buffer[] {
  const trimmed = value.trim();
  if (trimmed === value || trimmed.length === 0) return formsOfExactly(value);
  const seen = new Set<string>();
  return [...formsOfExactly(value), ...formsOfExactly(trimmed)].filter((form) => {
    const key = form.toString('latin1');
    if (seen.has(key)) return false;
    seen.add(key);
    return true;
  });
}

function formsOfExactly(value: string): Buffer[] {
  const bytes = Buffer.from(value, 'utf8');
  const minimal = encodeURIComponent(value);
  const json = JSON.stringify(value).slice(1, -1);
  const texts = [
    value,
    ...base64Cores(bytes),
    minimal,
    minimal.replace(/%[0-9A-F]{2}/g, (escape) => escape.toLowerCase()),
    percentAll(bytes, true),
    percentAll(bytes, false),
    json,
    json.replace(/\//g, '\\/'),
    escapeSome(json, /[<>&\u2028\u2029]/g, false),
    escapeSome(json, /[<>&\u2028\u2029]/g, true),
    escapeSome(json, /[^\x00-\x7f]/g, false),
    escapeSome(json, /[^\x00-\x7f]/g, true),
    escapeSome(json, /[^\x00-\x7f]/g, false).replace(/\//g, '\\/'),
    unreservedOnly(minimal),
    unreservedOnly(minimal).replace(/%[0-9A-F]{2}/g, (escape) => escape.toLowerCase()),
    // Python's urllib.parse.quote with its default safe='/': "/" left as it is (found by review).
    unreservedOnly(minimal).replace(/%2F/g, '/'),
    ...['*-._', '-._~', '-._'].flatMap((raw) => [formEncoded(bytes, raw, true), formEncoded(bytes, raw, false)]),
    escapeSome(value, /[^A-Za-z0-9]/gu, false),
    escapeSome(value, /[^A-Za-z0-9]/gu, true),
    escapeSome(value, /[^]/gu, false),
    escapeSome(value, /[^]/gu, true),
    bytes.toString('hex'),
    bytes.toString('hex').toUpperCase(),
  ];
  const seen = new Set<string>();
  const forms: Buffer[] = [];
  for (const text of texts) {
    if (text.length < MIN_FORM_BYTES || seen.has(text)) continue;
    seen.add(text);
    forms.push(Buffer.from(text, 'utf8'));
  }
  return forms;
}
