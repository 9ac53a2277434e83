/**
 * `method_overrides: forward` for a service whose upstream honours no method override. Found by an SDK
 * walkthrough: an LLM request whose history replays a tool call with `{"_method": "PATCH"}` in its
 * arguments (an agent with an HTTP tool) was refused with 400 on every service, as the guard against
 * Rails-style overrides reads every JSON body. By default that guard stays on.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { generateAgentToken } from '../../src/identity/agent-token.js';
import { assertNoLeak } from '../helpers/assert-no-leak.js';
import { canary } from '../helpers/canary.js';
import { eventually } from '../helpers/operator.js';
import { sendRequest, type SentResponse } from '../helpers/send-request.js';
import { startProxy, type ProxyFixture } from '../helpers/start-proxy.js';
import { echoHandler, startUpstream, type Upstream } from '../helpers/start-upstream.js';

describe('method_overrides per service', () => {
  const key = canary('overrides-forward');
  const bot = generateAgentToken();
  const seen: SentResponse[] = [];
  let upstream: Upstream;
  let proxy: ProxyFixture;

  beforeAll(async () => {
    upstream = await startUpstream(echoHandler);
    const service = (extra: Record<string, unknown>): Record<string, unknown> => ({
      upstream: upstream.url,
      credential: { secret: 'env:OVERRIDES_KEY', inject: 'bearer' },
      routes: [{ method: 'POST', path: '/v1/messages', scope: 'messages:write' }],
      ...extra,
    });
    proxy = await startProxy(
      {
        services: { rails: service({}), llm: service({ method_overrides: 'forward' }) },
        agents: { bot: { tokens: [bot.hash], credentials: ['rails', 'llm'].map((name) => ({ service: name, max_scope: ['*'] })) } },
      },
      { env: { OVERRIDES_KEY: key } },
    );
  });

  afterAll(async () => {
    assertNoLeak([key, bot.token], [
      { name: 'answers', text: seen.map((r) => r.text).join('\n') },
      { name: 'logs', text: proxy.logLines.join('') },
    ]);
    await proxy?.close();
    await upstream?.close();
  });

  async function post(service: string, body: string, contentType: string): Promise<SentResponse> {
    const response = await sendRequest(`${proxy.url}/${service}/v1/messages`, { method: 'POST', headers: { authorization: `Bearer ${bot.token}`, 'content-type': contentType }, body });
    seen.push(response);
    return response;
  }

  const toolReplay = JSON.stringify({
    model: 'm',
    messages: [{ role: 'assistant', content: [{ type: 'tool_use', id: 'toolu_1', name: 'http', input: { url: 'https://example.test/x', _method: 'PATCH' } }] }],
  });

  it('refuse (the default): a JSON body naming _method gets 400, and nothing is forwarded', async () => {
    const before = upstream.requests.length;
    const refused = await post('rails', toolReplay, 'application/json');
    expect(refused.status, refused.text).toBe(400);
    expect(refused.json<{ code: string }>().code).toBe('invalid_request');
    expect(upstream.requests.length).toBe(before);
  });

  it('forward: the same body, and a form naming _method, go upstream as sent', async () => {
    const json = await post('llm', toolReplay, 'application/json');
    expect(json.status, json.text).toBe(200);
    expect(upstream.requests.at(-1)?.body.toString('utf8')).toBe(toolReplay);
    const form = await post('llm', '_method=DELETE&x=1', 'application/x-www-form-urlencoded');
    expect(form.status, form.text).toBe(200);
    expect(upstream.requests.at(-1)?.body.toString('utf8')).toBe('_method=DELETE&x=1');
    // The audit still says what was authorized and sent: POST.
    const id = form.headers['x-airlock-request-id'];
    const record = await eventually('the audit record', () => proxy.auditRecords().find((r) => r.request_id === id));
    expect(record).toMatchObject({ method: 'POST', service: 'llm', decision: 'allow', status: 200 });
  });
});
