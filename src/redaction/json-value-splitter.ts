/**
 * Where the JSON values of a streamed body end, for the layer that joins a secret spread over them
 * (sse-delta-redactor.ts), when a line break is not where a value ends:
 *
 * - 'seq': a JSON text sequence (RFC 7464), each record RS, a JSON text, LF, printed over as many
 *   lines as its writer likes (`jq --seq` pretty-prints). A record ends at the first LF outside its
 *   containers and strings; an RS ends whatever record is still open (RFC 7464 2.4: a parser
 *   resynchronises there, as a raw RS cannot stand in a JSON text).
 * - 'array': one JSON array streamed element by element (Gemini's streamGenerateContent without
 *   `alt=sse`: `[{...}`, then `\r\n,\r\n{...}` per chunk, then `]`). Each element ends where its value
 *   closes, so it is not held for the comma the next chunk opens with (a number or literal ends at the
 *   byte after it). A body that does not open with `[` (after a BOM and spaces), bytes after the array's
 *   `]`, or a bracket that closes what was not open, are not followed: `passing` turns true, and the
 *   rest goes through as it comes (the byte scanner still sees it). Every element is followed, however
 *   many come in one chunk: a cap that turned joining off (found by review) let a key spread over the
 *   elements after it through whole; the cost is the event layer's, ~4 µs an element, as for NDJSON.
 *
 * Only brackets, quotes and backslashes are read (RFC 8259 2 and 7): the values are parsed later, one
 * at a time, and one that does not parse passes as it came.
 */

const RS = 0x1e;
const LF = 0x0a;
const QUOTE = 0x22;
const BACKSLASH = 0x5c;
const COMMA = 0x2c;
const BOM = [0xef, 0xbb, 0xbf];

function isJsonSpace(byte: number): boolean {
  return byte === 0x20 || byte === 0x09 || byte === 0x0a || byte === 0x0d;
}

function opens(byte: number): boolean {
  return byte === 0x7b || byte === 0x5b;
}

function closes(byte: number): boolean {
  return byte === 0x7d || byte === 0x5d;
}

export class JsonValueSplitter {
  readonly #kind: 'seq' | 'array';
  /** Containers open (for 'array', the array itself counts as one). */
  #depth = 0;
  #inString = false;
  #escaped = false;
  /** 'array': a number or literal element is being read (it ends at a space, a comma or the `]`). */
  #inScalar = false;
  /** 'array': the opening `[` has been read. */
  #started = false;
  /** 'seq': bytes of a record not yet ended have been read. */
  #recordOpen = false;
  #passing = false;
  /** How many bytes of a leading BOM were read. */
  #bomRead = 0;

  constructor(kind: 'seq' | 'array') {
    this.#kind = kind;
  }

  /** The rest of the body is not followed (see the header): the caller lets it through. */
  get passing(): boolean {
    return this.#passing;
  }

  /** Offsets in `chunk` just past each value's end; once `passing`, none after the point it turned. */
  ends(chunk: Buffer): number[] {
    return this.#kind === 'seq' ? this.#seqEnds(chunk) : this.#arrayEnds(chunk);
  }

  #seqEnds(chunk: Buffer): number[] {
    const ends: number[] = [];
    for (let i = 0; i < chunk.length; i++) {
      const byte = chunk[i] as number;
      if (byte === RS) {
        if (this.#recordOpen) ends.push(i);
        this.#depth = 0;
        this.#inString = false;
        this.#escaped = false;
        this.#recordOpen = true;
        continue;
      }
      this.#recordOpen = true;
      if (this.#inString) {
        this.#readStringByte(byte);
      } else if (byte === QUOTE) {
        this.#inString = true;
      } else if (opens(byte)) {
        this.#depth++;
      } else if (closes(byte)) {
        if (this.#depth > 0) this.#depth--;
      } else if (byte === LF && this.#depth === 0) {
        ends.push(i + 1);
        this.#recordOpen = false;
      }
    }
    return ends;
  }

  #arrayEnds(chunk: Buffer): number[] {
    const ends: number[] = [];
    for (let i = 0; i < chunk.length && !this.#passing; i++) {
      const byte = chunk[i] as number;
      if (this.#inString) {
        // A string element (depth 1) ends with its closing quote.
        if (this.#readStringByte(byte) && this.#depth === 1) ends.push(i + 1);
        continue;
      }
      if (this.#inScalar) {
        if (!isJsonSpace(byte) && byte !== COMMA && !closes(byte)) continue;
        this.#inScalar = false;
        ends.push(i);
      }
      if (!this.#started) {
        if (isJsonSpace(byte) || this.#skipBom(byte)) continue;
        this.#started = byte === 0x5b;
        this.#depth = 1;
        this.#passing = !this.#started;
      } else if (byte === QUOTE) {
        this.#inString = true;
      } else if (opens(byte)) {
        this.#depth++;
      } else if (closes(byte)) {
        this.#depth--;
        // The array's own `]` (or a bracket closing nothing): what follows is not followed.
        if (this.#depth <= 0) this.#passing = true;
        else if (this.#depth === 1) ends.push(i + 1);
      } else if (this.#depth === 1 && !isJsonSpace(byte) && byte !== COMMA) {
        this.#inScalar = true;
      }
    }
    return ends;
  }

  /** The bytes of a UTF-8 BOM before the array's `[` (a client's decoder drops it): true while one is read. */
  #skipBom(byte: number): boolean {
    if (this.#bomRead < 3 && byte === (BOM[this.#bomRead] as number)) {
      this.#bomRead++;
      return true;
    }
    return false;
  }

  /** Reads a byte inside a string; true when it was the closing quote. */
  #readStringByte(byte: number): boolean {
    if (this.#escaped) {
      this.#escaped = false;
    } else if (byte === BACKSLASH) {
      this.#escaped = true;
    } else if (byte === QUOTE) {
      this.#inString = false;
      return true;
    }
    return false;
  }
}
