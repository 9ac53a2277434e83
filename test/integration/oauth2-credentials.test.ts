/**
 * oauth2: credentials end to end: a real Airlock (startProxy) in front of a recording upstream that only
 * accepts access tokens the OAuth2 stand-in (test/support/oauth2-server.ts) issued, with the client
 * secret itself coming from Vault (vault:, through node-vault and the Vault stand-in) or from the
 * encrypted secrets file (file:, stored with `airlock secrets set`).
 *
 * Covered: Bearer injection; Basic and body client authentication with scope, audience and extra params
 * (and form-encoding of awkward characters); a burst of 500 concurrent requests with an empty cache makes
 * exactly one token request; the token is refreshed ahead of its expiry with no failed request;
 * invalid_grant / invalid_client is an immediate 503 naming the error, without a retry storm; a token
 * endpoint that is down is a 503; a client secret from Vault that is not well-formed text is refused
 * before the token endpoint is asked; no access token or client secret reaches responses, logs or audit.
 */
import { rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { CliIo } from '../../src/cli/cli-io.js';
import { runCli } from '../../src/cli/run-cli.js';
import { generateAgentToken } from '../../src/identity/agent-token.js';
import { assertNoLeak } from '../helpers/assert-no-leak.js';
import { canary } from '../helpers/canary.js';
import { eventually, sleep } from '../helpers/operator.js';
import { sendRequest, type Problem, type SendOptions, type SentResponse } from '../helpers/send-request.js';
import { startProxy, tempDir, type ProxyFixture, type ProxyOptions } from '../helpers/start-proxy.js';
import { refusingHandler, startUpstream, type RecordedRequest, type Upstream } from '../helpers/start-upstream.js';
import { startOAuth2Server, type OAuth2Server } from '../support/oauth2-server.js';
import { expectOneTokenPerForcedFetch } from '../support/token-storm.js';
import { startVaultServer, type VaultServer } from '../support/vault-server.js';

const agent = generateAgentToken();
const adminToken = generateAgentToken();
const planted: string[] = [agent.token, adminToken.token];
const tokenServers: OAuth2Server[] = [];
const proxies: ProxyFixture[] = [];
const seen: string[] = [];
const dirs: string[] = [];
let vault: VaultServer;
let upstream: Upstream;

function plant(label: string, suffix = ''): string {
  const value = `${canary(label)}${suffix}`;
  planted.push(value);
  return value;
}

async function tokenServer(): Promise<OAuth2Server> {
  const server = await startOAuth2Server();
  tokenServers.push(server);
  return server;
}

function allCanaries(): string[] {
  return [...planted, ...tokenServers.flatMap((s) => [...s.issued]), ...vault.issuedTokens()];
}

function service(secret: string): Record<string, unknown> {
  return { upstream: upstream.url, credential: { secret, inject: 'bearer' }, routes: [{ method: ['GET', 'POST'], path: '/v1/*', scope: 'tickets:call' }] };
}

function agents(...services: string[]): Record<string, unknown> {
  return { bot: { tokens: [agent.hash], credentials: services.map((name) => ({ service: name, max_scope: ['*'] })) } };
}

async function start(input: Record<string, unknown>, options: ProxyOptions = {}): Promise<ProxyFixture> {
  const proxy = await startProxy(input, options);
  proxies.push(proxy);
  return proxy;
}

async function call(proxy: ProxyFixture, serviceName: string, path = '/v1/tickets', options: SendOptions = {}): Promise<SentResponse> {
  const response = await sendRequest(`${proxy.url}/${serviceName}${path}`, { ...options, headers: { authorization: `Bearer ${agent.token}`, ...(options.headers ?? {}) } });
  seen.push(`${response.status}\n${JSON.stringify(response.headers)}\n${response.text}`);
  return response;
}

function bearerOf(recorded: RecordedRequest | undefined): string | undefined {
  return recorded?.header('authorization')[0]?.replace(/^Bearer /, '');
}

function expectUnavailable(response: SentResponse): Problem {
  expect(response.status, response.text).toBe(503);
  const problem = response.json<Problem>();
  expect(problem.code).toBe('credential_unavailable');
  expect(problem.error.message).toBe(problem.detail);
  return problem;
}

beforeAll(async () => {
  vault = await startVaultServer();
  // The upstream is a protected resource: only unexpired tokens from one of the stand-ins pass.
  upstream = await startUpstream((_req, res, recorded) => {
    const token = bearerOf(recorded) ?? '';
    const grant = tokenServers.map((s) => s.validate(token)).find((g) => g !== undefined);
    const body = grant === undefined ? '{"error":"invalid_token"}' : JSON.stringify({ ok: true, scope: grant.scope });
    res.writeHead(grant === undefined ? 401 : 200, { 'content-type': 'application/json', 'content-length': Buffer.byteLength(body) });
    res.end(body);
  });
});

afterAll(async () => {
  await Promise.all(proxies.map((p) => p.close()));
  await Promise.all(tokenServers.map((s) => s.close()));
  await upstream?.close();
  await vault?.close();
  for (const dir of dirs) rmSync(dir, { recursive: true, force: true });
});

describe('an oauth2: credential', () => {
  // Characters that must be form-encoded before Basic (RFC 6749 2.3.1): a colon in the id, + / : % in the secret.
  const basicId = 'airlock-crm:prod';
  const basicSecret = plant('crm-secret', '+/:% x');
  const bodyId = 'airlock-helpdesk';
  const bodySecret = plant('helpdesk-secret');
  let basicServer: OAuth2Server;
  let bodyServer: OAuth2Server;
  let proxy: ProxyFixture;
  let approvalHook: Upstream;
  const escalator = generateAgentToken();

  beforeAll(async () => {
    approvalHook = await startUpstream();
    basicServer = await tokenServer();
    basicServer.addClient({ clientId: basicId, clientSecret: basicSecret, allowedScopes: ['tickets.read', 'tickets.write'] });
    bodyServer = await tokenServer();
    bodyServer.addClient({ clientId: bodyId, clientSecret: bodySecret });
    vault.putSecret('secret', 'crm', { client_secret: basicSecret });

    const dataDir = tempDir('airlock-oauth2-');
    dirs.push(dataDir);
    const input = {
      secrets: {
        vault: { address: vault.url, timeout: 2, auth: { method: 'token', token: 'env:VAULT_TOKEN' } },
        oauth2: {
          crm: {
            token_url: basicServer.tokenUrl,
            client_id: 'env:CRM_CLIENT_ID',
            client_secret: 'vault:secret/crm#client_secret',
            scope: 'tickets.read tickets.write',
            audience: 'https://api.crm.example',
            params: { resource: 'urn:crm:tickets', tenant: 'acme' },
            auth_method: 'basic',
          },
          helpdesk: {
            token_url: bodyServer.tokenUrl,
            client_id: 'env:HELPDESK_CLIENT_ID',
            client_secret: 'file:helpdesk-client-secret',
            scope: 'tickets.read',
            audience: 'helpdesk',
            params: { region: 'eu' },
            auth_method: 'body',
          },
        },
      },
      services: {
        crm: { ...service('oauth2:crm'), routes: [{ method: 'POST', path: '/v1/escalations/*', scope: 'tickets:escalate', require_approval: true }, ...(service('oauth2:crm')['routes'] as unknown[])] },
        helpdesk: service('oauth2:helpdesk'),
      },
      agents: { ...agents('crm', 'helpdesk'), escalator: { tokens: [escalator.hash], credentials: [{ service: 'crm', max_scope: ['*'], approval_mode: 'async', approval_timeout: 60 }] } },
      admin: { listen: '127.0.0.1:0', tokens: [adminToken.hash] },
      approvals: { webhook: `${approvalHook.url}/hook` },
    };
    const configFile = join(dataDir, 'airlock.yaml');
    writeFileSync(configFile, JSON.stringify({ listen: '127.0.0.1:0', data_dir: dataDir, ...input }, null, 2));
    let cliOut = '';
    const io: CliIo = {
      args: ['secrets', 'set', 'helpdesk-client-secret', '--config', configFile],
      env: {},
      cwd: dataDir,
      stdout: { write: (text: string) => (cliOut += text) },
      stderr: { write: (text: string) => (cliOut += text) },
      stdin: (async function* stdinChunks() {
        yield Buffer.from(bodySecret, 'utf8');
      })(),
      stopRequested: new Promise<string>(() => undefined),
    };
    expect(await runCli(io), cliOut).toBe(0);
    seen.push(cliOut);
    proxy = await start(input, { dataDir, env: { VAULT_TOKEN: vault.createToken(), CRM_CLIENT_ID: basicId, HELPDESK_CLIENT_ID: bodyId } });
  });

  afterAll(async () => {
    await approvalHook?.close();
  });

  it('injects the access token as Bearer; the token request used Basic with scope, audience and extra params', async () => {
    const response = await call(proxy, 'crm');
    expect(response.status, response.text).toBe(200);
    expect(upstream.requests.at(-1)?.header('authorization')).toEqual([`Bearer ${basicServer.issued[0]}`]);
    expect(basicServer.issued).toHaveLength(1);
    expect(basicServer.tokenRequests).toHaveLength(1);
    expect(basicServer.tokenRequests[0]).toMatchObject({
      method: 'POST',
      path: '/token',
      authMethod: 'basic',
      clientId: basicId,
      grantType: 'client_credentials',
      scope: 'tickets.read tickets.write',
      audience: 'https://api.crm.example',
      status: 200,
      params: { grant_type: 'client_credentials', scope: 'tickets.read tickets.write', audience: 'https://api.crm.example', resource: 'urn:crm:tickets', tenant: 'acme' },
    });
    expect(basicServer.tokenRequests[0]?.contentType).toMatch(/^application\/x-www-form-urlencoded/);
    // The client secret came from Vault, read once.
    expect(vault.count('kv-read')).toBe(1);
  });

  it('authenticates in the body when auth_method is body, with the secret from file:', async () => {
    const response = await call(proxy, 'helpdesk');
    expect(response.status, response.text).toBe(200);
    expect(bearerOf(upstream.requests.at(-1))).toBe(bodyServer.issued[0]);
    expect(bodyServer.tokenRequests).toHaveLength(1);
    expect(bodyServer.tokenRequests[0]).toMatchObject({ authMethod: 'body', clientId: bodyId, grantType: 'client_credentials', scope: 'tickets.read', audience: 'helpdesk', status: 200 });
    expect(bodyServer.tokenRequests[0]?.params).toEqual({ grant_type: 'client_credentials', scope: 'tickets.read', audience: 'helpdesk', region: 'eu', client_id: bodyId });
  });

  // A client_id names the client; it is scrubbed from outputs like a secret, but a request that mentions
  // it is not refused as one carrying a credential (found by review: "the airlock-crm integration").
  it('a request body naming the OAuth2 client_id is forwarded; one carrying the client secret is refused 400', async () => {
    const before = upstream.requests.length;
    const named = await call(proxy, 'crm', '/v1/tickets', { method: 'POST', headers: { 'content-type': 'text/plain' }, body: `ticket about ${basicId}` });
    expect(named.status, named.text).toBe(200);
    expect(upstream.requests.length).toBe(before + 1);
    expect(upstream.requests.at(-1)?.body.toString('utf8')).toBe(`ticket about ${basicId}`);
    const carried = await call(proxy, 'crm', '/v1/tickets', { method: 'POST', headers: { 'content-type': 'text/plain' }, body: `secret ${basicSecret}` });
    expect(carried.status, carried.text).toBe(400);
    expect(carried.json<Problem>().detail).toContain('vault:secret/crm#client_secret');
    expect(upstream.requests.length).toBe(before + 1);
  });

  // The request guard lets a client_id through (it names the client), but the catalogue scrubs it from
  // every output: the approval announcement quotes the agent's path, and must show [REDACTED] there.
  it('an approval announcement quoting a path that names the client_id is posted scrubbed', async () => {
    expect((await call(proxy, 'crm')).status).toBe(200);
    const before = approvalHook.requests.length;
    const response = await sendRequest(`${proxy.url}/crm/v1/escalations/${basicId}`, { method: 'POST', headers: { authorization: `Bearer ${escalator.token}`, 'content-type': 'application/json' }, body: '{}' });
    seen.push(response.text);
    expect(response.status, response.text).toBe(202);
    const posted = await eventually('the approval announcement', () => approvalHook.requests.slice(before).at(0), 5_000, 10);
    const text = posted.body.toString('utf8');
    seen.push(text);
    expect(JSON.parse(text)).toMatchObject({ type: 'airlock.approval.pending', path: '/crm/v1/escalations/[REDACTED]' });
    assertNoLeak([basicId], [{ name: 'approval webhook', text }]);
  });

  it('reuses the cached token for later requests', async () => {
    for (let i = 0; i < 5; i++) expect((await call(proxy, 'crm')).status).toBe(200);
    expect(basicServer.tokenRequests).toHaveLength(1);
    expect(new Set(upstream.requests.filter((r) => basicServer.issued.includes(bearerOf(r) ?? '')).map(bearerOf)).size).toBe(1);
  });

  it('shows the token in the admin API by reference and issue time only', async () => {
    const response = await sendRequest(`${proxy.airlock.adminUrl as string}/v1/credentials`, { headers: { authorization: `Bearer ${adminToken.token}` } });
    seen.push(response.text);
    expect(response.status).toBe(200);
    const entry = response.json<{ credentials: Array<Record<string, unknown>> }>().credentials.find((c) => c['ref'] === 'oauth2:crm');
    expect(entry).toMatchObject({ ref: 'oauth2:crm', state: 'fresh', failing: false });
    expect(String(entry?.['generation'])).toMatch(/^issued \d{4}-/);
    assertNoLeak(allCanaries(), [{ name: 'admin', text: response.text }]);
  });
});

describe('token endpoint down, then a burst of 500 with an empty cache', () => {
  const clientSecret = plant('burst-secret');
  let server: OAuth2Server;
  let proxy: ProxyFixture;

  beforeAll(async () => {
    server = await tokenServer();
    server.addClient({ clientId: 'burst-client', clientSecret });
    server.setMode('down');
    proxy = await start(
      {
        secrets: { oauth2: { burst: { token_url: server.tokenUrl, client_id: 'env:BURST_ID', client_secret: 'env:BURST_SECRET', timeout: 2 } } },
        services: { burst: service('oauth2:burst') },
        agents: agents('burst'),
      },
      { env: { BURST_ID: 'burst-client', BURST_SECRET: clientSecret } },
    );
  });

  it('a token endpoint that is down gives 503 credential_unavailable, nothing forwarded', async () => {
    const before = upstream.requests.length;
    const problem = expectUnavailable(await call(proxy, 'burst'));
    expect(problem.detail).toContain('burst');
    expect(problem.detail).toMatch(/did not answer/);
    expect(upstream.requests.length).toBe(before);
    expect(server.droppedConnections).toBeGreaterThan(0);
  });

  it('500 concurrent requests with nothing cached cause exactly one token request', async () => {
    server.setMode('ok');
    // Let the backoff of the failures above (at most two: 0.5 s then 1 s) run out, so the burst reaches the endpoint.
    await sleep(1_200);
    server.resetObservations();
    const before = upstream.requests.length;
    const responses = await Promise.all(Array.from({ length: 500 }, (_, i) => call(proxy, 'burst', `/v1/tickets?n=${i}`, { timeoutMs: 20_000 })));
    expect(responses.filter((r) => r.status !== 200).map((r) => r.status)).toEqual([]);
    expect(server.tokenRequests).toHaveLength(1);
    expect(server.issued).toHaveLength(1);
    const forwarded = upstream.requests.slice(before);
    expect(forwarded).toHaveLength(500);
    expect(new Set(forwarded.map(bearerOf))).toEqual(new Set([server.issued[0]]));
  });
});

describe('refresh ahead of expiry', () => {
  const clientSecret = plant('refresh-secret');
  let server: OAuth2Server;
  let proxy: ProxyFixture;

  beforeAll(async () => {
    server = await tokenServer();
    server.addClient({ clientId: 'refresh-client', clientSecret });
    // Valid 8 s; Airlock counts it good for 8 - refresh_skew (1) = 7 s, treats it as fresh until 5 s before
    // that (2 s) and refreshes it in the background from 3/4 of that (1.5 s).
    server.setExpiresIn(8);
    proxy = await start(
      {
        secrets: { oauth2: { refresh: { token_url: server.tokenUrl, client_id: 'env:REFRESH_ID', client_secret: 'env:REFRESH_SECRET', refresh_skew: 1 } } },
        services: { refresh: service('oauth2:refresh') },
        agents: agents('refresh'),
      },
      { env: { REFRESH_ID: 'refresh-client', REFRESH_SECRET: clientSecret } },
    );
  });

  it('fetches a new token before the old one expires, with no failed request in between', async () => {
    const started = Date.now();
    const statuses: number[] = [];
    const before = upstream.requests.length;
    while (Date.now() - started < 3_500) {
      statuses.push((await call(proxy, 'refresh')).status);
      await sleep(25);
    }
    expect(statuses.length).toBeGreaterThan(20);
    expect(statuses.filter((s) => s !== 200)).toEqual([]);
    const used = upstream.requests.slice(before).map(bearerOf);
    // At least one refresh happened, the stream moved to the new token, and never went back.
    expect(server.issued.length).toBeGreaterThanOrEqual(2);
    const order = used.map((t) => server.issued.indexOf(t ?? ''));
    expect(order.every((i) => i >= 0)).toBe(true);
    expect(order.every((i, n) => n === 0 || i >= (order[n - 1] as number))).toBe(true);
    expect(Math.max(...order)).toBeGreaterThanOrEqual(1);
    // Each new token was asked for while the previous one was still valid, and not once per request.
    for (let i = 1; i < server.grants.length; i++) {
      const previous = server.grants[i - 1];
      const next = server.grants[i];
      expect((next?.issuedAt ?? Infinity) < (previous?.issuedAt ?? 0) + (previous?.expiresIn ?? 0) * 1000).toBe(true);
    }
    expect(server.tokenRequests.length).toBeLessThanOrEqual(5);
    expect(server.tokenRequests.every((r) => r.status === 200)).toBe(true);
  });
});

describe('an upstream that refuses every token (retry_on [401], no shared state)', () => {
  const clientSecret = plant('refused-secret');
  let server: OAuth2Server;
  let refusing: Upstream;
  let proxy: ProxyFixture;

  beforeAll(async () => {
    server = await tokenServer();
    server.addClient({ clientId: 'refused-client', clientSecret });
    // A provider that has disabled the account: every token, old or new, is refused, and named.
    refusing = await startUpstream(refusingHandler);
    proxy = await start(
      {
        secrets: { oauth2: { refused: { token_url: server.tokenUrl, client_id: 'env:REFUSED_ID', client_secret: 'env:REFUSED_SECRET' } } },
        services: { refused: { upstream: refusing.url, credential: { secret: 'oauth2:refused', inject: 'bearer', retry_on: [401] }, routes: [{ method: 'GET', path: '/v1/*', scope: 'tickets:call' }] } },
        agents: agents('refused'),
      },
      { env: { REFUSED_ID: 'refused-client', REFUSED_SECRET: clientSecret } },
    );
  });

  afterAll(async () => {
    await refusing?.close();
  });

  it('costs a new token per forced-fetch interval, not one per refused request', async () => {
    const minted = await expectOneTokenPerForcedFetch((n) => call(proxy, 'refused', `/v1/tickets?n=${n}`), server);
    // Every token the upstream saw was one the token endpoint issued, and none was sent again after a
    // newer one had been.
    const order = refusing.requests.map((r) => server.issued.indexOf(bearerOf(r) ?? ''));
    expect(order.every((i) => i >= 0)).toBe(true);
    expect(order.every((i, n) => n === 0 || i >= (order[n - 1] as number))).toBe(true);
    expect(refusing.requests.length).toBeLessThanOrEqual(20 + minted);
  });
});

describe('a client the token endpoint refuses', () => {
  const secrets = { invalid_grant: plant('grant-secret'), invalid_client: plant('client-secret') };
  const servers: Partial<Record<keyof typeof secrets, OAuth2Server>> = {};
  let proxy: ProxyFixture;

  beforeAll(async () => {
    const oauth2: Record<string, unknown> = {};
    const services: Record<string, unknown> = {};
    const env: Record<string, string> = {};
    for (const mode of ['invalid_grant', 'invalid_client'] as const) {
      const server = await tokenServer();
      server.addClient({ clientId: `client-${mode}`, clientSecret: secrets[mode] });
      server.setMode(mode);
      servers[mode] = server;
      const name = mode.replace('_', '-');
      oauth2[name] = { token_url: server.tokenUrl, client_id: `env:ID_${mode.toUpperCase()}`, client_secret: `env:SECRET_${mode.toUpperCase()}` };
      services[name] = service(`oauth2:${name}`);
      env[`ID_${mode.toUpperCase()}`] = `client-${mode}`;
      env[`SECRET_${mode.toUpperCase()}`] = secrets[mode];
    }
    proxy = await start({ secrets: { oauth2 }, services, agents: agents(...Object.keys(services)) }, { env });
  });

  for (const mode of ['invalid_grant', 'invalid_client'] as const) {
    it(`${mode}: an immediate 503 naming the error, and a burst of 100 after it causes at most a couple of token requests`, async () => {
      const server = servers[mode] as OAuth2Server;
      const name = mode.replace('_', '-');
      const before = upstream.requests.length;
      const first = expectUnavailable(await call(proxy, name));
      expect(first.detail).toContain(mode);
      expect(first.detail).toContain(`secrets.oauth2.${name}`);
      const asked = server.tokenRequests.length;
      expect(asked).toBeGreaterThanOrEqual(1);
      expect(server.tokenRequests.every((r) => r.error === mode)).toBe(true);

      const burst = await Promise.all(Array.from({ length: 100 }, () => call(proxy, name, '/v1/tickets', { timeoutMs: 5_000 })));
      for (const response of burst) expect(expectUnavailable(response).detail).toContain(mode);
      expect(server.tokenRequests.length - asked).toBeLessThanOrEqual(2);
      expect(upstream.requests.length).toBe(before);
    });
  }
});

// "\ud800" is valid JSON, so Vault can hold a client secret with an unpaired surrogate. Such a value
// cannot be scrubbed from outputs and would be sent altered (UTF-8 has no form for it), so a store
// login or an OAuth2 client reading it through the broker refuses it, as injection does.
describe('a client secret from Vault that is not well-formed text', () => {
  it('is a 503 naming the reference; the token endpoint is never asked; a well-formed service keeps working', async () => {
    const server = await tokenServer();
    const good = plant('good-client-secret');
    server.addClient({ clientId: 'lone', clientSecret: 'never-used' });
    server.addClient({ clientId: 'good', clientSecret: good });
    vault.putSecret('secret', 'lone', { client_secret: `${plant('lone-client-secret')}\ud800` });
    vault.putSecret('secret', 'good', { client_secret: good });
    const vaultSpec = { address: vault.url, timeout: 2, auth: { method: 'token', token: 'env:VAULT_TOKEN' } };
    const proxy = await start(
      {
        secrets: {
          vault: vaultSpec,
          oauth2: {
            lone: { token_url: server.tokenUrl, client_id: 'env:LONE_ID', client_secret: 'vault:secret/lone#client_secret' },
            good: { token_url: server.tokenUrl, client_id: 'env:GOOD_ID', client_secret: 'vault:secret/good#client_secret' },
          },
        },
        services: { lone: service('oauth2:lone'), good: service('oauth2:good') },
        agents: agents('lone', 'good'),
      },
      { env: { VAULT_TOKEN: vault.createToken(), LONE_ID: 'lone', GOOD_ID: 'good' } },
    );
    const before = upstream.requests.length;
    const problem = expectUnavailable(await call(proxy, 'lone'));
    expect(problem.detail).toContain('oauth2:lone');
    // The operator's log names the store value to fix (the agent's detail stays generic).
    expect(proxy.logLines.some((line) => line.includes('the credential vault:secret/lone#client_secret is not well-formed text'))).toBe(true);
    expect(server.tokenRequests.filter((r) => r.clientId === 'lone')).toEqual([]);
    expect(upstream.requests.length).toBe(before);
    // The next request, to a client whose secret is well-formed, is served with its own token.
    expect((await call(proxy, 'good')).status).toBe(200);
    expect(server.tokenRequests.filter((r) => r.clientId === 'good')).toHaveLength(1);
    expect(upstream.requests.length).toBe(before + 1);
  });
});

describe('containment', () => {
  it('no access token, client secret or Vault token appears in responses, logs or audit', () => {
    expect(proxies.length).toBeGreaterThan(0);
    expect(tokenServers.reduce((n, s) => n + s.issued.length, 0)).toBeGreaterThan(3);
    for (const proxy of proxies) {
      assertNoLeak(allCanaries(), [
        { name: 'agent responses', text: seen.join('\n') },
        { name: 'log', text: proxy.logLines.join('') },
        { name: 'audit', text: proxy.auditText() },
      ]);
    }
  });
});
