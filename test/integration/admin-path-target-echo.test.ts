/**
 * What the admin API says back about a target named in its path (review): POST /v1/revocations and the
 * approval routes already refuse a target that looks like a key or token without repeating it, but the
 * path routes did not. An agent token (or a key-shaped value) pasted as the agent of
 * /v1/agents/:name/revoke|restore or the session of /v1/sessions/:id/revoke came back whole in the
 * 404's detail ("There is no agent named alk_..."), and any unknown path came back in "No admin
 * endpoint GET /v1/...". Over a real admin listener; names and session ids that are not key-shaped
 * keep their plain 404.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { generateAgentToken } from '../../src/identity/agent-token.js';
import { assertNoLeak } from '../helpers/assert-no-leak.js';
import { canary } from '../helpers/canary.js';
import { adminClient, type AdminClient } from '../helpers/operator.js';
import type { Problem } from '../helpers/send-request.js';
import { startProxy, type ProxyFixture } from '../helpers/start-proxy.js';
import { startUpstream, type Upstream } from '../helpers/start-upstream.js';

describe('admin path targets that look like keys or tokens', () => {
  const key = canary('admin-path-echo');
  const alice = generateAgentToken();
  const bot = generateAgentToken();
  // A GitHub token shape (a built-in key shape), not managed by Airlock: the catalog does not scrub it.
  const pasted = 'ghp_0123456789abcdefghijABCDEFGHIJ012345';
  let upstream: Upstream;
  let proxy: ProxyFixture;
  let admin: AdminClient;

  beforeAll(async () => {
    upstream = await startUpstream();
    proxy = await startProxy(
      {
        admin: { listen: '127.0.0.1:0', tokens: [{ name: 'alice', hash: alice.hash }] },
        services: { api: { upstream: upstream.url, credential: { secret: 'env:ECHO_KEY' }, routes: [{ method: 'GET', path: '/v1/*', scope: 'api:read' }] } },
        agents: { 'pay-bot': { tokens: [bot.hash], credentials: [{ service: 'api', max_scope: ['*'] }] } },
      },
      { env: { ECHO_KEY: key } },
    );
    admin = adminClient(() => proxy.airlock.adminUrl as string, alice.token);
  });

  afterAll(async () => {
    assertNoLeak([key, alice.token, bot.token, pasted], [
      { name: 'admin answers', text: admin.seen.join('\n') },
      { name: 'logs', text: proxy.logLines.join('') },
      { name: 'audit', text: proxy.auditText() },
    ]);
    await proxy?.close();
    await upstream?.close();
  });

  it.each([
    ['an agent token as the agent to revoke', () => `/v1/agents/${bot.token}/revoke`],
    ['an agent token as the agent to restore', () => `/v1/agents/${bot.token}/restore`],
    ['a key as the agent to revoke', () => `/v1/agents/${pasted}/revoke`],
    ['an agent token as the session to revoke', () => `/v1/sessions/${bot.token}/revoke`],
    ['a key as the session to revoke', () => `/v1/sessions/${pasted}/revoke`],
  ])('%s is refused with 400, not repeated, and nothing is kept', async (_name, path) => {
    const answer = await admin.call('POST', path(), { reason: 'pasted by mistake' });
    expect(answer.status, answer.text).toBe(400);
    expect(answer.json<Problem>().code).toBe('invalid_request');
    expect(answer.text).not.toContain(bot.token);
    expect(answer.text).not.toContain(pasted);
    expect((await admin.call('GET', '/v1/revocations')).json<{ revocations: unknown[] }>().revocations).toEqual([]);
  });

  it.each([
    ['an agent token', () => bot.token],
    ['a key', () => pasted],
  ])('an unknown path holding %s is 404 without it', async (_name, value) => {
    const answer = await admin.call('GET', `/v1/nothing/${value()}`);
    expect(answer.status, answer.text).toBe(404);
    expect(answer.json<Problem>().detail).toContain('No admin endpoint GET /v1/nothing/');
    expect(answer.text).not.toContain(value());
  });

  it('a name or session id that is not key-shaped keeps its plain 404, naming it', async () => {
    const agent = await admin.call('POST', '/v1/agents/nobody/revoke', { reason: 'typo' });
    expect(agent.status, agent.text).toBe(404);
    expect(agent.json<Problem>().detail).toBe('There is no agent named nobody.');
    const restore = await admin.call('POST', '/v1/agents/pay-bot/restore', {});
    expect(restore.status, restore.text).toBe(404);
    const session = await admin.call('POST', '/v1/sessions/ses_other-unknown/revoke', { reason: 'typo' });
    expect(session.status, session.text).toBe(404);
    expect(session.json<Problem>().detail).toContain('There is no live session ses_other-unknown');
  });
});
