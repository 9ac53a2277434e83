/**
 * Found by review: noteHeldSecret names the credential and the incident when a request refused at authentication
 * carries a managed key. A request from a revoked agent (revoked, say, because a prompt injection was
 * suspected) is refused by checkPrincipalRevocations before guardRequestSecrets scans it, so the same
 * real key in it leaves a 403 record with no credential and no reason, at info: the incident is lost
 * exactly where it matters most. Nothing of the key may reach the answer, the log or the audit.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { generateAgentToken } from '../../src/identity/agent-token.js';
import { assertNoLeak } from '../helpers/assert-no-leak.js';
import { canary } from '../helpers/canary.js';
import { adminClient, freePort, type AdminClient } from '../helpers/operator.js';
import { sendRequest, type SentResponse } from '../helpers/send-request.js';
import { startProxy, type ProxyFixture } from '../helpers/start-proxy.js';
import { startUpstream, type Upstream } from '../helpers/start-upstream.js';

const key = canary('held-revoked');
const agent = generateAgentToken();
const operator = generateAgentToken();
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
  const revoked = await admin.call('POST', '/v1/agents/bot/revoke', { reason: 'prompt injection suspected' });
  expect(revoked.status).toBe(200);
});

afterAll(async () => {
  assertNoLeak([key], [
    { name: 'responses', text: answers.map((a) => `${JSON.stringify(a.headers)}\n${a.text}`).join('\n') },
    { name: 'log', text: proxy.logLines.join('') },
    { name: 'audit', text: proxy.auditText() },
  ]);
  await proxy.close();
  await upstream.close();
});

describe('a revoked agent that sends the real key', () => {
  it('is refused (401), and the record names the credential and the incident, the log line a warning', async () => {
    const answer = await sendRequest(`${proxy.url}/openai/v1/models`, { headers: { authorization: `Bearer ${agent.token}`, 'x-api-key': key } });
    answers.push(answer);
    expect(answer.status).toBe(401);
    const requestId = answer.headers['x-airlock-request-id'] ?? answer.json()['request_id'];
    const [record] = (await proxy.waitForAudit(1)).filter((r) => r.request_id === requestId);
    expect(record).toMatchObject({ agent: 'bot', status: 401 });
    expect(record?.credential).toBe('env:OPENAI_API_KEY');
    expect(record?.reason).toMatch(/env:OPENAI_API_KEY/);
    const line = proxy.logLines.map((text) => JSON.parse(text) as Record<string, unknown>).find((entry) => entry['request_id'] === record?.request_id);
    expect(line?.['level'] === 40 || line?.['level'] === 'warn', JSON.stringify(line)).toBe(true);
  });
});

// Found by review: the other refusals of the authentication step (a lockdown, a stale shared state) came
// before the scan too, and named neither the credential nor the incident.
describe('an agent that sends the real key during a lockdown', () => {
  it('is refused (503 locked_down), and the record names the credential and the incident', async () => {
    const other = generateAgentToken();
    const adminPort = await freePort();
    const locked = await startProxy(
      {
        admin: { listen: `127.0.0.1:${adminPort}`, tokens: [{ name: 'oncall', hash: operator.hash }] },
        services: { openai: { upstream: upstream.url, credential: { secret: 'env:OPENAI_API_KEY', inject: 'bearer' }, routes: [{ method: 'GET', path: '/v1/*', scope: 'api' }] } },
        agents: { bot: { tokens: [other.hash], credentials: [{ service: 'openai', max_scope: ['api'] }] } },
        anomalies: { enabled: false },
      },
      { env: { OPENAI_API_KEY: key } },
    );
    try {
      const lockdown = await adminClient(() => `http://127.0.0.1:${adminPort}`, operator.token).call('POST', '/v1/revocations', { kind: 'all', reason: 'incident drill' });
      expect(lockdown.status, lockdown.text).toBe(200);
      const answer = await sendRequest(`${locked.url}/openai/v1/models`, { headers: { authorization: `Bearer ${other.token}`, 'x-api-key': key } });
      answers.push(answer);
      expect(answer.status).toBe(503);
      expect(answer.json()['code']).toBe('locked_down');
      const [record] = (await locked.waitForAudit(1)).filter((r) => r.request_id === answer.headers['x-airlock-request-id']);
      expect(record).toMatchObject({ agent: 'bot', status: 503, code: 'locked_down', credential: 'env:OPENAI_API_KEY' });
      expect(record?.reason).toMatch(/refused before its secrets were checked \(locked_down\) carried the value of env:OPENAI_API_KEY/);
      assertNoLeak([key], [
        { name: 'log', text: locked.logLines.join('') },
        { name: 'audit', text: locked.auditText() },
      ]);
    } finally {
      await locked.close();
    }
  });
});
