/**
 * How long an oauth2: token is used, from what its token endpoint said: the real credential broker
 * (built from a validated config, with the plans compile-policy.ts makes of it) asking a real token
 * endpoint over a socket, with the broker's clock moved by the test.
 *
 * Covered: an answer without a finite positive expires_in (missing, 0, negative, null, not a number,
 * 1e400) makes a token taken to live the credential's ttl, else secrets.cache.ttl, and a failing endpoint
 * then means 503 past it, whatever time has passed (it used to be kept for 365 days, max_staleness
 * overridden); a huge expires_in is believed up to a day; an ordinary one is still used until it ends.
 */
import { rmSync } from 'node:fs';
import { afterAll, afterEach, describe, expect, it } from 'vitest';
import { buildConfig } from '../../src/config/load-config.js';
import { createCredentialBroker, type CredentialBroker } from '../../src/credentials/credential-broker.js';
import type { Credential } from '../../src/credentials/credential.js';
import { generateAgentToken } from '../../src/identity/agent-token.js';
import { createLogging } from '../../src/observability/logger.js';
import { allCredentialPlans, compilePolicy } from '../../src/policy/compile-policy.js';
import { SecretCatalog } from '../../src/redaction/secret-catalog.js';
import { assertNoLeak } from '../helpers/assert-no-leak.js';
import { canary } from '../helpers/canary.js';
import { tempDir } from '../helpers/start-proxy.js';
import { startUpstream, type Upstream } from '../helpers/start-upstream.js';
import { startOAuth2Server, type OAuth2Server } from '../support/oauth2-server.js';

const agent = generateAgentToken();
const clientId = canary('lifetime-cid');
const clientSecret = canary('lifetime-csec');
const minted: string[] = [];
const logLines: string[] = [];
const servers: Array<OAuth2Server | Upstream> = [];
const dirs: string[] = [];
const HOUR = 3600_000;
const DAY = 24 * HOUR;

interface Rig {
  readonly broker: CredentialBroker;
  advance(ms: number): void;
  token(): Promise<string>;
}

let open: CredentialBroker[] = [];

function rig(tokenUrl: string, credential: Record<string, unknown> = {}): Rig {
  const dataDir = tempDir('airlock-oauth2-lifetime-');
  dirs.push(dataDir);
  const built = buildConfig(
    {
      listen: '127.0.0.1:0',
      data_dir: dataDir,
      secrets: { cache: { ttl: 300, max_staleness: 900 }, oauth2: { crm: { token_url: tokenUrl, client_id: 'env:CID', client_secret: 'env:CSEC' } } },
      services: { crm: { upstream: 'http://127.0.0.1:9', credential: { secret: 'oauth2:crm', inject: 'bearer', ...credential }, routes: [{ method: 'GET', path: '/v1/*', scope: 'crm:read' }] } },
      agents: { bot: { tokens: [agent.hash], credentials: [{ service: 'crm', max_scope: ['*'] }] } },
    },
    { baseDir: dataDir },
  );
  if (built.config === null) throw new Error(JSON.stringify(built.problems));
  const catalog = new SecretCatalog();
  const { logger } = createLogging('debug', { write: (line) => void logLines.push(line) }, catalog);
  let clock = Date.UTC(2030, 0, 1);
  const broker = createCredentialBroker(built.config, {
    env: { CID: clientId, CSEC: clientSecret },
    catalog,
    logger,
    plans: allCredentialPlans(compilePolicy(built.config)),
    now: () => clock,
  });
  open.push(broker);
  return {
    broker,
    advance(ms) {
      clock += ms;
    },
    async token() {
      const credential: Credential = await broker.resolve('oauth2:crm');
      return credential.reveal();
    },
  };
}

/**
 * A token endpoint answering `expires_in` written as raw JSON text (undefined: left out), or 503 when down.
 * `answered` is the status of each request it got, in order.
 */
async function rawEndpoint(): Promise<{ url: string; expiresIn: string | undefined; down: boolean; requests(): number; readonly answered: number[]; readonly upstream: Upstream }> {
  const state = { expiresIn: undefined as string | undefined, down: false };
  const answered: number[] = [];
  const upstream = await startUpstream((_req, res) => {
    if (state.down) {
      answered.push(503);
      res.writeHead(503, { 'content-type': 'application/json' });
      res.end('{"error":"temporarily_unavailable"}');
      return;
    }
    const token = canary('lifetime-at');
    minted.push(token);
    const body = `{"access_token":${JSON.stringify(token)},"token_type":"Bearer"${state.expiresIn === undefined ? '' : `,"expires_in":${state.expiresIn}`}}`;
    answered.push(200);
    res.writeHead(200, { 'content-type': 'application/json', 'cache-control': 'no-store' });
    res.end(body);
  });
  servers.push(upstream);
  return Object.assign(state, { url: `${upstream.url}/token`, requests: () => upstream.requests.length, answered, upstream });
}

afterEach(async () => {
  await Promise.all(open.map((broker) => broker.close()));
  open = [];
});

afterAll(async () => {
  await Promise.all(servers.map((server) => server.close()));
  for (const dir of dirs) rmSync(dir, { recursive: true, force: true });
  assertNoLeak([clientId, clientSecret, agent.token, ...minted], [{ name: 'log', text: logLines.join('') }]);
});

describe('an answer without a finite positive expires_in', () => {
  for (const [label, raw] of [
    ['missing', undefined],
    ['0', '0'],
    ['negative', '-60'],
    ['null', 'null'],
    ['not a number', '"soon"'],
    ['1e400 (Infinity once parsed)', '1e400'],
  ] as const) {
    it(`${label}: the token lives secrets.cache.ttl, then is fetched again`, async () => {
      const endpoint = await rawEndpoint();
      endpoint.expiresIn = raw;
      const { advance, token } = rig(endpoint.url, { max_staleness: 60 });
      const first = await token();
      advance(60_000);
      expect(await token()).toBe(first);
      // Past secrets.cache.ttl (300 s): a new token, not the first one for a year.
      advance(250_000);
      const second = await token();
      expect(second).not.toBe(first);
      expect(endpoint.requests()).toBe(2);
    });

    // On its own (not after a refetch that would already fail if the token outlived its assumed end), and
    // under secrets.cache.max_staleness (900 s), which alone would let the token be served three times as long.
    it(`${label}: with the endpoint down, the token is served until its assumed end, then 503 whatever time has passed`, async () => {
      const endpoint = await rawEndpoint();
      endpoint.expiresIn = raw;
      const { advance, token } = rig(endpoint.url);
      const first = await token();
      expect(endpoint.answered).toEqual([200]);
      endpoint.down = true;
      advance(60_000);
      expect(await token()).toBe(first);
      // Within its life the endpoint is not asked, down or not.
      expect(endpoint.answered).toEqual([200]);
      // 301 s after it was fetched: past its assumed end (secrets.cache.ttl, 300 s), well inside max_staleness.
      advance(241_000);
      await expect(token()).rejects.toMatchObject({ code: 'credential_unavailable', detail: expect.stringContaining('answered 503 without an access token') });
      // The broker asked the endpoint at that moment, once, rather than serving the token it had.
      expect(endpoint.answered).toEqual([200, 503]);
      advance(30 * DAY);
      await expect(token()).rejects.toMatchObject({ code: 'credential_unavailable' });
      expect(endpoint.answered).toEqual([200, 503, 503]);
      for (const request of endpoint.upstream.requests) {
        expect(request.method).toBe('POST');
        expect(request.target).toBe('/token');
        expect(new URLSearchParams(request.body.toString('utf8')).get('grant_type')).toBe('client_credentials');
      }
    });
  }

  it("the credential's own ttl is the token's lifetime when it has one", async () => {
    const endpoint = await rawEndpoint();
    const { advance, token } = rig(endpoint.url, { ttl: 120 });
    const first = await token();
    advance(121_000);
    expect(await token()).not.toBe(first);
    expect(endpoint.requests()).toBe(2);
  });
});

describe('an expires_in that is finite and positive', () => {
  it('is believed up to a day: 1e306 s is one day, not Infinity', async () => {
    const idp = await startOAuth2Server({ clients: [{ clientId, clientSecret }], tokenFactory: () => mint() });
    servers.push(idp);
    idp.setExpiresIn(1e306);
    const { broker, advance, token } = rig(idp.tokenUrl);
    const first = await token();
    const servable = broker.status().find((s) => s.ref === 'oauth2:crm')?.servableForSeconds ?? Infinity;
    expect(servable).toBeLessThanOrEqual(DAY / 1000);
    expect(servable).toBeGreaterThan(DAY / 1000 - 3600);
    advance(DAY);
    expect(await token()).not.toBe(first);
    expect(idp.issued).toHaveLength(2);
  });

  it('an ordinary one (3600 s) is still used until it nears its end, past secrets.cache.ttl', async () => {
    const idp = await startOAuth2Server({ clients: [{ clientId, clientSecret }], tokenFactory: () => mint() });
    servers.push(idp);
    const { advance, token } = rig(idp.tokenUrl);
    const first = await token();
    advance(2_000_000);
    expect(await token()).toBe(first);
    expect(idp.issued).toHaveLength(1);
    advance(HOUR - 2_000_000);
    expect(await token()).not.toBe(first);
  });

  // Found by review: with expires_in <= refresh_skew (30 s) + the cache's 5 s margin the token was never
  // fresh, and each request asked the endpoint for a new one (81 token requests for 81 calls in 5 s).
  it.each([20, 8, 2])('a short one (%i s) is used for a while, not fetched again for every request', async (seconds) => {
    const idp = await startOAuth2Server({ clients: [{ clientId, clientSecret }], tokenFactory: () => mint() });
    servers.push(idp);
    idp.setExpiresIn(seconds);
    const { advance, token } = rig(idp.tokenUrl);
    const first = await token();
    // Ten requests over a quarter of its life: the same token.
    for (let i = 0; i < 10; i++) {
      advance((seconds * 1000) / 40);
      expect(await token()).toBe(first);
    }
    expect(idp.issued).toHaveLength(1);
    // Past its life: a new one.
    advance(seconds * 1000);
    expect(await token()).not.toBe(first);
    expect(idp.issued).toHaveLength(2);
  });
});

function mint(): string {
  const token = canary('lifetime-at');
  minted.push(token);
  return token;
}
