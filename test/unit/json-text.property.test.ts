/**
 * The audit record and the request log line are written field by field (json-text.ts) instead of by
 * JSON.stringify. Property: for any values, the text is the one JSON.stringify writes for the same
 * object, byte for byte: `audit verify` recomputes each record's hash from JSON.stringify of the parsed
 * record, so one differing escape would break the chain.
 */
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import type { ErrorCode } from '../../src/errors.js';
import { sealRecord, verifyChain } from '../../src/observability/audit-chain.js';
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

  it('writes an audit record exactly as JSON.stringify writes the same fields, so its hash verifies', () => {
    fc.assert(
      fc.property(recordArb, textArb, (record, prev) => {
        const text = serializeAuditRecord(record, prev);
        expect(text).toBe(JSON.stringify({ ...record, prev }));
        const sealed = sealRecord(prev, text);
        const verdict = verifyChain([{ name: 'audit.jsonl', text: `${sealed.line}\n` }]);
        expect(verdict).toMatchObject({ ok: true, records: 1, lastHash: sealed.hash });
      }),
      { numRuns: Number(process.env['FC_RUNS'] ?? 1000) },
    );
  });

  it('throws for a value of another type, as JSON.stringify throws for a BigInt, rather than write it in another shape', () => {
    for (const value of [undefined, 1n, 7, {}] as unknown[]) expect(() => jsonString(value as string)).toThrow(/where a JSON string or null belongs/);
    for (const value of [undefined, 1n, '7', true] as unknown[]) expect(() => jsonNumber(value as number)).toThrow(/where a JSON number or null belongs/);
    for (const value of [undefined, null, 1, 'true'] as unknown[]) expect(() => jsonBoolean(value as boolean)).toThrow(/where a JSON boolean belongs/);
  });
});
