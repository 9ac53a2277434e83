/**
 * The audit record and the request log line are written field by field (json-text.ts) instead of by
 * JSON.stringify. Property: for any values, the text is the one JSON.stringify writes for the same
 * object, byte for byte: `audit verify` recomputes each record's hash from JSON.stringify of the parsed
 * record, so one differing escape would break the chain.
 */
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import type { ErrorCode } from '../../src/errors.js';
import { AuditBatch } from '../../src/observability/audit-batch.js';
import { chainHash, GENESIS, verifyChain } from '../../src/observability/audit-chain.js';
import { serializeAuditRecord, type AuditRecord } from '../../src/observability/audit-record.js';
import { jsonBoolean, jsonNumber, jsonString } from '../../src/observability/json-text.js';

// Escapes, control characters, lone and paired surrogates, U+2028 (not escaped by JSON), plain text.
const textArb = fc.oneof(
  fc.string({ maxLength: 30 }),
  fc.string({ unit: 'binary', maxLength: 20 }),
  fc.string({ unit: fc.constantFrom('a', '"', '\\', '\n', '\u0000', '\u001f', '\u007f', '\u2028', '\ud800', '\udc00', '\ud83d\ude00', 'é'), maxLength: 12 }),
);
const nullableText = fc.option(textArb, { nil: null });
const numberArb = fc.oneof(fc.integer(), fc.double(), fc.constantFrom(0, -0, 1e21, 1.5e-7, Number.NaN, Number.POSITIVE_INFINITY));
const nullableNumber = fc.option(numberArb, { nil: null });

const recordArb: fc.Arbitrary<AuditRecord> = fc.record({
  time: textArb,
  trace_id: nullableText,
  request_id: textArb,
  agent: nullableText,
  session: nullableText,
  justification: nullableText,
  task_id: nullableText,
  session_scopes: nullableText,
  session_expires_at: nullableText,
  session_parent: nullableText,
  service: nullableText,
  method: nullableText,
  path: nullableText,
  route: nullableText,
  scope: nullableText,
  decision: fc.constantFrom('allow' as const, 'deny' as const),
  code: fc.option(textArb.map((text) => text as ErrorCode), { nil: null }),
  status: nullableNumber,
  upstream_status: nullableNumber,
  response_bytes: numberArb,
  duration_ms: numberArb,
  credential: nullableText,
  generation: nullableText,
  rotated_from: nullableText,
  redactions: numberArb,
  approval: nullableText,
  approver: nullableText,
  approval_reason: nullableText,
  actor: nullableText,
  reason: nullableText,
  client: nullableText,
  incomplete: fc.boolean(),
});

describe('JSON text written field by field', () => {
  it('is JSON.stringify text for any string, null, number or boolean', () => {
    fc.assert(
      fc.property(nullableText, nullableNumber, fc.boolean(), (text, number, flag) => {
        expect(jsonString(text)).toBe(JSON.stringify(text));
        expect(jsonNumber(number)).toBe(JSON.stringify(number));
        expect(jsonBoolean(flag)).toBe(JSON.stringify(flag));
      }),
      { numRuns: Number(process.env['FC_RUNS'] ?? 3000) },
    );
  });

  // Durations are rounded to microseconds (record-outcome.ts) and written by a fast path of their own.
  it('writes a number of at most three decimals as JSON.stringify does, at any magnitude and sign', () => {
    const thousandths = fc.oneof(fc.integer(), fc.bigInt({ min: -(2n ** 54n), max: 2n ** 54n }).map(Number), fc.double({ noNaN: true }));
    fc.assert(
      fc.property(thousandths, fc.constantFrom(1, 10, 100, 1000), (k, scale) => {
        const value = Math.round(k) / scale;
        expect(jsonNumber(value)).toBe(JSON.stringify(value));
        expect(jsonNumber(Math.round(value * 1000) / 1000)).toBe(JSON.stringify(Math.round(value * 1000) / 1000));
      }),
      { numRuns: Number(process.env['FC_RUNS'] ?? 3000) },
    );
    for (const value of [0.001, 0.01, 0.1, 0.5, 1.5, 0.007, 0.07, 0.123, 10.05, 8909701729976.28, 4398046511103.999, 1099511627775.999, -0.25, -1234.567, 1e-7, 5e-324]) {
      expect(jsonNumber(value)).toBe(JSON.stringify(value));
    }
  });

  it('writes an audit record exactly as JSON.stringify writes the same fields, so its hash verifies', () => {
    fc.assert(
      fc.property(recordArb, textArb, (record, prev) => {
        const text = serializeAuditRecord(record, prev);
        expect(text).toBe(JSON.stringify({ ...record, prev }));
        const batch = new AuditBatch(64, 64);
        const hash = batch.append(text, prev);
        const verdict = verifyChain([{ name: 'audit.jsonl', text: batch.bytes.toString('utf8') }]);
        expect(verdict).toMatchObject({ ok: true, records: 1, lastHash: hash, firstPrev: prev });
      }),
      { numRuns: Number(process.env['FC_RUNS'] ?? 1000) },
    );
  });

  // The batch encodes each record where it will be written and seals it there (audit-batch.ts): the
  // lines must be those of a record text and its hash, each chained to the one before, however the
  // buffer had to grow on the way, and whatever prev the log started from (a tail read from disk).
  it('seals a batch of records, each chained to the one before, as lines that verify', () => {
    fc.assert(
      fc.property(fc.array(recordArb, { minLength: 1, maxLength: 6 }), textArb, fc.integer({ min: 1, max: 4096 }), (records, first, initialBytes) => {
        const batch = new AuditBatch(initialBytes, 1024);
        let prev = first;
        const expected: string[] = [];
        for (const record of records) {
          const text = serializeAuditRecord(record, prev);
          const hash = batch.append(text, prev);
          expected.push(JSON.stringify({ ...JSON.parse(text), hash }));
          prev = hash;
        }
        expect(batch.lines()).toEqual(expected);
        const verdict = verifyChain([{ name: 'audit.jsonl', text: batch.bytes.toString('utf8') }]);
        expect(verdict).toMatchObject({ ok: true, records: records.length, lastHash: prev });
        batch.clear();
        expect(batch.bytes.length).toBe(0);
      }),
      { numRuns: Number(process.env['FC_RUNS'] ?? 300) },
    );
  });

  // UTF-8 takes up to 3 bytes for one UTF-16 code unit (U+0800-U+FFFF): the room made for a record
  // must hold that worst case, or buffer.write would cut the line short.
  it('makes room for text of 3 UTF-8 bytes per character, from a buffer of one byte', () => {
    const prev = '\u2028'.repeat(70);
    const canonical = `{"reason":"${'\uffff'.repeat(3000)}","prev":"${prev}"}`;
    const batch = new AuditBatch(1, 1);
    const hash = batch.append(canonical, prev);
    expect(hash).toBe(chainHash(prev, canonical));
    expect(batch.bytes.toString('utf8')).toBe(`${canonical.slice(0, -1)},"hash":"${hash}"}\n`);
  });

  it('lets go of a buffer a burst grew past the size it keeps, once the batch is written', () => {
    const batch = new AuditBatch(8192, 16 * 1024);
    batch.append(`{"reason":"${'x'.repeat(64 * 1024)}"}`, GENESIS);
    expect(batch.bytes.buffer.byteLength).toBeGreaterThan(64 * 1024);
    batch.clear();
    batch.append('{"reason":"x"}', GENESIS);
    expect(batch.bytes.buffer.byteLength).toBe(8192);
  });

  it('throws for a value of another type, as JSON.stringify throws for a BigInt, rather than write it in another shape', () => {
    for (const value of [undefined, 1n, 7, {}] as unknown[]) expect(() => jsonString(value as string)).toThrow(/where a JSON string or null belongs/);
    for (const value of [undefined, 1n, '7', true] as unknown[]) expect(() => jsonNumber(value as number)).toThrow(/where a JSON number or null belongs/);
    for (const value of [undefined, null, 1, 'true'] as unknown[]) expect(() => jsonBoolean(value as boolean)).toThrow(/where a JSON boolean belongs/);
  });
});
