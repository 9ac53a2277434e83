/**
 * limits.max_sessions_per_agent under concurrent mints (found by review): a session counts once it is
 * kept, after an await, so mints sent at once all passed the check before any was kept, and an agent
 * could hold as many sessions beyond the cap as it sent requests at once. Within one replica the cap now
 * holds exactly: the mints under way count too.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { generateAgentToken } from '../../src/identity/agent-token.js';
import { assertNoLeak } from '../helpers/assert-no-leak.js';
import { canary } from '../helpers/canary.js';
import { sendRequest, type Problem, type SentResponse } from '../helpers/send-request.js';
import { startProxy, type ProxyFixture } from '../helpers/start-proxy.js';
import { startUpstream, type Upstream } from '../helpers/start-upstream.js';

const CAP = 3;
const AT_ONCE = 10;

describe('limits.max_sessions_per_agent with mints sent at once', () => {
  const busy = generateAgentToken();
  const calm = generateAgentToken();
  const key = canary('sessions-race');
  let upstream: Upstream;
  let proxy: ProxyFixture;
  const grant = { service: 'api', max_scope: ['*'], max_ttl: 600 };

  beforeAll(async () => {
    upstream = await startUpstream();
    proxy = await startProxy(
      {
        limits: { max_sessions_per_agent: CAP },
        services: { api: { upstream: upstream.url, credential: { secret: 'env:RACE_KEY' }, routes: [{ method: 'GET', path: '/v1/*', scope: 'api:read' }] } },
        agents: { busy: { tokens: [busy.hash], credentials: [grant] }, calm: { tokens: [calm.hash], credentials: [grant] } },
      },
      { env: { RACE_KEY: key } },
    );
  });

  afterAll(async () => {
    await proxy?.close();
    await upstream?.close();
  });

  const mint = (token: string): Promise<SentResponse> =>
    sendRequest(`${proxy.url}/_airlock/sessions`, {
      method: 'POST',
      headers: { authorization: `Bearer ${token}`, 'content-type': 'application/json' },
      body: JSON.stringify({ scopes: { api: ['api:read'] }, ttl_seconds: 300, justification: 'concurrent cap test' }),
    });

  it(`${AT_ONCE} mints at once with a cap of ${CAP}: exactly ${CAP} get 201, the rest 429 rate_limited`, async () => {
    const answers = await Promise.all(Array.from({ length: AT_ONCE }, () => mint(busy.token)));
    const minted = answers.filter((a) => a.status === 201);
    const refused = answers.filter((a) => a.status !== 201);
    expect(minted.length, answers.map((a) => a.status).join(' ')).toBe(CAP);
    expect(refused.length).toBe(AT_ONCE - CAP);
    for (const answer of refused) {
      expect(answer.status, answer.text).toBe(429);
      expect(answer.json<Problem>()).toMatchObject({ code: 'rate_limited' });
      expect(answer.json<Problem>().detail).toContain(`Agent busy already holds ${CAP} live sessions (limits.max_sessions_per_agent)`);
    }
    // The cap holds afterwards too, and the refused mints left no place taken: ending one session
    // makes room for exactly one more.
    expect((await mint(busy.token)).status).toBe(429);
    const token = (minted[0] as SentResponse).json<{ session_token: string }>().session_token;
    const ended = await sendRequest(`${proxy.url}/_airlock/sessions/current`, { method: 'DELETE', headers: { authorization: `Bearer ${token}` } });
    expect(ended.status).toBe(204);
    const again = await Promise.all(Array.from({ length: AT_ONCE }, () => mint(busy.token)));
    expect(again.filter((a) => a.status === 201).length).toBe(1);
    // Another agent's cap is its own.
    expect((await mint(calm.token)).status).toBe(201);
    assertNoLeak([key], [{ name: 'answers', text: [...answers, ...again].map((a) => a.text).join('\n') }]);
  });
});
