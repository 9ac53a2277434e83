/**
 * A health recheck (credential-broker.ts reads failing file: secrets again every 2 s without traffic)
 * is not counted as a `refresh_failure` when it fails; a request that joins its fetch and meets the
 * failure is (found by review: it was not, and an alert on refresh failures missed requests refused).
 * Run against a source whose answer the test releases.
 */
import { describe, expect, it } from 'vitest';
import { CredentialCache } from '../../src/credentials/credential-cache.js';
import { AirlockError } from '../../src/errors.js';

const REF = 'file:crm';

function gatedSource(): { cache: CredentialCache; events: string[]; fail: () => void; asked: () => number } {
  const events: string[] = [];
  const pending: Array<(error: Error) => void> = [];
  const cache = new CredentialCache(
    () =>
      new Promise((_resolve, reject) => {
        pending.push(reject);
      }),
    () => ({ ttlMs: 60_000, maxStalenessMs: 60_000 }),
    { onEvent: (event) => events.push(event) },
  );
  return {
    cache,
    events,
    fail: () => {
      for (const reject of pending.splice(0)) reject(new AirlockError('credential_unavailable', 'The secret crm is not set.'));
    },
    asked: () => pending.length,
  };
}

describe('a health recheck of a failing credential', () => {
  it('alone, is not counted as a refresh failure', async () => {
    const source = gatedSource();
    const rechecked = source.cache.recheck(REF);
    source.fail();
    expect(await rechecked).toBeNull();
    expect(source.events).toEqual([]);
  });

  it('joined by a request, is counted once, as the request met it', async () => {
    const source = gatedSource();
    const rechecked = source.cache.recheck(REF);
    const requested = Promise.resolve(source.cache.get(REF)).then(
      () => 'served',
      (error: unknown) => (error as AirlockError).code,
    );
    // One fetch for both: the request joined the recheck's.
    expect(source.asked()).toBe(1);
    source.fail();
    expect(await rechecked).toBeNull();
    expect(await requested).toBe('credential_unavailable');
    expect(source.events).toEqual(['miss', 'refresh_failure']);
  });
});
