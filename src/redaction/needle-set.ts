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
 *  - many needles: sampled q-gram hashing. Every needle is at least `window` bytes long; index each
 *    q-gram of the last `window` bytes of every needle (the random tail of a key, not a shared
 *    "sk-proj-" prefix) and probe the text only every `window - q + 1` bytes. Any occurrence of a
 *    needle covers a window in which exactly one probe position lands with its whole q-gram, so every
 *    occurrence is found with ~1/stride hash probes per byte, then verified byte for byte. Memory is
 *    linear in the total needle length, unlike a dense Aho-Corasick table.
 *
 * `partialSuffix` answers what the streaming redactor must hold back at a chunk end: the longest
 * suffix of the data that is a proper prefix of some needle (binary search in the sorted needles,
 * after a two-byte filter).
 *
 * `surelyAbsentFrom` answers the common question on short strings (log lines, audit records, header
 * values: clean nearly always) from the string itself, without encoding it to bytes first.
 */

import { escapeRegExp } from './key-patterns.js';
import { PrefixFilter } from './prefix-filter.js';

export type SearchStrategy = 'filter' | 'indexOf' | 'sampled';

/** Without WebAssembly (no prefix filter), above this many needles the sampled hash search wins over indexOf (see `npm run bench:redact`). */
export const INDEXOF_MAX_NEEDLES = 16;
/**
 * Up to this many needles (the forms of one credential and of two values it rotated from) the prefix
 * filter's 8 buckets stay selective; with more, each bucket stands for more byte combinations and text
 * yields more false candidates, where the sampled search does not degrade.
 */
const FILTER_MAX_NEEDLES = 48;
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

export class NeedleSet {
  /** Sorted byte-wise, deduplicated. */
  readonly needles: readonly Buffer[];
  readonly minLength: number;
  readonly maxLength: number;
  readonly strategy: SearchStrategy;
  readonly #firstTwo = new Uint8Array(65536);
  readonly #first = new Uint8Array(256);
  /** Needles by their first two bytes, for the short-data pass. */
  readonly #byFirstTwo = new Map<number, Buffer[]>();
  /** The needles as strings, by their first two characters, when every needle is ASCII of 2+ bytes. */
  readonly #textByFirstTwo: Map<number, string[]> | null;
  /** Any needle, as a RegExp over a string's characters; null outside TEXT_FINDER_MAX_* (or not ASCII). */
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

  constructor(input: readonly Buffer[], strategy?: SearchStrategy) {
    const unique = new Map<string, Buffer>();
    for (const needle of input) if (needle.length > 0) unique.set(needle.toString('latin1'), needle);
    const needles = [...unique.values()].sort(Buffer.compare);
    this.needles = needles;
    this.minLength = needles.reduce((min, n) => Math.min(min, n.length), Infinity);
    this.maxLength = needles.reduce((max, n) => Math.max(max, n.length), 0);
    for (const needle of needles) {
      for (const byte of needle) this.#anywhere[byte] = 1;
      this.#first[needle[0] as number] = 1;
      if (needle.length > 1) {
        const key = ((needle[0] as number) << 8) | (needle[1] as number);
        this.#firstTwo[key] = 1;
        const list = this.#byFirstTwo.get(key) ?? [];
        list.push(needle);
        this.#byFirstTwo.set(key, list);
      }
    }
    const ascii = needles.every((needle) => needle.length > 1 && needle.every((byte) => byte < 0x80));
    this.#textByFirstTwo = ascii ? new Map([...this.#byFirstTwo].map(([key, list]) => [key, list.map((n) => n.toString('latin1'))])) : null;
    const totalBytes = needles.reduce((sum, n) => sum + n.length, 0);
    const searchable = ascii && needles.length > 0 && this.maxLength <= TEXT_FINDER_MAX_NEEDLE_BYTES && totalBytes <= TEXT_FINDER_MAX_TOTAL_BYTES;
    this.#textFinder = searchable ? new RegExp(needles.map((n) => escapeRegExp(n.toString('latin1'))).join('|')) : null;
    this.strategy = strategy ?? defaultStrategy(needles.length, this.minLength);
    if (this.strategy === 'filter' && this.minLength < 2) throw new Error('the filter strategy needs needles of at least 2 bytes');
    if (this.strategy === 'sampled') this.#buildSampled();
  }

  get size(): number {
    return this.needles.length;
  }

  #buildSampled(): void {
    if (this.minLength < 8) throw new Error('the sampled strategy needs needles of at least 8 bytes');
    const window = Math.min(this.minLength, 32);
    const q = window >= 16 ? 8 : 4;
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
      const windowStart = needle.length - window;
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
    return this.strategy === 'filter' && this.needles.length > 0 && data.length > SHORT_DATA && data.length >= this.minLength && PrefixFilter.available;
  }

  /** Appends [start, end) of every occurrence of every needle in `data` to `out`. */
  findMatches(data: Buffer, out: number[]): void {
    if (this.needles.length === 0 || data.length < this.minLength) return;
    if (data.length <= SHORT_DATA && this.minLength >= 2) return this.#findInShort(data, out);
    if (this.strategy === 'filter') {
      if (this.#filter === undefined) this.#filter = PrefixFilter.create(this.needles);
      if (this.#filter !== null) return this.#findFiltered(this.#filter, data, out);
    }
    if (this.strategy !== 'sampled') {
      for (const needle of this.needles) {
        let at = data.indexOf(needle);
        while (at !== -1) {
          out.push(at, at + needle.length);
          at = data.indexOf(needle, at + 1);
        }
      }
      return;
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
    for (let p = 0; p + q <= n; p += stride) {
      const h = hash(data, p);
      for (let c = buckets[h & mask] as number; c !== -1; c = next[c] as number) {
        if (candHash[c] !== h) continue;
        const needle = needles[candNeedle[c] as number] as Buffer;
        const start = p - (candOffset[c] as number);
        const end = start + needle.length;
        if (start < 0 || end > n) continue;
        if (data.compare(needle, 0, needle.length, start, end) === 0) out.push(start, end);
      }
    }
  }

  #findFiltered(filter: PrefixFilter, data: Buffer, out: number[]): void {
    const positions = this.#positions;
    positions.length = 0;
    filter.candidates(data, positions);
    this.findAt(data, positions, out);
  }

  /**
   * findMatches, given ascending `candidates` from a prefix filter over (at least) these needles: every
   * position where a needle starts is among them, and each is verified byte for byte.
   */
  findAt(data: Buffer, candidates: readonly number[], out: number[]): void {
    const n = data.length;
    for (const p of candidates) {
      if (p + 1 >= n) continue;
      const key = ((data[p] as number) << 8) | (data[p + 1] as number);
      if (this.#firstTwo[key] === 0) continue;
      for (const needle of this.#byFirstTwo.get(key) as Buffer[]) {
        const end = p + needle.length;
        if (end <= n && data.compare(needle, 0, needle.length, p, end) === 0) out.push(p, end);
      }
    }
  }

  #findInShort(data: Buffer, out: number[]): void {
    const n = data.length;
    const firstTwo = this.#firstTwo;
    for (let p = 0, last = n - this.minLength; p <= last; p++) {
      const key = ((data[p] as number) << 8) | (data[p + 1] as number);
      if (firstTwo[key] === 0) continue;
      for (const needle of this.#byFirstTwo.get(key) as Buffer[]) {
        const end = p + needle.length;
        if (end <= n && data.compare(needle, 0, needle.length, p, end) === 0) out.push(p, end);
      }
    }
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
      for (let p = 0, last = n - this.minLength; p <= last; p++) {
        const list = this.#textCandidates(text, p);
        if (list === undefined) continue;
        for (const needle of list) if (text.startsWith(needle, p)) return false;
      }
    }
    // A suffix that starts a needle ends in a character of that needle; log lines and audit records end
    // in "}" or a newline, which few secrets hold.
    if (n === 0 || this.#anywhere[text.charCodeAt(n - 1) & 0xff] === 0) return true;
    for (let p = Math.max(0, n - this.maxLength + 1), last = n - minPartial; p <= last; p++) {
      const list = this.#textCandidates(text, p);
      if (list === undefined) continue;
      const tail = text.slice(p);
      for (const needle of list) if (needle.length > tail.length && needle.startsWith(tail)) return false;
    }
    return true;
  }

  /** The needles that start with text[p] text[p+1] (both ASCII), if any. */
  #textCandidates(text: string, p: number): string[] | undefined {
    const c0 = text.charCodeAt(p);
    const c1 = text.charCodeAt(p + 1);
    if (c0 > 0x7f || c1 > 0x7f || this.#firstTwo[(c0 << 8) | c1] === 0) return undefined;
    return this.#textByFirstTwo?.get((c0 << 8) | c1);
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

function defaultStrategy(count: number, minLength: number): SearchStrategy {
  if (count <= FILTER_MAX_NEEDLES && minLength >= 2 && PrefixFilter.available) return 'filter';
  return count <= INDEXOF_MAX_NEEDLES || minLength < 8 ? 'indexOf' : 'sampled';
}
