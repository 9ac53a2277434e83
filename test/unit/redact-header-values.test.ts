/**
 * Response header values are scanned whole; a value that ends with the start of a secret's form is
 * masked there (a truncated echo, "key=sk-live-ab...", must not leak its first bytes). Airlock's own
 * x-airlock-request-id is not upstream content and is never scanned: its random hex tail looked, about
 * once in 30,000 responses, like the start of a secret's hex form (found by the path differential).
 */
import { describe, expect, it } from 'vitest';
import { redactHeaderValues } from '../../src/pipeline/redact-response.js';
import { NeedleSet } from '../../src/redaction/needle-set.js';
import { RedactionMatcher } from '../../src/redaction/redaction-matcher.js';
import { formsOf } from '../../src/redaction/secret-forms.js';
import { REQUEST_ID_HEADER } from '../../src/upstream/relay-headers.js';
import { assertNoLeak } from '../helpers/assert-no-leak.js';
import { canary } from '../helpers/canary.js';

describe('redactHeaderValues', () => {
  const secret = canary('header-values');
  const matcher = new RedactionMatcher(new NeedleSet(formsOf(secret)), []);
  const hexStart = Buffer.from(secret, 'utf8').toString('hex').slice(0, 6);
  const uuidLike = `b5f2a656-590c-4451-9754-5dbb7e${hexStart}`;

  it("leaves Airlock's own request id alone, and masks the same tail in an upstream header", () => {
    const pairs = [REQUEST_ID_HEADER, uuidLike, 'x-upstream-trace', uuidLike];
    const count = redactHeaderValues(pairs, matcher);
    expect(pairs[1]).toBe(uuidLike);
    expect(pairs[3]).toBe(`${uuidLike.slice(0, -hexStart.length)}[REDACTED]`);
    expect(count).toBe(1);
  });

  it('masks a whole secret and a truncated echo in any other header', () => {
    const pairs = ['location', `https://api.example.com/cb?key=${encodeURIComponent(secret)}&x=1`, 'x-debug', `key=${secret.slice(0, 12)}`];
    expect(redactHeaderValues(pairs, matcher)).toBe(2);
    assertNoLeak([secret], [{ name: 'headers', text: pairs.join('\n') }]);
    expect(pairs[3]).toBe('key=[REDACTED]');
  });

  it('drops a header whose name holds a form of the secret (a name cannot carry the marker), keeping the others', () => {
    const hex = Buffer.from(secret, 'utf8').toString('hex');
    const pairs = ['x-before', 'kept', `x-${hex}`, '1', `x-partial-${hex.slice(0, 10)}`, '2', 'x-after', 'kept too'];
    expect(redactHeaderValues(pairs, matcher)).toBe(2);
    expect(pairs).toEqual(['x-before', 'kept', 'x-after', 'kept too']);
    assertNoLeak([secret], [{ name: 'headers', text: pairs.join('\n') }]);
  });

  it('drops a name holding a mixed-case secret (or its base64) as undici hands it over, folded to lower case', () => {
    const mixed = `${canary('header-mixed')}QwErTyUiOp`;
    const folding = new RedactionMatcher(new NeedleSet(formsOf(mixed)), []);
    const base64 = Buffer.from(mixed, 'utf8').toString('base64').replace(/=+$/, '');
    const pairs = ['x-kept', 'a', `x-${mixed.toLowerCase()}`, '1', `x-b-${base64.toLowerCase()}`, '2', 'x-partial-' + mixed.slice(0, 6).toLowerCase(), '3'];
    expect(redactHeaderValues(pairs, folding)).toBe(3);
    expect(pairs).toEqual(['x-kept', 'a']);
    assertNoLeak([mixed, mixed.toLowerCase()], [{ name: 'headers', text: pairs.join('\n') }]);
  });
});
