/**
 * The log and audit backstop (SecretCatalog.scrub) answers clean ASCII lines from the string itself,
 * without converting them to bytes. Property: for any text, with secret forms planted whole, truncated
 * at the end, or not at all, in ASCII or not, scrub gives exactly what the byte scanner gives.
 */
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { Credential } from '../../src/credentials/credential.js';
import { SecretCatalog } from '../../src/redaction/secret-catalog.js';
import { formsOf } from '../../src/redaction/secret-forms.js';
import { StreamRedactor } from '../../src/redaction/stream-redactor.js';
import { canary } from '../helpers/canary.js';
import { plantedText, secretArb, type Plant } from '../helpers/planted-secrets.js';

// Keys are ASCII in practice; a non-ASCII value has forms whose bytes are not its UTF-16 code units.
const fillerArb = fc.oneof(fc.string({ maxLength: 40 }), fc.string({ unit: 'binary', maxLength: 20 }), fc.constantFrom('{"path":"/v1/x"}', ',"msg":"request"}\n', 'é', '\u00ff'));

function byteScan(catalog: SecretCatalog, text: string): string {
  const redactor = new StreamRedactor(catalog.index('scrub', null, []).matcher);
  const out = redactor.whole(Buffer.from(text, 'utf8'));
  return redactor.redactions === 0 ? text : out.toString('utf8');
}

describe('secret catalog scrub', () => {
  it('equals the byte scanner for any line, clean or not, ASCII or not', () => {
    const runs = Number(process.env['FC_RUNS'] ?? 600);
    let clean = 0;
    let masked = 0;
    fc.assert(
      fc.property(
        fc.array(secretArb, { minLength: 1, maxLength: 3 }),
        fc.array(fc.tuple(fillerArb, fc.nat(), fc.constantFrom<Plant>('none', 'whole', 'prefix')), { minLength: 1, maxLength: 6 }),
        (secrets, plan) => {
          const catalog = new SecretCatalog();
          secrets.forEach((value, i) => catalog.remember(new Credential(`env:S${i}`, value)));
          const text = plantedText(secrets.flatMap((s) => formsOf(s)).map((f) => f.toString('utf8')), plan);
          const scrubbed = catalog.scrub(text);
          expect(scrubbed).toBe(byteScan(catalog, text));
          if (scrubbed === text) clean++;
          else masked++;
        },
      ),
      { numRuns: runs },
    );
    // Both paths ran: a property that only ever saw clean (or only dirty) lines would prove little.
    expect(clean).toBeGreaterThan(runs / 30);
    expect(masked).toBeGreaterThan(runs / 30);
  });

  it('masks a secret in a clean-looking ASCII log line, and a 4+ character start of one at its end', () => {
    const secret = canary('scrub');
    const catalog = new SecretCatalog();
    catalog.remember(new Credential('env:K', secret));
    expect(catalog.scrub(`{"path":"/x/${secret}/y"}`)).toBe('{"path":"/x/[REDACTED]/y"}');
    expect(catalog.scrub(`{"msg":"cut","tail":"x"} ${secret.slice(0, 6)}`)).toBe('{"msg":"cut","tail":"x"} [REDACTED]');
    expect(catalog.scrub('{"msg":"clean"}\n')).toBe('{"msg":"clean"}\n');
  });
});
