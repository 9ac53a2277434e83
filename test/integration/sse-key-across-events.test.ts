/**
 * A key streamed over SSE, the first event holding its head and more, the rest in the events after (a
 * model that sends several tokens an event). Found by review: the byte scan ran before the event
 * layer, masked the first piece, and the event layer then joined the marker with the rest of the key,
 * found no head in that, and let the rest of the key out in the events that followed. The event layer
 * now reads the events as the upstream sent them, and the byte scan its output.
 */
import { randomBytes } from 'node:crypto';
import { get as httpGet } from 'node:http';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { generateAgentToken } from '../../src/identity/agent-token.js';
import { assertNoLeak } from '../helpers/assert-no-leak.js';
import { eventually, sleep } from '../helpers/operator.js';
import { sendRequest } from '../helpers/send-request.js';
import { startProxy, type ProxyFixture } from '../helpers/start-proxy.js';
import { startUpstream, type Upstream } from '../helpers/start-upstream.js';

/** A canary with a vendor prefix, so that it has a head (secret-forms.ts): the prefix, then mixed kinds. */
const KEY = `sk-proj-Ab12Cd34${randomBytes(24).toString('base64url').replace(/[-_]/g, 'x')}`;
const HEAD = 'sk-proj-Ab12Cd34'.length;

const event = (content: string): string => `data: ${JSON.stringify({ id: 'chatcmpl-x', object: 'chat.completion.chunk', choices: [{ index: 0, delta: { content } }] })}\n\n`;

describe('a key whose first SSE event holds its head', () => {
  const bot = generateAgentToken();
  let upstream: Upstream;
  let proxy: ProxyFixture;

  beforeAll(async () => {
    upstream = await startUpstream(async (req, res) => {
      const query = new URL(req.url ?? '/', 'http://x').searchParams;
      if (query.has('reset')) {
        // The whole key in one event, then the upstream's connection reset mid-stream.
        res.writeHead(200, { 'content-type': 'text/event-stream', 'cache-control': 'no-cache' });
        res.write(event(`Here: ${KEY}`));
        await sleep(20);
        res.socket?.destroy();
        return;
      }
      if (query.has('hold')) {
        // The whole key in one event, then a stream that goes on until the agent hangs up.
        res.writeHead(200, { 'content-type': 'text/event-stream', 'cache-control': 'no-cache' });
        res.write(event(`Here: ${KEY}`));
        const ticking = setInterval(() => res.write(event(' .')), 50);
        res.on('close', () => clearInterval(ticking));
        return;
      }
      const cut = HEAD + Number(query.get('past') ?? '3');
      res.writeHead(200, { 'content-type': 'text/event-stream', 'cache-control': 'no-cache' });
      res.write(event(`Here: ${KEY.slice(0, cut)}`));
      for (let i = cut; i < KEY.length; i += 4) {
        await sleep(2);
        res.write(event(KEY.slice(i, i + 4)));
      }
      res.end(`${event(' done')}data: [DONE]\n\n`);
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

  it.each([0, 1, 3, 9])('%i characters past the head in the first event: the rest of the key does not leave in the next ones', async (past) => {
    const answer = await sendRequest(`${proxy.url}/llm/v1/stream?past=${past}`, { headers: { authorization: `Bearer ${bot.token}` } });
    expect(answer.status).toBe(200);
    const text = answer.text
      .split('\n')
      .filter((line) => line.startsWith('data: {'))
      .map((line) => (JSON.parse(line.slice(6)) as { choices: Array<{ delta: { content: string } }> }).choices[0]?.delta.content ?? '')
      .join('');
    expect(text).toContain('[REDACTED');
    expect(text).toContain(' done');
    // At most 3 characters of a key spread over events go out before the rest arrives (README).
    for (let i = HEAD + 4; i + 4 <= KEY.length; i++) expect(text, `from ${i}`).not.toContain(KEY.slice(i, i + 4));
    assertNoLeak([KEY, bot.token], [
      { name: 'answer', text: answer.text },
      { name: 'rebuilt deltas', text },
    ]);
  });

  // Found by an ops walkthrough: a stream the agent hung up on counted none of what it masked, in its
  // record and in airlock_redactions_total, so fishing for a key and hanging up left no trace.
  it('a stream the agent hangs up on after a masked event: the record and the metric count the redaction', async () => {
    const before = await redactionsCounted();
    // The agent hangs up once a masked event and the next have arrived.
    const answer = await readStream('hold=1', (text) => text.includes('[REDACTED') && text.includes(' .'));
    expect(answer.text).toContain('[REDACTED');
    const record = await eventually('the audit record', () => proxy.auditRecords().find((r) => r.request_id === answer.id));
    expect(record).toMatchObject({ incomplete: true, status: 200 });
    expect(record.redactions).toBeGreaterThanOrEqual(1);
    expect((await redactionsCounted()) - before).toBe(record.redactions);
    assertNoLeak([KEY, bot.token], [{ name: 'answer', text: answer.text }]);
  });

  /** Reads /v1/stream?query until it ends, or until `hangUp` says so on what has arrived. */
  function readStream(query: string, hangUp: (text: string) => boolean): Promise<{ id: string; text: string }> {
    return new Promise((resolve) => {
      const req = httpGet(`${proxy.url}/llm/v1/stream?${query}`, { headers: { authorization: `Bearer ${bot.token}` } }, (res) => {
        let text = '';
        res.on('data', (chunk: Buffer) => {
          text += chunk.toString('utf8');
          if (hangUp(text)) req.destroy();
        });
        res.on('error', () => undefined);
        res.on('close', () => resolve({ id: String(res.headers['x-airlock-request-id']), text }));
      });
      req.on('error', () => undefined);
    });
  }

  async function redactionsCounted(): Promise<number> {
    const metric = await proxy.airlock.metrics.registry.getSingleMetric('airlock_redactions_total')?.get();
    return metric?.values.find((v) => v.labels['service'] === 'llm')?.value ?? 0;
  }

  // Found by review: since the event layer runs first, a key it masked was not counted when the stream
  // was then cut (the audit record said redactions: 0).
  it('a stream cut after a masked event: the audit record counts the redaction and says incomplete', async () => {
    const answer = await readStream('reset=1', () => false);
    expect(answer.text).toContain('[REDACTED');
    const record = await eventually('the audit record', () => proxy.auditRecords().find((r) => r.request_id === answer.id));
    expect(record).toMatchObject({ incomplete: true, status: 200 });
    expect(record.redactions).toBeGreaterThanOrEqual(1);
    assertNoLeak([KEY, bot.token], [
      { name: 'answer', text: answer.text },
      { name: 'audit', text: proxy.auditText() },
      { name: 'logs', text: proxy.logLines.join('') },
    ]);
  });
});
