/**
 * denial_burst and 400 invalid_request (found missing): an agent probing with non-canonical paths (dot
 * segments raw or encoded, "//", ";", double encoding) was refused 400 before authentication, so the
 * refusal had no agent and the rule never counted it. Now a path refused as probing (one servers read
 * differently: the canonicalization's refusals, and the route stage's when two readings of a path select
 * two routes) counts against the agent whose valid, unrevoked credential (agent token, session token or
 * workload JWT) the request carried, and its audit record names that agent. What the request is
 * answered does not change: every one of them is still 400 invalid_request, the one that trips the rule
 * included, and so is one with an unknown token or JWT, none at all, or a revoked agent's (none of which
 * names an agent or counts). Other 400s (a malformed mint body, an agent token in the query string, a
 * refused shape) are a client's mistakes as often as a prober's: not counted, and a refused shape still
 * names no agent. Nothing refused reaches the upstream; no canary leaks.
 */
import { exportSPKI, generateKeyPair, SignJWT, type CryptoKey } from 'jose';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { generateAgentToken } from '../../src/identity/agent-token.js';
import type { AuditRecord } from '../../src/observability/audit-record.js';
import { assertNoLeak, proxySurfaces, responsesSurface } from '../helpers/assert-no-leak.js';
import { canary } from '../helpers/canary.js';
import { adminClient, eventually, type AdminClient } from '../helpers/operator.js';
import { rawGet, rawRequest, type RawResponse } from '../helpers/raw-http.js';
import { sendRequest, type Problem, type SentResponse } from '../helpers/send-request.js';
import { startProxy, type ProxyFixture } from '../helpers/start-proxy.js';
import { startUpstream, type Upstream } from '../helpers/start-upstream.js';

interface AnomalyView {
  rule: string;
  action: string;
  agent: string;
  service: string | null;
  evidence: Record<string, string | number>;
}

/** Targets the canonicalization stage refuses (canonicalize-target.ts), one way each. */
const NON_CANONICAL = ['/llm/v1/../admin/keys', '/llm/v1//models', '/llm/v1/%2e%2e/admin/keys', '/llm/v1/models;jsessionid=1', '/llm/v1/a%252fb'];

describe('denial_burst counts 400 invalid_request against the agent whose token the request carried', () => {
  const key = canary('anomaly-invalid-request');
  const prober = generateAgentToken();
  const careless = generateAgentToken();
  const proxied = generateAgentToken();
  const reader = generateAgentToken();
  const sessioner = generateAgentToken();
  const stranger = generateAgentToken();
  const alice = generateAgentToken();
  const seen: Array<{ headers: unknown; text: string }> = [];
  const sessionTokens: string[] = [];
  const jwts: string[] = [];
  let signing: { privateKey: CryptoKey; publicKey: CryptoKey };
  let attacker: { privateKey: CryptoKey; publicKey: CryptoKey };
  let upstream: Upstream;
  let proxy: ProxyFixture;
  let admin: AdminClient;

  beforeAll(async () => {
    upstream = await startUpstream();
    signing = await generateKeyPair('RS256');
    attacker = await generateKeyPair('RS256');
    const grant = { service: 'llm', max_scope: ['models:read'], max_ttl: 600 };
    proxy = await startProxy(
      {
        admin: { listen: '127.0.0.1:0', tokens: [{ name: 'alice', hash: alice.hash }] },
        anomalies: {
          rate_spike: { min_requests: 1000 },
          denial_burst: { count: 5, window: 60, action: 'suspend' },
        },
        services: {
          llm: {
            upstream: upstream.url,
            credential: { secret: 'env:LLM_KEY', inject: 'bearer' },
            routes: [
              { method: 'GET', path: '/v1/models', scope: 'models:read' },
              { method: 'GET', path: '/v1/files/:id', scope: 'models:read' },
              { method: 'GET', path: '/v1/files/:id/content', scope: 'models:read' },
            ],
          },
        },
        agents: {
          prober: { tokens: [prober.hash], credentials: [grant] },
          careless: { tokens: [careless.hash], credentials: [grant] },
          proxied: { tokens: [proxied.hash], credentials: [grant] },
          reader: { tokens: [reader.hash], credentials: [grant] },
          sessioner: { tokens: [sessioner.hash], credentials: [grant] },
          workload: {
            jwt: { issuer: 'https://issuer.test', audience: 'airlock', subject: 'ci-job', keys: [await exportSPKI(signing.publicKey)], algorithms: ['RS256'] },
            credentials: [grant],
          },
        },
      },
      { env: { LLM_KEY: key } },
    );
    admin = adminClient(() => proxy.airlock.adminUrl as string, alice.token);
  });

  afterAll(async () => {
    await proxy?.close();
    await upstream?.close();
  });

  async function raw(target: string, token: string | null): Promise<RawResponse> {
    const response = await rawRequest(proxy.url, rawGet(target, token === null ? {} : { Authorization: `Bearer ${token}` }));
    seen.push({ headers: response.headers, text: response.body });
    return response;
  }

  async function call(token: string, path: string, init: { method?: string; body?: string } = {}): Promise<SentResponse> {
    const response = await sendRequest(`${proxy.url}${path}`, {
      method: init.method ?? 'GET',
      headers: { authorization: `Bearer ${token}`, ...(init.body === undefined ? {} : { 'content-type': 'application/json' }) },
      ...(init.body === undefined ? {} : { body: init.body }),
    });
    seen.push(response);
    return response;
  }

  function expectInvalidRequest(response: RawResponse | SentResponse): void {
    expect(response.status).toBe(400);
    const text = 'text' in response ? response.text : response.body;
    expect((JSON.parse(text) as Problem).code).toBe('invalid_request');
  }

  function auditOf(response: RawResponse): Promise<AuditRecord> {
    const id = response.headers['x-airlock-request-id']?.[0];
    return eventually(`the audit record of ${String(id)}`, () => proxy.auditRecords().find((r) => r.request_id === id));
  }

  async function anomalies(agent: string): Promise<AnomalyView[]> {
    const response = await admin.call('GET', `/v1/anomalies?agent=${agent}`);
    expect(response.status, response.text).toBe(200);
    return response.json<{ anomalies: AnomalyView[] }>().anomalies;
  }

  async function revoked(agent: string): Promise<boolean> {
    const response = await admin.call('GET', '/v1/revocations');
    return response.json<{ revocations: Array<{ kind: string; target: string }> }>().revocations.some((r) => r.kind === 'agent' && r.target === agent);
  }

  it('an unknown token, or none, with non-canonical paths: 400 each, no agent named, nothing counted', async () => {
    for (const target of NON_CANONICAL) {
      for (const token of [stranger.token, null]) {
        const response = await raw(target, token);
        expectInvalidRequest(response);
        expect((await auditOf(response)).agent).toBeNull();
      }
    }
    expect(await anomalies('prober')).toEqual([]);
  });

  it('five non-canonical paths with a valid agent token: each still 400, each record names the agent, the fifth trips denial_burst and suspends it', async () => {
    expect((await call(prober.token, '/llm/v1/models')).status).toBe(200);
    const forwarded = upstream.requests.length;
    for (const target of NON_CANONICAL) {
      const response = await raw(target, prober.token);
      // The answer is the canonicalization's, whatever the token: the fifth one too, though it suspends.
      expectInvalidRequest(response);
      expect(await auditOf(response)).toMatchObject({ agent: 'prober', code: 'invalid_request', status: 400, decision: 'deny' });
    }
    expect(upstream.requests.length).toBe(forwarded);
    await eventually('the suspension', () => revoked('prober'));
    const events = await anomalies('prober');
    expect(events).toHaveLength(1);
    expect(events[0]).toMatchObject({ rule: 'denial_burst', action: 'suspend', agent: 'prober', service: null, evidence: { denials: 5, threshold: 5, last_code: 'invalid_request' } });
    const next = await call(prober.token, '/llm/v1/models');
    expect(next.status, next.text).toBe(401);
    expect(upstream.requests.length).toBe(forwarded);
  });

  it("a revoked agent's non-canonical request is still answered 400, and neither names nor counts the agent", async () => {
    const response = await raw(NON_CANONICAL[0] as string, prober.token);
    expectInvalidRequest(response);
    expect((await auditOf(response)).agent).toBeNull();
    expect(await anomalies('prober')).toHaveLength(1);
  });

  it('two readings of a path selecting two routes (an encoded slash) is probing too, refused after authentication: five suspend', async () => {
    // As sent, one segment under /v1/files/:id; with %2F read as "/", /v1/files/:id/content (match-route.ts).
    for (let i = 0; i < 5; i++) {
      const response = await call(reader.token, `/llm/v1/files/f${i}%2Fcontent`);
      expectInvalidRequest(response);
      expect(response.json<Problem>().detail).toContain('upstreams disagree');
    }
    await eventually('the suspension', () => revoked('reader'));
    expect(await anomalies('reader')).toMatchObject([{ rule: 'denial_burst', agent: 'reader', evidence: { denials: 5, last_code: 'invalid_request' } }]);
  });

  it("other 400s are a client's mistakes as often as a prober's: not counted, and a refused shape names no agent", async () => {
    const mintBody = (body: Record<string, unknown>): string => JSON.stringify(body);
    for (let i = 0; i < 3; i++) {
      // An agent token in the query string (the secret guard, after authentication).
      expectInvalidRequest(await call(careless.token, `/llm/v1/models?key=${careless.token}`));
      // A session mint missing its justification.
      expectInvalidRequest(await call(careless.token, '/_airlock/sessions', { method: 'POST', body: mintBody({ scopes: { llm: ['models:read'] } }) }));
      // Two Content-Type headers: a shape refused before authentication.
      const shape = await rawRequest(proxy.url, rawGet('/llm/v1/models', { Authorization: `Bearer ${careless.token}`, 'Content-Type': 'application/json', 'content-type': 'text/plain' }));
      seen.push({ headers: shape.headers, text: shape.body });
      expectInvalidRequest(shape);
      expect((await auditOf(shape)).agent).toBeNull();
    }
    expect(await anomalies('careless')).toEqual([]);
    expect(await revoked('careless')).toBe(false);
    expect((await call(careless.token, '/llm/v1/models')).status).toBe(200);
  });

  it('a client set up to use Airlock as its HTTP proxy (absolute-form and asterisk-form targets) is told so with 400, not counted as probing', async () => {
    // HTTP_PROXY pointed at Airlock: each request names its origin in the target (RFC 9112 3.2.2), with the
    // agent token as the API key or in Proxy-Authorization. A setup mistake the 400's detail names, not a
    // path servers read differently; CONNECT, the other proxy form, names no agent either (found by
    // review: five of these suspended the agent).
    const basic = `Basic ${Buffer.from(`bot:${proxied.token}`).toString('base64')}`;
    const requests = [
      rawGet('http://api.internal.example/llm/v1/models', { Authorization: `Bearer ${proxied.token}` }),
      rawGet(`http://127.0.0.1:${new URL(proxy.url).port}/llm/v1/models`, { Authorization: `Bearer ${proxied.token}` }),
      rawGet('http://api.internal.example/v1/models', { 'Proxy-Authorization': basic }),
      rawGet('*', { Authorization: `Bearer ${proxied.token}` }, 'OPTIONS'),
    ];
    for (let i = 0; i < 2; i++) {
      for (const request of requests) {
        const response = await rawRequest(proxy.url, request);
        seen.push({ headers: response.headers, text: response.body });
        expectInvalidRequest(response);
        expect((await auditOf(response)).agent).toBeNull();
      }
    }
    expect(await anomalies('proxied')).toEqual([]);
    expect(await revoked('proxied')).toBe(false);
    expect((await call(proxied.token, '/llm/v1/models')).status).toBe(200);
  });

  it("a session token names the session's agent (and the session) on a non-canonical request's record, and counts against it", async () => {
    const minted = await call(sessioner.token, '/_airlock/sessions', { method: 'POST', body: JSON.stringify({ scopes: { llm: ['models:read'] }, ttl_seconds: 300, justification: 'invalid-request test' }) });
    expect(minted.status, minted.text).toBe(201);
    const { session_token: sessionToken, session_id: sessionId } = minted.json<{ session_token: string; session_id: string }>();
    sessionTokens.push(sessionToken);
    for (const target of NON_CANONICAL) {
      const response = await raw(target, sessionToken);
      expectInvalidRequest(response);
      expect(await auditOf(response)).toMatchObject({ agent: 'sessioner', session: sessionId, code: 'invalid_request' });
    }
    await eventually('the suspension', () => revoked('sessioner'));
  });

  it('a workload JWT (verified asynchronously) names its agent and counts; one signed by another key names nobody', async () => {
    const sign = async (key: CryptoKey): Promise<string> => {
      const now = Math.floor(Date.now() / 1000);
      const token = await new SignJWT({ iss: 'https://issuer.test', aud: 'airlock', sub: 'ci-job', iat: now, exp: now + 300 }).setProtectedHeader({ alg: 'RS256', typ: 'JWT' }).sign(key);
      jwts.push(token);
      return token;
    };
    const forged = await raw(NON_CANONICAL[1] as string, await sign(attacker.privateKey));
    expectInvalidRequest(forged);
    expect((await auditOf(forged)).agent).toBeNull();
    const jwt = await sign(signing.privateKey);
    for (const target of NON_CANONICAL) {
      const response = await raw(target, jwt);
      expectInvalidRequest(response);
      expect(await auditOf(response)).toMatchObject({ agent: 'workload', code: 'invalid_request' });
    }
    await eventually('the suspension', () => revoked('workload'));
  });

  it('no canary reaches agents, logs, audit or the admin API', () => {
    assertNoLeak([key, prober.token, careless.token, proxied.token, reader.token, sessioner.token, stranger.token, alice.token, ...jwts], [
      responsesSurface(seen),
      { name: 'admin', text: admin.seen.join('\n') },
      ...proxySurfaces(proxy),
    ]);
    // A session token is its minter's to see, in the mint's answer, and nowhere else.
    assertNoLeak(sessionTokens, [...proxySurfaces(proxy), { name: 'admin', text: admin.seen.join('\n') }]);
  });
});
