/**
 * The official openai SDK, pointed at Airlock with an agent token, gets real answers (plain and
 * streamed) from a stand-in OpenAI upstream that sees the real key and never the agent token.
 */
import OpenAI from 'openai';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { generateAgentToken } from '../../src/identity/agent-token.js';
import { assertNoLeak } from '../helpers/assert-no-leak.js';
import { canary } from '../helpers/canary.js';
import { startProxy, type ProxyFixture } from '../helpers/start-proxy.js';
import { startUpstream, type Upstream } from '../helpers/start-upstream.js';

describe('openai SDK through Airlock', () => {
  const realKey = canary('openai');
  const agent = generateAgentToken();
  let upstream: Upstream;
  let proxy: ProxyFixture;

  beforeAll(async () => {
    upstream = await startUpstream((req, res, recorded) => {
      const body = JSON.parse(recorded.body.toString('utf8') || '{}') as { stream?: boolean; messages?: Array<{ content: string }> };
      if (req.url === '/v1/chat/completions' && body.stream === true) {
        res.writeHead(200, { 'content-type': 'text/event-stream', 'cache-control': 'no-cache' });
        for (const word of ['Hello', ' from', ' upstream']) {
          res.write(`data: ${JSON.stringify({ id: 'c1', object: 'chat.completion.chunk', created: 1, model: 'gpt-test', choices: [{ index: 0, delta: { content: word }, finish_reason: null }] })}\n\n`);
        }
        res.end('data: [DONE]\n\n');
        return;
      }
      if (req.url === '/v1/chat/completions') {
        const reply = JSON.stringify({
          id: 'c1',
          object: 'chat.completion',
          created: 1,
          model: 'gpt-test',
          choices: [{ index: 0, message: { role: 'assistant', content: `echo: ${body.messages?.[0]?.content ?? ''}` }, finish_reason: 'stop' }],
          usage: { prompt_tokens: 1, completion_tokens: 1, total_tokens: 2 },
        });
        res.writeHead(200, { 'content-type': 'application/json' });
        res.end(reply);
        return;
      }
      res.writeHead(404, { 'content-type': 'application/json' });
      res.end('{"error":{"message":"not found"}}');
    });
    proxy = await startProxy(
      {
        services: {
          openai: {
            upstream: upstream.url,
            credential: { secret: 'env:OPENAI_API_KEY', inject: 'bearer' },
            routes: [
              { method: 'POST', path: '/v1/chat/completions', scope: 'chat:write' },
              { method: 'GET', path: '/v1/models', scope: 'models:read' },
            ],
          },
        },
        agents: { 'support-bot': { tokens: [agent.hash], credentials: [{ service: 'openai', max_scope: ['chat:write'] }] } },
      },
      { env: { OPENAI_API_KEY: realKey } },
    );
  });

  afterAll(async () => {
    await proxy.close();
    await upstream.close();
  });

  it('completes a chat with the real key injected and the agent token removed', async () => {
    const client = new OpenAI({ baseURL: `${proxy.url}/openai/v1`, apiKey: agent.token, maxRetries: 0 });
    const completion = await client.chat.completions.create({ model: 'gpt-test', messages: [{ role: 'user', content: 'ping' }] });
    expect(completion.choices[0]?.message.content).toBe('echo: ping');
    const seen = upstream.requests.at(-1);
    expect(seen?.target).toBe('/v1/chat/completions');
    expect(seen?.header('authorization')).toEqual([`Bearer ${realKey}`]);
    expect(seen?.rawHeaders.join('\n')).not.toContain(agent.token);
  });

  it('streams server-sent events through', async () => {
    const client = new OpenAI({ baseURL: `${proxy.url}/openai/v1`, apiKey: agent.token, maxRetries: 0 });
    const stream = await client.chat.completions.create({ model: 'gpt-test', messages: [{ role: 'user', content: 'hi' }], stream: true });
    const words: string[] = [];
    for await (const chunk of stream) words.push(chunk.choices[0]?.delta.content ?? '');
    expect(words.join('')).toBe('Hello from upstream');
  });

  it('turns a denial into the SDK exception with Airlock\'s message', async () => {
    const client = new OpenAI({ baseURL: `${proxy.url}/openai/v1`, apiKey: agent.token, maxRetries: 0 });
    const before = upstream.requests.length;
    const error = await client.models.list().then(
      () => null,
      (e: unknown) => e,
    );
    expect(error).toBeInstanceOf(OpenAI.PermissionDeniedError);
    expect((error as InstanceType<typeof OpenAI.PermissionDeniedError>).message).toContain('lacks scope models:read');
    // The SDK's requestID is Airlock's request id (x-request-id), which finds the audit record.
    const denied = error as InstanceType<typeof OpenAI.PermissionDeniedError>;
    expect(denied.requestID).toMatch(/^[0-9a-f-]{36}$/);
    expect(denied.requestID).toBe(denied.headers?.get('x-airlock-request-id'));
    expect(upstream.requests.length).toBe(before);
  });

  it('leaves no trace of the key in logs or audit', async () => {
    await proxy.waitForAudit(3);
    assertNoLeak([realKey], [
      { name: 'log', text: proxy.logLines.join('') },
      { name: 'audit', text: proxy.auditText() },
    ]);
    const records = proxy.auditRecords();
    expect(records.map((r) => [r.decision, r.status, r.scope])).toEqual([
      ['allow', 200, 'chat:write'],
      ['allow', 200, 'chat:write'],
      ['deny', 403, 'models:read'],
    ]);
    expect(records.every((r) => r.credential === null || r.credential === 'env:OPENAI_API_KEY')).toBe(true);
  });
});
