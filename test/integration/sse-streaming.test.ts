/**
 * Server-sent events pass through Airlock as they arrive, not buffered. The stand-in upstream writes one
 * event and then waits until the test says the client has read that event before it writes the next
 * (lockstep). A proxy that buffered the response (whole, or until some size) would never deliver the
 * first event, the upstream would never write the second, and the exchange would deadlock: a deadline
 * turns that deadlock into a failure that says so, instead of a hang. No timing is asserted.
 */
import OpenAI from 'openai';
import type { ServerResponse } from 'node:http';
import { request as undiciRequest } from 'undici';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { generateAgentToken } from '../../src/identity/agent-token.js';
import { assertNoLeak } from '../helpers/assert-no-leak.js';
import { canary } from '../helpers/canary.js';
import { startProxy, type ProxyFixture } from '../helpers/start-proxy.js';
import { startUpstream, type Upstream } from '../helpers/start-upstream.js';

/** Bounds a deadlock only; a healthy run finishes in milliseconds. */
const DEADLINE_MS = 5_000;

const EVENTS = [
  'event: progress\nid: 1\ndata: {"step":1,"of":3}\n\n',
  'event: progress\nid: 2\ndata: {"step":2,"of":3}\n\n',
  'event: done\nid: 3\ndata: {"step":3,"of":3}\n\n',
];

const WORDS = ['Hello', ' in', ' lockstep'];

/**
 * The upstream waits on `clientHas(n)` before writing event n+1; the test calls `acknowledge(n)` once its
 * client has read event n. `abandon()` (after every test) releases a waiting upstream so it can hang up.
 */
class Lockstep {
  readonly #acknowledged = new Set<number>();
  readonly #waiting = new Map<number, (acked: boolean) => void>();
  #abandoned = false;

  acknowledge(n: number): void {
    this.#acknowledged.add(n);
    this.#waiting.get(n)?.(true);
    this.#waiting.delete(n);
  }

  clientHas(n: number): Promise<boolean> {
    if (this.#acknowledged.has(n)) return Promise.resolve(true);
    if (this.#abandoned) return Promise.resolve(false);
    return new Promise((resolve) => this.#waiting.set(n, resolve));
  }

  abandon(): void {
    this.#abandoned = true;
    for (const resolve of this.#waiting.values()) resolve(false);
    this.#waiting.clear();
  }
}

/** Runs a client exchange with an abort signal that fires at the deadline, naming the likely cause. */
async function withinDeadline<T>(what: string, run: (signal: AbortSignal) => Promise<T>): Promise<T> {
  const controller = new AbortController();
  const reason = new Error(
    `${what}: the client did not get the next event within ${DEADLINE_MS} ms while the upstream waited for it to arrive; Airlock is buffering the event stream instead of relaying it`,
  );
  const timer = setTimeout(() => controller.abort(reason), DEADLINE_MS);
  try {
    return await run(controller.signal);
  } catch (error) {
    if (controller.signal.aborted) throw reason;
    throw error;
  } finally {
    clearTimeout(timer);
  }
}

/** Reads an event stream chunk by chunk, acknowledging each complete event as soon as it is in hand. */
async function readInLockstep(chunks: AsyncIterable<Uint8Array>, step: Lockstep): Promise<{ text: string; eventsAtEachStep: string[][] }> {
  const decoder = new TextDecoder();
  let text = '';
  let acknowledged = 0;
  const eventsAtEachStep: string[][] = [];
  for await (const chunk of chunks) {
    text += decoder.decode(chunk, { stream: true });
    const complete = text.split('\n\n').slice(0, -1).map((event) => `${event}\n\n`);
    while (acknowledged < complete.length) {
      eventsAtEachStep.push(complete.slice(0, acknowledged + 1));
      step.acknowledge(acknowledged);
      acknowledged++;
    }
  }
  return { text: text + decoder.decode(), eventsAtEachStep };
}

describe('server-sent events through Airlock', () => {
  const realKey = canary('sse');
  const agent = generateAgentToken();
  const agentVisible: string[] = [];
  let step = new Lockstep();
  let upstream: Upstream;
  let proxy: ProxyFixture;

  async function writeInLockstep(res: ServerResponse, events: readonly string[]): Promise<void> {
    const mine = step;
    res.writeHead(200, { 'content-type': 'text/event-stream', 'cache-control': 'no-cache' });
    for (let n = 0; n < events.length; n++) {
      res.write(events[n]);
      if (n === events.length - 1) break;
      if (!(await mine.clientHas(n))) {
        // The client never got event n (or gave up): hang up rather than wait forever.
        res.destroy();
        return;
      }
    }
    res.end();
  }

  beforeAll(async () => {
    upstream = await startUpstream(async (req, res) => {
      if (req.method === 'GET' && req.url === '/v1/events') {
        await writeInLockstep(res, EVENTS);
        return;
      }
      if (req.method === 'POST' && req.url === '/v1/chat/completions') {
        const chunks = WORDS.map(
          (word) => `data: ${JSON.stringify({ id: 'c1', object: 'chat.completion.chunk', created: 1, model: 'gpt-test', choices: [{ index: 0, delta: { content: word }, finish_reason: null }] })}\n\n`,
        );
        await writeInLockstep(res, [...chunks, 'data: [DONE]\n\n']);
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
              { method: 'GET', path: '/v1/events', scope: 'events:read' },
              { method: 'POST', path: '/v1/chat/completions', scope: 'chat:write' },
            ],
          },
        },
        agents: { 'support-bot': { tokens: [agent.hash], credentials: [{ service: 'openai', max_scope: ['events:read', 'chat:write'] }] } },
      },
      { env: { OPENAI_API_KEY: realKey } },
    );
  });

  afterEach(() => {
    step.abandon();
    step = new Lockstep();
  });

  afterAll(async () => {
    step.abandon();
    await proxy.close();
    await upstream.close();
  });

  function expectLockstep(result: { text: string; eventsAtEachStep: string[][] }): void {
    // When the client held event n, events after n had not been written yet: each arrived on its own.
    expect(result.eventsAtEachStep).toEqual(EVENTS.map((_, n) => EVENTS.slice(0, n + 1)));
    expect(result.text).toBe(EVENTS.join(''));
  }

  it('relays each event to a fetch client before the upstream writes the next', async () => {
    const result = await withinDeadline('fetch', async (signal) => {
      const res = await fetch(`${proxy.url}/openai/v1/events`, { headers: { authorization: `Bearer ${agent.token}`, accept: 'text/event-stream' }, signal });
      expect(res.status).toBe(200);
      expect(res.headers.get('content-type')).toBe('text/event-stream');
      expect(res.headers.get('content-length')).toBeNull();
      expect(res.headers.get('x-airlock-request-id')).toMatch(/^[0-9a-f-]{36}$/);
      if (res.body === null) throw new Error('the event stream has no body');
      return readInLockstep(res.body, step);
    });
    agentVisible.push(result.text);
    expectLockstep(result);

    const seen = upstream.requests.at(-1);
    expect(seen?.target).toBe('/v1/events');
    expect(seen?.header('authorization')).toEqual([`Bearer ${realKey}`]);
    expect(seen?.rawHeaders.join('\n')).not.toContain(agent.token);
  });

  it('relays each event to an undici client before the upstream writes the next', async () => {
    const result = await withinDeadline('undici.request', async (signal) => {
      const res = await undiciRequest(`${proxy.url}/openai/v1/events`, { headers: { authorization: `Bearer ${agent.token}` }, signal });
      expect(res.statusCode).toBe(200);
      expect(res.headers['content-type']).toBe('text/event-stream');
      return readInLockstep(res.body, step);
    });
    agentVisible.push(result.text);
    expectLockstep(result);
  });

  it("relays each chunk of the openai SDK's stream before the upstream writes the next", async () => {
    const client = new OpenAI({ baseURL: `${proxy.url}/openai/v1`, apiKey: agent.token, maxRetries: 0 });
    const words = await withinDeadline('openai stream', async (signal) => {
      const stream = await client.chat.completions.create({ model: 'gpt-test', messages: [{ role: 'user', content: 'hi' }], stream: true }, { signal });
      const received: string[] = [];
      for await (const chunk of stream) {
        agentVisible.push(JSON.stringify(chunk));
        received.push(chunk.choices[0]?.delta.content ?? '');
        step.acknowledge(received.length - 1);
      }
      return received;
    });
    expect(words).toEqual(WORDS);

    const seen = upstream.requests.at(-1);
    expect(seen?.target).toBe('/v1/chat/completions');
    expect(seen?.header('authorization')).toEqual([`Bearer ${realKey}`]);
  });

  it('leaves no trace of the key in what the agent saw, the logs or the audit', async () => {
    await proxy.waitForAudit(3);
    assertNoLeak([realKey], [
      { name: 'agent-visible streams', text: agentVisible.join('\n') },
      { name: 'log', text: proxy.logLines.join('') },
      { name: 'audit', text: proxy.auditText() },
    ]);
    const records = proxy.auditRecords();
    expect(records.map((r) => [r.decision, r.status, r.scope, r.incomplete])).toEqual([
      ['allow', 200, 'events:read', false],
      ['allow', 200, 'events:read', false],
      ['allow', 200, 'chat:write', false],
    ]);
  });
});
