/**
 * A set of literal byte strings (the forms of the secrets in scope) searched in Buffers.
 *
 * Three strategies with the same answers:
 *  - up to FILTER_MAX_NEEDLES (the forms of a few secrets, the common case): the WebAssembly SIMD
 *    prefix filter (prefix-filter.ts) on the needles' first three bytes, each candidate verified byte
 *    for byte: 2.8-3.2 GB/s for the 12 forms of one key, against 1.0-1.5 GB/s for one indexOf pass per
 *    form, and 2 GB/s against 0.4 for an 8-character password's forms;
 *  - few needles where WebAssembly cannot run: Buffer#indexOf per needle, node's native
 *    Boyer-Moore-Horspool search, which skips ahead by up to the needle length;
 *  - many needles: sampled q-gram hashing. Every head (below) is at least `window` bytes long; index
 *    each q-gram of the last `window` bytes of every head (its most random part: a shared "sk-proj-"
 *    prefix comes first) and probe the text only every `window - q + 1` bytes. Any occurrence of a
 *    needle covers a window in which exactly one probe position lands with its whole q-gram, so every
 *    occurrence is found with ~1/stride hash probes per byte, then verified byte for byte. Memory is
 *    linear in the total needle length, unlike a dense Aho-Corasick table.
 *
 * Pieces: a needle may carry a head (secret-forms.ts), the leading bytes a piece of it must match.
 * Every search looks for heads (a whole needle begins with its head), and each head found is settled
 * where it stands: the whole needle there is a match; otherwise the piece is masked from its start
 * through the run of key-like bytes after it, up to the needle's length, whether or not those bytes
 * continue the needle (so the marker's extent tells a guesser nothing). When that run reaches the end
 * of data that is not final, the piece is left undecided and the caller holds it back.
 *
 * `partialSuffix` answers what the streaming redactor must hold back at a chunk end: the longest
 * suffix of the data that is a proper prefix of some needle (binary search in the sorted needles,
 * after a two-byte filter).
 *
 * `surelyAbsentFrom` answers the common question on short strings (log lines, audit records, header
 * values: clean nearly always) from the string itself, without encoding it to bytes first.
 */

import { escapeRegExp, isWordByte } from './key-patterns.js';
import { PrefixFilter } from './prefix-filter.js';

export type SearchStrategy = 'filter' | 'indexOf' | 'sampled';

/** Without WebAssembly (no prefix filter), above this many needles the sampled hash search wins over indexOf (see `npm run bench:redact`). */
export const INDEXOF_MAX_NEEDLES = 16;
/**
 * Up to this many needles (the forms of one credential and of two values it rotated from) the prefix
 * filter's 8 buckets stay selective; with more, each bucket stands for more byte combinations and text
 * yields more false candidates, where the sampled search does not degrade. 3 x 17: a base64-alphabet
 * key holding "/" and "+" or "=" has 17 forms since "/" kept came in lower-case hex too (it had 16).
 */
const FILTER_MAX_NEEDLES = 51;
/**
 * Up to this many bytes (header values, log lines, small bodies) one pass with a two-byte filter beats
 * one native indexOf call per needle: the calls' fixed cost dominates on short data.
 */
const SHORT_DATA = 1024;
/**
 * Longer strings are searched with one RegExp alternation of the needles (V8's irregexp skips ahead on
 * an alternation of literals: 0.4-0.6 µs for a 650-character audit record against 2-2.6 µs in the byte
 * scanner, with one to three 164-character keys or ten 50-character ones, and 1 µs for a String#includes
 * per form of a single short key). Very long forms undo that and the pattern's compile time grows with
 * its size (a 1.2 KB token such as a JWT: 2 µs a line against 0.8 µs in the byte scanner, 20 ms to
 * compile on the first request after a change). So the pattern is built only within these bounds;
 * otherwise longer strings go to the byte scanner.
 */
const TEXT_FINDER_MAX_NEEDLE_BYTES = 1024;
const TEXT_FINDER_MAX_TOTAL_BYTES = 16 * 1024;
/** Up to this many characters (most header values) one pass with the two-byte filter beats the RegExp's fixed cost. */
const SHORT_TEXT = 64;

function hash8(data: Uint8Array, i: number): number {
  const a = (data[i] as number) | ((data[i + 1] as number) << 8) | ((data[i + 2] as number) << 16) | ((data[i + 3] as number) << 24);
  const b = (data[i + 4] as number) | ((data[i + 5] as number) << 8) | ((data[i + 6] as number) << 16) | ((data[i + 7] as number) << 24);
  let h = Math.imul(a, 0x85ebca6b) ^ Math.imul(b ^ (b >>> 15), 0xc2b2ae35);
  h ^= h >>> 13;
  h = Math.imul(h, 0x27d4eb2f);
  return h ^ (h >>> 16);
}

function hash4(data: Uint8Array, i: number): number {
  let h = (data[i] as number) | ((data[i + 1] as number) << 8) | ((data[i + 2] as number) << 16) | ((data[i + 3] as number) << 24);
  h = Math.imul(h ^ (h >>> 16), 0x85ebca6b);
  h = Math.imul(h ^ (h >>> 13), 0xc2b2ae35);
  return h ^ (h >>> 16);
}

/** A needle and the leading bytes a piece of it must match (its length, or no head: pieces are not masked). */
export interface HeadedNeedle {
  readonly bytes: Buffer;
  readonly head: number;
}

/**
 * The bytes a piece's run goes on over: letters, digits and the punctuation of keys and their
 * encodings (base64's +/=, base64url's -_, percent and \u escapes, ~), and, for a needle that holds
 * other bytes past its head, those too (runTableOf). Quotes, brackets, commas, &, dots and whitespace
 * end it otherwise, so a masked piece keeps what closes its JSON string or attribute, and the "..." a
 * page prints where it cut.
 */
const RUN_BYTES = runByteTable();
/** In a run table: the byte goes on only after an odd number of backslashes (runTableOf). */
const ESCAPED_ONLY = 2;
const BACKSLASH = 0x5c;
const QUOTE = 0x22;
const CR = 0x0d;
const LF = 0x0a;

function runByteTable(): Uint8Array {
  const table = new Uint8Array(256);
  for (let byte = 0; byte < 256; byte++) if (isWordByte(byte)) table[byte] = 1;
  for (const ch of '-_~+/=%\\') table[ch.charCodeAt(0)] = 1;
  return table;
}

/**
 * The run alphabet of a needle: RUN_BYTES and every byte the needle holds past its head, but for
 * line breaks and a bare quote. The run does not look at which byte the needle holds where, so a right
 * and a wrong guess at the next character read the same: were a byte outside RUN_BYTES to go on only
 * where it matched (as before), a guess of "." or "!" at each offset would answer where the key holds
 * one (found by review); now a guess tells only whether the key holds that byte somewhere past its
 * head, one bit a byte, never its place. A quote goes on only escaped (\", as the key's JSON form
 * writes it), and CR and LF not at all, except where the needle goes on with them (#settle's match):
 * a run over the quote that closes a JSON string left an SSE event that no longer parsed, whose other
 * fields were then not joined across events, and a value kept with a trailing newline ran over the
 * line breaks after every piece of it (both found by review). So for those three bytes alone a guess
 * placed right after them still tells a match from a mismatch; keys seldom hold them past the head.
 */
function runTableOf(needle: Buffer, head: number): Uint8Array {
  let table = RUN_BYTES;
  for (let k = head; k < needle.length; k++) {
    const byte = needle[k] as number;
    if (table[byte] !== 0 || byte === CR || byte === LF) continue;
    if (table === RUN_BYTES) table = RUN_BYTES.slice();
    table[byte] = byte === QUOTE ? ESCAPED_ONLY : 1;
  }
  return table;
}

/** True when an odd number of backslashes stands right before `at`, counted no further back than `from`. */
function escapedAt(data: Buffer, from: number, at: number): boolean {
  let slashes = 0;
  while (at - slashes > from && data[at - slashes - 1] === BACKSLASH) slashes++;
  return slashes % 2 === 1;
}

export class NeedleSet {
  /** Sorted byte-wise, deduplicated. */
  readonly needles: readonly Buffer[];
  /** heads[i]: the bytes of needles[i] a piece must match (needles[i].length: none). */
  readonly heads: readonly number[];
  /** runs[i]: the run alphabet of needles[i] past its head (runTableOf). */
  readonly #runs: readonly Uint8Array[];
  readonly minLength: number;
  /** The shortest head: nothing shorter can hold a match or a piece. */
  readonly minHead: number;
  readonly maxLength: number;
  readonly strategy: SearchStrategy;
  readonly #firstTwo = new Uint8Array(65536);
  readonly #first = new Uint8Array(256);
  /** Indexes of the needles by their first two bytes. */
  readonly #byFirstTwo = new Map<number, number[]>();
  /** The needles as strings, by their first two characters, when every needle is ASCII of 2+ bytes. */
  readonly #textByFirstTwo: Map<number, string[]> | null;
  /** Their heads likewise (a needle without pieces: itself). */
  readonly #textHeadsByFirstTwo: Map<number, string[]> | null;
  /** Any head, as a RegExp over a string's characters; null outside TEXT_FINDER_MAX_* (or not ASCII). */
  readonly #textFinder: RegExp | null;
  /** 1 for every byte that occurs anywhere in a needle: a text ending in any other byte has no partial. */
  readonly #anywhere = new Uint8Array(256);
  // sampled strategy
  #q = 0;
  #stride = 0;
  #mask = 0;
  #buckets = new Int32Array(0);
  #next = new Int32Array(0);
  #candNeedle = new Int32Array(0);
  #candOffset = new Int32Array(0);
  #candHash = new Int32Array(0);
  // filter strategy: built on the first long search (matchers used only for strings never need one);
  // null when its instance could not be made, and the indexOf search stands in.
  #filter: PrefixFilter | null | undefined;
  /** Candidate positions of the Buffer being searched; reused, as findMatches runs to its end synchronously. */
  readonly #positions: number[] = [];

  constructor(input: readonly (Buffer | HeadedNeedle)[], strategy?: SearchStrategy) {
    // The same bytes twice (a form two secrets share) keep the shorter head.
    const unique = new Map<string, HeadedNeedle>();
    for (const item of input) {
      const needle = Buffer.isBuffer(item) ? { bytes: item, head: item.length } : item;
      if (needle.bytes.length === 0) continue;
      const head = Math.min(needle.bytes.length, Math.max(2, needle.head));
      const key = needle.bytes.toString('latin1');
      const seen = unique.get(key);
      if (seen === undefined || head < seen.head) unique.set(key, { bytes: needle.bytes, head });
    }
    const sorted = [...unique.values()].sort((a, b) => Buffer.compare(a.bytes, b.bytes));
    const needles = sorted.map((n) => n.bytes);
    this.needles = needles;
    this.heads = sorted.map((n) => Math.min(n.head, n.bytes.length));
    this.#runs = sorted.map((n, i) => runTableOf(n.bytes, this.heads[i] as number));
    this.minLength = needles.reduce((min, n) => Math.min(min, n.length), Infinity);
    this.minHead = this.heads.reduce((min, h) => Math.min(min, h), Infinity);
    this.maxLength = needles.reduce((max, n) => Math.max(max, n.length), 0);
    needles.forEach((needle, i) => {
      for (const byte of needle) this.#anywhere[byte] = 1;
      this.#first[needle[0] as number] = 1;
      if (needle.length > 1) {
        const key = ((needle[0] as number) << 8) | (needle[1] as number);
        this.#firstTwo[key] = 1;
        const list = this.#byFirstTwo.get(key) ?? [];
        list.push(i);
        this.#byFirstTwo.set(key, list);
      }
    });
    const ascii = needles.every((needle) => needle.length > 1 && needle.every((byte) => byte < 0x80));
    const headText = (i: number): string => (needles[i] as Buffer).toString('latin1', 0, this.heads[i]);
    this.#textByFirstTwo = ascii ? new Map([...this.#byFirstTwo].map(([key, list]) => [key, list.map((i) => (needles[i] as Buffer).toString('latin1'))])) : null;
    this.#textHeadsByFirstTwo = ascii ? new Map([...this.#byFirstTwo].map(([key, list]) => [key, [...new Set(list.map(headText))]])) : null;
    const totalBytes = needles.reduce((sum, n) => sum + n.length, 0);
    const searchable = ascii && needles.length > 0 && this.maxLength <= TEXT_FINDER_MAX_NEEDLE_BYTES && totalBytes <= TEXT_FINDER_MAX_TOTAL_BYTES;
    this.#textFinder = searchable ? new RegExp([...new Set(needles.map((_, i) => headText(i)))].map(escapeRegExp).join('|')) : null;
    this.strategy = strategy ?? defaultStrategy(needles.length, this.minHead);
    if (this.strategy === 'filter' && this.minHead < 2) throw new Error('the filter strategy needs needles of at least 2 bytes');
    if (this.strategy === 'sampled') this.#buildSampled();
  }

  get size(): number {
    return this.needles.length;
  }

  #buildSampled(): void {
    if (this.minHead < 8) throw new Error('the sampled strategy needs needles (heads) of at least 8 bytes');
    // The windows lie in the heads: every occurrence of a needle or of a piece covers its head.
    const window = Math.min(this.minHead, 32);
    // A head is often 16 bytes (8 characters past a vendor prefix); 4-grams there probe every 13 bytes
    // instead of every 9, and stay selective enough (npm run bench:redact).
    const q = window >= 24 ? 8 : 4;
    this.#q = q;
    this.#stride = window - q + 1;
    const perNeedle = window - q + 1;
    const count = this.needles.length * perNeedle;
    let size = 1;
    while (size < count * 2) size <<= 1;
    this.#mask = size - 1;
    this.#buckets = new Int32Array(size).fill(-1);
    this.#next = new Int32Array(count);
    this.#candNeedle = new Int32Array(count);
    this.#candOffset = new Int32Array(count);
    this.#candHash = new Int32Array(count);
    const hash = q === 8 ? hash8 : hash4;
    let c = 0;
    this.needles.forEach((needle, j) => {
      const windowStart = (this.heads[j] as number) - window;
      for (let o = 0; o < perNeedle; o++) {
        const offset = windowStart + o;
        const h = hash(needle, offset);
        this.#candNeedle[c] = j;
        this.#candOffset[c] = offset;
        this.#candHash[c] = h;
        const bucket = h & this.#mask;
        this.#next[c] = this.#buckets[bucket] as number;
        this.#buckets[bucket] = c;
        c++;
      }
    });
  }

  /**
   * True when findMatches would search `data` with the prefix filter; a caller may then run one filter
   * over these needles and other prefixes, and hand its candidates to findAt.
   */
  filters(data: Buffer): boolean {
    return this.strategy === 'filter' && this.needles.length > 0 && data.length > SHORT_DATA && data.length >= this.minHead && PrefixFilter.available;
  }

  /**
   * Appends [start, end) of every occurrence of every needle in `data` to `out`, and of every piece
   * decided. Returns the start of the earliest piece that more data could still extend (never when
   * `final`), or -1: the caller holds back from there.
   */
  findMatches(data: Buffer, out: number[], final = true): number {
    if (this.needles.length === 0 || data.length < this.minHead) return -1;
    if (data.length <= SHORT_DATA && this.minHead >= 2) return this.#findInShort(data, out, final);
    if (this.strategy === 'filter') {
      if (this.#filter === undefined) this.#filter = PrefixFilter.create(this.needles);
      if (this.#filter !== null) return this.#findFiltered(this.#filter, data, out, final);
    }
    let live = -1;
    if (this.strategy !== 'sampled') {
      this.needles.forEach((needle, i) => {
        const head = needle.subarray(0, this.heads[i]);
        let at = data.indexOf(head);
        while (at !== -1) {
          live = earliest(live, this.#settle(data, at, i, out, final));
          at = data.indexOf(head, at + 1);
        }
      });
      return live;
    }
    const q = this.#q;
    const stride = this.#stride;
    const mask = this.#mask;
    const buckets = this.#buckets;
    const next = this.#next;
    const candHash = this.#candHash;
    const candNeedle = this.#candNeedle;
    const candOffset = this.#candOffset;
    const needles = this.needles;
    const n = data.length;
    const hash = q === 8 ? hash8 : hash4;
    const heads = this.heads;
    for (let p = 0; p + q <= n; p += stride) {
      const h = hash(data, p);
      for (let c = buckets[h & mask] as number; c !== -1; c = next[c] as number) {
        if (candHash[c] !== h) continue;
        const j = candNeedle[c] as number;
        const needle = needles[j] as Buffer;
        const head = heads[j] as number;
        const start = p - (candOffset[c] as number);
        if (start < 0 || start + head > n || data.compare(needle, 0, head, start, start + head) !== 0) continue;
        live = earliest(live, this.#settle(data, start, j, out, final));
      }
    }
    return live;
  }

  #findFiltered(filter: PrefixFilter, data: Buffer, out: number[], final: boolean): number {
    const positions = this.#positions;
    positions.length = 0;
    filter.candidates(data, positions);
    return this.findAt(data, positions, out, final);
  }

  /**
   * findMatches, given ascending `candidates` from a prefix filter over (at least) these needles: every
   * position where a needle starts is among them, and each is verified byte for byte.
   */
  findAt(data: Buffer, candidates: readonly number[], out: number[], final = true): number {
    const n = data.length;
    let live = -1;
    for (const p of candidates) {
      if (p + 1 >= n) continue;
      const key = ((data[p] as number) << 8) | (data[p + 1] as number);
      if (this.#firstTwo[key] === 0) continue;
      live = earliest(live, this.#settleAt(data, p, key, out, final));
    }
    return live;
  }

  #findInShort(data: Buffer, out: number[], final: boolean): number {
    const n = data.length;
    const firstTwo = this.#firstTwo;
    let live = -1;
    for (let p = 0, last = n - this.minHead; p <= last; p++) {
      const key = ((data[p] as number) << 8) | (data[p + 1] as number);
      if (firstTwo[key] === 0) continue;
      live = earliest(live, this.#settleAt(data, p, key, out, final));
    }
    return live;
  }

  /** Every needle starting with the two bytes `key` whose head is at `p`, settled (#settle). */
  #settleAt(data: Buffer, p: number, key: number, out: number[], final: boolean): number {
    const n = data.length;
    let live = -1;
    for (const i of this.#byFirstTwo.get(key) as number[]) {
      const needle = this.needles[i] as Buffer;
      const head = this.heads[i] as number;
      if (p + head > n || data.compare(needle, 0, head, p, p + head) !== 0) continue;
      live = earliest(live, this.#settle(data, p, i, out, final));
    }
    return live;
  }

  /**
   * Needle i's head is at `p`. The whole needle there is a match. Otherwise the piece is masked from p
   * through as much of the needle as matches there and then the run of its needle's alphabet
   * (runTableOf), up to the needle's length, whether or not those bytes continue the needle: a right
   * and a wrong guess at the next character read the same, so an agent that makes a reflecting
   * upstream echo its guesses learns nothing from the marker past the head (but at a bare quote or a
   * line break, runTableOf). When the piece reaches the end of data more may follow (not `final`), it
   * is undecided: returns p.
   */
  #settle(data: Buffer, p: number, i: number, out: number[], final: boolean): number {
    const needle = this.needles[i] as Buffer;
    const n = data.length;
    const head = this.heads[i] as number;
    const whole = p + needle.length;
    const limit = Math.min(whole, n);
    let end = p + head;
    while (end < limit && data[end] === needle[end - p]) end++;
    if (end !== whole) {
      const run = this.#runs[i] as Uint8Array;
      while (end < limit) {
        const kind = run[data[end] as number];
        if (kind !== 1 && (kind !== ESCAPED_ONLY || !escapedAt(data, p, end))) break;
        end++;
      }
      if (end === n && end < whole && !final) return p;
    }
    // A mask that ends in an odd number of backslashes took the escape of the byte after it (the \ of
    // a JSON \"): the quote left alone would close the string early, and the body no longer parse
    // (found by review). The escaped byte is masked too. Decided by the bytes from p on alone, whether
    // the needle matched them or not: counting only those past the match (a first fix, which left the
    // backslash visible) answered guesses at the key's next character (found by the next review).
    if (escapedAt(data, p, end)) {
      if (end < n) end++;
      else if (!final) return p;
    }
    out.push(p, end);
    return -1;
  }

  /**
   * True when the bytes of `text` certainly hold no needle and no suffix of `minPartial` (at least 2)
   * or more bytes that is a proper prefix of one; false means "scan the bytes". Exact when every needle
   * is ASCII: an ASCII needle occurs in a string's UTF-8 bytes exactly where it occurs in the string
   * (UTF-8 multi-byte sequences hold no ASCII byte), and likewise in its Latin-1 bytes, one per
   * character, provided no character is above U+00FF (the caller checks: only its low byte is written).
   */
  surelyAbsentFrom(text: string, minPartial: number): boolean {
    if (this.needles.length === 0) return true;
    if (this.#textByFirstTwo === null || minPartial < 2) return false;
    const n = text.length;
    if (n > SHORT_TEXT) {
      // Outside the pattern's bounds a long string is left to the byte scanner.
      if (this.#textFinder === null || this.#textFinder.test(text)) return false;
    } else {
      for (let p = 0, last = n - this.minHead; p <= last; p++) {
        const list = this.#textCandidates(text, p, this.#textHeadsByFirstTwo);
        if (list === undefined) continue;
        for (const head of list) if (text.startsWith(head, p)) return false;
      }
    }
    // A suffix that starts a needle ends in a character of that needle; log lines and audit records end
    // in "}" or a newline, which few secrets hold.
    if (n === 0 || this.#anywhere[text.charCodeAt(n - 1) & 0xff] === 0) return true;
    // And every character of it is one some needle holds: the suffixes to try start after the last
    // character no needle holds (a space, a quote), not maxLength back (the joined text of an SSE
    // delta's path is a form's length or more, and trying each position was most of an event's cost).
    let from = n - 1;
    for (const lowest = Math.max(0, n - this.maxLength + 1); from > lowest && this.#anywhere[text.charCodeAt(from - 1) & 0xff] !== 0; ) from--;
    for (let p = from, last = n - minPartial; p <= last; p++) {
      const list = this.#textCandidates(text, p, this.#textByFirstTwo);
      if (list === undefined) continue;
      const tail = text.slice(p);
      for (const needle of list) if (needle.length > tail.length && needle.startsWith(tail)) return false;
    }
    return true;
  }

  /** The strings of `byFirstTwo` (needles or heads) that start with text[p] text[p+1] (both ASCII), if any. */
  #textCandidates(text: string, p: number, byFirstTwo: Map<number, string[]> | null): string[] | undefined {
    const c0 = text.charCodeAt(p);
    const c1 = text.charCodeAt(p + 1);
    if (c0 > 0x7f || c1 > 0x7f || this.#firstTwo[(c0 << 8) | c1] === 0) return undefined;
    return byFirstTwo?.get((c0 << 8) | c1);
  }

  /** Length of the longest suffix of `data` that is a proper prefix of some needle (0 if none). */
  partialSuffix(data: Buffer): number {
    const n = data.length;
    if (this.needles.length === 0 || n === 0) return 0;
    for (let p = Math.max(0, n - this.maxLength + 1); p < n; p++) {
      const b0 = data[p] as number;
      if (this.#first[b0] === 0) continue;
      if (p + 1 < n && this.#firstTwo[(b0 << 8) | (data[p + 1] as number)] === 0) continue;
      if (this.#isProperPrefix(data.subarray(p))) return n - p;
    }
    return 0;
  }

  #isProperPrefix(slice: Buffer): boolean {
    let low = 0;
    let high = this.needles.length;
    while (low < high) {
      const mid = (low + high) >>> 1;
      if (Buffer.compare(this.needles[mid] as Buffer, slice) < 0) low = mid + 1;
      else high = mid;
    }
    // Needles that start with `slice` sort right after it; the first one at or after it decides.
    for (let i = low; i < this.needles.length; i++) {
      const needle = this.needles[i] as Buffer;
      if (needle.length < slice.length || needle.compare(slice, 0, slice.length, 0, slice.length) !== 0) return false;
      if (needle.length > slice.length) return true;
    }
    return false;
  }
}

/** The earlier of two undecided starts (-1: none). */
function earliest(a: number, b: number): number {
  if (a === -1) return b;
  return b === -1 ? a : Math.min(a, b);
}

function defaultStrategy(count: number, minLength: number): SearchStrategy {
  if (count <= FILTER_MAX_NEEDLES && minLength >= 2 && PrefixFilter.available) return 'filter';
  return count <= INDEXOF_MAX_NEEDLES || minLength < 8 ? 'indexOf' : 'sampled';
}
