/**
 * A task session minted with a workload JWT stands on the agent's JWT rules it was accepted under. Found
 * by review: after a reload rotated the signing key out (a compromise), or narrowed the claims or the
 * audience, the JWT itself was refused while the sessions it had minted went on. Now a change to the
 * agent's JWT rules, or the key that verified the minting JWT no longer listed, ends them (401); a
 * reload that leaves the rules as they were, or only adds a key, keeps them.
 */
import { createHash, generateKeyPairSync, randomBytes, type KeyObject } from 'node:crypto';
import { rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { SignJWT } from 'jose';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { formatProblem } from '../../src/config/config-problem.js';
import { buildConfig } from '../../src/config/load-config.js';
import { generateSessionToken } from '../../src/identity/agent-token.js';
import { assertNoLeak } from '../helpers/assert-no-leak.js';
import { canary } from '../helpers/canary.js';
import { sendRequest, type Problem, type SentResponse } from '../helpers/send-request.js';
import { startProxy, tempDir, type ProxyFixture } from '../helpers/start-proxy.js';
import { startUpstream, type Upstream } from '../helpers/start-upstream.js';

const ISSUER = 'https://oidc.jwt-session-rules.test';

interface Rules {
  readonly keys: readonly KeyObject[];
  /** PKCS#1 (BEGIN RSA PUBLIC KEY) instead of SPKI: the same keys written another way. */
  readonly pkcs1?: boolean;
  readonly claims?: Record<string, string>;
  readonly audience?: string;
  /** agents.ci.jwt.typ; left out when undefined. */
  readonly typ?: readonly string[];
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
    const keys = rules.keys.map((key) => key.export({ type: rules.pkcs1 === true ? 'pkcs1' : 'spki', format: 'pem' }).toString());
    return {
      services: { api: { upstream: upstream.url, credential: { secret: 'env:JWT_RULES_KEY', inject: 'bearer' }, routes: [{ method: 'GET', path: '/v1/*', scope: 'read' }] } },
      agents: {
        ci: { jwt: { issuer: ISSUER, audience: rules.audience ?? 'airlock', claims: rules.claims ?? { repository: 'org/app' }, keys, algorithms: ['RS256'], ...(rules.typ === undefined ? {} : { typ: rules.typ }) }, credentials: [{ service: 'api', max_scope: ['read'], max_ttl: 3600 }] },
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
    // The default typ list written out, in another order and spelling, is the same rules.
    await reload({ keys: [compromised.publicKey], typ: ['application/AT+JWT', 'jose', 'JWT'] });
    expect((await call(session)).status).toBe(200);
    await reload({ keys: [compromised.publicKey] });
  });

  // Found by review: any change to the rules ended the sessions, so the first step of every key
  // rotation (the new key listed beside the old) ended every session the agent's JWTs had minted.
  it('a key added beside the one that verified, or that key written as PKCS#1, keeps the session', async () => {
    await reload({ keys: [compromised.publicKey] });
    const session = await mint(await signed(compromised.privateKey));
    await reload({ keys: [compromised.publicKey, fresh.publicKey] });
    expect((await call(session)).status).toBe(200);
    await reload({ keys: [fresh.publicKey, compromised.publicKey], pkcs1: true });
    expect((await call(session)).status).toBe(200);
    // A session minted with the new key stands on the new key: rotating the old one out keeps it, and
    // ends the one the old key verified.
    const next = await mint(await signed(fresh.privateKey));
    await reload({ keys: [fresh.publicKey] });
    expect((await call(next)).status).toBe(200);
    expect((await call(session)).status).toBe(401);
    await reload({ keys: [compromised.publicKey] });
  });

  const changes: Array<[string, Rules]> = [
    ['the signing key rotated out', { keys: [fresh.publicKey] }],
    ['the claims narrowed', { keys: [compromised.publicKey], claims: { repository: 'org/app', ref: 'refs/heads/main' } }],
    ['the audience changed', { keys: [compromised.publicKey], audience: 'airlock-v2' }],
    // The JWTs here carry no typ: with typ [at+jwt] (explicit typing required) they are refused.
    ['typ narrowed to at+jwt', { keys: [compromised.publicKey], typ: ['at+jwt'] }],
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

// Sessions minted before the keys left the rules' digest recorded a digest that held the keys' PEM
// text. They keep standing while the rules, keys included, are as they were, and end when they change.
describe('a JWT-minted session kept by an earlier version', () => {
  const serviceKey = canary('jwt-legacy');
  const signing = generateKeyPairSync('rsa', { modulusLength: 2048 });
  const added = generateKeyPairSync('rsa', { modulusLength: 2048 });
  const dataDir = tempDir('airlock-jwt-legacy-');
  const session = generateSessionToken();
  const pem = (key: KeyObject): string => key.export({ type: 'spki', format: 'pem' }).toString();
  let upstream: Upstream;
  let proxy: ProxyFixture;

  function input(keys: string[]): Record<string, unknown> {
    return {
      services: { api: { upstream: upstream.url, credential: { secret: 'env:JWT_LEGACY_KEY', inject: 'bearer' }, routes: [{ method: 'GET', path: '/v1/*', scope: 'read' }] } },
      agents: { ci: { jwt: { issuer: ISSUER, audience: 'airlock', claims: { repository: 'org/app' }, keys, algorithms: ['RS256'] }, credentials: [{ service: 'api', max_scope: ['read'], max_ttl: 3600 }] } },
    };
  }

  beforeAll(async () => {
    upstream = await startUpstream();
    // The digest as earlier versions wrote it: [issuer, audience, subject, sorted claims, jwks_url, sorted keys, sorted algorithms, max_token_age].
    const rules = createHash('sha256').update(JSON.stringify([ISSUER, 'airlock', null, [['repository', 'org/app']], null, [pem(signing.publicKey)], ['RS256'], null]), 'utf8').digest('hex');
    const now = Date.now();
    const record = {
      id: `ses_${randomBytes(12).toString('base64url')}`,
      tokenHash: session.hash,
      agent: 'ci',
      parent: null,
      scopes: { api: ['read'] },
      justification: 'minted by an earlier version',
      taskId: null,
      createdAt: now,
      expiresAt: now + 600_000,
      mintedBy: { kind: 'jwt', issuer: ISSUER, subject: null, rules },
    };
    writeFileSync(join(dataDir, 'state.jsonl'), `${JSON.stringify({ type: 'session.created', session: record })}\n`, { mode: 0o600 });
    proxy = await startProxy(input([pem(signing.publicKey)]), { dataDir, env: { JWT_LEGACY_KEY: serviceKey } });
  });

  afterAll(async () => {
    try {
      assertNoLeak([serviceKey, session.token], [
        { name: 'logs', text: proxy.logLines.join('') },
        { name: 'audit', text: proxy.auditText() },
      ]);
    } finally {
      await proxy?.close();
      await upstream?.close();
      rmSync(dataDir, { recursive: true, force: true });
    }
  });

  it('stands while the rules are as they were, and ends once a key is added', async () => {
    const call = (): Promise<SentResponse> => sendRequest(`${proxy.url}/api/v1/x`, { headers: { authorization: `Bearer ${session.token}` } });
    expect((await call()).status).toBe(200);
    const built = buildConfig({ listen: '127.0.0.1:0', data_dir: dataDir, ...input([pem(signing.publicKey), pem(added.publicKey)]) }, { baseDir: dataDir });
    if (built.config === null) throw new Error(built.problems.map((p) => formatProblem(p, null)).join('\n'));
    expect(await proxy.airlock.reload(built.config)).toEqual({ ok: true });
    expect((await call()).status).toBe(401);
  });
});
