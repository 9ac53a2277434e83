/**
 * The audit hash chain. Each record carries `prev` (the previous record's hash) and `hash`, the
 * SHA-256 of `prev` followed by the record's canonical JSON without its hash (fields in their written
 * order, JSON.stringify's escaping). A deleted, edited, inserted or reordered line breaks the chain at
 * that line; rotation carries the chain from one file to the next. The audit log seals records in its
 * write buffer (audit-batch.ts), over the same bytes chainHash hashes.
 */
import { hash } from 'node:crypto';

/** The `prev` of the very first record. */
export const GENESIS = '0'.repeat(64);

export function chainHash(prev: string, canonical: string): string {
  // One-shot crypto.hash (Node 20.12+): a third of the cost of a Hash object per record.
  return hash('sha256', `${prev}\n${canonical}`, 'hex');
}

export type ChainVerdict =
  | {
      ok: true;
      records: number;
      lastHash: string;
      /** What the first record chains to: GENESIS when the log starts there. */
      firstPrev: string;
      /** With `seek`: the first record whose hash starts with it (its 1-based place in the chain, file and line), or null. */
      sought?: { readonly record: number; readonly file: string; readonly line: number } | null;
    }
  | { ok: false; line: number; file: string; problem: string; records: number };

/**
 * Verifies files in order (oldest first), continuing the chain from one to the next. The first record
 * of the first file may chain to anything (a rotated-away predecessor; the caller decides, from
 * `firstPrev`, whether the log must start at GENESIS); every later link must hold. A chain cannot see
 * its own tail cut off: the caller looks for a head kept elsewhere (`seek`), which must be in it.
 */
export function verifyChain(files: ReadonlyArray<{ name: string; text: string }>, seek?: string): ChainVerdict {
  let expectedPrev: string | null = null;
  let firstPrev = GENESIS;
  let records = 0;
  let sought: { record: number; file: string; line: number } | null = null;
  for (const file of files) {
    const lines = file.text.split('\n');
    if (lines[lines.length - 1] === '') lines.pop();
    for (let i = 0; i < lines.length; i++) {
      const line = lines[i] as string;
      const at = { file: file.name, line: i + 1, records };
      let record: Record<string, unknown>;
      try {
        record = JSON.parse(line) as Record<string, unknown>;
      } catch {
        return { ok: false, ...at, problem: 'not valid JSON (a truncated or edited line)' };
      }
      const { hash, ...rest } = record;
      const prev = rest['prev'];
      if (typeof hash !== 'string' || typeof prev !== 'string') return { ok: false, ...at, problem: 'no prev/hash fields (not a chained audit record)' };
      if (chainHash(prev, JSON.stringify(rest)) !== hash) return { ok: false, ...at, problem: 'the hash does not match the record (the line was edited)' };
      if (expectedPrev !== null && prev !== expectedPrev) {
        return { ok: false, ...at, problem: 'prev does not match the hash of the line before (a line was deleted, inserted or moved)' };
      }
      if (records === 0) firstPrev = prev;
      expectedPrev = hash;
      records++;
      if (seek !== undefined && sought === null && hash.startsWith(seek)) sought = { record: records, file: file.name, line: i + 1 };
    }
  }
  return { ok: true, records, lastHash: expectedPrev ?? GENESIS, firstPrev, ...(seek === undefined ? {} : { sought }) };
}
