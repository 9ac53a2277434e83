/**
 * What one response is scanned for: the forms of the secrets in its redaction scope (a NeedleSet) and
 * the enabled shape rules. Built once per scope and reused by every response until the secrets change.
 */
import { RuleSet, type KeyRule } from './key-patterns.js';
import { NeedleSet } from './needle-set.js';

/** A partial secret at the end of a stream is masked from this many bytes on (shorter is noise). */
export const MIN_MASKED_PARTIAL = 4;

export class RedactionMatcher {
  readonly needles: NeedleSet;
  readonly rules: RuleSet;

  constructor(needles: NeedleSet, rules: readonly KeyRule[]) {
    this.needles = needles;
    this.rules = new RuleSet(rules);
  }

  get empty(): boolean {
    return this.needles.size === 0 && this.rules.size === 0;
  }

  /**
   * True when a final scan of `data` would find nothing to mask. The log and audit backstop asks this
   * first and keeps a clean line as it is, skipping the redactor's span bookkeeping and copies (most
   * lines are clean); anything else is scanned as usual, so the answers are the same.
   */
  clearOf(data: Buffer): boolean {
    if (this.rules.size > 0) return false;
    const found: number[] = [];
    this.needles.findMatches(data, found);
    return found.length === 0 && this.needles.partialSuffix(data) < MIN_MASKED_PARTIAL;
  }

  /**
   * Complete matches as [start, end) pairs, and how many trailing bytes must be held back because more
   * data could turn them into a match.
   */
  scan(data: Buffer, before: number, final: boolean, out: number[], maskPartialAtEnd = true): number {
    this.needles.findMatches(data, out);
    const rules = this.rules.size === 0 ? -1 : this.rules.scan(data, before, final, out).livePartial;
    if (final) {
      if (!maskPartialAtEnd) return 0;
      // Nothing more will come: a held partial secret of 4+ bytes is masked, never flushed.
      const partial = this.needles.partialSuffix(data);
      if (partial >= MIN_MASKED_PARTIAL) out.push(data.length - partial, data.length);
      return 0;
    }
    const heldFrom = Math.min(data.length - this.needles.partialSuffix(data), rules === -1 ? data.length : rules);
    return data.length - heldFrom;
  }
}
