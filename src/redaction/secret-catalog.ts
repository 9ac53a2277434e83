/**
 * Every secret value Airlock manages, by reference, and the matchers built from them.
 *
 * Values arrive as the resolver hands credentials out (and at start-up, when every configured reference
 * is resolved once so that scope "service"/"all" and the request guard know secrets before their first
 * use). A reference keeps its current value and the two before it, so an upstream that echoes a key
 * that was just rotated out is still scrubbed, and any earlier one that has not yet expired (an OAuth2
 * token or a Vault lease replaced early is still good upstream until its own end), up to a bound. Matchers are built lazily per scope and cached until a
 * value changes; the request path only looks them up.
 */
import type { Credential } from '../credentials/credential.js';
import type { KeyRule } from './key-patterns.js';
import { NeedleSet } from './needle-set.js';
import { RedactionMatcher } from './redaction-matcher.js';
import { secretForms, type SecretForm } from './secret-forms.js';
import { StreamRedactor } from './stream-redactor.js';

/** Values shorter than this are never accepted for injection (resolve-credential.ts) nor scanned. */
export const MIN_SECRET_LENGTH = 8;
const KEPT_PREVIOUS_VALUES = 2;
/**
 * Values kept per reference at most, live ones included. Found by review: a retry_on status an agent
 * can provoke forces a new token every few seconds at first, and with only two kept the first token,
 * valid for another hour, was no longer scrubbed. Forced fetches back off to one per 5 minutes.
 */
const MAX_VALUES_PER_REF = 32;

interface KnownValue {
  readonly value: string;
  /** Its expiry: kept while live. 0 for a value without one (a static key), kept by count alone. */
  readonly until: number;
}
const MAX_CACHED_MATCHERS = 256;

/** A cache key and the references an index leaves out (SecretCatalog.index). */
export interface GuardScope {
  readonly key: string;
  readonly exempt: ReadonlySet<string>;
}

/** A matcher and, for every secret form it holds, the reference the form belongs to. */
export interface SecretIndex {
  readonly matcher: RedactionMatcher;
  readonly refOfForm: ReadonlyMap<string, string>;
}

export class SecretCatalog {
  readonly #values = new Map<string, KnownValue[]>();
  readonly #cache = new Map<string, SecretIndex>();
  readonly #now: () => number;
  #version = 0;

  constructor(options: { now?: () => number } = {}) {
    this.#now = options.now ?? Date.now;
  }

  get version(): number {
    return this.#version;
  }

  remember(credential: Credential): void {
    // Neither is ever injected (resolve-credential.ts); an ill-formed value has no UTF-8 form to scan
    // for, and building its forms would throw in every later scrub (every log line).
    if (credential.length < MIN_SECRET_LENGTH || !credential.wellFormed) return;
    const value = credential.reveal();
    const known = this.#values.get(credential.ref) ?? [];
    if (known[0]?.value === value) {
      // The same value again, with a later expiry (a renewed Vault lease): kept known until then.
      const until = credential.expiresAt ?? 0;
      if (until > known[0].until) known[0] = { value, until };
      return;
    }
    const now = this.#now();
    const earlier = known.filter((k) => k.value !== value);
    const kept = earlier.filter((k, i) => i < KEPT_PREVIOUS_VALUES || k.until > now);
    this.#values.set(credential.ref, [{ value, until: credential.expiresAt ?? 0 }, ...kept].slice(0, MAX_VALUES_PER_REF));
    this.#version++;
    this.#cache.clear();
  }

  /** References with at least one known value. */
  refs(): string[] {
    return [...this.#values.keys()];
  }

  /**
   * The index for a set of references (null = every reference) plus shape rules, without those in
   * `except`. `key` names the combination for the cache, e.g. "service:openai" or
   * "request:file:openai|openai"; one key is always asked with the same `except`.
   */
  index(key: string, refs: readonly string[] | null, rules: readonly KeyRule[], except?: ReadonlySet<string>): SecretIndex {
    const cached = this.#cache.get(key);
    if (cached !== undefined) return cached;
    const refOfForm = new Map<string, string>();
    const forms: SecretForm[] = [];
    for (const ref of refs ?? this.#values.keys()) {
      if (except?.has(ref) === true) continue;
      for (const { value } of this.#values.get(ref) ?? []) {
        for (const form of secretForms(value)) {
          const text = form.bytes.toString('latin1');
          if (!refOfForm.has(text)) refOfForm.set(text, ref);
          forms.push(form);
        }
      }
    }
    const built: SecretIndex = { matcher: new RedactionMatcher(new NeedleSet(forms), rules), refOfForm };
    if (this.#cache.size >= MAX_CACHED_MATCHERS) this.#cache.clear();
    this.#cache.set(key, built);
    return built;
  }

  /** Backstop for text leaving the process (log lines, audit records): every known secret, every form. */
  scrub(text: string): string {
    if (this.#values.size === 0) return text;
    const { matcher } = this.index('scrub', null, []);
    if (matcher.clearOfText(text, 'utf8')) return text;
    const input = Buffer.from(text, 'utf8');
    if (matcher.clearOf(input)) return text;
    const redactor = new StreamRedactor(matcher);
    const output = redactor.whole(input);
    return redactor.redactions === 0 ? text : output.toString('utf8');
  }
}
