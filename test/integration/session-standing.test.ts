/**
 * A task session stands only while what it was minted under does. Found by review: a session minted
 * with an agent token kept working after that token's hash was removed from the config (a leaked token
 * rotated out), across reloads and restarts, and a lowered max_ttl did not shorten sessions already
 * minted. Now:
 *  - a session records what minted it (the token's hash, a JWT's issuer and subject, or its parent
 *    session) and is refused (401) once its agent no longer accepts that credential, as are the sessions
 *    narrowed from it; sessions minted with the agent's other tokens are not affected;
 *  - a session older than the smallest max_ttl its grants now have is refused (401).
 * Real proxies, real upstream, reloads through RunningAirlock.reload and a restart on the same data_dir.
 * The proxies run on a clock the test moves on (AirlockOptions.now), so sessions age without a wait
 * and a loaded machine's pace decides nothing.
 */
import { generateKeyPairSync } from 'node:crypto';
import { readFileSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { SignJWT } from 'jose';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { formatProblem } from '../../src/config/config-problem.js';
import { buildConfig } from '../../src/config/load-config.js';
import { generateAgentToken, generateSessionToken } from '../../src/identity/agent-token.js';
import { assertNoLeak } from '../helpers/assert-no-leak.js';
import { canary } from '../helpers/canary.js';
import { sendRequest, type Problem, type SentResponse } from '../helpers/send-request.js';
import { startProxy, tempDir, type ProxyFixture } from '../helpers/start-proxy.js';
import { startUpstream, type Upstream } from '../helpers/start-upstream.js';

const ISSUER = 'https://oidc.session-standing.test';

describe('a session stands only while its minting credential and max_ttl do', () => {
  const serviceKey = canary('standing');
  const leaked = generateAgentToken();
  const kept = generateAgentToken();
  const rsa = generateKeyPairSync('rsa', { modulusLength: 2048 });
  const rsaPem = rsa.publicKey.export({ type: 'spki', format: 'pem' }).toString();
  /** Every token used or minted in this file: each is a canary. */
  const tokens: string[] = [leaked.token, kept.token];
  const agentSeen: string[] = [];
  const dataDir = tempDir('airlock-standing-');
  let upstream: Upstream;
  let proxy: ProxyFixture;
  const logs: string[] = [];
  const audits: string[] = [];

  /** The config, with the agent's tokens, its grant's max_ttl and the JWT subject it accepts as given. */
  function input(agentTokens: string[], maxTtl: number, subject = 'ci:runner'): Record<string, unknown> {
    return {
      services: { api: { upstream: upstream.url, credential: { secret: 'env:STANDING_KEY', inject: 'bearer' }, routes: [{ method: 'GET', path: '/v1/*', scope: 'read' }] } },
      agents: {
        bot: { tokens: agentTokens, credentials: [{ service: 'api', max_scope: ['read'], max_ttl: maxTtl }] },
        ci: { jwt: { issuer: ISSUER, audience: 'airlock', subject, keys: [rsaPem], algorithms: ['RS256'] }, credentials: [{ service: 'api', max_scope: ['read'], max_ttl: maxTtl }] },
      },
    };
  }

  /** The proxies' clock: the real one, moved on by `skewMs`. */
  let skewMs = 0;
  const clock = (): Date => new Date(Date.now() + skewMs);

  const start = (next: Record<string, unknown>): Promise<ProxyFixture> => startProxy(next, { dataDir, env: { STANDING_KEY: serviceKey }, now: clock });

  async function reload(next: Record<string, unknown>): Promise<void> {
    const built = buildConfig({ listen: '127.0.0.1:0', data_dir: dataDir, ...next }, { baseDir: dataDir });
    if (built.config === null) throw new Error(built.problems.map((p) => formatProblem(p, null)).join('\n'));
    expect(await proxy.airlock.reload(built.config)).toEqual({ ok: true });
  }

  async function restart(next: Record<string, unknown>): Promise<void> {
    logs.push(proxy.logLines.join(''));
    await proxy.close();
    proxy = await start(next);
  }

  beforeAll(async () => {
    upstream = await startUpstream();
    proxy = await start(input([leaked.hash, kept.hash], 600));
  });

  afterAll(async () => {
    try {
      logs.push(proxy.logLines.join(''));
      audits.push(proxy.auditText());
      assertNoLeak(tokens, [
        { name: 'logs', text: logs.join('\n') },
        { name: 'audit', text: audits.join('\n') },
        { name: 'state file', text: readFileSync(join(dataDir, 'state.jsonl'), 'utf8') },
        { name: 'upstream', text: upstream.requests.map((r) => `${r.target}\n${r.rawHeaders.join('\n')}`).join('\n') },
      ]);
      assertNoLeak([serviceKey], [{ name: 'agent answers', text: agentSeen.join('\n') }]);
    } finally {
      await proxy?.close();
      await upstream?.close();
      rmSync(dataDir, { recursive: true, force: true });
    }
  });

  function keep(response: SentResponse): SentResponse {
    agentSeen.push(`${response.status}\n${JSON.stringify(response.headers)}\n${response.text}`);
    return response;
  }

  async function mint(token: string, ttl = 300): Promise<string> {
    const response = await sendRequest(`${proxy.url}/_airlock/sessions`, {
      method: 'POST',
      headers: { authorization: `Bearer ${token}`, 'content-type': 'application/json' },
      body: JSON.stringify({ scopes: { api: ['read'] }, ttl_seconds: ttl, justification: 'standing test' }),
    });
    expect(response.status, response.text).toBe(201);
    const minted = response.json<{ session_token: string }>().session_token;
    tokens.push(minted);
    return minted;
  }

  async function call(token: string): Promise<SentResponse> {
    return keep(await sendRequest(`${proxy.url}/api/v1/items`, { headers: { authorization: `Bearer ${token}` } }));
  }

  function expectRefused(response: SentResponse, what: string): Problem {
    expect(response.status, `${what}: ${response.text}`).toBe(401);
    const problem = response.json<Problem>();
    expect(problem.code, what).toBe('unauthenticated');
    return problem;
  }

  async function signJwt(subject: string): Promise<string> {
    const token = await new SignJWT({ sub: subject }).setProtectedHeader({ alg: 'RS256' }).setIssuer(ISSUER).setAudience('airlock').setIssuedAt().setExpirationTime('10m').sign(rsa.privateKey);
    tokens.push(token);
    return token;
  }

  it('a token rotated out of the config ends the sessions it minted (and their children), on reload and after a restart', async () => {
    const fromLeaked = await mint(leaked.token);
    const child = await mint(fromLeaked, 120);
    const fromKept = await mint(kept.token);
    for (const session of [fromLeaked, child, fromKept]) expect((await call(session)).status).toBe(200);

    await reload(input([kept.hash], 600));
    const refused = expectRefused(await call(fromLeaked), 'a session minted with the removed token');
    expect(refused.detail).toContain('minted with a credential agent bot no longer accepts');
    expectRefused(await call(child), 'a child of that session');
    expectRefused(await call(leaked.token), 'the removed token itself');
    // Minting from it is refused too.
    expectRefused(
      keep(
        await sendRequest(`${proxy.url}/_airlock/sessions`, {
          method: 'POST',
          headers: { authorization: `Bearer ${fromLeaked}`, 'content-type': 'application/json' },
          body: JSON.stringify({ scopes: { api: ['read'] }, justification: 'x' }),
        }),
      ),
      'minting from the session of the removed token',
    );
    expect((await call(fromKept)).status).toBe(200);

    // The sessions are kept in the state file: after a restart under the new config, still refused.
    audits.push(proxy.auditText());
    await restart(input([kept.hash], 600));
    expectRefused(await call(fromLeaked), 'after a restart');
    expectRefused(await call(child), 'its child, after a restart');
    expect((await call(fromKept)).status).toBe(200);
  });

  it('a JWT subject no longer accepted ends the sessions minted with it', async () => {
    const session = await mint(await signJwt('ci:runner'));
    expect((await call(session)).status).toBe(200);
    await reload(input([kept.hash], 600, 'ci:other-runner'));
    expectRefused(await call(session), 'a session of a subject the agent no longer accepts');
    // A session of the subject now accepted works.
    const current = await mint(await signJwt('ci:other-runner'));
    expect((await call(current)).status).toBe(200);
  });

  it('a lowered max_ttl ends the sessions older than it; younger ones live on', async () => {
    await reload(input([kept.hash], 600));
    const older = await mint(kept.token, 300);
    expect((await call(older)).status).toBe(200);
    // Two minutes pass on the proxy's clock: `older` is 120 s old, within its own ttl of 300 s.
    skewMs += 120_000;
    expect((await call(older)).status).toBe(200);
    await reload(input([kept.hash], 60));
    const refused = expectRefused(await call(older), 'a session older than the new max_ttl');
    expect(refused.detail).toContain('max_ttl of 60 seconds');
    // Minted now, it is as old as the real time this test takes from here: far below a minute.
    const younger = await mint(kept.token, 60);
    expect((await call(younger)).status).toBe(200);
    // And after a restart under the lowered max_ttl.
    audits.push(proxy.auditText());
    await restart(input([kept.hash], 60));
    expectRefused(await call(older), 'after a restart');
    expect((await call(younger)).status).toBe(200);
  });

  it('a session minted before sessions recorded their minting credential keeps working until it expires', async () => {
    const legacyDir = tempDir('airlock-standing-legacy-');
    const session = generateSessionToken();
    tokens.push(session.token);
    const now = Date.now();
    const record = { id: 'ses_legacy', tokenHash: session.hash, agent: 'bot', parent: null, scopes: { api: ['read'] }, justification: 'older version', taskId: null, createdAt: now - 5_000, expiresAt: now + 300_000 };
    writeFileSync(join(legacyDir, 'state.jsonl'), `${JSON.stringify({ type: 'session.created', session: record })}\n`, { mode: 0o600 });
    const legacy = await startProxy(input([kept.hash], 600), { dataDir: legacyDir, env: { STANDING_KEY: serviceKey } });
    try {
      const response = keep(await sendRequest(`${legacy.url}/api/v1/items`, { headers: { authorization: `Bearer ${session.token}` } }));
      expect(response.status, response.text).toBe(200);
      logs.push(legacy.logLines.join(''));
      audits.push(legacy.auditText());
    } finally {
      await legacy.close();
      rmSync(legacyDir, { recursive: true, force: true });
    }
  });
});
