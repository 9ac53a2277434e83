/**
 * Found by review: text an operator or an agent asks Airlock to keep (an admin reason, a session's
 * justification) is checked for an escaped Airlock token; the check threw on a percent-escape that is
 * not UTF-8 (`%C3` alone), and the call was answered 500 internal_error and logged at error level, at
 * the will of whoever sent it. Such text is ordinary (a percentage, a truncated URL) and is kept.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { generateAgentToken } from '../../src/identity/agent-token.js';
import { assertNoLeak } from '../helpers/assert-no-leak.js';
import { canary } from '../helpers/canary.js';
import { adminClient, freePort, type AdminClient } from '../helpers/operator.js';
import { sendRequest, type SentResponse } from '../helpers/send-request.js';
import { startProxy, type ProxyFixture } from '../helpers/start-proxy.js';
import { startUpstream, type Upstream } from '../helpers/start-upstream.js';

const key = canary('undecodable-escapes');
const agent = generateAgentToken();
const operator = generateAgentToken();
const text = 'ticket 4411: 100%zz done, see %C3 and %E2%82';
let upstream: Upstream;
let proxy: ProxyFixture;
let admin: AdminClient;
const answers: SentResponse[] = [];

beforeAll(async () => {
  upstream = await startUpstream();
  const port = await freePort();
  proxy = await startProxy(
    {
      admin: { listen: `127.0.0.1:${port}`, tokens: [{ name: 'oncall', hash: operator.hash }] },
      services: { openai: { upstream: upstream.url, credential: { secret: 'env:OPENAI_API_KEY', inject: 'bearer' }, routes: [{ method: 'GET', path: '/v1/*', scope: 'api' }] } },
      agents: { bot: { tokens: [agent.hash], credentials: [{ service: 'openai', max_scope: ['api'] }] } },
      anomalies: { enabled: false },
    },
    { env: { OPENAI_API_KEY: key } },
  );
  admin = adminClient(() => `http://127.0.0.1:${port}`, operator.token);
});

afterAll(async () => {
  assertNoLeak([key, agent.token, operator.token], [
    { name: 'answers', text: answers.map((a) => `${JSON.stringify(a.headers)}\n${a.text}`).join('\n') },
    { name: 'log', text: proxy.logLines.join('') },
    { name: 'audit', text: proxy.auditText() },
  ]);
  await proxy.close();
  await upstream.close();
});

describe('text holding percent-escapes that are not UTF-8', () => {
  it('an admin reason: the revocation is made and keeps the reason as given', async () => {
    const revoked = await admin.call('POST', '/v1/agents/bot/revoke', { reason: text });
    answers.push(revoked);
    expect(revoked.status, revoked.text).toBe(200);
    const revocations = await admin.call('GET', '/v1/revocations');
    expect(revocations.text).toContain(JSON.stringify(text));
    const restored = await admin.call('POST', '/v1/agents/bot/restore', { reason: text });
    expect(restored.status, restored.text).toBe(200);
  });

  it('a name in an admin path that is not UTF-8: 400, not 500', async () => {
    const refused = await admin.call('POST', '/v1/agents/bot%C3/revoke', { reason: 'drill' });
    answers.push(refused);
    expect(refused.status, refused.text).toBe(400);
    expect(refused.json()['code']).toBe('invalid_request');
  });

  it("a session's justification: the session is minted", async () => {
    const minted = await sendRequest(`${proxy.url}/_airlock/sessions`, {
      method: 'POST',
      headers: { authorization: `Bearer ${agent.token}`, 'content-type': 'application/json' },
      body: JSON.stringify({ scopes: { openai: ['api'] }, ttl_seconds: 60, justification: text }),
    });
    answers.push(minted);
    expect(minted.status, minted.text).toBe(201);
    expect(minted.json()['justification']).toBe(text);
    expect(proxy.logLines.filter((line) => line.includes('"level":"error"'))).toEqual([]);
  });
});
