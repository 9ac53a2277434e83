/**
 * Many agents of one issuer (a Kubernetes cluster: one agent per service account, each with its own
 * subject, all with the cluster's jwks_url). Found by review: each agent had a JWKS cache of its own, and
 * a JWT is tried against every agent of its issuer in turn, so one token fetched the same key set once per
 * agent, and so did each unknown kid (an unauthenticated caller picks the kid): N fetches of the issuer's
 * endpoint per token, one after another, each up to the 5 s timeout when the endpoint hangs. Now the key
 * set of a URL is fetched once, whatever the number of agents that name it.
 */
import { exportJWK, generateKeyPair, SignJWT, type CryptoKey } from 'jose';
import { afterAll, beforeAll, describe, expect, it, vi } from 'vitest';
import { assertNoLeak } from '../helpers/assert-no-leak.js';
import { canary } from '../helpers/canary.js';
import { sendRequest, type SentResponse } from '../helpers/send-request.js';
import { startProxy, type ProxyFixture } from '../helpers/start-proxy.js';
import { echoHandler, startUpstream, type Upstream } from '../helpers/start-upstream.js';

const ISSUER = 'https://kubernetes.shared.test';
const AUDIENCE = 'airlock';
const AGENTS = 6;

describe('agents that share an issuer and its JWKS URL', () => {
  const serviceKey = canary('jwks-shared');
  let signing: { privateKey: CryptoKey; publicKey: CryptoKey };
  let upstream: Upstream;
  let jwks: Upstream;
  let proxy: ProxyFixture;
  let fetches = 0;
  /** Whether the JWKS endpoint answers 503 (down) instead of the key set. */
  let down = false;

  beforeAll(async () => {
    signing = await generateKeyPair('RS256');
    const keySet = JSON.stringify({ keys: [{ ...(await exportJWK(signing.publicKey)), kid: 'k1', alg: 'RS256', use: 'sig' }] });
    jwks = await startUpstream((_req, res) => {
      fetches += 1;
      if (down) {
        res.writeHead(503, { 'content-length': '0' });
        res.end();
        return;
      }
      res.writeHead(200, { 'content-type': 'application/json', 'content-length': Buffer.byteLength(keySet) });
      res.end(keySet);
    });
    upstream = await startUpstream(echoHandler);
    const agents: Record<string, unknown> = {};
    for (let i = 0; i < AGENTS; i++) {
      agents[`sa-${i}`] = {
        jwt: { issuer: ISSUER, audience: AUDIENCE, subject: `system:serviceaccount:ns:sa-${i}`, jwks_url: `${jwks.url}/openid/v1/jwks`, algorithms: ['RS256'] },
        credentials: [{ service: 'api', max_scope: ['*'] }],
      };
    }
    proxy = await startProxy(
      { services: { api: { upstream: upstream.url, credential: { secret: 'env:API_KEY' }, routes: [{ method: 'GET', path: '/v1/*', scope: 'api:read' }] } }, agents },
      { env: { API_KEY: serviceKey } },
    );
  });

  afterAll(async () => {
    vi.useRealTimers();
    assertNoLeak([serviceKey], [
      { name: 'log', text: proxy.logLines.join('') },
      { name: 'audit', text: proxy.auditText() },
    ]);
    await proxy?.close();
    await upstream?.close();
    await jwks?.close();
  });

  async function present(subject: string, kid: string): Promise<SentResponse> {
    const now = Math.floor(Date.now() / 1000);
    const token = await new SignJWT({}).setProtectedHeader({ alg: 'RS256', kid }).setIssuer(ISSUER).setAudience(AUDIENCE).setSubject(subject).setIssuedAt(now).setExpirationTime(now + 300).sign(signing.privateKey);
    return sendRequest(`${proxy.url}/api/v1/models`, { headers: { authorization: `Bearer ${token}` } });
  }

  it('the first JWT fetches the key set once, not once per agent of the issuer', async () => {
    const response = await present(`system:serviceaccount:ns:sa-${AGENTS - 1}`, 'k1');
    expect(response.status, response.text).toBe(200);
    expect(fetches).toBe(1);
  });

  it('a JWT of another agent of the issuer is verified with the key set already fetched', async () => {
    const response = await present('system:serviceaccount:ns:sa-0', 'k1');
    expect(response.status, response.text).toBe(200);
    expect(fetches).toBe(1);
  });

  it('an unknown kid (chosen by an unauthenticated caller) is refused without a fetch per agent', async () => {
    // Within the 30 s cooldown of the last fetch: no refetch at all.
    const response = await present('system:serviceaccount:ns:sa-3', 'attacker-kid');
    expect(response.status, response.text).toBe(401);
    expect(fetches).toBe(1);
  });

  it('with the endpoint down, a JWT with an unknown kid is refused (401) after one fetch, not one per agent', async () => {
    // Past the 30 s cooldown (jose reads Date.now()): an unknown kid may refetch, once.
    vi.useFakeTimers({ toFake: ['Date'], shouldAdvanceTime: true });
    vi.setSystemTime(Date.now() + 31_000);
    down = true;
    const before = fetches;
    const response = await present('system:serviceaccount:ns:sa-2', 'rotated-kid');
    expect(response.status, response.text).toBe(401);
    expect(fetches - before).toBe(1);
    // A known kid is still verified with the key set fetched before (fail closed only where it must).
    const known = await present('system:serviceaccount:ns:sa-2', 'k1');
    expect(known.status, known.text).toBe(200);
  });

  // Found by review: jose's cooldown starts only after a fetch that succeeded, so while the endpoint
  // was down every unknown kid (the caller's choice) was another fetch to the failing provider.
  it('with the endpoint still down, more unknown kids within 5 s ask it nothing; after that, once', async () => {
    const before = fetches;
    for (const kid of ['probe-1', 'probe-2', 'probe-3']) {
      const response = await present('system:serviceaccount:ns:sa-1', kid);
      expect(response.status, response.text).toBe(401);
    }
    expect(fetches - before).toBe(0);
    vi.setSystemTime(Date.now() + 6_000);
    const later = await present('system:serviceaccount:ns:sa-1', 'probe-4');
    expect(later.status, later.text).toBe(401);
    expect(fetches - before).toBe(1);
    // Back up: after the wait, a new kid is fetched and verified.
    down = false;
    vi.setSystemTime(Date.now() + 6_000);
    const known = await present('system:serviceaccount:ns:sa-1', 'k1');
    expect(known.status, known.text).toBe(200);
  });
});
