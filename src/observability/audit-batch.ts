/**
 * One write of the audit log: records encoded as UTF-8, chained and sealed where they will be written,
 * in a buffer kept from one write to the next (the write is synchronous, so it is free again once the
 * batch is on disk).
 *
 * A record's text is encoded once. The chain hash (audit-chain.ts: SHA-256 of prev, "\n", the record)
 * is taken over those bytes, with prev and the newline encoded just before them and then covered by
 * moving the record back over them, and the hash field is appended in place: no string is built per
 * record for the hash's input or for the sealed line, each of which V8 copied whole and encoded again.
 */
import { hash } from 'node:crypto';

/** `,"hash":"` before the hash; `"}` and the newline after it. */
const HASH_FIELD = Buffer.from(',"hash":"', 'latin1');
const QUOTE = 0x22;
const CLOSE = 0x7d;
const NEWLINE = 0x0a;
/** A record's bytes beyond its own text: the hash field, 64 hex digits, `"}` and the newline. */
const SEAL_BYTES = HASH_FIELD.length + 64 + 3;

export class AuditBatch {
  #buffer: Buffer;
  #end = 0;
  readonly #initialBytes: number;
  readonly #keepBytes: number;

  /** `keepBytes`: the largest buffer kept between batches (one burst does not keep a large one for good). */
  constructor(initialBytes: number, keepBytes: number) {
    this.#buffer = Buffer.allocUnsafe(initialBytes);
    this.#initialBytes = initialBytes;
    this.#keepBytes = Math.max(keepBytes, initialBytes);
  }

  /** Empties the batch once it is written; a buffer a burst grew past keepBytes is let go. */
  clear(): void {
    this.#end = 0;
    if (this.#buffer.length > this.#keepBytes) this.#buffer = Buffer.allocUnsafe(this.#initialBytes);
  }

  /** The batch's lines, newline-terminated: a view, valid until the next append or clear. */
  get bytes(): Buffer {
    return this.#buffer.subarray(0, this.#end);
  }

  /** The batch's lines as text (for the live feed and the webhook copy; records hold no raw newline). */
  lines(): string[] {
    const lines = this.#buffer.toString('utf8', 0, this.#end).split('\n');
    lines.pop();
    return lines;
  }

  /**
   * Appends `canonical` (a record's JSON text, ending in "}", already scrubbed), chained to `prev`, as
   * one line `{...,"hash":"<hex>"}`; returns the hash, the next record's prev.
   */
  append(canonical: string, prev: string): string {
    const start = this.#end;
    // UTF-8 takes at most 3 bytes per UTF-16 code unit; the write below must never be cut short.
    this.#reserve(start, (prev.length + 1 + canonical.length) * 3 + SEAL_BYTES);
    const buffer = this.#buffer;
    const from = start + buffer.write(prev, start, 'utf8') + 1;
    buffer[from - 1] = NEWLINE;
    const to = from + buffer.write(canonical, from, 'utf8');
    const sealed = hash('sha256', buffer.subarray(start, to), 'hex');
    // The record, less its closing brace, moves back over prev and the newline.
    buffer.copyWithin(start, from, to - 1);
    let end = start + (to - 1 - from);
    buffer.set(HASH_FIELD, end);
    end += HASH_FIELD.length;
    end += buffer.write(sealed, end, 'latin1');
    buffer[end++] = QUOTE;
    buffer[end++] = CLOSE;
    buffer[end++] = NEWLINE;
    this.#end = end;
    return sealed;
  }

  /** Room for `bytes` more after `keep`, keeping what is before it. */
  #reserve(keep: number, bytes: number): void {
    if (keep + bytes <= this.#buffer.length) return;
    const larger = Buffer.allocUnsafe(Math.max(this.#buffer.length * 2, keep + bytes));
    this.#buffer.copy(larger, 0, 0, keep);
    this.#buffer = larger;
  }
}
