/**
 * IsoTime writes what Date#toISOString writes, for any instant: across minute, hour, day and year
 * boundaries, before 1970, with fractional milliseconds, and in extended years, whether the minute
 * was seen before or not.
 */
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { IsoTime } from '../../src/observability/iso-time.js';

const MAX_DATE_MS = 8.64e15;

describe('IsoTime', () => {
  it('equals toISOString for any instant, in any order', () => {
    const iso = new IsoTime();
    fc.assert(
      fc.property(fc.oneof(fc.integer({ min: -MAX_DATE_MS, max: MAX_DATE_MS }), fc.double({ min: -1e13, max: 1e13, noNaN: true }), fc.integer({ min: 1.7e12, max: 1.8e12 })), (time) => {
        expect(iso.format(time)).toBe(new Date(time).toISOString());
      }),
      { numRuns: Number(process.env['FC_RUNS'] ?? 5000) },
    );
  });

  it('equals toISOString millisecond by millisecond through a minute, an hour, a day and a year ending', () => {
    const iso = new IsoTime();
    for (const boundary of [Date.UTC(2026, 10, 26, 13, 59), Date.UTC(2026, 11, 31, 23, 59), Date.UTC(1969, 11, 31, 23, 59), 0]) {
      for (let t = boundary - 1500; t <= boundary + 61_500; t += 7) expect(iso.format(t)).toBe(new Date(t).toISOString());
    }
  });

  it('throws as toISOString does for an invalid time', () => {
    expect(() => new IsoTime().format(Number.NaN)).toThrow(RangeError);
    // Past the last valid millisecond, also when the cached minute would still match.
    const iso = new IsoTime();
    expect(iso.format(8.64e15)).toBe(new Date(8.64e15).toISOString());
    expect(() => new Date(8.64e15 + 1).toISOString()).toThrow(RangeError);
    expect(() => iso.format(8.64e15 + 1)).toThrow(RangeError);
    expect(iso.format(-8.64e15)).toBe(new Date(-8.64e15).toISOString());
    expect(() => iso.format(-8.64e15 - 1)).toThrow(RangeError);
  });
});
