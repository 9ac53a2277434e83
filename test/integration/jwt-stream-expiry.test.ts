/**
 * A response streaming to an agent authenticated by a workload JWT is cut when that JWT stops being
 * acceptable (its exp, with the 30 s clock tolerance), as a task session's stream is cut at its end: a
 * new request with the same JWT would get 401 by then (RFC 7519 4.1.4). The audit record says why; a
 * stream under an agent token goes on.
 */
import { generateKeyPairSync } from 'node:crypto';
import { request } from 'node:http';
import { SignJWT } from 'jose';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { generateAgentToken } from '../../src/identity/agent-token.js';
import { assertNoLeak } from '../helpers/assert-no-leak.js';
import { canary } from '../helpers/canary.js';
import { eventually } from '../helpers/operator.js';
import { startProxy, type ProxyFixture } from '../helpers/start-proxy.js';
import { startUpstream, type Upstream } from '../helpers/start-upstream.js';

const ISSUER = 'https://issuer.jwt-stream.test';
const AUDIENCE = 'airlock';
/** jwt-verifier.ts's clock tolerance: a token is accepted until exp + 30 s. */
const TOLERANCE_S = 30;

interface OpenStream {
  readonly status: Promise<number>;
  readonly ended: Promise<{ at: number; complete: boolean }>;
  events(): number;
  close(): void;
}

function openStream(url: string, token: string): OpenStream {
  let events = 0;
  let resolveStatus: (status: number) => void = () => undefined;
  let resolveEnded: (end: { at: number; complete: boolean }) => void = () => undefined;
  const status = new Promise<number>((resolve) => (resolveStatus = resolve));
  const ended = new Promise<{ at: number; complete: boolean }>((resolve) => (resolveEnded = resolve));
  const req = request(url, { headers: { authorization: `Bearer ${token}`, accept: 'text/event-stream' } }, (res) => {
    resolveStatus(res.statusCode ?? 0);
    res.setEncoding('utf8');
    res.on('data', (chunk: string) => (events += chunk.split('\n\n').length - 1));
    res.on('end', () => resolveEnded({ at: Date.now(), complete: res.complete }));
    res.on('error', () => resolveEnded({ at: Date.now(), complete: false }));
    res.on('aborted', () => resolveEnded({ at: Date.now(), complete: false }));
  });
  req.on('error', () => resolveEnded({ at: Date.now(), complete: false }));
  req.end();
  return { status, ended, events: () => events, close: () => req.destroy() };
}

describe('a stream under a workload JWT', () => {
  const serviceKey = canary('jwt-stream-key');
  const agentToken = generateAgentToken();
  const signing = generateKeyPairSync('rsa', { modulusLength: 2048 });
  const timers = new Set<NodeJS.Timeout>();
  const jwts: string[] = [];
  let upstream: Upstream;
  let proxy: ProxyFixture;

  beforeAll(async () => {
    upstream = await startUpstream((req, res) => {
      if (req.url?.startsWith('/v1/slow') === true) {
        // Headers after 8 s: the JWT ends while the request waits for them.
        const timer = setTimeout(() => res.end('{}'), 8_000);
        res.on('close', () => clearTimeout(timer));
        return;
      }
      res.writeHead(200, { 'content-type': 'text/event-stream' });
      let n = 0;
      const timer = setInterval(() => res.write(`data: {"n":${(n += 1)}}\n\n`), 100);
      timers.add(timer);
      res.on('close', () => {
        clearInterval(timer);
        timers.delete(timer);
      });
    });
    const publicPem = signing.publicKey.export({ type: 'spki', format: 'pem' }).toString();
    proxy = await startProxy(
      {
        services: { llm: { upstream: upstream.url, credential: { secret: 'env:LLM_KEY', inject: 'bearer' }, routes: [{ method: 'GET', path: '/v1/stream', scope: 'stream:read' }, { method: 'GET', path: '/v1/slow', scope: 'stream:read' }] } },
        agents: {
          worker: { jwt: { issuer: ISSUER, audience: AUDIENCE, subject: 'worker', keys: [publicPem], algorithms: ['RS256'] }, credentials: [{ service: 'llm', max_scope: ['stream:read'] }] },
          steady: { tokens: [agentToken.hash], credentials: [{ service: 'llm', max_scope: ['stream:read'] }] },
        },
      },
      { env: { LLM_KEY: serviceKey } },
    );
  });

  afterAll(async () => {
    for (const timer of timers) clearInterval(timer);
    await proxy?.close();
    await upstream?.close();
    assertNoLeak([serviceKey, agentToken.token, ...jwts], [
      { name: 'log', text: proxy.logLines.join('') },
      { name: 'audit', text: proxy.auditText() },
    ]);
  });

  it('is cut when the JWT stops being accepted, and its record says so; an agent-token stream goes on', async () => {
    // exp 26 s ago: still accepted (30 s tolerance) for 3-4 s more, time enough on a loaded machine for
    // the stream to start and show events first.
    const exp = Math.floor(Date.now() / 1000) - (TOLERANCE_S - 4);
    const jwt = await new SignJWT({ sub: 'worker' }).setProtectedHeader({ alg: 'RS256' }).setIssuer(ISSUER).setAudience(AUDIENCE).setIssuedAt(exp - 60).setExpirationTime(exp).sign(signing.privateKey);
    jwts.push(jwt);
    const stream = openStream(`${proxy.url}/llm/v1/stream?who=jwt`, jwt);
    const steady = openStream(`${proxy.url}/llm/v1/stream?who=steady`, agentToken.token);
    try {
      expect(await stream.status).toBe(200);
      expect(await steady.status).toBe(200);
      const outcome = await Promise.race([stream.ended, new Promise<'still streaming'>((resolve) => setTimeout(() => resolve('still streaming'), 12_000))]);
      expect(outcome, 'the stream outlived its JWT').not.toBe('still streaming');
      expect(outcome).toMatchObject({ complete: false });
      expect((outcome as { at: number }).at).toBeGreaterThanOrEqual((exp + TOLERANCE_S) * 1000 - 50);
      expect(stream.events()).toBeGreaterThan(3);
      const record = await eventually('the cut stream audited', () => proxy.auditRecords().find((r) => r.agent === 'worker' && r.path === '/llm/v1/stream'), 5_000);
      expect(record).toMatchObject({ decision: 'allow', status: 200, incomplete: true });
      expect(record.reason).toBe('cut while its answer was being sent: The workload JWT this request was made with expired. Send it again with a fresh JWT.');
      // The same JWT is refused now.
      const again = openStream(`${proxy.url}/llm/v1/stream?who=jwt-again`, jwt);
      expect(await again.status).toBe(401);
      again.close();
      const at = steady.events();
      await eventually('the agent-token stream to go on', () => steady.events() >= at + 3 || undefined, 5_000);
    } finally {
      stream.close();
      steady.close();
    }
  }, 30_000);

  it('answers 401 when the JWT ends while the request waits for its upstream, and passes nothing on', async () => {
    // Accepted for 3-4 s more: authenticated well before its end, which comes while the upstream waits.
    const exp = Math.floor(Date.now() / 1000) - (TOLERANCE_S - 4);
    const jwt = await new SignJWT({ sub: 'worker' }).setProtectedHeader({ alg: 'RS256' }).setIssuer(ISSUER).setAudience(AUDIENCE).setIssuedAt(exp - 60).setExpirationTime(exp).sign(signing.privateKey);
    jwts.push(jwt);
    const response = await fetch(`${proxy.url}/llm/v1/slow`, { headers: { authorization: `Bearer ${jwt}` }, signal: AbortSignal.timeout(15_000) });
    expect(response.status).toBe(401);
    const problem = (await response.json()) as { detail: string };
    expect(problem.detail).toBe('The workload JWT this request was made with expired while the request waited for its upstream; its answer was not passed on. Send it again with a fresh JWT.');
    const record = await eventually('the refusal audited', () => proxy.auditRecords().find((r) => r.agent === 'worker' && r.path === '/llm/v1/slow'), 5_000);
    // Allowed and sent, then refused: as a revocation during the wait is recorded (kill-switch.test.ts).
    expect(record).toMatchObject({ decision: 'allow', code: 'unauthenticated', status: 401 });
  }, 30_000);
});
