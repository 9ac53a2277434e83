/**
 * A task session minted with a workload JWT stands on the agent's JWT rules it was accepted under. Found
 * by review: after a reload rotated the signing key out (a compromise), or narrowed the claims or the
 * audience, the JWT itself was refused while the sessions it had minted went on. Now a change to the
 * agent's JWT rules ends them (401); a reload that leaves the rules as they were keeps them.
 */
import { generateKeyPairSync, type KeyObject } from 'node:crypto';
import { rmSync } from 'node:fs';
import { SignJWT } from 'jose';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { formatProblem } from '../../src/config/config-problem.js';
import { buildConfig } from '../../src/config/load-config.js';
import { assertNoLeak } from '../helpers/assert-no-leak.js';
import { canary } from '../helpers/canary.js';
import { sendRequest, type Problem, type SentResponse } from '../helpers/send-request.js';
import { startProxy, tempDir, type ProxyFixture } from '../helpers/start-proxy.js';
import { startUpstream, type Upstream } from '../helpers/start-upstream.js';

const ISSUER = 'https://oidc.jwt-session-rules.test';

interface Rules {
  readonly keys: readonly KeyObject[];
  readonly claims?: Record<string, string>;
  readonly audience?: string;
}

describe('sessions minted with a workload JWT, across reloads of the JWT rules', () => {
  const serviceKey = canary('jwt-rules');
  const compromised = generateKeyPairSync('rsa', { modulusLength: 2048 });
  const fresh = generateKeyPairSync('rsa', { modulusLength: 2048 });
  const dataDir = tempDir('airlock-jwt-rules-');
  const credentials: string[] = [];
  const seen: string[] = [];
  let upstream: Upstream;
  let proxy: ProxyFixture;

  function input(rules: Rules): Record<string, unknown> {
    const keys = rules.keys.map((key) => key.export({ type: 'spki', format: 'pem' }).toString());
    return {
      services: { api: { upstream: upstream.url, credential: { secret: 'env:JWT_RULES_KEY', inject: 'bearer' }, routes: [{ method: 'GET', path: '/v1/*', scope: 'read' }] } },
      agents: {
        ci: { jwt: { issuer: ISSUER, audience: rules.audience ?? 'airlock', claims: rules.claims ?? { repository: 'org/app' }, keys, algorithms: ['RS256'] }, credentials: [{ service: 'api', max_scope: ['read'], max_ttl: 3600 }] },
      },
    };
  }

  async function reload(rules: Rules): Promise<void> {
    const built = buildConfig({ listen: '127.0.0.1:0', data_dir: dataDir, ...input(rules) }, { baseDir: dataDir });
    if (built.config === null) throw new Error(built.problems.map((p) => formatProblem(p, null)).join('\n'));
    expect(await proxy.airlock.reload(built.config)).toEqual({ ok: true });
  }

  beforeAll(async () => {
    upstream = await startUpstream();
    proxy = await startProxy(input({ keys: [compromised.publicKey] }), { dataDir, env: { JWT_RULES_KEY: serviceKey } });
  });

  afterAll(async () => {
    try {
      assertNoLeak([serviceKey, ...credentials], [
        { name: 'agent answers', text: seen.join('\n') },
        { name: 'logs', text: proxy.logLines.join('') },
        { name: 'audit', text: proxy.auditText() },
      ]);
    } finally {
      await proxy?.close();
      await upstream?.close();
      rmSync(dataDir, { recursive: true, force: true });
    }
  });

  async function signed(key: KeyObject, claims: Record<string, string> = { repository: 'org/app' }): Promise<string> {
    const jwt = await new SignJWT(claims).setProtectedHeader({ alg: 'RS256' }).setIssuer(ISSUER).setAudience('airlock').setIssuedAt().setExpirationTime('10m').sign(key);
    credentials.push(jwt);
    return jwt;
  }

  async function mint(jwt: string): Promise<string> {
    const minted = await sendRequest(`${proxy.url}/_airlock/sessions`, {
      method: 'POST',
      headers: { authorization: `Bearer ${jwt}`, 'content-type': 'application/json' },
      body: JSON.stringify({ scopes: { api: ['read'] }, justification: 'a ci job' }),
    });
    expect(minted.status, minted.text).toBe(201);
    const token = minted.json<{ session_token: string }>().session_token;
    credentials.push(token);
    return token;
  }

  async function call(token: string): Promise<SentResponse> {
    const answer = await sendRequest(`${proxy.url}/api/v1/x`, { headers: { authorization: `Bearer ${token}` } });
    seen.push(`${answer.status}\n${JSON.stringify(answer.headers)}\n${answer.text}`);
    return answer;
  }

  it('a reload that leaves the rules as they were keeps the session', async () => {
    const session = await mint(await signed(compromised.privateKey));
    await reload({ keys: [compromised.publicKey] });
    expect((await call(session)).status).toBe(200);
  });

  const changes: Array<[string, Rules]> = [
    ['the signing key rotated out', { keys: [fresh.publicKey] }],
    ['the claims narrowed', { keys: [compromised.publicKey], claims: { repository: 'org/app', ref: 'refs/heads/main' } }],
    ['the audience changed', { keys: [compromised.publicKey], audience: 'airlock-v2' }],
  ];
  for (const [what, rules] of changes) {
    it(`${what}: the JWT is refused, and so is every session it minted (401)`, async () => {
      await reload({ keys: [compromised.publicKey] });
      const jwt = await signed(compromised.privateKey);
      const session = await mint(jwt);
      expect((await call(session)).status).toBe(200);
      try {
        await reload(rules);
        expect((await call(jwt)).status).toBe(401);
        const refused = await call(session);
        expect(refused.status, refused.text).toBe(401);
        expect(refused.json<Problem>().code).toBe('unauthenticated');
      } finally {
        await reload({ keys: [compromised.publicKey] });
      }
    });
  }
});
