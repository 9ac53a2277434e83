/**
 * What one response is scanned for: the forms of the secrets in its redaction scope (a NeedleSet) and
 * the enabled shape rules. Built once per scope and reused by every response until the secrets change.
 */
import { RuleSet, type KeyRule, type RunRule } from './key-patterns.js';
import { NeedleSet } from './needle-set.js';
import { PrefixFilter } from './prefix-filter.js';

/** A partial secret at the end of a stream is masked from this many bytes on (shorter is noise). */
export const MIN_MASKED_PARTIAL = 4;
/** A character Latin-1 cannot hold: Buffer.from(text, 'latin1') writes only its low byte. */
const BEYOND_LATIN1 = /[^\x00-\xff]/;

export class RedactionMatcher {
  readonly needles: NeedleSet;
  readonly rules: RuleSet;
  /**
   * One prefix filter over the secrets' forms and the rules' prefixes, so a body is searched in one pass
   * instead of two (each verifies its own candidates; the other's are false candidates to it). Built on
   * the first long body; null: search separately.
   */
  #joint: PrefixFilter | null | undefined;
  readonly #jointSearch: boolean;
  readonly #candidates: number[] = [];

  constructor(needles: NeedleSet, rules: readonly KeyRule[], options: { readonly jointSearch?: boolean } = {}) {
    this.needles = needles;
    this.rules = new RuleSet(rules);
    this.#jointSearch = options.jointSearch ?? true;
  }

  /** The needles in lower case, for header names (nameHoldsSecret); built on first use. */
  #folded: NeedleSet | undefined;
  /** The run rules folded to lower case, for header names (nameHoldsKeyShape); built on first use. */
  #foldedRules: RuleSet | undefined;

  /**
   * Whether a header or trailer name, which undici hands over in lower case, holds a secret's form (or
   * its first MIN_MASKED_PARTIAL+ bytes at the end): compared with the forms folded to lower case, since a
   * mixed-case key echoed into a name arrives folded and would match no form as it is (found by the
   * owner's review). A name cannot carry the marker, so the caller drops the header. Names are short
   * (RFC 9110 5.1 tokens); the folded set is built once per matcher. Key shapes are not folded: a shape
   * rule still sees the name as it is (the caller's clearOfText).
   */
  nameHoldsSecret(name: string): boolean {
    if (this.needles.size === 0) return false;
    this.#folded ??= new NeedleSet(
      this.needles.needles.map((needle, i) => ({ bytes: Buffer.from(needle.toString('latin1').toLowerCase(), 'latin1'), head: this.needles.heads[i] as number })),
    );
    // Nearly every name is clear, answered from the string itself without encoding it.
    if (this.#folded.surelyAbsentFrom(name, MIN_MASKED_PARTIAL)) return false;
    const bytes = Buffer.from(name, 'latin1');
    const found: number[] = [];
    this.#folded.findMatches(bytes, found);
    return found.length > 0 || this.#folded.partialSuffix(bytes) >= MIN_MASKED_PARTIAL;
  }

  /**
   * Whether a header or trailer name holds a key shape in any letter case. Names arrive lower case
   * (undici): `x-akia...` is an AWS key id folded, and one upper-casing gives it back whole, yet the
   * rules as written (AKIA, AIza) never saw it (found by review). Prefixes and runs are compared folded.
   */
  nameHoldsKeyShape(name: string): boolean {
    if (this.rules.size === 0) return false;
    this.#foldedRules ??= new RuleSet(this.rules.rules.filter((rule): rule is RunRule => rule.kind === 'run').map(foldedRule));
    if (this.#foldedRules.surelyAbsentFrom(name)) return false;
    const found: number[] = [];
    this.#foldedRules.scan(Buffer.from(name, 'latin1'), -1, true, found);
    return found.length > 0;
  }

  get empty(): boolean {
    return this.needles.size === 0 && this.rules.size === 0;
  }

  /** The joint filter when both the needles and the rules would search `data` with a filter of their own. */
  #jointFilter(data: Buffer): PrefixFilter | null {
    if (!this.#jointSearch || this.rules.size === 0 || !this.needles.filters(data)) return null;
    if (this.#joint === undefined) this.#joint = PrefixFilter.create([...this.needles.needles, ...this.rules.searchPrefixes]);
    return this.#joint;
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
   * clearOf for a string about to leave as UTF-8 (a log line, an audit record) or Latin-1 (a header
   * value), answered from the string without encoding it. False means "scan the bytes", not "dirty".
   */
  clearOfText(text: string, encoding: 'utf8' | 'latin1'): boolean {
    return this.textHoldsNoNeedle(text, encoding, MIN_MASKED_PARTIAL) && this.rules.surelyAbsentFrom(text);
  }

  /**
   * True when no needle occurs in the bytes of `text`, nor a suffix of `minPartial` or more bytes that
   * starts one (Infinity: partial suffixes do not matter); false means "scan the bytes".
   */
  textHoldsNoNeedle(text: string, encoding: 'utf8' | 'latin1', minPartial: number): boolean {
    if (encoding === 'latin1' && BEYOND_LATIN1.test(text)) return false;
    return this.needles.surelyAbsentFrom(text, minPartial);
  }

  /**
   * Complete matches (and pieces, needle-set.ts) as [start, end) pairs, and how many trailing bytes must
   * be held back because more data could turn them into a match or lengthen a piece.
   */
  scan(data: Buffer, before: number, final: boolean, out: number[], maskPartialAtEnd = true): number {
    let rules: number;
    let piece: number;
    const joint = this.#jointFilter(data);
    if (joint !== null) {
      const candidates = this.#candidates;
      candidates.length = 0;
      joint.candidates(data, candidates);
      piece = this.needles.findAt(data, candidates, out, final);
      rules = this.rules.scan(data, before, final, out, candidates).livePartial;
    } else {
      piece = this.needles.findMatches(data, out, final);
      rules = this.rules.size === 0 ? -1 : this.rules.scan(data, before, final, out).livePartial;
    }
    if (final) {
      if (!maskPartialAtEnd) return 0;
      // Nothing more will come: a held partial secret of 4+ bytes is masked, never flushed.
      const partial = this.needles.partialSuffix(data);
      if (partial >= MIN_MASKED_PARTIAL) out.push(data.length - partial, data.length);
      return 0;
    }
    const heldFrom = Math.min(data.length - this.needles.partialSuffix(data), rules === -1 ? data.length : rules, piece === -1 ? data.length : piece);
    return data.length - heldFrom;
  }
}

/** A run rule that matches its shape in lower case: prefixes folded, and each upper-case letter's lower-case twin allowed in the run. */
function foldedRule(rule: RunRule): RunRule {
  const charset = Uint8Array.from(rule.charset);
  for (let byte = 0x41; byte <= 0x5a; byte++) if (rule.charset[byte] === 1) charset[byte + 0x20] = 1;
  return Object.freeze({ ...rule, prefixes: rule.prefixes.map((prefix) => Buffer.from(prefix.toString('latin1').toLowerCase(), 'latin1')), charset });
}
