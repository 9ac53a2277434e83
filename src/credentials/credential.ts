/**
 * A secret value that cannot print itself. `String(c)`, template literals, `JSON.stringify` and
 * `util.inspect` all give "[REDACTED]"; the value comes out only through `reveal()`, which only the
 * injectors and the redactor call (test/unit/reveal-callers.test.ts keeps it that way).
 */

const REDACTED = '[REDACTED]';

/**
 * An expiring value (an OAuth2 token, a Vault lease) with less life than this left is treated as
 * expired wherever it would be handed out (the cache's freshness, a token kept in process or shared
 * through Redis): an upstream call made with it could outlive it.
 */
export const EXPIRY_MARGIN_MS = 5_000;
/** An unpaired UTF-16 surrogate: with the u flag a proper pair is one code point, not Cs. */
const LONE_SURROGATE = /\p{Cs}/u;

export class Credential {
  readonly #value: string;
  /** The reference it was resolved from, e.g. "file:openai": safe to log and audit. */
  readonly ref: string;
  /** The source's version of the value (e.g. a KV version), or null when the source has none. */
  readonly generation: string | null;
  /** When the value stops being valid (an OAuth2 token, a Vault lease), ms since the epoch; null = no expiry. */
  readonly expiresAt: number | null;
  readonly #wellFormed: boolean;

  constructor(ref: string, value: string, generation: string | null = null, expiresAt: number | null = null) {
    this.#value = value;
    this.ref = ref;
    this.generation = generation;
    this.expiresAt = expiresAt;
    this.#wellFormed = !LONE_SURROGATE.test(value);
    Object.freeze(this);
  }

  /** Length in UTF-16 units: enough to refuse values too short to redact, without revealing them. */
  get length(): number {
    return this.#value.length;
  }

  /**
   * False when the value holds an unpaired UTF-16 surrogate (a store can hand one out: "\ud800" is
   * valid JSON). Such a value has no UTF-8 form, so it can be neither injected as sent nor redacted.
   * Found once, when the value is fetched: every request asks (resolve-credential.ts).
   */
  get wellFormed(): boolean {
    return this.#wellFormed;
  }

  reveal(): string {
    return this.#value;
  }

  /** Whether two credentials carry the same value, without either value leaving this class. */
  sameValueAs(other: Credential): boolean {
    return this.#value === other.#value;
  }

  toString(): string {
    return REDACTED;
  }

  toJSON(): string {
    return REDACTED;
  }

  [Symbol.toPrimitive](): string {
    return REDACTED;
  }

  [Symbol.for('nodejs.util.inspect.custom')](): string {
    return `Credential(${this.ref}) ${REDACTED}`;
  }
}
