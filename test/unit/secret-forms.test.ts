/**
 * The forms of a secret (src/redaction/secret-forms.ts) include what common libraries write when they
 * echo it: found by review, a secret with one of these characters, echoed this way, matched no form and
 * reached the agent whole. Each echo is scrubbed by the real catalogue, in a JSON body as an upstream
 * would send it.
 */
import { describe, expect, it } from 'vitest';
import { Credential } from '../../src/credentials/credential.js';
import { SecretCatalog } from '../../src/redaction/secret-catalog.js';
import { formsOf } from '../../src/redaction/secret-forms.js';

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
