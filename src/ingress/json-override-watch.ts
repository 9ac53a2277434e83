/**
 * A method override named in a JSON body, found by the bytes that name it (override-watch.ts).
 */
import type { OverrideWatch } from './override-watch.js';

/** Built once: every JSON request body gets a watch over them. */
const JSON_OVERRIDES: readonly Buffer[] = [Buffer.from('"_method"', 'latin1')];
/** "\u00XX": the escapes that can spell a character of "_method", in either case (Slim reads `_METHOD`). */
const ESCAPE_START = Buffer.from('\\u00', 'latin1');
const JSON_ESCAPE_LENGTH = 6;
const BACKSLASH = 0x5c;
const OVERRIDE_KEY_CHARS: ReadonlySet<number> = new Set([...'_methodMETHOD'].map((char) => char.charCodeAt(0)));

/**
 * The override named as a key of a JSON body (Laravel reads JSON input as the request's fields), searched
 * as the body streams: Buffer#indexOf over each chunk, and the few bytes across a chunk boundary checked
 * on their own, so a large body is not copied. `_method` only: it is the one name those frameworks read
 * from a body. It is matched in any case: Slim 4's MethodOverrideMiddleware reads `_METHOD` from
 * the parsed body (`{"_METHOD":"DELETE"}` was forwarded; found by review).
 *
 * In JSON, any character of the key may be written as a \u escape ("\u005fmethod", "_m\u0065thod"),
 * which the upstream's parser reads as the same key (RFC 8259 7). Encoders escape control characters,
 * quotes, backslash, "<>&'" and non-ASCII, never an ASCII letter or "_", so an escape of one of the
 * key's characters is refused wherever it appears (found by the owner's review of the first version,
 * which saw only the key written plainly). Only a real escape counts: "\\" is the escape for a backslash
 * (RFC 8259 7), so the backslash of "\u0065" preceded by an odd run of backslashes is the second half of
 * one, and the text is the six characters `\u0065`, as JSON.stringify writes a regex or code that holds
 * them (found by review: such a prompt was refused). A run can cross chunk boundaries, so the parity of
 * the backslashes ending the data so far, and of those ending just before the carry, is kept.
 */
export class JsonOverrideWatch implements OverrideWatch {
  readonly #needles: readonly Buffer[] = JSON_OVERRIDES;
  readonly #keep = Math.max(JSON_ESCAPE_LENGTH, ...JSON_OVERRIDES.map((n) => n.length)) - 1;
  #carry: Buffer = Buffer.alloc(0);
  /** An odd number of backslashes ends the data so far: a backslash first in the next chunk is escaped. */
  #oddAtEnd = false;
  /** An odd number of backslashes ends just before the carry's first byte (the seam's first byte). */
  #oddBeforeCarry = false;

  push(chunk: Buffer): boolean {
    if (this.#carry.length > 0) {
      const seam = Buffer.concat([this.#carry, chunk.subarray(0, this.#keep)]);
      if (this.#holds(seam, this.#oddBeforeCarry)) return true;
    }
    if (this.#holds(chunk, this.#oddAtEnd)) return true;
    if (chunk.length >= this.#keep) {
      const from = chunk.length - this.#keep;
      this.#oddBeforeCarry = oddBackslashesBefore(chunk, from, this.#oddAtEnd);
      this.#carry = chunk.subarray(from);
    } else {
      // The new carry is the end of the old one and this chunk: the run before it may reach back into
      // the old carry, and past its start.
      const joined = Buffer.concat([this.#carry, chunk]);
      const from = Math.max(0, joined.length - this.#keep);
      this.#oddBeforeCarry = oddBackslashesBefore(joined, from, this.#oddBeforeCarry);
      this.#carry = joined.subarray(from);
    }
    this.#oddAtEnd = oddBackslashesBefore(chunk, chunk.length, this.#oddAtEnd);
    return false;
  }

  end(): boolean {
    return false;
  }

  /** `oddBefore`: whether an odd number of backslashes ends just before `bytes` in the body. */
  #holds(bytes: Buffer, oddBefore: boolean): boolean {
    // JSON: a quote after an odd run of backslashes is text inside a string (\"), not the start of a key
    // ({"note":"say \"_method\""} was refused; found by the owner's review), so the same parity as below.
    for (const needle of this.#needles) {
      for (let at = indexIgnoringCase(bytes, needle, 0); at !== -1; at = indexIgnoringCase(bytes, needle, at + 1)) {
        if (!oddBackslashesBefore(bytes, at, oddBefore)) return true;
      }
    }
    // "\u00" then two hex digits; one that does not end within these bytes is seen across the next seam.
    for (let at = bytes.indexOf(ESCAPE_START); at !== -1 && at + JSON_ESCAPE_LENGTH <= bytes.length; at = bytes.indexOf(ESCAPE_START, at + 1)) {
      if (oddBackslashesBefore(bytes, at, oddBefore)) continue;
      const code = Number.parseInt(bytes.toString('latin1', at + 4, at + 6), 16);
      if (OVERRIDE_KEY_CHARS.has(code)) return true;
    }
    return false;
  }
}

/**
 * Whether the run of backslashes ending just before `end` in `bytes` is odd, counting `oddBefore` (the
 * same for the bytes before `bytes`) when the run reaches back to the start. A plain walk: each run
 * walked ends right before one match or the chunk's end, so runs are not walked twice and a body costs
 * time in proportion to its length.
 */
function oddBackslashesBefore(bytes: Buffer, end: number, oddBefore: boolean): boolean {
  let at = end;
  while (at > 0 && bytes[at - 1] === BACKSLASH) at--;
  const odd = (end - at) % 2 === 1;
  return at === 0 ? odd !== oddBefore : odd;
}

/**
 * Where `needle` (lower case) next occurs in `bytes` from `from`, its ASCII letters matched in either
 * case (the JSON key, see OVERRIDE_KEY_CHARS). Found by Buffer#indexOf of the needle's caseless start
 * ('"_' of '"_method"'), then compared byte by byte, so a body is not copied or lower-cased whole.
 */
function indexIgnoringCase(bytes: Buffer, needle: Buffer, from: number): number {
  let lead = 0;
  while (lead < needle.length && !isLowerCaseLetter(needle[lead] as number)) lead++;
  const start = needle.subarray(0, lead);
  for (let at = lead === 0 ? from : bytes.indexOf(start, from); at !== -1 && at + needle.length <= bytes.length; at = lead === 0 ? at + 1 : bytes.indexOf(start, at + 1)) {
    let same = true;
    for (let i = lead; i < needle.length && same; i++) {
      const wanted = needle[i] as number;
      const byte = bytes[at + i] as number;
      same = isLowerCaseLetter(wanted) ? (byte | 0x20) === wanted : byte === wanted;
    }
    if (same) return at;
  }
  return -1;
}

function isLowerCaseLetter(byte: number): boolean {
  return byte >= 0x61 && byte <= 0x7a;
}
