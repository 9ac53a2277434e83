/**
 * Property-test inputs for the redaction checks: secrets (ASCII key-like, or any Latin-1 bytes, whose
 * forms are not their own characters), and text built from fillers with a secret's form planted whole,
 * cut short (its first characters, as at the end of a truncated line), or not at all.
 */
import fc from 'fast-check';

export const secretArb = fc.oneof(fc.stringMatching(/^[A-Za-z0-9_\-+/=:.~!$]{8,40}$/), fc.string({ unit: 'binary', minLength: 8, maxLength: 16 }));

export type Plant = 'none' | 'whole' | 'prefix';

/** Each step: a filler, a pick among the forms (and how much of a prefix), what to plant after it. */
export type Plan = ReadonlyArray<readonly [string, number, Plant]>;

export function plantedText(forms: readonly string[], plan: Plan): string {
  let text = '';
  for (const [filler, pick, plant] of plan) {
    text += filler;
    const form = forms[pick % forms.length] as string;
    if (plant === 'whole') text += form;
    if (plant === 'prefix') text += form.slice(0, 1 + (pick % (form.length - 1)));
  }
  return text;
}
