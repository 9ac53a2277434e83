/**
 * The fields of a multipart body (every multipart/* type), read as they stream, for a method override
 * named as a field (override-watch.ts).
 */
import { METHOD_OVERRIDE_NAMES } from '../pipeline/build-upstream-request.js';
import { queryKeyNames } from '../upstream/outbound-request.js';
import type { OverrideWatch } from './override-watch.js';

/**
 * The most bytes a part's header section may take, its closing blank line included. Clients send a
 * Content-Disposition and perhaps a Content-Type, a few hundred bytes even with a long UTF-8 file name;
 * a longer section is refused rather than held (the watch keeps no more than this of any part).
 */
const HEADER_SECTION_LIMIT = 8 * 1024;
/**
 * The most field names (name parameters and Content-IDs) read from one header section. A client writes
 * one name; Rack 3.2 reads at most 16 parameters of a Content-Disposition. A section that names a field
 * more often is refused: it is no client's, and a bound keeps reading a section linear in its length.
 */
const NAMES_PER_SECTION_LIMIT = 16;
/**
 * The longest stretch of header text one name is read from. A name's meaning can lie past any length
 * ("[" repeated before "_method" is `_method` to Rack 2.2), so a name longer than this is refused, not
 * cut; no client names a field with hundreds of characters.
 */
const NAME_READING_LIMIT = 512;

const CR = 0x0d;
const LF = 0x0a;
const DASH = 0x2d;
const SPACE = 0x20;
const TAB = 0x09;

/** RFC 9110 5.6.2 tchar, for character classes. */
const TCHARS = "!#$%&'*+\\-.^_`|~0-9A-Za-z";
/** The whitespace any of the parsers below skips: ASCII, and Unicode's (Go trims with unicode.IsSpace). */
const SPACES = '\\s\\u0085';
/** RFC 2046 5.1.1: 1 to 70 bchars, the last not a space. */
const BOUNDARY_VALUE = /^[0-9A-Za-z'()+_,\-./:=? ]{0,69}[0-9A-Za-z'()+_,\-./:=?]$/;
const MEDIA_TYPE = new RegExp(`^[${TCHARS}]+/[${TCHARS}]+`);
/** RFC 9110 5.6.6: OWS ";" OWS [ token "=" ( token / quoted-string ) ], one at a time from the start. */
const MEDIA_TYPE_PARAMETER = new RegExp(`^[\\t ]*;[\\t ]*(?:([${TCHARS}]+)=([${TCHARS}]+|"(?:[\\t\\x20\\x21\\x23-\\x5b\\x5d-\\x7e\\x80-\\xff]|\\\\[\\t\\x20-\\x7e\\x80-\\xff])*"))?`);
/** Rack 2.2 and 3.2 (Rack::Multipart::MULTIPART): the last "boundary=", its value up to `";,`. */
const RACK_BOUNDARY = /^multipart\/.*boundary="?([^";,]+)/i;
/** Rack after 3.2 (MULTIPART once more): the first "boundary", spaces allowed before "=". */
const NEWER_RACK_BOUNDARY = /^multipart\/.*?boundary\s*="?([^";,]+)/i;
/** A line of a header section: a field (RFC 9112 5: no space before the colon), or a fold of one. */
const FIELD_LINE = new RegExp(`^[${TCHARS}]+:[\\t\\x20-\\x7e\\x80-\\xff]*$`);
const FOLDED_LINE = /^[\t ][\t\x20-\x7e\x80-\xff]*$/;
/**
 * A name parameter anywhere in a header section: "name", RFC 2231's "name*" and "name*0"/"name*0*"
 * pieces, in any case, spaces allowed around "=" and more "="s skipped after it (PHP's getword skips
 * them). Only where a parameter name can start: not inside another token, so "filename=" and "x-name="
 * are not it.
 */
const NAME_PARAMETER = new RegExp(`(?<![${TCHARS}])name(?:\\*(\\d+))?(\\*)?[${SPACES}]*=[${SPACES}=]*`, 'gi');
/** A Content-ID anywhere in a header section (Rack 2.2's pattern is unanchored), and its value's start. */
const CONTENT_ID = new RegExp(`content-id[${SPACES}]*:[${SPACES}]*`, 'gi');
const NOT_TCHAR = new RegExp(`[^${TCHARS}]`);
/** What ends Rack 2.2's token (Rack::Multipart::TOKEN): a longer run than a tchar token can be. */
const NOT_RACK_TOKEN = /[\s()<>,;:\\"/[\]?=]/;
const VALUE_END = /[;\r\n]/;
const LINE_END = /[\r\n]/;

/** Where the bytes after a boundary found in the body stand: whether they make it a delimiter line. */
type AfterBoundary = 'none' | 'start' | 'padding' | 'dash' | 'cr';

/**
 * The header section of every part of a multipart body, read as the body streams, for a field whose
 * name is a method override: Rack (2.2 and 3.2) reads `_method` from multipart/form-data, /mixed and
 * /related bodies, PHP (Laravel, Symfony), busboy (Express with multer) and Go (Buffalo) from
 * multipart/form-data, each running that method instead of the one authorized (found by review). The
 * older watch searched the whole body for the bytes `"_method"` in multipart/form-data only: the other
 * types, a backslash-escaped name, a Content-ID and unquoted names passed, and a file holding those
 * bytes was refused. Part bodies are not read now, only searched for the next boundary.
 *
 * Structure (RFC 2046 5.1.1, RFC 7578): the boundary from the Content-Type; a delimiter is "--" and the
 * boundary, then transport padding and CRLF ("--" instead closes). The parsers disagree at the edges,
 * so the watch takes the widest reading of each:
 *  - A boundary is looked for anywhere, not only after CRLF: Rack 2.2 matches `(\r\n)?--boundary`, and
 *    3.2's `\A` matches wherever its buffer was cut. It is a delimiter when padding and LF or CRLF
 *    follow (Go and PHP take LF alone), and the bodies after a close delimiter are read on (PHP reads
 *    on to the next "--boundary" line).
 *  - A header section runs from the delimiter line to the first CRLFCRLF, as Rack's `(.*?\r\n)\r\n`
 *    finds it (so a section that starts with a blank line takes the lines after it, which Rack reads
 *    as headers). Its lines must be header fields with CRLF endings: a bare LF ends lines (and the
 *    section) for PHP and Go where it does not for Rack, so such bytes are refused, not guessed at.
 *  - "--boundary" inside a section, or right after it, is refused: busboy's search for "\r\n--boundary"
 *    runs through header bytes and cuts the match out of them, so the header it parses is not the one
 *    written (`...\r\n\r\n--boundaryContent-Disposition: ...` continues a section for busboy).
 *  - Every field name the section could give is compared, whichever header or quoting holds it
 *    (fieldNamesIn), to every override name, ignoring case (Slim reads `_METHOD`), as queryKeyNames
 *    reads a name (PHP's ".method", Rack 2.2's "[_method]").
 * Anything past the limits above, or a header section the body ends inside, is refused as an override
 * would be: the watch fails closed where it cannot tell what an upstream would read.
 *
 * Memory: the current header section (at most HEADER_SECTION_LIMIT) and the state of the boundary
 * search; part bodies pass through. Time: Buffer#indexOf jumps to each boundary, and a byte-by-byte
 * search (Knuth-Morris-Pratt, which finds overlapping boundaries) runs only around one.
 */
export class MultipartOverrideWatch implements OverrideWatch {
  /** "--" and the boundary; null when the Content-Type gives no boundary every parser reads alike. */
  readonly #boundary: Buffer | null;
  readonly #fallback: Int32Array;
  #refused = false;
  #inHeader = false;
  /** How many bytes of the boundary end the body bytes so far (the search's state). */
  #matched = 0;
  #after: AfterBoundary = 'none';
  /** Body bytes read since the last header section ended (none has: infinite). */
  #sinceHeaderSection = Number.POSITIVE_INFINITY;
  #header: Buffer | null = null;
  #headerLength = 0;
  /** How much of CRLFCRLF ends the header section so far. */
  #headerEnding = 0;

  constructor(contentType: string) {
    const boundary = boundaryOf(contentType);
    this.#boundary = boundary === null ? null : Buffer.from(`--${boundary}`, 'latin1');
    this.#fallback = this.#boundary === null ? new Int32Array(0) : fallbackTable(this.#boundary);
  }

  push(chunk: Buffer): boolean {
    if (this.#refused) return true;
    // No boundary every parser reads alike (RFC 2046 5.1.1 makes it mandatory; Rack, PHP and busboy
    // each read a malformed or doubled one their own way): the parts an upstream would find cannot be
    // known, and scanning the bytes instead refused file contents. No client sends such a body.
    if (this.#boundary === null) {
      this.#refused = chunk.length > 0;
      return this.#refused;
    }
    let at = 0;
    while (at < chunk.length && !this.#refused) at = this.#inHeader ? this.#readHeader(chunk, at) : this.#readBody(chunk, at, this.#boundary);
    return this.#refused;
  }

  end(): boolean {
    // A header section the body ends inside: PHP still registers the fields of the lines it got
    // (multipart_buffer_headers reads to the end of the body), so it is refused like one too long.
    if (this.#inHeader) this.#refused = true;
    return this.#refused;
  }

  /** Reads body bytes from `from` until a delimiter line ends (a header section follows) or the chunk does. */
  #readBody(chunk: Buffer, from: number, boundary: Buffer): number {
    let at = from;
    while (at < chunk.length) {
      if (this.#matched === 0 && this.#after === 'none') {
        // Nothing under way: jump to the next whole boundary, or to where one could start and run on
        // into the next chunk (fewer bytes than the boundary from the end).
        const next = chunk.indexOf(boundary, at);
        const to = next === -1 ? Math.max(at, chunk.length - boundary.length + 1) : next;
        this.#sinceHeaderSection += to - at;
        at = to;
        if (at === chunk.length) break;
      }
      const byte = chunk[at++] as number;
      this.#sinceHeaderSection++;
      if (this.#endsDelimiterLine(byte)) {
        this.#inHeader = true;
        this.#headerLength = 0;
        this.#headerEnding = 0;
        this.#matched = 0;
        return at;
      }
      let matched = this.#matched;
      while (matched > 0 && byte !== boundary[matched]) matched = this.#fallback[matched - 1] as number;
      if (byte === boundary[matched]) matched++;
      if (matched === boundary.length) {
        if (this.#sinceHeaderSection === boundary.length) {
          // Right after a header section: busboy cuts "\r\n--boundary" out of the CRLFCRLF that ended
          // it and reads the bytes after as more header (see the class comment).
          this.#refused = true;
          return at;
        }
        this.#after = 'start';
        matched = this.#fallback[matched - 1] as number;
      }
      this.#matched = matched;
    }
    return at;
  }

  /**
   * Moves on from the boundary last found with the byte after it; true when the byte ends a delimiter
   * line: transport padding (RFC 2046 5.1.1; Go skips it, Rack allows none) then CRLF or LF. "--" right
   * after the boundary closes the body, and anything else makes it no delimiter: no header section.
   */
  #endsDelimiterLine(byte: number): boolean {
    const after = this.#after;
    this.#after = 'none';
    if (after === 'none' || after === 'dash') return false;
    if (after === 'cr') return byte === LF;
    if (after === 'start' && byte === DASH) this.#after = 'dash';
    else if (byte === SPACE || byte === TAB) this.#after = 'padding';
    else if (byte === CR) this.#after = 'cr';
    return byte === LF;
  }

  /** Collects a header section from `from` until its CRLFCRLF, then reads it; refused past the limit. */
  #readHeader(chunk: Buffer, from: number): number {
    const header = (this.#header ??= Buffer.allocUnsafe(HEADER_SECTION_LIMIT));
    let at = from;
    while (at < chunk.length) {
      if (this.#headerLength === HEADER_SECTION_LIMIT) {
        this.#refused = true;
        return at;
      }
      const byte = chunk[at++] as number;
      header[this.#headerLength++] = byte;
      const ending = this.#headerEnding;
      this.#headerEnding = byte === CR ? (ending === 2 ? 3 : 1) : byte === LF && (ending === 1 || ending === 3) ? ending + 1 : 0;
      if (this.#headerEnding === 4) {
        this.#refused = headerSectionRefused(header.subarray(0, this.#headerLength), this.#boundary as Buffer);
        this.#inHeader = false;
        this.#sinceHeaderSection = 0;
        return at;
      }
    }
    return at;
  }
}

/**
 * The boundary of a multipart Content-Type, or null unless RFC 9110's reading (busboy's and Go's), Rack
 * 2.2/3.2's, later Rack's and PHP's all give the same one, valid by RFC 2046 5.1.1. They part on
 * malformed values: a second boundary parameter (Rack takes the last, busboy the first), a "," in one
 * (Rack stops there), a quoted-pair, spaces around "=".
 */
function boundaryOf(contentType: string): string | null {
  const type = MEDIA_TYPE.exec(contentType);
  if (type === null) return null;
  const boundaries: string[] = [];
  let rest = contentType.slice(type[0].length);
  for (let parameter = MEDIA_TYPE_PARAMETER.exec(rest); parameter !== null; parameter = MEDIA_TYPE_PARAMETER.exec(rest)) {
    const [whole, name, value] = parameter;
    if (name !== undefined && value !== undefined && name.toLowerCase() === 'boundary') {
      boundaries.push(value.startsWith('"') ? value.slice(1, -1).replace(/\\(.)/g, '$1') : value);
    }
    rest = rest.slice(whole.length);
  }
  if (!/^[\t ]*$/.test(rest) || boundaries.length !== 1) return null;
  const boundary = boundaries[0] as string;
  if (!BOUNDARY_VALUE.test(boundary)) return null;
  const readings = [RACK_BOUNDARY.exec(contentType)?.[1], NEWER_RACK_BOUNDARY.exec(contentType)?.[1], phpBoundary(contentType)];
  return readings.every((reading) => reading === boundary) ? boundary : null;
}

/**
 * PHP's reading (rfc1867_post_handler, main/rfc1867.c): from the first "boundary" (matched in case
 * first, then ignoring it) to the next "=", then a quoted value or up to "," or ";".
 */
function phpBoundary(contentType: string): string | null {
  let at = contentType.indexOf('boundary');
  if (at === -1) at = contentType.toLowerCase().indexOf('boundary');
  const equals = at === -1 ? -1 : contentType.indexOf('=', at);
  if (equals === -1) return null;
  const value = contentType.slice(equals + 1);
  if (value.startsWith('"')) {
    const close = value.indexOf('"', 1);
    return close === -1 ? null : value.slice(1, close);
  }
  const end = value.search(/[,;]/);
  return end === -1 ? value : value.slice(0, end);
}

/** Knuth-Morris-Pratt: for each prefix of `needle`, the longest proper prefix that also ends it. */
function fallbackTable(needle: Buffer): Int32Array {
  const table = new Int32Array(needle.length);
  let length = 0;
  for (let i = 1; i < needle.length; i++) {
    while (length > 0 && needle[i] !== needle[length]) length = table[length - 1] as number;
    if (needle[i] === needle[length]) length++;
    table[i] = length;
  }
  return table;
}

/**
 * Whether a part's header section (ending in CRLFCRLF) is refused: it holds the boundary, its lines are
 * not CRLF-ended header fields, it names a field too often or at too great a length, or a name it
 * gives is a method override.
 */
function headerSectionRefused(section: Buffer, boundary: Buffer): boolean {
  if (section.includes(boundary)) return true;
  const lines = section.toString('latin1', 0, section.length - 4).split('\r\n');
  // The first line may be empty: no header fields (RFC 2046 5.1), and the lines Rack reads on to.
  const wellFormed = lines.every((line, i) => (i === 0 && line === '') || FIELD_LINE.test(line) || (i > 0 && lines[i - 1] !== '' && FOLDED_LINE.test(line)));
  if (!wellFormed) return true;
  for (const text of headerTexts(section)) {
    const names = fieldNamesIn(text);
    // The set the form watch refuses and the query loses: `_method` is what the frameworks read from a
    // body; the header-style names are refused as field names too (no ordinary form uses them, and
    // Express's method-override reads whichever field it is told to).
    if (names === null || names.some((name) => queryKeyNames(name).some((read) => METHOD_OVERRIDE_NAMES.has(read)))) return true;
  }
  return false;
}

/**
 * The section as each parser may see it: bytes as Latin-1 and, when it has any past ASCII, as UTF-8 (Go
 * skips Unicode spaces, such as a no-break space, around a parameter's "="); each with folded lines (RFC
 * 9112 5.2 obs-fold) kept, and when it has any, unfolded to their space (busboy, Go) and joined with no
 * space at all.
 */
function headerTexts(section: Buffer): string[] {
  const latin1 = section.toString('latin1');
  const decodings = /[\x80-\xff]/.test(latin1) ? [latin1, section.toString('utf8')] : [latin1];
  if (!/\r\n[\t ]/.test(latin1)) return decodings;
  return decodings.flatMap((text) => [text, text.replace(/\r\n(?=[\t ])/g, ''), text.replace(/\r\n[\t ]+/g, '')]);
}

/**
 * Every field name a header section can give, read as widely as the parsers read it, or null when the
 * section names fields too often or at too great a length (NAMES_PER_SECTION_LIMIT,
 * NAME_READING_LIMIT). A name parameter is read wherever it stands, since Rack 2.2 finds it with an
 * unanchored pattern that ignores quoting (`Content-Disposition:[^:]*;\s*name=`), in any header, even
 * inside another parameter's quoted value, and all of them count (PHP takes the last, busboy the first).
 * Its value in each reading:
 *  - quoted with `"`, every quoted-pair unescaped (Rack 2.2 and 3.2: `name="\_m\ethod"`), or only `\\`
 *    and `\"` (PHP, busboy, Go keep the backslash before other characters);
 *  - quoted with `'` (PHP's getword_conf quotes with either);
 *  - a token, to ";" or the line's end and that trimmed (Rack 3.2, which reads `name= _method`), to
 *    what ends Rack 2.2's token, or to the first non-tchar (PHP stops at a space, busboy and Go at any);
 *  - "name*" an RFC 2231/5987 ext-value (Go, and busboy for other parameters): percent-decoded in its
 *    charset and in Latin-1; "name*0", "name*1"... joined in order (Go's RFC 2231 continuations).
 * Rack also names a part by its Content-ID when its Content-Disposition gives no name: a Content-ID
 * counts whether or not one does. A file name counts only as a name parameter: Rack names a part
 * without one by its filename or Content-Type, but gives it a file or an array, which Rack::MethodOverride
 * does not run.
 */
function fieldNamesIn(text: string): string[] | null {
  const names: string[] = [];
  const pieces = new Map<number, { readonly value: string; readonly encoded: boolean }>();
  let found = 0;
  for (const match of text.matchAll(NAME_PARAMETER)) {
    if (++found > NAMES_PER_SECTION_LIMIT) return null;
    const readings = valueReadings(text, (match.index as number) + match[0].length);
    if (readings === null) return null;
    const [, piece, extended] = match;
    if (piece !== undefined) {
      const index = Number(piece);
      if (!pieces.has(index)) pieces.set(index, { value: readings[0] as string, encoded: extended !== undefined });
    } else {
      names.push(...(extended === undefined ? readings : readings.flatMap(extendedValues)));
    }
  }
  if (pieces.has(0)) names.push(...joinedPieces(pieces));
  for (const match of text.matchAll(CONTENT_ID)) {
    if (++found > NAMES_PER_SECTION_LIMIT) return null;
    const window = text.slice((match.index as number) + match[0].length, (match.index as number) + match[0].length + NAME_READING_LIMIT + 1);
    const end = window.search(LINE_END);
    if (end === -1 && window.length > NAME_READING_LIMIT) return null;
    names.push(end === -1 ? window : window.slice(0, end));
  }
  return names;
}

/** The readings of a parameter value starting at `at` (see fieldNamesIn), or null when too long. */
function valueReadings(text: string, at: number): string[] | null {
  const window = text.slice(at, at + NAME_READING_LIMIT + 1);
  const long = window.length > NAME_READING_LIMIT;
  const quote = window[0];
  if (quote === '"' || quote === "'") {
    const lenient = quotedValue(window, quote, false);
    const escaped = quote === '"' ? quotedValue(window, quote, true) : lenient;
    return lenient.ended || !long ? [escaped.value, lenient.value] : null;
  }
  const end = window.search(VALUE_END);
  if (end === -1 && long) return null;
  const token = end === -1 ? window : window.slice(0, end);
  return [token, token.trim(), cutAt(token, NOT_RACK_TOKEN), cutAt(token, NOT_TCHAR)];
}

/**
 * A quoted value from its opening quote (`window[0]`) to the closing one or the line's end (Rack 3.2
 * reads an unclosed one as far as it goes). `anyPair`: a backslash escapes any character; else only a
 * backslash or the quote, and stays before any other.
 */
function quotedValue(window: string, quote: string, anyPair: boolean): { readonly value: string; readonly ended: boolean } {
  let value = '';
  for (let i = 1; i < window.length; i++) {
    const char = window[i] as string;
    if (char === quote) return { value, ended: true };
    if (char === '\r' || char === '\n') return { value, ended: true };
    const next = window[i + 1];
    if (char === '\\' && next !== undefined && next !== '\r' && next !== '\n' && (anyPair || next === '\\' || next === quote)) {
      value += next;
      i++;
    } else {
      value += char;
    }
  }
  return { value, ended: false };
}

function cutAt(token: string, end: RegExp): string {
  const at = token.search(end);
  return at === -1 ? token : token.slice(0, at);
}

/** An RFC 2231/5987 ext-value (`charset'language'%XX...`) decoded in its charset and in Latin-1. */
function extendedValues(value: string): string[] {
  const first = value.indexOf("'");
  const second = first === -1 ? -1 : value.indexOf("'", first + 1);
  const bytes = percentDecoded(second === -1 ? value : value.slice(second + 1));
  return [decodedIn(bytes, second === -1 ? '' : value.slice(0, first)), bytes.toString('latin1')];
}

/** RFC 2231 continuations, "name*0" on while the next index is there; a piece named "*N*" is encoded. */
function joinedPieces(pieces: ReadonlyMap<number, { readonly value: string; readonly encoded: boolean }>): string[] {
  const first = pieces.get(0) as { readonly value: string; readonly encoded: boolean };
  const quote = first.encoded ? first.value.indexOf("'") : -1;
  const second = quote === -1 ? -1 : first.value.indexOf("'", quote + 1);
  const charset = second === -1 ? '' : first.value.slice(0, quote);
  const parts: Buffer[] = [];
  for (let index = 0; pieces.has(index); index++) {
    const piece = pieces.get(index) as { readonly value: string; readonly encoded: boolean };
    const value = index === 0 && second !== -1 ? piece.value.slice(second + 1) : piece.value;
    parts.push(piece.encoded ? percentDecoded(value) : Buffer.from(value, 'latin1'));
  }
  const joined = Buffer.concat(parts);
  return [decodedIn(joined, charset), joined.toString('latin1')];
}

/** %XX escapes as bytes, anything else as its Latin-1 byte (a character past Latin-1 as its UTF-8 bytes). */
function percentDecoded(text: string): Buffer {
  const bytes: number[] = [];
  for (let i = 0; i < text.length; i++) {
    const hex = text[i] === '%' ? text.slice(i + 1, i + 3) : '';
    if (/^[0-9A-Fa-f]{2}$/.test(hex)) {
      bytes.push(Number.parseInt(hex, 16));
      i += 2;
    } else {
      const code = text.charCodeAt(i);
      if (code < 0x100) bytes.push(code);
      else bytes.push(...Buffer.from(text[i] as string, 'utf8'));
    }
  }
  return Buffer.from(bytes);
}

/** `bytes` in the named charset (UTF-16 spells "_method" with NULs between), Latin-1 when unknown. */
function decodedIn(bytes: Buffer, charset: string): string {
  try {
    return new TextDecoder(charset === '' ? 'latin1' : charset).decode(bytes);
  } catch {
    return bytes.toString('latin1');
  }
}
