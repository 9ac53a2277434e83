/**
 * An upstream that refuses every token (test/helpers/start-upstream.ts refusingHandler) and an agent
 * that keeps calling: what each agent sees, and how many tokens the token endpoint minted meanwhile.
 * Shared by the OAuth2 tests with state in memory and with Redis but no shared master key, where the
 * token in use is kept in process (src/credentials/kept-token-source.ts).
 */
import { expect } from 'vitest';
import { assertNoLeak } from '../helpers/assert-no-leak.js';
import type { SentResponse } from '../helpers/send-request.js';
import type { OAuth2Server } from './oauth2-server.js';

const REQUESTS = 20;
/** The credential cache's shortest wait between two forced fetches (forward-with-rotation.ts). */
const FORCED_FETCH_WAIT_MS = 2_000;

/**
 * Sends REQUESTS refused requests one after the other and checks what the agent got: the upstream's 401,
 * with the token it names redacted, and no issued token anywhere in the answers. Then checks the token
 * endpoint minted one token per forced-fetch wait at most: the first refusal forces one; within the
 * wait (2 s, doubling while the refusals go on) the token in use is taken again. Without a kept token,
 * each refusal in that wait minted one: 20 requests, 20 tokens. Returns how many were minted.
 */
export async function expectOneTokenPerForcedFetch(send: (n: number) => Promise<SentResponse>, tokens: OAuth2Server): Promise<number> {
  const before = tokens.issued.length;
  const started = Date.now();
  const responses: SentResponse[] = [];
  for (let n = 0; n < REQUESTS; n++) responses.push(await send(n));
  const elapsed = Date.now() - started;
  expect(responses.map((r) => r.status)).toEqual(Array.from({ length: REQUESTS }, () => 401));
  expect(responses.filter((r) => !r.text.includes('the token [REDACTED] is not accepted')).map((r) => r.text)).toEqual([]);
  assertNoLeak([...tokens.issued], [{ name: 'agent responses', text: responses.map((r) => r.text).join('\n') }]);
  const minted = tokens.issued.length - before;
  expect(minted).toBeGreaterThanOrEqual(1);
  expect(minted, `${minted} tokens for ${REQUESTS} requests in ${elapsed} ms`).toBeLessThanOrEqual(1 + Math.floor(elapsed / FORCED_FETCH_WAIT_MS));
  return minted;
}
