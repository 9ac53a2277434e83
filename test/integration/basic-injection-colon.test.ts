/**
 * Basic injection of a key that holds ":". RFC 7617 2: the user-id and password are joined by the first
 * colon, so "a user-id containing a colon character is invalid": a username rendering one reaches the
 * upstream as another user-id, and the rest of it in the password. Found by review: such a key went out
 * split where the upstream reads it; it is a 503 naming the reference, and nothing is sent. A ":" in the
 * password is the password's own (the first colon still ends the user-id) and goes as it is.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { generateAgentToken } from '../../src/identity/agent-token.js';
import { assertNoLeak } from '../helpers/assert-no-leak.js';
import { plainCanary } from '../helpers/canary.js';
import { sendRequest } from '../helpers/send-request.js';
import { startProxy, type ProxyFixture } from '../helpers/start-proxy.js';
import { startUpstream, type Upstream } from '../helpers/start-upstream.js';

describe('Basic injection of a key holding ":"', () => {
  const colonKey = `${plainCanary('basic-colon')}:tail`;
  const agent = generateAgentToken();
  let upstream: Upstream;
  let proxy: ProxyFixture;

  const service = (inject: unknown): Record<string, unknown> => ({
    upstream: upstream.url,
    credential: { secret: 'env:COLON_KEY', inject },
    routes: [{ method: 'GET', path: '/v1/*', scope: 'api:read' }],
  });

  beforeAll(async () => {
    upstream = await startUpstream();
    proxy = await startProxy(
      {
        services: {
          user: service({ basic: { username: '${secret}', password: '' } }),
          password: service({ basic: { username: 'api', password: '${secret}' } }),
        },
        agents: { bot: { tokens: [agent.hash], credentials: ['user', 'password'].map((name) => ({ service: name, max_scope: ['*'] })) } },
      },
      { env: { COLON_KEY: colonKey } },
    );
  });

  afterAll(async () => {
    await proxy?.close();
    await upstream?.close();
  });

  const call = (name: string) => sendRequest(`${proxy.url}/${name}/v1/items`, { headers: { authorization: `Bearer ${agent.token}` } });

  it('as the username: 503 credential_unavailable naming the reference, and nothing reaches the upstream', async () => {
    const before = upstream.requests.length;
    const mark = proxy.auditRecords().length;
    const response = await call('user');
    expect(response.status, response.text).toBe(503);
    expect(response.json()).toMatchObject({ code: 'credential_unavailable' });
    expect(response.text).toContain('env:COLON_KEY');
    expect(upstream.requests.length).toBe(before);
    await proxy.waitForAudit(mark + 1);
    assertNoLeak([colonKey], [{ name: 'answer', text: response.text }, { name: 'audit', text: proxy.auditText() }, { name: 'log', text: proxy.logLines.join('\n') }]);
  });

  it('as the password: sent whole after the first colon', async () => {
    const response = await call('password');
    expect(response.status, response.text).toBe(200);
    const sent = upstream.requests.at(-1)?.header('authorization') ?? [];
    expect(sent).toEqual([`Basic ${Buffer.from(`api:${colonKey}`).toString('base64')}`]);
  });
});
