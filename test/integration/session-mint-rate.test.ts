/**
 * limits.session_mint_rate (found by review): task-session mints had no rate, only a cap on live
 * sessions, so an agent minting and ending sessions in a loop kept the state store writing as fast as
 * it could. Now each agent has a token bucket for mints: over it, 429 rate_limited with Retry-After,
 * before the body is read and before anything is written; other agents and ordinary calls go on.
 */
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { generateAgentToken } from '../../src/identity/agent-token.js';
import { assertNoLeak, proxySurfaces, responsesSurface } from '../helpers/assert-no-leak.js';
import { canary } from '../helpers/canary.js';
import { eventually } from '../helpers/operator.js';
import { sendRequest, type Problem, type SentResponse } from '../helpers/send-request.js';
import { startProxy, type ProxyFixture } from '../helpers/start-proxy.js';
import { startUpstream, type Upstream } from '../helpers/start-upstream.js';

describe('limits.session_mint_rate', () => {
  const eager = generateAgentToken();
  const calm = generateAgentToken();
  const key = canary('mint-rate');
  const seen: SentResponse[] = [];
  const sessionTokens: string[] = [];
  let upstream: Upstream;
  let proxy: ProxyFixture;
  const grant = { service: 'api', max_scope: ['*'], max_ttl: 600 };

  beforeAll(async () => {
    upstream = await startUpstream();
    proxy = await startProxy(
      {
        limits: { session_mint_rate: { requests: 3, per: '1h' } },
        services: { api: { upstream: upstream.url, credential: { secret: 'env:MINT_KEY' }, routes: [{ method: 'GET', path: '/v1/*', scope: 'api:read' }] } },
        agents: { eager: { tokens: [eager.hash], credentials: [grant] }, calm: { tokens: [calm.hash], credentials: [grant] } },
      },
      { env: { MINT_KEY: key } },
    );
  });

  afterAll(async () => {
    assertNoLeak([key, eager.token, calm.token], [responsesSurface(seen), ...proxySurfaces(proxy)]);
    // A session token is its minter's to see, in the mint's answer, and nowhere else.
    assertNoLeak(sessionTokens, proxySurfaces(proxy));
    await proxy?.close();
    await upstream?.close();
  });

  async function mint(token: string): Promise<SentResponse> {
    const response = await sendRequest(`${proxy.url}/_airlock/sessions`, {
      method: 'POST',
      headers: { authorization: `Bearer ${token}`, 'content-type': 'application/json' },
      body: JSON.stringify({ scopes: { api: ['api:read'] }, ttl_seconds: 60, justification: 'mint rate test' }),
    });
    seen.push(response);
    if (response.status === 201) sessionTokens.push(response.json<{ session_token: string }>().session_token);
    return response;
  }

  async function end(sessionToken: string): Promise<void> {
    const response = await sendRequest(`${proxy.url}/_airlock/sessions/current`, { method: 'DELETE', headers: { authorization: `Bearer ${sessionToken}` } });
    seen.push(response);
    expect(response.status).toBe(204);
  }

  const stateCreated = (): number => readFileSync(join(proxy.dataDir, 'state.jsonl'), 'utf8').split('\n').filter((line) => line.includes('"session.created"')).length;

  it('three mints (ended at once, so the live cap is not what stops them), then the fourth is 429 with Retry-After, and nothing is kept for it', async () => {
    for (let i = 0; i < 3; i++) {
      const minted = await mint(eager.token);
      expect(minted.status, minted.text).toBe(201);
      await end(minted.json<{ session_token: string }>().session_token);
    }
    const kept = stateCreated();
    const refused = await mint(eager.token);
    expect(refused.status, refused.text).toBe(429);
    const problem = refused.json<Problem>();
    expect(problem.code).toBe('rate_limited');
    expect(problem.detail).toContain('limits.session_mint_rate');
    // One token every 20 minutes (3 per hour).
    const retryAfter = Number(refused.headers['retry-after']);
    expect(retryAfter).toBeGreaterThan(60);
    expect(retryAfter).toBeLessThanOrEqual(1200);
    expect(stateCreated()).toBe(kept);
    const record = await eventually('the refused mint in the audit trail', () => proxy.auditRecords().find((r) => r.request_id === refused.headers['x-airlock-request-id']));
    expect(record).toMatchObject({ agent: 'eager', code: 'rate_limited', status: 429, decision: 'deny' });
  });

  it('another agent mints as usual, and the limited agent still calls its service', async () => {
    expect((await mint(calm.token)).status).toBe(201);
    const call = await sendRequest(`${proxy.url}/api/v1/items`, { headers: { authorization: `Bearer ${eager.token}` } });
    seen.push(call);
    expect(call.status).toBe(200);
  });
});
