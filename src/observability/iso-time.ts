/**
 * Timestamps in the form Date#toISOString writes them (ISO 8601, UTC, milliseconds), for the audit
 * record and the log line of every request. toISOString costs about a microsecond, four times the
 * rest of the record's start; consecutive requests nearly always share their minute, so its
 * "YYYY-MM-DDTHH:MM:" is kept and only the seconds and milliseconds are written.
 */
/** The largest distance from the epoch a Date can hold (ECMA-262 21.4.1.22, TimeClip). */
const MAX_TIME_MS = 8.64e15;

export class IsoTime {
  #minute = Number.NaN;
  #prefix = '';

  format(time: number): string {
    // As new Date(time) does: whole milliseconds, truncated.
    const epochMs = Math.trunc(time);
    // A cached minute would otherwise format a time just past the range that toISOString refuses.
    if (!(Math.abs(epochMs) <= MAX_TIME_MS)) throw new RangeError(`Invalid time value: ${time}`);
    const minute = Math.floor(epochMs / 60_000);
    if (minute !== this.#minute) {
      const full = new Date(epochMs).toISOString();
      // "SS.mmmZ" is the last 7 characters whatever the year's width (+275760-09-13T00:00:00.000Z).
      this.#prefix = full.slice(0, full.length - 7);
      this.#minute = minute;
    }
    const withinMinute = epochMs - minute * 60_000;
    const seconds = Math.floor(withinMinute / 1000);
    const ms = withinMinute - seconds * 1000;
    return `${this.#prefix}${seconds < 10 ? '0' : ''}${seconds}.${ms < 10 ? '00' : ms < 100 ? '0' : ''}${ms}Z`;
  }
}
