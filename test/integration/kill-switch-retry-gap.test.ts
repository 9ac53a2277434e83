/**
 * The kill switch between an answer held for `retry_on` and its retry. The upstream refuses the
 * credential (401), Airlock holds that answer and fetches the credential again (here from a slow OAuth2
 * token endpoint); the agent is revoked meanwhile. Found by review: the request had no relay to
 * interrupt then, and its connection was reset. Now the retry is never sent and the agent gets the
 * refusal its next request would get, audited; the next request is refused as usual.
 */
import type { IncomingMessage, ServerResponse } from 'node:http';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { generateAgentToken } from '../../src/identity/agent-token.js';
import { assertNoLeak } from '../helpers/assert-no-leak.js';
import { canary } from '../helpers/canary.js';
import { adminClient, eventually, sleep, type AdminClient } from '../helpers/operator.js';
import { sendRequest, type Problem, type SentResponse } from '../helpers/send-request.js';
import { startProxy, type ProxyFixture } from '../helpers/start-proxy.js';
import { startUpstream, type RecordedRequest, type Upstream } from '../helpers/start-upstream.js';
import { startOAuth2Server, type OAuth2Server } from '../support/oauth2-server.js';

function expectProblem(response: SentResponse, status: number, code: string): Problem {
  expect(response.status, response.text).toBe(status);
  expect(response.headers['content-type']).toMatch(/^application\/problem\+json/);
  const problem = response.json<Problem>();
  expect(problem.code).toBe(code);
  return problem;
}

describe('kill switch: a request between its refused answer and the retry', () => {
  const clientSecret = canary('gap-client-secret');
  const bot = generateAgentToken();
  const oncall = generateAgentToken();
  /** Access tokens the upstream refuses with 401, as if rotated out. */
  const refused = new Set<string>();
  let tokens: OAuth2Server;
  let upstream: Upstream;
  let proxy: ProxyFixture;
  let admin: AdminClient;

  function handler(req: IncomingMessage, res: ServerResponse, _recorded: RecordedRequest): void {
    const token = (req.headers.authorization ?? '').replace(/^Bearer /, '');
    const status = refused.has(token) ? 401 : 200;
    const body = JSON.stringify(status === 401 ? { error: { message: 'invalid token' } } : { tickets: [] });
    // With a length: an answer of unknown length is relayed as it comes, never held for a retry.
    res.writeHead(status, { 'content-type': 'application/json', 'content-length': Buffer.byteLength(body) });
    res.end(body);
  }

  beforeAll(async () => {
    tokens = await startOAuth2Server();
    tokens.addClient({ clientId: 'airlock-gap', clientSecret });
    upstream = await startUpstream(handler);
    proxy = await startProxy(
      {
        admin: { listen: '127.0.0.1:0', tokens: [{ name: 'oncall', hash: oncall.hash }] },
        secrets: { oauth2: { crm: { token_url: tokens.tokenUrl, client_id: 'env:GAP_CLIENT_ID', client_secret: 'env:GAP_CLIENT_SECRET', timeout: 5 } } },
        services: {
          crm: {
            upstream: upstream.url,
            credential: { secret: 'oauth2:crm', inject: 'bearer', retry_on: [401] },
            routes: [{ method: 'GET', path: '/v1/tickets', scope: 'tickets:read' }],
          },
        },
        agents: { bot: { tokens: [bot.hash], credentials: [{ service: 'crm', max_scope: ['*'] }] } },
      },
      { env: { GAP_CLIENT_ID: 'airlock-gap', GAP_CLIENT_SECRET: clientSecret } },
    );
    admin = adminClient(() => proxy.airlock.adminUrl as string, oncall.token);
  });

  afterAll(async () => {
    await proxy?.close();
    await upstream?.close();
    await tokens?.close();
  });

  const call = (query: string) => sendRequest(`${proxy.url}/crm/v1/tickets?${query}`, { headers: { authorization: `Bearer ${bot.token}` }, timeoutMs: 15_000 });

  it('the retry is not sent and the agent gets 401 unauthenticated, audited; not a connection reset', async () => {
    const warm = await call('n=warm');
    expect(warm.status, warm.text).toBe(200);
    expect(tokens.issued).toHaveLength(1);
    // A refetch is forced only for a credential some seconds old (forward-with-rotation.ts).
    await sleep(2_100);
    refused.add(tokens.issued[0] as string);
    tokens.setDelay(1_500);
    const pending = call('n=gap');
    // The first answer (401) is held and the token endpoint is asked again: revoke the agent now.
    await eventually('the refetch under way', () => tokens.tokenRequests.length === 2, 5_000, 10);
    const revoked = await admin.call('POST', '/v1/agents/bot/revoke', { reason: 'revoked between the refusal and the retry' });
    expect(revoked.status, revoked.text).toBe(200);
    const answer = await pending;
    const problem = expectProblem(answer, 401, 'unauthenticated');
    expect(problem.detail).toContain('bot');
    // The upstream saw the first send only, never the retry with the new token.
    await eventually('the new token issued', () => tokens.issued.length === 2, 5_000, 10);
    expect(upstream.requests.filter((r) => r.target === '/v1/tickets?n=gap')).toHaveLength(1);
    const record = await eventually('the audit record', () => proxy.auditRecords().find((r) => r.request_id === answer.headers['x-airlock-request-id']));
    // Allowed, as it was: its first send reached the upstream. Its code and status say how it ended.
    expect(record).toMatchObject({ agent: 'bot', code: 'unauthenticated', status: 401, decision: 'allow', upstream_status: null });
    // And the next request is refused as any is.
    tokens.setDelay(0);
    expectProblem(await call('n=after'), 401, 'unauthenticated');
    expect(upstream.requests.some((r) => r.target === '/v1/tickets?n=after')).toBe(false);
    assertNoLeak([clientSecret, bot.token, ...tokens.issued], [
      { name: 'answers', text: `${answer.text}\n${JSON.stringify(answer.headers)}` },
      { name: 'audit', text: proxy.auditText() },
      { name: 'logs', text: proxy.logLines.join('') },
    ]);
  });
});
