/**
 * Rate limits over real sockets (issue 7): a grant's `rate: {requests, per, burst, concurrency}` is a
 * token bucket per agent and service plus a gate on requests in flight. Over either, the agent gets a
 * 429 rate_limited problem with an integer Retry-After, nothing reaches the upstream, and the refusal
 * is audited and counted like any other. Waiting the Retry-After refills the bucket; another agent, or
 * the same agent on another service, has its own bucket. A `burst` larger than `requests` lets that
 * many through at once, and the bucket then refills at `requests` per `per`.
 */
import { request as httpRequest, type IncomingMessage, type ServerResponse } from 'node:http';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { generateAgentToken } from '../../src/identity/agent-token.js';
import type { AuditRecord } from '../../src/observability/audit-record.js';
import { assertNoLeak } from '../helpers/assert-no-leak.js';
import { canary } from '../helpers/canary.js';
import { eventually, sleep } from '../helpers/operator.js';
import { sendRequest, type Problem, type SentResponse } from '../helpers/send-request.js';
import { startProxy, type ProxyFixture } from '../helpers/start-proxy.js';
import { okHandler, startUpstream, type Upstream } from '../helpers/start-upstream.js';

/** Responses to /v1/slow are held open until the test lets them go. */
function holdingUpstream(): { handler: (req: IncomingMessage, res: ServerResponse) => void; held: ServerResponse[]; releaseOne(): void; releaseAll(): void } {
  const held: ServerResponse[] = [];
  const finish = (res: ServerResponse): void => {
    if (res.writableEnded || res.destroyed) return;
    const body = '{"slow":true}';
    res.writeHead(200, { 'content-type': 'application/json', 'content-length': Buffer.byteLength(body) });
    res.end(body);
  };
  return {
    held,
    handler(req, res) {
      if ((req.url ?? '').startsWith('/v1/slow')) held.push(res);
      else okHandler(req, res);
    },
    releaseOne() {
      const res = held.shift();
      if (res !== undefined) finish(res);
    },
    releaseAll() {
      for (const res of held.splice(0)) finish(res);
    },
  };
}

describe('rate limits', () => {
  const llmKey = canary('rate-llm');
  const otherKey = canary('rate-other');
  const burster = generateAgentToken();
  const bystander = generateAgentToken();
  const minute = generateAgentToken();
  const parallel = generateAgentToken();
  const bursty = generateAgentToken();
  const operator = generateAgentToken();
  const hold = holdingUpstream();
  const seen: string[] = [];
  /** Every 429 this file received, to compare with the metric at the end. */
  let refusedCount = 0;
  let llm: Upstream;
  let other: Upstream;
  let proxy: ProxyFixture;

  beforeAll(async () => {
    llm = await startUpstream(hold.handler);
    other = await startUpstream();
    const fivePerSecond = { requests: 5, per: '1s', burst: 5 };
    proxy = await startProxy(
      {
        admin: { listen: '127.0.0.1:0', tokens: [{ name: 'alice', hash: operator.hash }] },
        anomalies: { enabled: false },
        services: {
          llm: {
            upstream: llm.url,
            credential: { secret: 'env:LLM_KEY', inject: 'bearer' },
            routes: [
              { method: 'GET', path: '/v1/ping', scope: 'ping:read' },
              { method: 'GET', path: '/v1/slow', scope: 'slow:read' },
            ],
          },
          other: {
            upstream: other.url,
            credential: { secret: 'env:OTHER_KEY', inject: 'bearer' },
            routes: [{ method: 'GET', path: '/v1/ping', scope: 'ping:read' }],
          },
        },
        agents: {
          burster: {
            tokens: [burster.hash],
            credentials: [
              { service: 'llm', max_scope: ['*'], rate: fivePerSecond },
              { service: 'other', max_scope: ['*'], rate: fivePerSecond },
            ],
          },
          bystander: { tokens: [bystander.hash], credentials: [{ service: 'llm', max_scope: ['*'], rate: fivePerSecond }] },
          // The string form of `per`, and `burst` left to its default (= requests).
          minute: { tokens: [minute.hash], credentials: [{ service: 'llm', max_scope: ['*'], rate: { requests: 5, per: '1m' } }] },
          parallel: { tokens: [parallel.hash], credentials: [{ service: 'llm', max_scope: ['*'], rate: { requests: 1000, per: 1, concurrency: 2 } }] },
          // A bucket bigger than the rate: 5 at once, refilled at 2 per second (one token per 500 ms).
          bursty: { tokens: [bursty.hash], credentials: [{ service: 'llm', max_scope: ['*'], rate: { requests: 2, per: '1s', burst: 5 } }] },
        },
      },
      { env: { LLM_KEY: llmKey, OTHER_KEY: otherKey } },
    );
  });

  afterAll(async () => {
    hold.releaseAll();
    await proxy?.close();
    await llm?.close();
    await other?.close();
  });

  async function call(token: string, path: string): Promise<SentResponse> {
    const response = await sendRequest(`${proxy.url}${path}`, { headers: { authorization: `Bearer ${token}` }, timeoutMs: 15_000 });
    seen.push(`${response.status}\n${JSON.stringify(response.headers)}\n${response.text}`);
    if (response.status === 429) refusedCount += 1;
    return response;
  }

  function expectRateLimited(response: SentResponse): { problem: Problem; retryAfter: number } {
    expect(response.status, response.text).toBe(429);
    expect(response.headers['content-type']).toContain('application/problem+json');
    const problem = response.json<Problem>();
    expect(problem).toMatchObject({ status: 429, code: 'rate_limited', error: { type: 'airlock_error', code: 'rate_limited' } });
    expect(problem.error.message).toBe(problem.detail);
    const header = response.headers['retry-after'];
    expect(header, 'Retry-After header').toMatch(/^\d+$/);
    const retryAfter = Number(header);
    expect(retryAfter).toBeGreaterThanOrEqual(1);
    return { problem, retryAfter };
  }

  function auditOf(response: SentResponse): Promise<AuditRecord> {
    const id = response.headers['x-airlock-request-id'];
    return eventually(`the audit record of ${String(id)}`, () => proxy.auditRecords().find((r) => r.request_id === id));
  }

  /** Sends requests one after the other until one is refused (bounded), and returns the refusal. */
  async function exhaust(token: string, path: string): Promise<SentResponse> {
    for (let i = 0; i < 50; i++) {
      const response = await call(token, path);
      if (response.status === 429) return response;
      expect(response.status, response.text).toBe(200);
    }
    throw new Error(`50 requests to ${path} and none was rate limited`);
  }

  /** Ten requests at once: the bucket (5, refilled at 5/s) lets exactly five through. */
  async function burstOfTen(token: string, path: string): Promise<SentResponse[]> {
    return Promise.all(Array.from({ length: 10 }, () => call(token, path)));
  }

  it('a burst of 10 quick requests: 5 × 200, the rest 429 rate_limited with Retry-After; the refused ones are not forwarded', async () => {
    // Warm the proxy's paths with another agent (its own bucket) so that the burst is quick.
    for (let i = 0; i < 3; i++) expect((await call(bystander.token, '/llm/v1/ping')).status).toBe(200);
    const before = llm.requests.length;
    const startedAt = performance.now();
    const responses = await burstOfTen(burster.token, '/llm/v1/ping');
    const tookMs = performance.now() - startedAt;
    const passed = responses.filter((r) => r.status === 200);
    const refused = responses.filter((r) => r.status !== 200);
    // The bucket holds 5 and gets one token back per 200 ms: exactly 5 pass when the burst is over
    // within 200 ms, and never more than the tokens refilled while it lasted (a slow machine).
    expect(passed.length).toBeGreaterThanOrEqual(5);
    expect(passed.length).toBeLessThanOrEqual(5 + Math.floor(tookMs / 200));
    if (tookMs < 200) expect(passed).toHaveLength(5);
    expect(llm.requests.length - before).toBe(passed.length);
    for (const forwarded of llm.requests.slice(before)) expect(forwarded.header('authorization')).toEqual([`Bearer ${llmKey}`]);
    for (const response of refused) {
      const { problem, retryAfter } = expectRateLimited(response);
      // 5 per second: one token is back within a second.
      expect(retryAfter).toBe(1);
      expect(problem.detail).toContain('burster');
      expect(problem.detail).toContain('llm');
    }
  });

  it('after waiting the Retry-After the bucket has refilled and requests pass again', async () => {
    const refused = await exhaust(burster.token, '/llm/v1/ping');
    const { retryAfter } = expectRateLimited(refused);
    await sleep(retryAfter * 1000 + 100);
    const before = llm.requests.length;
    const again = await call(burster.token, '/llm/v1/ping');
    expect(again.status, again.text).toBe(200);
    expect(llm.requests.length).toBe(before + 1);
  });

  it('buckets are per agent and service: another agent, or the same agent on another service, is unaffected', async () => {
    expectRateLimited(await exhaust(burster.token, '/llm/v1/ping'));
    const bystanderAnswer = await call(bystander.token, '/llm/v1/ping');
    expect(bystanderAnswer.status, bystanderAnswer.text).toBe(200);
    const otherBefore = other.requests.length;
    const otherAnswer = await call(burster.token, '/other/v1/ping');
    expect(otherAnswer.status, otherAnswer.text).toBe(200);
    expect(other.requests.length).toBe(otherBefore + 1);
    expect(other.requests.at(-1)?.header('authorization')).toEqual([`Bearer ${otherKey}`]);
    // The other service's bucket is its own: exhausting it does not touch bystander on llm.
    const otherBurst = await burstOfTen(burster.token, '/other/v1/ping');
    const passed = otherBurst.filter((r) => r.status === 200).length;
    expect(passed).toBeGreaterThanOrEqual(4);
    expect(passed).toBeLessThanOrEqual(5);
    expect((await call(bystander.token, '/llm/v1/ping')).status).toBe(200);
  });

  it('`per: "1m"` parses: 10 requests in a row give exactly 5 × 200, then 5 × 429 with a Retry-After of about 12 s', async () => {
    const before = llm.requests.length;
    const responses: SentResponse[] = [];
    for (let i = 0; i < 10; i++) responses.push(await call(minute.token, '/llm/v1/ping'));
    expect(responses.map((r) => r.status)).toEqual([200, 200, 200, 200, 200, 429, 429, 429, 429, 429]);
    expect(llm.requests.length - before).toBe(5);
    for (const refused of responses.slice(5)) {
      const { retryAfter, problem } = expectRateLimited(refused);
      // One token per 12 s (5 per 60 s): the time to the next token, rounded up to whole seconds.
      expect(retryAfter).toBeGreaterThanOrEqual(11);
      expect(retryAfter).toBeLessThanOrEqual(12);
      expect(problem.detail).toContain('5 per 60 s');
    }
  });

  it('`burst: 5` with `requests: 2, per: 1s`: 5 pass at once, then the bucket refills at 2 per second, never past 5', async () => {
    const before = llm.requests.length;
    const passedIn = (responses: readonly SentResponse[]): number => responses.filter((r) => r.status === 200).length;
    const startedAt = performance.now();
    const first = await burstOfTen(bursty.token, '/llm/v1/ping');
    const firstMs = performance.now() - startedAt;
    // The full bucket: `burst`, not `requests`, at once (plus one per 500 ms the burst lasted, on a slow machine).
    expect(passedIn(first)).toBeGreaterThanOrEqual(5);
    expect(passedIn(first)).toBeLessThanOrEqual(5 + Math.floor(firstMs / 500));
    if (firstMs < 500) expect(passedIn(first)).toBe(5);
    for (const refused of first.filter((r) => r.status !== 200)) {
      const { retryAfter, problem } = expectRateLimited(refused);
      // The next token is at most 500 ms away (2 per second), rounded up to whole seconds.
      expect(retryAfter).toBe(1);
      expect(problem.detail).toContain('2 per 1 s, bursts of 5');
    }

    // One second later: the refill is `requests` per `per`, two tokens (three at most, with what was left
    // of a token when the bucket ran dry), not a full bucket again.
    await sleep(1000);
    const second = await burstOfTen(bursty.token, '/llm/v1/ping');
    const sinceFirstMs = performance.now() - startedAt;
    expect(passedIn(second)).toBeGreaterThanOrEqual(2);
    expect(passedIn(second)).toBeLessThanOrEqual(Math.floor(1 + (2 * sinceFirstMs) / 1000));
    expect(passedIn(second)).toBeLessThan(5);
    for (const refused of second.filter((r) => r.status !== 200)) expect(expectRateLimited(refused).retryAfter).toBe(1);

    // Idle for 2.6 s (5.2 tokens' worth): the bucket holds `burst` and no more.
    await sleep(2600);
    const thirdStartedAt = performance.now();
    const third = await burstOfTen(bursty.token, '/llm/v1/ping');
    const thirdMs = performance.now() - thirdStartedAt;
    expect(passedIn(third)).toBeGreaterThanOrEqual(5);
    expect(passedIn(third)).toBeLessThanOrEqual(5 + Math.floor(thirdMs / 500));
    if (thirdMs < 500) expect(passedIn(third)).toBe(5);

    // Only what passed reached the upstream, each with the injected key.
    const passed = passedIn(first) + passedIn(second) + passedIn(third);
    expect(llm.requests.length - before).toBe(passed);
    for (const forwarded of llm.requests.slice(before)) expect(forwarded.header('authorization')).toEqual([`Bearer ${llmKey}`]);
  });

  it('concurrency: 2: a third request while two are in flight gets 429; a slot frees when one completes', async () => {
    const before = llm.requests.length;
    const first = call(parallel.token, '/llm/v1/slow');
    const second = call(parallel.token, '/llm/v1/slow');
    await eventually('two requests held at the upstream', () => llm.requests.length - before === 2 && hold.held.length === 2);

    const third = await call(parallel.token, '/llm/v1/slow');
    const { retryAfter, problem } = expectRateLimited(third);
    expect(retryAfter).toBe(1);
    expect(problem.detail).toContain('in flight');
    expect(llm.requests.length - before).toBe(2);
    // Other agents are not held back by parallel's slots.
    expect((await call(bystander.token, '/llm/v1/ping')).status).toBe(200);

    // The upstream answers the first request it holds; whichever of the two that was completes, and
    // its audit record (written after its slot is released) tells that the slot is free.
    hold.releaseOne();
    const completed = await Promise.race([first, second]);
    expect(completed.status, completed.text).toBe(200);
    await auditOf(completed);

    const heldBefore = llm.requests.length;
    const fourth = call(parallel.token, '/llm/v1/slow');
    await eventually('the fourth request held at the upstream', () => llm.requests.length - heldBefore === 1 && hold.held.length === 2);
    hold.releaseAll();
    expect((await fourth).status).toBe(200);
    expect((await first).status).toBe(200);
    expect((await second).status).toBe(200);
  });

  it('concurrency: an agent that hangs up while its request is in flight gives its slot back', async () => {
    const before = llm.requests.length;
    const abandoned = [0, 1].map(() => {
      const req = httpRequest(`${proxy.url}/llm/v1/slow`, { headers: { authorization: `Bearer ${parallel.token}` }, agent: false });
      req.on('error', () => undefined);
      req.end();
      return req;
    });
    await eventually('two abandoned requests held at the upstream', () => llm.requests.length - before === 2 && hold.held.length === 2);
    expectRateLimited(await call(parallel.token, '/llm/v1/ping'));
    for (const req of abandoned) req.destroy();
    // Both slots come back once the proxy sees the agent gone (bounded wait; 429s take no slot).
    const passed = await eventually('a request passing after the agent hung up', async () => {
      const response = await call(parallel.token, '/llm/v1/ping');
      return response.status === 200 ? response : undefined;
    });
    expect(passed.status).toBe(200);
    hold.releaseAll();
  });

  it('a refused request is audited (code rate_limited, decision deny, status 429) and counted in airlock_requests_total', async () => {
    const refused = await exhaust(minute.token, '/llm/v1/ping');
    expectRateLimited(refused);
    expect(await auditOf(refused)).toMatchObject({
      agent: 'minute',
      service: 'llm',
      route: '/v1/ping',
      scope: 'ping:read',
      decision: 'deny',
      code: 'rate_limited',
      status: 429,
      upstream_status: null,
    });
    const metrics = await sendRequest(`${proxy.airlock.adminUrl as string}/metrics`);
    expect(metrics.status).toBe(200);
    seen.push(metrics.text);
    let counted = 0;
    for (const line of metrics.text.split('\n')) {
      if (!line.startsWith('airlock_requests_total{') || !line.includes('code="rate_limited"')) continue;
      expect(line).toContain('decision="deny"');
      counted += Number(line.split(' ').at(-1));
    }
    expect(counted).toBe(refusedCount);
    expect(metrics.text).toMatch(/airlock_requests_total\{[^}]*service="llm"[^}]*route="\/v1\/ping"[^}]*code="rate_limited"[^}]*\} \d+/);
  });

  it('no canary reaches agents, logs or audit', () => {
    assertNoLeak([llmKey, otherKey], [
      { name: 'agent responses and metrics', text: seen.join('\n') },
      { name: 'logs', text: proxy.logLines.join('') },
      { name: 'audit', text: proxy.auditText() },
    ]);
  });
});
