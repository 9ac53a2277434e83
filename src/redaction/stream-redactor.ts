/**
 * The streaming redactor: bytes in, bytes out, every match replaced by one "[REDACTED]" per maximal run
 * of matched bytes, identically whatever the chunking.
 *
 * At each chunk end only the bytes that could still become part of a match are held back (a live
 * partial match); everything before them is final and leaves at once, so SSE events and chunked
 * streams are not delayed when nothing is live. A match that straddles the hold boundary keeps the
 * carried bytes marked, so a second secret overlapping the first cannot slip out unmasked.
 */
import type { RedactionMatcher } from './redaction-matcher.js';

export const REDACTION_MARKER = Buffer.from('[REDACTED]', 'latin1');
const EMPTY = Buffer.alloc(0);

export class StreamRedactor {
  readonly #matcher: RedactionMatcher;
  #carry: Buffer = EMPTY;
  /** Bytes at the start of the carry that belong to a run already replaced by a marker. */
  #carryMasked = 0;
  /** The last output ended inside a masked run (a run continuing into the next chunk adds no marker). */
  #inRun = false;
  /** The byte before the carry, for word-boundary checks; -1 at the start. */
  #before = -1;
  #ended = false;
  /** Markers written so far: the audit record's `redactions`. */
  redactions = 0;

  constructor(matcher: RedactionMatcher) {
    this.#matcher = matcher;
  }

  /** Held-back byte count: what a stream that breaks now would lose. */
  get held(): number {
    return this.#carry.length;
  }

  push(chunk: Buffer): Buffer {
    if (this.#ended) throw new Error('push after end');
    const data = this.#carry.length === 0 ? chunk : Buffer.concat([this.#carry, chunk]);
    return this.#emit(data, false);
  }

  /**
   * A stream that is whole from the start (a header value, a buffered body): one final scan, with no
   * search for partial matches at a chunk end that has none. Same output as push(data) + end().
   */
  whole(data: Buffer): Buffer {
    if (this.#ended || this.#carry.length > 0) throw new Error('whole() on a stream already started');
    this.#ended = true;
    return this.#emit(data, true);
  }

  end(): Buffer {
    if (this.#ended) return EMPTY;
    this.#ended = true;
    const data = this.#carry;
    this.#carry = EMPTY;
    return this.#emit(data, true);
  }

  #emit(data: Buffer, final: boolean): Buffer {
    const spans: number[] = [];
    const alreadyMasked = this.#carryMasked;
    if (alreadyMasked > 0) spans.push(0, alreadyMasked);
    const hold = data.length === 0 ? 0 : this.#matcher.scan(data, this.#before, final, spans);
    const boundary = data.length - hold;

    const ordered = sortSpans(spans);
    const parts: Buffer[] = [];
    let pos = 0;
    for (let i = 0; i < ordered.length; i += 2) {
      const start = ordered[i] as number;
      const end = ordered[i + 1] as number;
      if (start >= boundary) break;
      if (end <= pos) continue;
      if (start > pos) {
        parts.push(data.subarray(pos, start));
        this.#inRun = false;
      }
      if (!(this.#inRun && start <= pos)) {
        parts.push(REDACTION_MARKER);
        this.redactions++;
      }
      this.#inRun = true;
      pos = end;
    }
    if (pos < boundary) {
      parts.push(data.subarray(pos, boundary));
      this.#inRun = false;
    }
    if (!final) {
      const carryFrom = Math.min(boundary, data.length);
      // A masked prefix that was not reached (everything held) stays masked.
      this.#carryMasked = Math.max(0, Math.max(pos, alreadyMasked) - carryFrom);
      if (carryFrom > 0) this.#before = data[carryFrom - 1] as number;
      this.#carry = carryFrom === data.length ? EMPTY : Buffer.from(data.subarray(carryFrom));
    }
    if (parts.length === 0) return EMPTY;
    return parts.length === 1 ? (parts[0] as Buffer) : Buffer.concat(parts);
  }
}

/** [start, end) pairs sorted by start (then longest first), as a flat array. */
function sortSpans(spans: number[]): number[] {
  if (spans.length <= 2) return spans;
  const pairs: Array<[number, number]> = [];
  for (let i = 0; i < spans.length; i += 2) pairs.push([spans[i] as number, spans[i + 1] as number]);
  pairs.sort((a, b) => a[0] - b[0] || b[1] - a[1]);
  return pairs.flat();
}
