/**
 * The official @anthropic-ai/sdk, pointed at Airlock with an agent token as its API key (SDK 1.x puts
 * it in Authorization: Bearer; x-api-key is tried too), gets real answers (plain and streamed) from a
 * stand-in Anthropic Messages API. The upstream sees the real key in x-api-key (header injection)
 * exactly once and never the agent token; the SDK's anthropic-version
 * header passes through; a scope denial becomes the SDK's PermissionDeniedError with Airlock's words.
 */
import Anthropic from '@anthropic-ai/sdk';
import type { ServerResponse } from 'node:http';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { generateAgentToken } from '../../src/identity/agent-token.js';
import { assertNoLeak } from '../helpers/assert-no-leak.js';
import { canary } from '../helpers/canary.js';
import { startProxy, type ProxyFixture } from '../helpers/start-proxy.js';
import { startUpstream, type Upstream } from '../helpers/start-upstream.js';

interface MessagesBody {
  model?: string;
  stream?: boolean;
  messages?: Array<{ role: string; content: string }>;
}

const STREAMED_WORDS = ['Hello', ' from', ' Claude'];

function sse(res: ServerResponse, event: string, data: unknown): void {
  res.write(`event: ${event}\ndata: ${JSON.stringify(data)}\n\n`);
}

/** The Messages API's streaming shape: message_start, one text block of deltas, message_delta, message_stop. */
function streamMessage(res: ServerResponse, model: string): void {
  res.writeHead(200, { 'content-type': 'text/event-stream', 'cache-control': 'no-cache', 'request-id': 'req_stream_1' });
  sse(res, 'message_start', {
    type: 'message_start',
    message: { id: 'msg_stream_1', type: 'message', role: 'assistant', model, content: [], stop_reason: null, stop_sequence: null, usage: { input_tokens: 3, output_tokens: 0 } },
  });
  sse(res, 'content_block_start', { type: 'content_block_start', index: 0, content_block: { type: 'text', text: '' } });
  sse(res, 'ping', { type: 'ping' });
  for (const word of STREAMED_WORDS) sse(res, 'content_block_delta', { type: 'content_block_delta', index: 0, delta: { type: 'text_delta', text: word } });
  sse(res, 'content_block_stop', { type: 'content_block_stop', index: 0 });
  sse(res, 'message_delta', { type: 'message_delta', delta: { stop_reason: 'end_turn', stop_sequence: null }, usage: { output_tokens: STREAMED_WORDS.length } });
  sse(res, 'message_stop', { type: 'message_stop' });
  res.end();
}

describe('@anthropic-ai/sdk through Airlock', () => {
  const realKey = canary('anthropic');
  const agent = generateAgentToken();
  /** Everything the SDK handed back to the agent, for the leak check. */
  const agentVisible: string[] = [];
  /** Headers as the SDK put them on the wire (recorded by a pass-through fetch). */
  const sdkSent: Headers[] = [];
  let upstream: Upstream;
  let proxy: ProxyFixture;

  function recordingFetch(input: string | URL | Request, init?: RequestInit): Promise<Response> {
    sdkSent.push(new Headers(init?.headers));
    return fetch(input, init);
  }

  function client(): Anthropic {
    return new Anthropic({ baseURL: `${proxy.url}/anthropic`, apiKey: agent.token, maxRetries: 0, timeout: 10_000, fetch: recordingFetch });
  }

  beforeAll(async () => {
    upstream = await startUpstream((req, res, recorded) => {
      const body = JSON.parse(recorded.body.toString('utf8') || '{}') as MessagesBody;
      if (req.method === 'POST' && req.url === '/v1/messages' && body.stream === true) {
        streamMessage(res, body.model ?? 'claude-test');
        return;
      }
      if (req.method === 'POST' && req.url === '/v1/messages') {
        const reply = JSON.stringify({
          id: 'msg_1',
          type: 'message',
          role: 'assistant',
          model: body.model ?? 'claude-test',
          content: [{ type: 'text', text: `echo: ${body.messages?.[0]?.content ?? ''}` }],
          stop_reason: 'end_turn',
          stop_sequence: null,
          usage: { input_tokens: 1, output_tokens: 2 },
        });
        res.writeHead(200, { 'content-type': 'application/json', 'request-id': 'req_1' });
        res.end(reply);
        return;
      }
      res.writeHead(404, { 'content-type': 'application/json' });
      res.end('{"type":"error","error":{"type":"not_found_error","message":"not found"}}');
    });
    proxy = await startProxy(
      {
        services: {
          anthropic: {
            upstream: upstream.url,
            credential: { secret: 'env:ANTHROPIC_API_KEY', inject: { header: 'x-api-key', value: '${secret}' } },
            routes: [
              { method: 'POST', path: '/v1/messages', scope: 'messages:write' },
              { method: 'GET', path: '/v1/models', scope: 'models:read' },
            ],
          },
        },
        agents: { 'support-bot': { tokens: [agent.hash], credentials: [{ service: 'anthropic', max_scope: ['messages:write'] }] } },
      },
      { env: { ANTHROPIC_API_KEY: realKey } },
    );
  });

  afterAll(async () => {
    await proxy.close();
    await upstream.close();
  });

  it('creates a message with the real key in x-api-key and the agent token removed', async () => {
    const message = await client().messages.create({ model: 'claude-test', max_tokens: 64, messages: [{ role: 'user', content: 'ping' }] });
    agentVisible.push(JSON.stringify(message));
    expect(message.content).toEqual([{ type: 'text', text: 'echo: ping' }]);
    expect(message.stop_reason).toBe('end_turn');

    const seen = upstream.requests.at(-1);
    expect(seen?.method).toBe('POST');
    expect(seen?.target).toBe('/v1/messages');
    expect(seen?.header('x-api-key')).toEqual([realKey]);
    expect(seen?.header('authorization')).toEqual([]);
    expect(seen?.rawHeaders.join('\n')).not.toContain(agent.token);
    expect(seen?.body.toString('utf8')).not.toContain(agent.token);
    expect(JSON.parse(seen?.body.toString('utf8') ?? '{}')).toMatchObject({ model: 'claude-test', max_tokens: 64, messages: [{ role: 'user', content: 'ping' }] });
  });

  it('passes the anthropic-version header the SDK sends through unchanged', () => {
    const sentVersion = sdkSent.at(-1)?.get('anthropic-version');
    expect(sentVersion, 'the SDK sends anthropic-version on every call').toMatch(/^\d{4}-\d{2}-\d{2}$/);
    expect(upstream.requests.at(-1)?.header('anthropic-version')).toEqual([sentVersion]);
    // The SDK sent the agent token as its key (x-api-key in older releases, Authorization: Bearer in
    // 1.x); Airlock removed that header and set x-api-key to the real key instead.
    const sent = sdkSent.at(-1);
    expect([sent?.get('x-api-key'), sent?.get('authorization')].join(' ')).toContain(agent.token);
  });

  it('replaces an agent token sent in x-api-key itself: the upstream gets exactly one x-api-key', async () => {
    // The Messages API documents x-api-key as the key header; an agent (or an older SDK) may send the
    // token there. Airlock must replace that header, not add a second one beside it.
    const viaHeader = new Anthropic({
      baseURL: `${proxy.url}/anthropic`,
      apiKey: null,
      authToken: null,
      defaultHeaders: { 'x-api-key': agent.token },
      maxRetries: 0,
      timeout: 10_000,
      fetch: recordingFetch,
    });
    const message = await viaHeader.messages.create({ model: 'claude-test', max_tokens: 64, messages: [{ role: 'user', content: 'pong' }] });
    agentVisible.push(JSON.stringify(message));
    expect(message.content).toEqual([{ type: 'text', text: 'echo: pong' }]);
    expect(sdkSent.at(-1)?.get('x-api-key')).toBe(agent.token);

    const seen = upstream.requests.at(-1);
    expect(seen?.header('x-api-key')).toEqual([realKey]);
    expect(seen?.header('authorization')).toEqual([]);
    expect(seen?.rawHeaders.join('\n')).not.toContain(agent.token);
  });

  it('streams message events through and the SDK assembles the text deltas', async () => {
    const stream = await client().messages.create({ model: 'claude-test', max_tokens: 64, messages: [{ role: 'user', content: 'hi' }], stream: true });
    const types: string[] = [];
    const deltas: string[] = [];
    for await (const event of stream) {
      agentVisible.push(JSON.stringify(event));
      types.push(event.type);
      if (event.type === 'content_block_delta' && event.delta.type === 'text_delta') deltas.push(event.delta.text);
    }
    expect(deltas.join('')).toBe('Hello from Claude');
    expect(types[0]).toBe('message_start');
    expect(types.at(-1)).toBe('message_stop');

    const seen = upstream.requests.at(-1);
    expect(seen?.header('x-api-key')).toEqual([realKey]);
    expect(seen?.rawHeaders.join('\n')).not.toContain(agent.token);
  });

  it('accumulates a streamed message with the messages.stream() helper', async () => {
    const message = await client().messages.stream({ model: 'claude-test', max_tokens: 64, messages: [{ role: 'user', content: 'hi' }] }).finalMessage();
    agentVisible.push(JSON.stringify(message));
    expect(message.content).toEqual([{ type: 'text', text: 'Hello from Claude' }]);
    expect(message.stop_reason).toBe('end_turn');
  });

  it("turns a scope denial into the SDK's PermissionDeniedError with Airlock's message", async () => {
    const before = upstream.requests.length;
    const error = await client().models.list().then(
      () => null,
      (e: unknown) => e,
    );
    expect(error).toBeInstanceOf(Anthropic.PermissionDeniedError);
    const denied = error as InstanceType<typeof Anthropic.PermissionDeniedError>;
    agentVisible.push(denied.message, JSON.stringify(denied.error));
    expect(denied.status).toBe(403);
    expect(denied.apiMessage).toBe(
      'Agent support-bot lacks scope models:read on service anthropic. An operator grants it by adding models:read to agents.support-bot.credentials[0].max_scope.',
    );
    // Airlock's words as the message, not the problem's JSON (the body's top-level `message`), and the
    // SDK's requestID is Airlock's request id, which finds the audit record.
    expect(denied.message).toBe(`403 ${denied.apiMessage as string}`);
    expect(denied.headers.get('x-airlock-request-id')).toMatch(/^[0-9a-f-]{36}$/);
    expect(denied.requestID).toBe(denied.headers.get('x-airlock-request-id'));
    expect(upstream.requests.length, 'a denied call never reaches the upstream').toBe(before);
  });

  it('leaves no trace of the key in what the agent saw, the logs or the audit', async () => {
    await proxy.waitForAudit(5);
    assertNoLeak([realKey], [
      { name: 'SDK-visible responses', text: agentVisible.join('\n') },
      { name: 'log', text: proxy.logLines.join('') },
      { name: 'audit', text: proxy.auditText() },
    ]);
    const records = proxy.auditRecords();
    expect(records.map((r) => [r.decision, r.status, r.scope])).toEqual([
      ['allow', 200, 'messages:write'],
      ['allow', 200, 'messages:write'],
      ['allow', 200, 'messages:write'],
      ['allow', 200, 'messages:write'],
      ['deny', 403, 'models:read'],
    ]);
    expect(records.every((r) => r.credential === null || r.credential === 'env:ANTHROPIC_API_KEY')).toBe(true);
  });
});
