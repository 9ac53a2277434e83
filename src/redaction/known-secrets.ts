/**
 * Every secret value Airlock has handed out, kept so that text leaving the process (log lines, audit
 * records, admin output) can be scrubbed as a backstop. Observability is by allowlist first; this
 * catches what an allowlist misses. Forms scrubbed: raw, JSON-escaped, percent-encoded, base64 and
 * base64url.
 */
import type { Credential } from '../credentials/credential.js';

export const REDACTION_MARK = '[REDACTED]';

/** Shorter values would scrub ordinary words; injection refuses them (inject-credential.ts). */
export const MIN_SCRUBBED_LENGTH = 8;

export class KnownSecrets {
  readonly #forms = new Set<string>();
  #sorted: string[] = [];

  remember(credential: Credential): void {
    const value = credential.reveal();
    if (value.length < MIN_SCRUBBED_LENGTH) return;
    const before = this.#forms.size;
    for (const form of encodedForms(value)) this.#forms.add(form);
    if (this.#forms.size !== before) this.#sorted = [...this.#forms].sort((a, b) => b.length - a.length);
  }

  get size(): number {
    return this.#forms.size;
  }

  scrub(text: string): string {
    let out = text;
    for (const form of this.#sorted) {
      if (out.includes(form)) out = out.split(form).join(REDACTION_MARK);
    }
    return out;
  }
}

function encodedForms(value: string): string[] {
  const utf8 = Buffer.from(value, 'utf8');
  return [
    value,
    JSON.stringify(value).slice(1, -1),
    encodeURIComponent(value),
    utf8.toString('base64').replace(/=+$/, ''),
    utf8.toString('base64url'),
  ];
}
