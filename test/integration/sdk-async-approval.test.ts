/**
 * The official openai SDK under `approval_mode: async` and `hold`, as the README's Human approval section
 * tells agent developers. A provider SDK reads any 2xx as the call's result, so under async a plain
 * `create` resolves to the 202 problem (no `choices`); the README's recipe (`withResponse()`, then the
 * same call again with `x-airlock-approval`) gets the real completion once an approver says yes. Under
 * hold, the same plain `create` just waits and resolves with the completion.
 */
import Anthropic from '@anthropic-ai/sdk';
import OpenAI from 'openai';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { generateAgentToken } from '../../src/identity/agent-token.js';
import { assertNoLeak } from '../helpers/assert-no-leak.js';
import { canary } from '../helpers/canary.js';
import { adminClient, eventually, freePort, type AdminClient } from '../helpers/operator.js';
import { startProxy, type ProxyFixture } from '../helpers/start-proxy.js';
import { startUpstream, type Upstream } from '../helpers/start-upstream.js';

describe('openai SDK and human approval', () => {
  const realKey = canary('async-approval-openai');
  const asyncAgent = generateAgentToken();
  const holdAgent = generateAgentToken();
  const approver = generateAgentToken();
  const agentSeen: string[] = [];
  let upstream: Upstream;
  let proxy: ProxyFixture;
  let admin: AdminClient;

  beforeAll(async () => {
    upstream = await startUpstream((_req, res, recorded) => {
      const body = JSON.parse(recorded.body.toString('utf8') || '{}') as { messages?: Array<{ content: string }>; stream?: boolean };
      if (body.stream === true) {
        res.writeHead(200, { 'content-type': 'text/event-stream' });
        const chunk = (content: string): string => `data: ${JSON.stringify({ id: 'c1', object: 'chat.completion.chunk', created: 1, model: 'gpt-test', choices: [{ index: 0, delta: { content }, finish_reason: null }] })}\n\n`;
        res.end(`${chunk('echo: ')}${chunk(body.messages?.[0]?.content ?? '')}data: [DONE]\n\n`);
        return;
      }
      res.writeHead(200, { 'content-type': 'application/json' });
      res.end(
        JSON.stringify({
          id: 'c1',
          object: 'chat.completion',
          created: 1,
          model: 'gpt-test',
          choices: [{ index: 0, message: { role: 'assistant', content: `echo: ${body.messages?.[0]?.content ?? ''}` }, finish_reason: 'stop' }],
          usage: { prompt_tokens: 1, completion_tokens: 1, total_tokens: 2 },
        }),
      );
    });
    const port = await freePort();
    const grant = (extra: Record<string, unknown>): Record<string, unknown> => ({ service: 'openai', max_scope: ['chat:write'], require_approval: true, ...extra });
    proxy = await startProxy(
      {
        admin: { listen: `127.0.0.1:${port}`, tokens: [{ name: 'alice', hash: approver.hash }] },
        services: {
          openai: {
            upstream: upstream.url,
            credential: { secret: 'env:OPENAI_API_KEY', inject: 'bearer' },
            routes: [{ method: 'POST', path: '/v1/chat/completions', scope: 'chat:write' }],
          },
          anthropic: {
            upstream: upstream.url,
            credential: { secret: 'env:OPENAI_API_KEY', inject: { header: 'x-api-key', value: '${secret}' } },
            routes: [{ method: 'POST', path: '/v1/messages', scope: 'messages:write' }],
          },
        },
        agents: {
          'async-bot': {
            tokens: [asyncAgent.hash],
            credentials: [grant({ approval_mode: 'async' }), { service: 'anthropic', max_scope: ['messages:write'], require_approval: true, approval_mode: 'async' }],
          },
          'hold-bot': { tokens: [holdAgent.hash], credentials: [grant({ approval_mode: 'hold', approval_timeout: 60 })] },
        },
      },
      { env: { OPENAI_API_KEY: realKey } },
    );
    admin = adminClient(() => `http://127.0.0.1:${port}`, approver.token);
  });

  afterAll(async () => {
    await proxy.close();
    await upstream.close();
  });

  const client = (token: string): OpenAI => new OpenAI({ baseURL: `${proxy.url}/openai/v1`, apiKey: token, maxRetries: 0 });
  const request = { model: 'gpt-test', messages: [{ role: 'user' as const, content: 'refund ticket 9001' }] };

  async function pendingIds(agent: string): Promise<string[]> {
    const listed = await admin.call('GET', '/v1/approvals?status=pending');
    expect(listed.status, listed.text).toBe(200);
    return listed.json<{ approvals: Array<{ id: string; agent: string }> }>().approvals.filter((a) => a.agent === agent).map((a) => a.id);
  }

  it('async: a plain create resolves to the 202 problem, not a completion (the README warns of it)', async () => {
    const before = upstream.requests.length;
    const result = (await client(asyncAgent.token).chat.completions.create(request)) as unknown as Record<string, unknown>;
    agentSeen.push(JSON.stringify(result));
    expect(result['choices']).toBeUndefined();
    expect(result).toMatchObject({ status: 202, code: 'approval_pending' });
    expect(result['approval_id']).toMatch(/^apr_/);
    expect(upstream.requests.length).toBe(before);
  });

  it("async: the README's recipe (withResponse, approve, the same call with x-airlock-approval) gets the completion", async () => {
    const openai = client(asyncAgent.token);
    const before = upstream.requests.length;
    const { data, response } = await openai.chat.completions.create(request).withResponse();
    expect(response.status).toBe(202);
    const approvalId = (data as unknown as { approval_id: string }).approval_id;
    expect(await pendingIds('async-bot')).toContain(approvalId);
    expect((await admin.call('POST', `/v1/approvals/${approvalId}/approve`, { reason: 'ticket 9001 checked' })).status).toBe(200);

    const { data: completion, response: approved } = await openai.chat.completions.create(request, { headers: { 'x-airlock-approval': approvalId } }).withResponse();
    agentSeen.push(JSON.stringify(completion));
    expect(approved.status).toBe(200);
    expect(completion.choices[0]?.message.content).toBe('echo: refund ticket 9001');
    expect(upstream.requests.length).toBe(before + 1);
    expect(upstream.requests.at(-1)?.header('authorization')).toEqual([`Bearer ${realKey}`]);
    const record = await eventually('the approved call\'s audit record', () => proxy.auditRecords().find((r) => r.approval === approvalId && r.path === '/openai/v1/chat/completions' && r.status === 200));
    expect(record).toMatchObject({ agent: 'async-bot', approver: 'alice', approval_reason: 'ticket 9001 checked' });
  });

  it('async, streaming: the 202 is an SSE error event the SDK raises, with the id in x-airlock-approval; the approved retry streams', async () => {
    // Found by the SDK walkthrough: a JSON 202 read as a stream iterated no chunk and ended silently.
    const openai = client(asyncAgent.token);
    const before = upstream.requests.length;
    const failure = await (async () => {
      for await (const chunk of await openai.chat.completions.create({ ...request, stream: true })) agentSeen.push(JSON.stringify(chunk));
      return null;
    })().catch((error: unknown) => error);
    expect(failure).toBeInstanceOf(OpenAI.APIError);
    const pending = failure as InstanceType<typeof OpenAI.APIError>;
    agentSeen.push(pending.message);
    expect(pending.message).toMatch(/^This call needs a human's approval\. Retry the same request with the header x-airlock-approval: apr_/);
    const approvalId = pending.headers?.get('x-airlock-approval') ?? '';
    expect(approvalId).toMatch(/^apr_/);
    expect(pending.message).toContain(approvalId);
    expect(upstream.requests.length).toBe(before);
    expect((await admin.call('POST', `/v1/approvals/${approvalId}/approve`, { reason: 'streaming ok' })).status).toBe(200);
    let text = '';
    for await (const chunk of await openai.chat.completions.create({ ...request, stream: true }, { headers: { 'x-airlock-approval': approvalId } })) text += chunk.choices[0]?.delta.content ?? '';
    expect(text).toBe('echo: refund ticket 9001');
    expect(upstream.requests.length).toBe(before + 1);
  });

  it("async, streaming with the anthropic SDK: messages.stream() raises the approval, not 'ended without sending any chunks'", async () => {
    const anthropic = new Anthropic({ baseURL: `${proxy.url}/anthropic`, apiKey: asyncAgent.token, maxRetries: 0 });
    const failure = await anthropic.messages
      .stream({ model: 'claude-test', max_tokens: 16, messages: [{ role: 'user', content: 'refund ticket 9002' }] })
      .finalMessage()
      .then(
        () => null,
        (error: unknown) => error,
      );
    expect(failure).toBeInstanceOf(Anthropic.APIError);
    agentSeen.push((failure as Error).message);
    expect((failure as Error).message).toMatch(/This call needs a human's approval\. Retry the same request with the header x-airlock-approval: apr_/);
  });

  it('hold: a plain create waits for the approver and resolves with the completion', async () => {
    const before = upstream.requests.length;
    const call = client(holdAgent.token).chat.completions.create(request);
    const [approvalId] = await eventually('the held call\'s approval', async () => {
      const ids = await pendingIds('hold-bot');
      return ids.length === 1 ? ids : undefined;
    });
    expect(upstream.requests.length).toBe(before);
    expect((await admin.call('POST', `/v1/approvals/${approvalId}/approve`, { reason: 'fine' })).status).toBe(200);
    const completion = await call;
    agentSeen.push(JSON.stringify(completion));
    expect(completion.choices[0]?.message.content).toBe('echo: refund ticket 9001');
    expect(upstream.requests.length).toBe(before + 1);
  });

  // Found by an SDK walkthrough: an SDK that times out before the approver decides retries the call, and
  // each retry asked for a new approval, so the approver's yes to the first one came too late.
  it('hold: an SDK that times out and retries waits for the same approval; the approver approves once, the call goes once', async () => {
    const before = upstream.requests.length;
    const impatient = new OpenAI({ baseURL: `${proxy.url}/openai/v1`, apiKey: holdAgent.token, timeout: 700, maxRetries: 2 });
    const call = impatient.chat.completions.create({ ...request, messages: [{ role: 'user', content: 'retried while held' }] });
    const [approvalId] = await eventually('the held call\'s approval', async () => {
      const ids = await pendingIds('hold-bot');
      return ids.length === 1 ? ids : undefined;
    });
    // The first attempt gives up at 0.7 s; the approver, late, still approves what they were shown, and
    // the SDK's next attempt (after its backoff) finds it approved and goes.
    const abandoned = await eventually('the first attempt abandoned', () => proxy.auditRecords().find((r) => r.approval === approvalId && r.code === 'approval_timeout' && r.status === null), 5_000);
    expect(abandoned.agent).toBe('hold-bot');
    expect(await pendingIds('hold-bot')).toEqual([approvalId]);
    expect((await admin.call('POST', `/v1/approvals/${approvalId}/approve`, { reason: 'fine' })).status).toBe(200);
    const completion = await call;
    agentSeen.push(JSON.stringify(completion));
    expect(completion.choices[0]?.message.content).toBe('echo: retried while held');
    expect(upstream.requests.length).toBe(before + 1);
    const served = await eventually('the served call\'s audit record', () => proxy.auditRecords().find((r) => r.approval === approvalId && r.actor === null && r.status === 200));
    expect(served).toMatchObject({ agent: 'hold-bot', approver: 'alice', path: '/openai/v1/chat/completions', upstream_status: 200 });
  });

  it('leaks nothing to the agent, the logs, the audit log or the admin API', async () => {
    assertNoLeak([realKey], [
      { name: 'agent', text: agentSeen.join('\n') },
      { name: 'admin', text: admin.seen.join('\n') },
      { name: 'logs', text: proxy.logLines.join('\n') },
      { name: 'audit', text: await proxy.auditText() },
    ]);
    expect(agentSeen.length).toBe(6);
  });
});
