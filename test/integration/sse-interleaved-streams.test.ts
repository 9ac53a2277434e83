/**
 * Several streams interleaved in one event stream: OpenAI's choices when n > 1 and parallel tool calls,
 * each chunk naming its own by `index`, and the Responses API's outputs by `output_index`. Found by
 * review: the event layer followed strings by their place in the chunk's array, so every choice sat at
 * `choices.0`; their texts were joined into one, a key one of them spelled 3 characters at a time was
 * never whole in what was scanned, and the SDK, which joins by `index`, put the whole key back together.
 */
import { randomBytes } from 'node:crypto';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { generateAgentToken } from '../../src/identity/agent-token.js';
import { assertNoLeak } from '../helpers/assert-no-leak.js';
import { sleep } from '../helpers/operator.js';
import { sendRequest } from '../helpers/send-request.js';
import { startProxy, type ProxyFixture } from '../helpers/start-proxy.js';
import { startUpstream, type Upstream } from '../helpers/start-upstream.js';

/** A canary with a vendor prefix, so that it has a head (secret-forms.ts). */
const KEY = `sk-proj-Zy98Xw76${randomBytes(24).toString('base64url').replace(/[-_]/g, 'q')}`;
const HEAD = 'sk-proj-Zy98Xw76'.length;

/** The key in 3-character pieces, as a model streams tokens. */
const pieces = (): string[] => Array.from({ length: Math.ceil(KEY.length / 3) }, (_, i) => KEY.slice(i * 3, i * 3 + 3));

type Chunk = Record<string, unknown>;

/** What each stream carries, in the order an SDK joins it, keyed by the stream's own index. */
const FORMATS: Record<string, { chunk: (stream: number, text: string) => Chunk; read: (chunk: Chunk) => [number, string] | null }> = {
  choices: {
    chunk: (stream, text) => ({ object: 'chat.completion.chunk', choices: [{ index: stream, delta: { content: text } }] }),
    read: (chunk) => {
      const choice = (chunk['choices'] as Array<{ index: number; delta: { content?: string } }>)[0];
      return choice === undefined ? null : [choice.index, choice.delta.content ?? ''];
    },
  },
  'tool calls': {
    chunk: (stream, text) => ({ object: 'chat.completion.chunk', choices: [{ index: 0, delta: { tool_calls: [{ index: stream, function: { arguments: text } }] } }] }),
    read: (chunk) => {
      const call = (chunk['choices'] as Array<{ delta: { tool_calls?: Array<{ index: number; function: { arguments: string } }> } }>)[0]?.delta.tool_calls?.[0];
      return call === undefined ? null : [call.index, call.function.arguments];
    },
  },
  // Gemini leaves a zero `index` out: candidate 0's chunks come with it and without it, here as the
  // piece's first character is odd or even (found by review: followed on two paths, a key split between
  // them reached the client whole).
  'gemini candidates': {
    chunk: (stream, text) => ({ candidates: [{ ...(stream === 0 && text.charCodeAt(0) % 2 === 0 ? {} : { index: stream }), content: { parts: [{ text }] } }] }),
    read: (chunk) => {
      const candidate = (chunk['candidates'] as Array<{ index?: number; content: { parts: Array<{ text: string }> } }>)[0];
      return candidate === undefined ? null : [candidate.index ?? 0, candidate.content.parts[0]?.text ?? ''];
    },
  },
  'responses outputs': {
    chunk: (stream, text) => ({ type: 'response.function_call_arguments.delta', output_index: stream, delta: text }),
    read: (chunk) => [chunk['output_index'] as number, chunk['delta'] as string],
  },
};

describe('a key spelled out in one of several interleaved streams', () => {
  const bot = generateAgentToken();
  let upstream: Upstream;
  let proxy: ProxyFixture;

  beforeAll(async () => {
    upstream = await startUpstream(async (req, res) => {
      const format = FORMATS[new URL(req.url ?? '/', 'http://x').searchParams.get('format') ?? ''];
      res.writeHead(200, { 'content-type': 'text/event-stream', 'cache-control': 'no-cache' });
      if (format === undefined) return void res.end();
      for (const piece of pieces()) {
        // The key goes on stream 0, chunk by chunk, with a chunk of stream 1 between every two.
        res.write(`data: ${JSON.stringify(format.chunk(0, piece))}\n\n`);
        res.write(`data: ${JSON.stringify(format.chunk(1, 'ab '))}\n\n`);
        await sleep(1);
      }
      res.end(`data: ${JSON.stringify(format.chunk(0, ' done'))}\n\ndata: [DONE]\n\n`);
    });
    proxy = await startProxy(
      {
        services: { llm: { upstream: upstream.url, credential: { secret: 'env:LLM_KEY', inject: 'bearer' }, routes: [{ method: 'GET', path: '/v1/stream', scope: 'read' }] } },
        agents: { bot: { tokens: [bot.hash], credentials: [{ service: 'llm', max_scope: ['*'] }] } },
      },
      { env: { LLM_KEY: KEY } },
    );
  });

  afterAll(async () => {
    await proxy?.close();
    await upstream?.close();
  });

  it.each(Object.keys(FORMATS))('%s: the stream that spelled it, joined as an SDK joins it, holds no more than 3 characters past its head', async (name) => {
    const format = FORMATS[name] as (typeof FORMATS)[string];
    const answer = await sendRequest(`${proxy.url}/llm/v1/stream?format=${encodeURIComponent(name)}`, { headers: { authorization: `Bearer ${bot.token}` } });
    expect(answer.status).toBe(200);
    const joined = new Map<number, string>();
    for (const line of answer.text.split('\n')) {
      if (!line.startsWith('data: {')) continue;
      const read = format.read(JSON.parse(line.slice(6)) as Chunk);
      if (read !== null) joined.set(read[0], `${joined.get(read[0]) ?? ''}${read[1]}`);
    }
    const spelled = joined.get(0) ?? '';
    expect(spelled).toContain('[REDACTED');
    expect(spelled).toContain(' done');
    expect(joined.get(1)).toBe('ab '.repeat(pieces().length));
    for (let i = HEAD + 4; i + 4 <= KEY.length; i++) expect(spelled, `from ${i}`).not.toContain(KEY.slice(i, i + 4));
    assertNoLeak([KEY, bot.token], [
      { name: 'answer', text: answer.text },
      { name: 'streams joined by index', text: [...joined.values()].join('\n') },
    ]);
  });
});
