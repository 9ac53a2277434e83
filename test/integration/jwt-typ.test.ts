/**
 * Explicit typing of workload JWTs (RFC 8725 3.11). An issuer signs several kinds of JWT with the same
 * keys: access and ID tokens, but also OpenID back-channel logout tokens (`logout+jwt`), security event
 * tokens (`secevent+jwt`, RFC 8417), token introspection answers (`token-introspection+jwt`, RFC 9701).
 * Such a token may carry the issuer, audience and subject an agent's rules ask for, and it was accepted as
 * the agent's credential whatever its `typ` header said. Now a JWT agent accepts by default what it took
 * before (no typ, `JWT`), SPIFFE's `JOSE` and RFC 9068 access tokens (`at+jwt`), compared as RFC 7515
 * 4.1.9 says (case-insensitive, `application/` implied), and refuses other kinds (401, the reason in the
 * audit record); `typ: [at+jwt]` requires explicit typing.
 */
import { generateKeyPairSync, type KeyObject } from 'node:crypto';
import { exportSPKI, SignJWT, type JWTPayload } from 'jose';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { assertNoLeak, proxySurfaces, responsesSurface } from '../helpers/assert-no-leak.js';
import { canary } from '../helpers/canary.js';
import { eventually } from '../helpers/operator.js';
import { sendRequest, type SentResponse } from '../helpers/send-request.js';
import { startProxy, type ProxyFixture } from '../helpers/start-proxy.js';
import { echoHandler, startUpstream, type Upstream } from '../helpers/start-upstream.js';

const ISSUER = 'https://idp.jwt-typ.test';
const AUDIENCE = 'airlock';

describe('JWT agents: the typ header', () => {
  const serviceKey = canary('jwt-typ-upstream');
  const jwts: string[] = [];
  const responses: SentResponse[] = [];
  let rsa: { privateKey: KeyObject; publicKey: KeyObject };
  let upstream: Upstream;
  let proxy: ProxyFixture;

  beforeAll(async () => {
    rsa = generateKeyPairSync('rsa', { modulusLength: 2048 });
    const pem = await exportSPKI(rsa.publicKey);
    upstream = await startUpstream(echoHandler);
    const jwt = (subject: string, extra: Record<string, unknown> = {}): Record<string, unknown> => ({ issuer: ISSUER, audience: AUDIENCE, subject, keys: [pem], algorithms: ['RS256'], ...extra });
    proxy = await startProxy(
      {
        services: { api: { upstream: upstream.url, credential: { secret: 'env:API_KEY', inject: 'bearer' }, routes: [{ method: 'GET', path: '/v1/models', scope: 'models:read' }] } },
        agents: {
          worker: { jwt: jwt('worker'), credentials: [{ service: 'api', max_scope: ['models:read'] }] },
          strict: { jwt: jwt('strict', { typ: ['at+jwt'] }), credentials: [{ service: 'api', max_scope: ['models:read'] }] },
        },
      },
      { env: { API_KEY: serviceKey } },
    );
  });

  afterAll(async () => {
    assertNoLeak([serviceKey, ...jwts], [...proxySurfaces(proxy), responsesSurface(responses)]);
    await proxy?.close();
    await upstream?.close();
  });

  /** A valid token for `subject` with `typ` as its typ header (absent when undefined). */
  async function sign(subject: string, typ: unknown): Promise<string> {
    const now = Math.floor(Date.now() / 1000);
    const payload: JWTPayload = { iss: ISSUER, aud: AUDIENCE, sub: subject, iat: now, exp: now + 300 };
    const header = typ === undefined ? { alg: 'RS256' } : { alg: 'RS256', typ: typ as string };
    const token = await new SignJWT(payload).setProtectedHeader(header).sign(rsa.privateKey);
    jwts.push(token);
    return token;
  }

  async function present(token: string): Promise<SentResponse> {
    const response = await sendRequest(`${proxy.url}/api/v1/models`, { headers: { authorization: `Bearer ${token}` } });
    responses.push(response);
    return response;
  }

  async function recordOf(response: SentResponse): Promise<{ agent: string | null; reason: string | null }> {
    const id = response.headers['x-airlock-request-id'];
    const record = await eventually(`the audit record of ${String(id)}`, () => proxy.auditRecords().find((r) => r.request_id === id));
    return { agent: record.agent, reason: record.reason ?? null };
  }

  it.each([
    ['no typ header (as before)', undefined],
    ['JWT', 'JWT'],
    ['jwt (case-insensitive, RFC 7515 4.1.9)', 'jwt'],
    ['JOSE (SPIFFE JWT-SVID)', 'JOSE'],
    ['at+jwt (RFC 9068)', 'at+jwt'],
    ['application/at+jwt', 'application/at+jwt'],
    ['AT+JWT', 'AT+JWT'],
  ])('default: %s is accepted', async (_what, typ) => {
    const response = await present(await sign('worker', typ));
    expect(response.status, response.text).toBe(200);
    expect((await recordOf(response)).agent).toBe('worker');
  });

  it.each([
    ['a DPoP proof (RFC 9449)', 'dpop+jwt'],
    ['an OpenID back-channel logout token', 'logout+jwt'],
    ['a security event token (RFC 8417)', 'secevent+jwt'],
    ['a token introspection answer (RFC 9701)', 'token-introspection+jwt'],
    ['the same, with the application/ prefix', 'application/logout+jwt'],
    ['an SD-JWT key binding JWT', 'kb+jwt'],
    ['a made-up kind', 'id_token'],
    ['an empty typ', ''],
    ['a typ that is not a string', 42],
  ])('default: %s is refused (401), nothing forwarded, the reason in the audit record', async (_what, typ) => {
    const before = upstream.requests.length;
    const response = await present(await sign('worker', typ));
    expect(response.status, response.text).toBe(401);
    // The caller gets the one fixed detail every refused JWT gets; the reason is the operator's.
    expect(response.text).not.toContain('typ header');
    expect(upstream.requests.length).toBe(before);
    const record = await recordOf(response);
    expect(record.agent).toBeNull();
    expect(record.reason).toBe('workload JWT refused: the JWT typ header marks another kind of token than this agent accepts (typ: JWT or none, JOSE, at+jwt); RFC 8725 3.11');
  });

  it('typ: [at+jwt] requires explicit typing: at+jwt is accepted, no typ and JWT are refused', async () => {
    const typed = await present(await sign('strict', 'at+jwt'));
    expect(typed.status, typed.text).toBe(200);
    expect((await recordOf(typed)).agent).toBe('strict');
    for (const typ of [undefined, 'JWT', 'JOSE']) {
      const response = await present(await sign('strict', typ));
      expect(response.status, String(typ)).toBe(401);
      expect((await recordOf(response)).reason).toBe('workload JWT refused: the JWT typ header marks another kind of token than this agent accepts (typ: at+jwt); RFC 8725 3.11');
    }
  });

  it('the refused typ is not repeated in the audit record or the log', () => {
    const seen = `${proxy.auditText()}\n${proxy.logLines.join('\n')}`;
    expect(seen).not.toContain('logout+jwt');
    expect(seen).not.toContain('token-introspection+jwt');
  });
});
