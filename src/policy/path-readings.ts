/**
 * Spellings that upstreams read as one path although a canonical path tells them apart: letters in any
 * case (IIS, ASP.NET, case-insensitive file systems behind a static server), and escapes of the
 * characters a route literal may hold raw (`:` `@` and RFC 3986's sub-delims but `;`), which many
 * servers decode before routing (Go's net/http, Express, Flask, Google's front ends read
 * `gemini-ultra%3AgenerateContent` as `gemini-ultra:generateContent`). Applied alike to request paths
 * and to route templates (route-table.ts), so that a reading is compared with routes read the same way.
 * Escapes keep their upper-case hex, as a canonical path spells them.
 */

/**
 * An escape of a character a route literal may hold raw: ! $ & ' ( ) + , : = @ (route-template.ts; "*"
 * only as a whole segment, which is not a literal).
 */
const RAW_LITERAL_ESCAPE = /%(2[146-9BC]|3[AD]|40)/g;
/** The same, not global: test() keeps no position between calls. */
const ANY_RAW_LITERAL_ESCAPE = new RegExp(RAW_LITERAL_ESCAPE.source);
/** Runs of capitals, and escapes, which keep their upper-case hex. */
const ESCAPE_OR_UPPER = /%[0-9A-F]{2}|[A-Z]+/g;
const UPPER_CASE = /[A-Z]/;

/** Whether `text` escapes a character that a route literal may spell raw. */
export function escapesRawLiteral(text: string): boolean {
  return text.includes('%') && ANY_RAW_LITERAL_ESCAPE.test(text);
}

/** `text` with those escapes decoded. */
export function decodeRawLiteralEscapes(text: string): string {
  return text.replace(RAW_LITERAL_ESCAPE, decodeHex);
}

/** Whether `text` has a capital outside its escapes. */
export function hasCapital(text: string): boolean {
  return UPPER_CASE.test(text) && (!text.includes('%') || foldCase(text) !== text);
}

/** `text` in lower case outside its escapes. */
export function foldCase(text: string): string {
  // Without an escape, toLowerCase is the same and a third of the cost.
  return text.includes('%') ? text.replace(ESCAPE_OR_UPPER, lowerOutsideEscapes) : text.toLowerCase();
}

function lowerOutsideEscapes(run: string): string {
  return run.startsWith('%') ? run : run.toLowerCase();
}

function decodeHex(_escape: string, hex: string): string {
  return String.fromCharCode(parseInt(hex, 16));
}
