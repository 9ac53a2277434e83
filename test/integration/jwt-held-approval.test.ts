/**
 * A request made with a workload JWT and held for a human's approval (approval_mode: hold) may wait up to
 * approval_timeout, far longer than a workload JWT lives (a CI OIDC token: 5 minutes). Once approved it is
 * authenticated again (authenticateAgain); found by review: a session that ended during the wait was
 * refused, but a JWT that expired during it (exp plus the clock tolerance, or iat plus max_token_age) was
 * not, and the request went upstream with the real credential on a credential no longer accepted.
 * Likewise a session mint whose body arrives after the JWT expired: it kept a session that had already
 * ended and answered 503, "agent ci was restored at the same moment", which sent the reader astray.
 */
import { request as httpRequest } from 'node:http';
import { exportSPKI, generateKeyPair, SignJWT, type CryptoKey } from 'jose';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { generateAgentToken } from '../../src/identity/agent-token.js';
import { assertNoLeak } from '../helpers/assert-no-leak.js';
import { canary } from '../helpers/canary.js';
import { adminClient, eventually, sleep, type AdminClient } from '../helpers/operator.js';
import { sendRequest, type Problem, type SentResponse } from '../helpers/send-request.js';
import { startProxy, type ProxyFixture } from '../helpers/start-proxy.js';
import { echoHandler, startUpstream, type Upstream } from '../helpers/start-upstream.js';

const ISSUER = 'https://token.actions.example.test';
const AUDIENCE = 'airlock';
const SUBJECT = 'repo:org/app:ref:refs/heads/main';

describe('a JWT request held for approval', () => {
  const serviceKey = canary('jwt-held');
  const alice = generateAgentToken();
  const jwts: string[] = [];
  const agentSeen: string[] = [];
  let signing: { privateKey: CryptoKey; publicKey: CryptoKey };
  let upstream: Upstream;
  let proxy: ProxyFixture;
  let admin: AdminClient;
  let clock = Date.UTC(2030, 0, 1);

  beforeAll(async () => {
    signing = await generateKeyPair('RS256');
    upstream = await startUpstream(echoHandler);
    proxy = await startProxy(
      {
        admin: { listen: '127.0.0.1:0', tokens: [{ name: 'alice', hash: alice.hash }] },
        services: { pay: { upstream: upstream.url, credential: { secret: 'env:PAY_KEY', inject: 'bearer' }, routes: [{ method: 'POST', path: '/v1/refunds/:id', scope: 'refunds:write' }] } },
        agents: {
          ci: {
            jwt: { issuer: ISSUER, audience: AUDIENCE, subject: SUBJECT, keys: [await exportSPKI(signing.publicKey)], algorithms: ['RS256'] },
            credentials: [{ service: 'pay', max_scope: ['refunds:write'], require_approval: true, approval_mode: 'hold', approval_timeout: 3600 }],
          },
        },
      },
      { env: { PAY_KEY: serviceKey }, now: () => new Date(clock) },
    );
    admin = adminClient(() => proxy.airlock.adminUrl as string, alice.token);
  });

  afterAll(async () => {
    try {
      assertNoLeak([...jwts, serviceKey, alice.token], [
        { name: 'logs', text: proxy.logLines.join('') },
        { name: 'audit', text: proxy.auditText() },
        { name: 'agent answers', text: agentSeen.join('\n') },
        { name: 'admin answers', text: admin.seen.join('\n') },
      ]);
    } finally {
      await proxy?.close();
      await upstream?.close();
    }
  });

  async function jwt(lifetime: number): Promise<string> {
    const now = Math.floor(clock / 1000);
    const token = await new SignJWT({}).setProtectedHeader({ alg: 'RS256' }).setIssuer(ISSUER).setAudience(AUDIENCE).setSubject(SUBJECT).setIssuedAt(now).setExpirationTime(now + lifetime).sign(signing.privateKey);
    jwts.push(token);
    return token;
  }

  function hold(token: string, id: string): Promise<SentResponse> {
    return sendRequest(`${proxy.url}/pay/v1/refunds/${id}`, {
      method: 'POST',
      headers: { authorization: `Bearer ${token}`, 'content-type': 'application/json' },
      body: JSON.stringify({ refund: id }),
      timeoutMs: 20_000,
    }).then((response) => {
      agentSeen.push(`${response.status}\n${JSON.stringify(response.headers)}\n${response.text}`);
      return response;
    });
  }

  /** Approves the request held at `path` once it is pending, `waitMs` of the proxy's clock after it was asked. */
  async function approveWhenPending(path: string, waitMs: number): Promise<void> {
    const id = await eventually(`a pending approval for ${path}`, async () => {
      const listed = await admin.call('GET', '/v1/approvals?status=pending');
      return listed.json<{ approvals: Array<{ id: string; path: string }> }>().approvals.find((a) => a.path === path)?.id;
    });
    clock += waitMs;
    const decided = await admin.call('POST', `/v1/approvals/${id}/approve`, { reason: 'looks right' });
    expect(decided.status, decided.text).toBe(200);
  }

  it('is refused (401), and nothing is sent, when the JWT expired while it waited', async () => {
    const before = upstream.requests.length;
    const held = hold(await jwt(300), 're_late');
    // The approver takes 10 minutes: the JWT (5 minutes, plus 30 s of tolerance) expires meanwhile.
    await approveWhenPending('/pay/v1/refunds/re_late', 600_000);
    const response = await held;
    expect(response.status, response.text).toBe(401);
    const problem = response.json<Problem>();
    expect(problem.code).toBe('unauthenticated');
    expect(problem.detail).toContain('while the request waited');
    expect(upstream.requests.length).toBe(before);
  });

  it('is forwarded when the JWT is still accepted once approved', async () => {
    const before = upstream.requests.length;
    const held = hold(await jwt(300), 're_fine');
    await approveWhenPending('/pay/v1/refunds/re_fine', 60_000);
    const response = await held;
    expect(response.status, response.text).toBe(200);
    expect(upstream.requests.length).toBe(before + 1);
  });

  it('a session mint whose body arrives after the JWT expired is refused (401), no session kept', async () => {
    const token = await jwt(300);
    const body = JSON.stringify({ scopes: { pay: ['refunds:write'] }, justification: 'refund batch 7' });
    const response = await new Promise<{ status: number; text: string }>((resolve, reject) => {
      const req = httpRequest(`${proxy.url}/_airlock/sessions`, { method: 'POST', agent: false, headers: { authorization: `Bearer ${token}`, 'content-type': 'application/json', 'content-length': Buffer.byteLength(body) } }, (res) => {
        const chunks: Buffer[] = [];
        res.on('data', (chunk: Buffer) => chunks.push(chunk));
        res.on('end', () => resolve({ status: res.statusCode ?? 0, text: Buffer.concat(chunks).toString('utf8') }));
      });
      req.on('error', reject);
      // Authenticated on its headers; the rest of the body comes 10 minutes (of the proxy's clock) later.
      req.write(body.slice(0, 10));
      void sleep(300).then(() => {
        clock += 600_000;
        req.end(body.slice(10));
      });
    });
    agentSeen.push(response.text);
    expect(response.status, response.text).toBe(401);
    expect(JSON.parse(response.text)).toMatchObject({ code: 'unauthenticated' });
  });
});
