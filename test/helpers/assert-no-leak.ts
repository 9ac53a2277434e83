/**
 * Asserts that no canary secret appears, in any common encoding, in any of the given surfaces
 * (response bodies and headers, log lines, audit lines, spans, CLI output).
 */
import { expect } from 'vitest';

/** The encodings of a secret that must never appear: DESIGN.md invariant 1 and issue 3's list. */
export function encodingsOf(secret: string): Array<{ form: string; value: string }> {
  const utf8 = Buffer.from(secret, 'utf8');
  const forms: Array<{ form: string; value: string }> = [
    { form: 'raw', value: secret },
    { form: 'json-escaped', value: JSON.stringify(secret).slice(1, -1) },
    { form: 'percent-encoded', value: encodeURIComponent(secret) },
    { form: 'hex', value: utf8.toString('hex') },
    { form: 'HEX', value: utf8.toString('hex').toUpperCase() },
  ];
  // base64 of the secret embedded in a longer payload: its encoding depends on the alignment, so take
  // the characters that are fully determined by the secret alone at each of the three offsets.
  for (let shift = 0; shift < 3; shift++) {
    const padded = Buffer.concat([Buffer.alloc(shift, 0x41), utf8]);
    const encoded = padded.toString('base64');
    const start = Math.ceil((shift * 4) / 3);
    const end = Math.floor(((shift + utf8.length) * 4) / 3);
    const core = encoded.slice(start, end);
    if (core.length >= 8) {
      forms.push({ form: `base64@${shift}`, value: core });
      forms.push({ form: `base64url@${shift}`, value: core.replace(/\+/g, '-').replace(/\//g, '_') });
    }
  }
  return forms;
}

export interface Surface {
  readonly name: string;
  readonly text: string;
}

export function findLeaks(secrets: readonly string[], surfaces: readonly Surface[]): string[] {
  const leaks: string[] = [];
  for (const secret of secrets) {
    for (const { form, value } of encodingsOf(secret)) {
      for (const surface of surfaces) {
        if (surface.text.includes(value)) leaks.push(`${form} form of a canary found in ${surface.name}`);
      }
    }
  }
  return leaks;
}

export function assertNoLeak(secrets: readonly string[], surfaces: readonly Surface[]): void {
  expect(secrets.length, 'assertNoLeak needs at least one canary').toBeGreaterThan(0);
  expect(surfaces.length, 'assertNoLeak needs at least one surface').toBeGreaterThan(0);
  expect(findLeaks(secrets, surfaces)).toEqual([]);
}

/** What the agent got, as one surface: each response's headers and body. */
export function responsesSurface(responses: ReadonlyArray<{ readonly headers: unknown; readonly text: string }>): Surface {
  return { name: 'responses', text: responses.map((r) => `${JSON.stringify(r.headers)}\n${r.text}`).join('\n') };
}

/** What a proxy under test kept: its log lines and its audit log. */
export function proxySurfaces(proxy: { readonly logLines: readonly string[]; auditText(): string }): Surface[] {
  return [
    { name: 'logs', text: proxy.logLines.join('\n') },
    { name: 'audit', text: proxy.auditText() },
  ];
}
