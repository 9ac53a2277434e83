/**
 * Percent-escapes of unreserved characters (RFC 3986 2.3: ALPHA / DIGIT / "-" / "." / "_" / "~"), which
 * spell the character itself (6.2.2.2). Canonicalization decodes them (canonicalize-target.ts); route
 * templates may not hold them, since a canonical path never does (route-template.ts); the audit record
 * of a target refused before canonicalization reads them as canonicalization would (run-pipeline.ts).
 * One definition, so the three cannot disagree on what counts.
 */

/** RFC 3986 2.3: ALPHA / DIGIT / "-" / "." / "_" / "~". */
export function isUnreserved(byte: number): boolean {
  return (
    (byte >= 0x41 && byte <= 0x5a) || (byte >= 0x61 && byte <= 0x7a) || (byte >= 0x30 && byte <= 0x39) || byte === 0x2d || byte === 0x2e || byte === 0x5f || byte === 0x7e
  );
}

/**
 * The two hex digits of an unreserved character, either case, as a RegExp source with one capture
 * group: the one definition of which escapes spell one, whatever introduces them (%XX here, JSON's
 * \u00XX in preview-request.ts).
 */
export const UNRESERVED_HEX = '(2[DdEe]|3[0-9]|4[1-9A-Fa-f]|5[0-9Aa]|5[Ff]|6[1-9A-Fa-f]|7[0-9Aa]|7[Ee])';

/** An escape of an unreserved character: it spells that character (RFC 3986 6.2.2.2). Global, for replace. */
const UNRESERVED_ESCAPE = new RegExp(`%${UNRESERVED_HEX}`, 'g');
/** The same, not global: test() on it keeps no position between calls (lastIndex is unused). */
const ANY_UNRESERVED_ESCAPE = new RegExp(UNRESERVED_ESCAPE.source);

/**
 * The text with escapes of unreserved characters decoded, as canonicalization decodes them, and
 * nothing else checked: for the places that must read a path as canonicalization would before (or
 * without) canonicalizing it, such as the audit record of a refused target.
 */
export function decodeUnreservedEscapes(text: string): string {
  return text.includes('%') ? text.replace(UNRESERVED_ESCAPE, decodeEscape) : text;
}

/** Whether the text escapes an unreserved character, which a canonical path never does. */
export function escapesUnreserved(text: string): boolean {
  return ANY_UNRESERVED_ESCAPE.test(text);
}

/** Every %XX escape, either hex case (for replace with decodeEscape). */
export const PERCENT_ESCAPE = /%([0-9A-Fa-f]{2})/g;

/** A replace callback for an escape: the character its hex digits spell (a byte read as Latin-1). */
export function decodeEscape(_escape: string, hex: string): string {
  return String.fromCharCode(parseInt(hex, 16));
}
