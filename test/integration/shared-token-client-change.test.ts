/**
 * OAuth2 tokens shared through a real redis-server belong to one client's settings, not just its name:
 * a replica (or a reload) whose secrets.oauth2.crm names another token endpoint, client id, scope,
 * audience, params or auth method fetches its own token instead of injecting the one the previous
 * settings left in Redis (a broader scope, another tenant) for as long as that lives. And a huge
 * expires_in is stored with a finite life (it used to be sent to Redis as PX Infinity).
 * Skipped, loudly, without redis-server (test/support/redis-server.ts).
 */
import { randomBytes } from 'node:crypto';
import { Redis } from 'ioredis';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { buildConfig } from '../../src/config/load-config.js';
import { generateAgentToken } from '../../src/identity/agent-token.js';
import { assertNoLeak } from '../helpers/assert-no-leak.js';
import { canary } from '../helpers/canary.js';
import { sendRequest, type SentResponse } from '../helpers/send-request.js';
import { startProxy, type ProxyFixture } from '../helpers/start-proxy.js';
import { startUpstream, type RecordedRequest, type Upstream } from '../helpers/start-upstream.js';
import { startOAuth2Server, type OAuth2Server } from '../support/oauth2-server.js';
import { redisAvailable, startRedisServer, type RedisServer } from '../support/redis-server.js';

const available = redisAvailable();

describe.skipIf(!available)('OAuth2 tokens shared through Redis after the client changes', () => {
  const agent = generateAgentToken();
  const firstId = canary('change-cid1');
  const secondId = canary('change-cid2');
  const clientSecret = canary('change-csec');
  const env = { CID: firstId, CID2: secondId, CSEC: clientSecret, AIRLOCK_MASTER_KEY: randomBytes(32).toString('hex') };
  const agentSeen: string[] = [];
  const proxies: ProxyFixture[] = [];
  let redis: RedisServer;
  let client: Redis;
  let upstream: Upstream;
  let idpA: OAuth2Server;
  let idpB: OAuth2Server;

  const base = (): Record<string, unknown> => ({ token_url: idpA.tokenUrl, client_id: 'env:CID', client_secret: 'env:CSEC', scope: 'tickets.read tickets.write' });

  function input(prefix: string, oauthClient: Record<string, unknown>): Record<string, unknown> {
    return {
      state: { type: 'redis', url: redis.url, prefix, stale_after: 5 },
      anomalies: { enabled: false },
      secrets: { oauth2: { crm: oauthClient } },
      services: { crm: { upstream: upstream.url, credential: { secret: 'oauth2:crm', inject: 'bearer' }, routes: [{ method: 'GET', path: '/v1/*', scope: 'tickets:read' }] } },
      agents: { bot: { tokens: [agent.hash], credentials: [{ service: 'crm', max_scope: ['*'] }] } },
    };
  }

  async function replica(prefix: string, oauthClient: Record<string, unknown>): Promise<ProxyFixture> {
    const proxy = await startProxy(input(prefix, oauthClient), { env });
    proxies.push(proxy);
    return proxy;
  }

  function bearerOf(recorded: RecordedRequest | undefined): string | undefined {
    return recorded?.header('authorization')[0]?.replace(/^Bearer /, '');
  }

  /** One agent request; the token the upstream received. */
  async function injected(proxy: ProxyFixture): Promise<string | undefined> {
    const response: SentResponse = await sendRequest(`${proxy.url}/crm/v1/tickets`, { headers: { authorization: `Bearer ${agent.token}` } });
    agentSeen.push(`${response.status}\n${JSON.stringify(response.headers)}\n${response.text}`);
    expect(response.status, response.text).toBe(200);
    return bearerOf(upstream.requests.at(-1));
  }

  beforeAll(async () => {
    redis = await startRedisServer();
    client = new Redis(redis.url, { lazyConnect: true, maxRetriesPerRequest: 1 });
    await client.connect();
    const clients = [
      { clientId: firstId, clientSecret },
      { clientId: secondId, clientSecret },
    ];
    idpA = await startOAuth2Server({ clients, tokenFactory: () => canary('change-atA') });
    idpB = await startOAuth2Server({ clients, tokenFactory: () => canary('change-atB') });
    upstream = await startUpstream();
  });

  afterAll(async () => {
    await Promise.all(proxies.map((proxy) => proxy.close()));
    client?.disconnect();
    await Promise.all([idpA?.close(), idpB?.close(), upstream?.close(), redis?.close()]);
  });

  const variants: ReadonlyArray<readonly [string, (b: Record<string, unknown>) => Record<string, unknown>, (server: () => OAuth2Server) => void]> = [
    ['token_url', (b) => ({ ...b, token_url: idpB.tokenUrl }), (server) => expect(server()).toBe(idpB)],
    ['client_id', (b) => ({ ...b, client_id: 'env:CID2' }), (server) => expect(server().tokenRequests.at(-1)?.clientId).toBe(secondId)],
    ['scope', (b) => ({ ...b, scope: 'tickets.read' }), (server) => expect(server().tokenRequests.at(-1)?.scope).toBe('tickets.read')],
    ['audience', (b) => ({ ...b, audience: 'https://crm.example/api' }), (server) => expect(server().tokenRequests.at(-1)?.audience).toBe('https://crm.example/api')],
    ['params', (b) => ({ ...b, params: { resource: 'https://crm.example/v2' } }), (server) => expect(server().tokenRequests.at(-1)?.params['resource']).toBe('https://crm.example/v2')],
    ['auth_method', (b) => ({ ...b, auth_method: 'body' }), (server) => expect(server().tokenRequests.at(-1)?.authMethod).toBe('body')],
  ];

  variants.forEach(([setting, change, check], index) => {
    it(`a replica whose client differs in ${setting} does not take the stored token: it fetches its own`, async () => {
      const prefix = `change${index}:`;
      const before = await replica(prefix, base());
      const old = await injected(before);
      expect(idpA.issued).toContain(old);
      const changed = change(base());
      const server = changed['token_url'] === idpB.tokenUrl ? idpB : idpA;
      const issuedBefore = server.issued.length;
      const after = await replica(prefix, changed);
      const fresh = await injected(after);
      expect(fresh).not.toBe(old);
      expect(server.issued.slice(issuedBefore)).toContain(fresh);
      check(() => server);
      // The replica with the old settings still has its own token, and the two do not fight over one key.
      expect(await injected(before)).toBe(old);
    });
  });

  it('a reload that changes token_url and scope moves the replica to the new client at once', async () => {
    const proxy = await replica('reload:', base());
    const old = await injected(proxy);
    const next = buildConfig({ listen: '127.0.0.1:0', data_dir: proxy.dataDir, ...input('reload:', { ...base(), token_url: idpB.tokenUrl, scope: 'tickets.read' }) }, { baseDir: proxy.dataDir });
    if (next.config === null) throw new Error(JSON.stringify(next.problems));
    expect(await proxy.airlock.reload(next.config)).toMatchObject({ ok: true });
    const fresh = await injected(proxy);
    expect(fresh).not.toBe(old);
    expect(idpB.issued).toContain(fresh);
    expect(idpB.tokenRequests.at(-1)?.scope).toBe('tickets.read');
  });

  it('a huge expires_in is stored in Redis with a finite life of at most a day', async () => {
    idpA.setExpiresIn(1e306);
    try {
      const proxy = await replica('huge:', base());
      const token = await injected(proxy);
      expect(idpA.issued).toContain(token);
      const keys = await client.keys('huge:oauth2:crm*');
      expect(keys).toHaveLength(1);
      const ttl = await client.pttl(keys[0] as string);
      expect(ttl).toBeGreaterThan(0);
      expect(ttl).toBeLessThanOrEqual(24 * 3600_000);
    } finally {
      idpA.setExpiresIn(3600);
    }
  });

  it('leaks nothing: no token, client id or secret in Redis, responses or logs', async () => {
    const dump: string[] = [];
    for (const key of await client.keys('*')) {
      const type = await client.type(key);
      dump.push(type === 'string' ? `${key}=${(await client.get(key)) ?? ''}` : type === 'hash' ? `${key}=${JSON.stringify(await client.hgetall(key))}` : key);
    }
    assertNoLeak(
      [agent.token, firstId, secondId, clientSecret, env.AIRLOCK_MASTER_KEY, ...idpA.issued, ...idpB.issued],
      [
        { name: 'redis contents', text: dump.join('\n') },
        { name: 'agent responses', text: agentSeen.join('\n') },
        ...proxies.map((proxy, i) => ({ name: `log of replica ${i}`, text: proxy.logLines.join('') })),
        ...proxies.map((proxy, i) => ({ name: `audit of replica ${i}`, text: proxy.auditText() })),
      ],
    );
  });
});
