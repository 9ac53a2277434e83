/**
 * The Vault stand-in (test/support/vault-server.ts) answers the real `node-vault` client the way Vault's
 * documented HTTP API does: the paths, methods and bodies node-vault sends for approleLogin,
 * kubernetesLogin, tokenLookupSelf, tokenRenewSelf, read/write (KV v2), renew/revoke (sys/leases) and
 * health, and Vault's error shape `{"errors":[...]}` with its status codes, over real sockets on 127.0.0.1.
 * Every client call is bounded by an axios timeout, so a broken stand-in fails instead of hanging.
 */
import { execFileSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import vault from 'node-vault';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { canary } from '../helpers/canary.js';
import { startVaultServer, tokenFingerprint, type VaultServer, type VaultServerOptions } from '../support/vault-server.js';

type VaultClient = ReturnType<typeof vault>;

interface ClientOptions {
  token?: string;
  namespace?: string;
  timeoutMs?: number;
  ca?: string;
}

/** A node-vault client that never falls back to VAULT_* environment variables. */
function vaultClient(server: VaultServer, opts: ClientOptions = {}): VaultClient {
  const config: Parameters<typeof vault>[0] & { rpDefaults: Record<string, unknown> } = {
    endpoint: server.url,
    apiVersion: 'v1',
    pathPrefix: '',
    rpDefaults: { timeout: opts.timeoutMs ?? 5_000, strictSSL: true },
    ...(opts.ca === undefined ? {} : { requestOptions: { ca: opts.ca } }),
  };
  const client = vault(config);
  client.token = opts.token ?? '';
  const loose = client as unknown as { namespace: string | undefined; pathPrefix: string };
  loose.namespace = opts.namespace;
  loose.pathPrefix = '';
  return client;
}

interface CaughtApiError {
  readonly name: string;
  readonly message: string;
  readonly response: { readonly statusCode: number; readonly body: unknown };
}

/** Awaits a promise that must reject with node-vault's ApiResponseError and returns that error. */
async function apiError(promise: Promise<unknown>): Promise<CaughtApiError> {
  const error: unknown = await promise.then(
    () => {
      throw new Error('expected the call to fail');
    },
    (caught: unknown) => caught,
  );
  expect((error as object).constructor.name).toBe('ApiResponseError');
  return error as CaughtApiError;
}

/** Awaits a promise that must reject with a transport error (axios) and returns its code. */
async function transportErrorCode(promise: Promise<unknown>): Promise<string | undefined> {
  const error: unknown = await promise.then(
    () => {
      throw new Error('expected the call to fail');
    },
    (caught: unknown) => caught,
  );
  expect((error as object).constructor.name).not.toBe('ApiResponseError');
  return (error as { code?: string }).code;
}

let server: VaultServer;

async function fresh(options: VaultServerOptions = {}): Promise<VaultServer> {
  await server?.close();
  server = await startVaultServer(options);
  return server;
}

beforeEach(async () => {
  server = await startVaultServer();
});

afterEach(async () => {
  await server.close();
});

describe('sys/health', () => {
  it('reports an initialized, unsealed, active server without a token, and 503 + sealed when sealed', async () => {
    const client = vaultClient(server);
    const healthy = await client.health();
    expect(healthy).toMatchObject({ initialized: true, sealed: false, standby: false });
    expect(typeof healthy.version).toBe('string');
    expect(server.requests.at(-1)).toMatchObject({ endpoint: 'health', status: 200, tokenPresented: false });

    server.seal();
    // node-vault hands back the health body whatever the status; the status itself is Vault's 503.
    expect(await client.health()).toMatchObject({ initialized: true, sealed: true });
    expect(server.requests.at(-1)?.status).toBe(503);
    expect((await client.health({ sealedcode: 200 })).sealed).toBe(true);
    expect(server.requests.at(-1)?.status).toBe(200);

    const token = server.createToken();
    const sealedRead = await apiError(vaultClient(server, { token }).read('secret/data/anything'));
    expect(sealedRead.response.statusCode).toBe(503);
    expect(sealedRead.message).toBe('Vault is sealed');

    server.unseal();
    expect((await client.health()).sealed).toBe(false);
    expect(server.count('health')).toBe(4);
  });
});

describe('AppRole login', () => {
  it('exchanges role_id/secret_id for a token node-vault then uses, and rejects wrong ids with 400', async () => {
    const roleId = canary('roleid');
    const secretId = canary('secretid');
    server.addAppRole(roleId, secretId, { roleName: 'airlock', tokenTtl: 600, policies: ['default', 'airlock-read'] });
    const client = vaultClient(server);

    const login = await client.approleLogin({ role_id: roleId, secret_id: secretId });
    expect(login.auth).toMatchObject({
      lease_duration: 600,
      renewable: true,
      policies: ['default', 'airlock-read'],
      metadata: { role_name: 'airlock' },
    });
    expect(typeof login.auth.client_token).toBe('string');
    expect(typeof login.auth.accessor).toBe('string');
    expect(client.token).toBe(login.auth.client_token); // node-vault adopts the login token
    expect(server.issuedTokens()).toContain(login.auth.client_token);

    const self = await client.tokenLookupSelf();
    expect(self.data).toMatchObject({ id: login.auth.client_token, renewable: true, policies: ['default', 'airlock-read'] });
    expect(self.data.ttl).toBeGreaterThan(590);
    expect(self.data.ttl).toBeLessThanOrEqual(600);

    const wrong = await apiError(vaultClient(server).approleLogin({ role_id: roleId, secret_id: canary('wrongsecret') }));
    expect(wrong.response.statusCode).toBe(400);
    expect(wrong.response.body).toEqual({ errors: ['invalid role or secret ID'] });
    const unknownRole = await apiError(vaultClient(server).approleLogin({ role_id: canary('otherrole'), secret_id: secretId }));
    expect(unknownRole.message).toBe('invalid role or secret ID');

    expect(server.count('approle-login')).toBe(3);
    expect(server.count('lookup-self')).toBe(1);
    const [loginRecord, lookupRecord] = server.requests;
    expect(loginRecord).toMatchObject({ method: 'POST', path: '/v1/auth/approle/login', tokenPresented: false, status: 200 });
    expect(lookupRecord).toMatchObject({ method: 'GET', path: '/v1/auth/token/lookup-self', tokenPresented: true });
    expect(lookupRecord?.tokenFingerprint).toBe(tokenFingerprint(login.auth.client_token));
    // The records hold neither the secret_id nor the token.
    const recorded = JSON.stringify(server.requests);
    for (const secret of [secretId, login.auth.client_token as string]) expect(recorded).not.toContain(secret);
  });

  it('serves a role on a custom mount (node-vault mount_point)', async () => {
    const roleId = canary('roleid');
    const secretId = canary('secretid');
    server.addAppRole(roleId, secretId, { mount: 'approle-prod', tokenTtl: 120 });
    const login = await vaultClient(server).approleLogin({ mount_point: 'approle-prod', role_id: roleId, secret_id: secretId });
    expect(login.auth.lease_duration).toBe(120);
    expect(server.requests.at(-1)?.path).toBe('/v1/auth/approle-prod/login');
  });
});

describe('Kubernetes login', () => {
  it('exchanges role + service-account JWT for a token; a wrong JWT is 403, an unknown role 400', async () => {
    const jwt = canary('k8sjwt');
    server.addKubernetesRole('airlock', jwt, { tokenTtl: 300, serviceAccountName: 'airlock-sa', serviceAccountNamespace: 'agents' });
    const client = vaultClient(server);

    // mount_point is required in practice: see the next test.
    const login = await client.kubernetesLogin({ mount_point: 'kubernetes', role: 'airlock', jwt });
    expect(login.auth).toMatchObject({
      lease_duration: 300,
      renewable: true,
      metadata: { role: 'airlock', service_account_name: 'airlock-sa', service_account_namespace: 'agents' },
    });
    expect(client.token).toBe(login.auth.client_token);
    expect((await client.tokenLookupSelf()).data.ttl).toBeLessThanOrEqual(300);

    const wrongJwt = await apiError(vaultClient(server).kubernetesLogin({ mount_point: 'kubernetes', role: 'airlock', jwt: canary('otherjwt') }));
    expect(wrongJwt.response.statusCode).toBe(403);
    expect(wrongJwt.message).toBe('permission denied');
    const unknownRole = await apiError(vaultClient(server).kubernetesLogin({ mount_point: 'kubernetes', role: 'nobody', jwt }));
    expect(unknownRole.response.statusCode).toBe(400);
    expect(unknownRole.message).toBe('invalid role name "nobody"');
    expect(server.count('kubernetes-login')).toBe(3);
    expect(server.requests[0]).toMatchObject({ method: 'POST', path: '/v1/auth/kubernetes/login' });
  });

  it('pins a node-vault 0.12 quirk: without mount_point, kubernetesLogin posts to /v1/auth//login, which fails', async () => {
    // node-vault renders '/auth/{{mount_point}}{{^mount_point}}{{kubernetesPath}}{{/mount_point}}/login' with the
    // call's arguments only, so its kubernetesPath never reaches the template. Vault's ServeMux redirects the
    // unclean path (301, followed by axios as a GET without body) and the login never happens. If this test
    // starts failing, node-vault has fixed it.
    const jwt = canary('k8sjwt');
    server.addKubernetesRole('airlock', jwt);
    const error = await apiError(vaultClient(server).kubernetesLogin({ role: 'airlock', jwt }));
    expect(error.response.statusCode).toBe(403);
    expect(server.requests.map((r) => [r.method, r.path, r.status])).toEqual([
      ['POST', '/v1/auth//login', 301],
      ['GET', '/v1/auth/login', 403],
    ]);
    expect(server.count('kubernetes-login')).toBe(0);
  });
});

describe('token renew-self', () => {
  it('extends the TTL by the increment, capped at the max TTL, and keeps the same token', async () => {
    const token = server.createToken({ ttl: 60, renewable: true, maxTtl: 7_200, policies: ['default'] });
    const client = vaultClient(server, { token });

    const renewed = await client.tokenRenewSelf({ increment: 3_600 });
    expect(renewed.auth).toMatchObject({ client_token: token, lease_duration: 3_600, renewable: true, policies: ['default'] });
    expect(client.token).toBe(token);
    expect((await client.tokenLookupSelf()).data.ttl).toBeGreaterThan(3_590);

    const duration = await client.tokenRenewSelf({ increment: '1h30m' });
    expect(duration.auth.lease_duration).toBe(5_400);

    const capped = await client.tokenRenewSelf({ increment: 100_000 });
    expect(capped.auth.lease_duration).toBeLessThanOrEqual(7_200);
    expect(capped.auth.lease_duration).toBeGreaterThan(7_190);
    expect(capped.warnings[0]).toMatch(/exceeded the effective max_ttl/);

    const noIncrement = await client.tokenRenewSelf();
    expect(noIncrement.auth.lease_duration).toBe(60); // back to the token's own TTL, like Vault

    expect(server.count('renew-self')).toBe(4);
    expect(server.tokenInfo(token)?.renewCount).toBe(4);
  });

  it('refuses to renew a non-renewable token with 400', async () => {
    const client = vaultClient(server, { token: server.createToken({ ttl: 60, renewable: false }) });
    const error = await apiError(client.tokenRenewSelf({ increment: 60 }));
    expect(error.response.statusCode).toBe(400);
    expect(error.message).toBe('lease is not renewable');
  });
});

describe('KV v2', () => {
  it('reads the latest version, writes a new one like `vault kv put`, and reads an older one by ?version', async () => {
    const first = canary('kvfirst');
    const second = canary('kvsecond');
    expect(server.putSecret('secret', 'airlock/openai', { api_key: first })).toBe(1);
    const client = vaultClient(server, { token: server.createToken() });

    const v1 = await client.read('secret/data/airlock/openai');
    expect(v1).toMatchObject({ lease_id: '', lease_duration: 0, renewable: false });
    expect(v1.data.data).toEqual({ api_key: first });
    expect(v1.data.metadata).toMatchObject({ version: 1, deletion_time: '', destroyed: false });
    expect(Number.isNaN(Date.parse(v1.data.metadata.created_time))).toBe(false);

    const written = await client.write('secret/data/airlock/openai', { data: { api_key: second } });
    expect(written.data).toMatchObject({ version: 2, deletion_time: '', destroyed: false });

    const v2 = await client.read('secret/data/airlock/openai');
    expect(v2.data.data).toEqual({ api_key: second });
    expect(v2.data.metadata.version).toBe(2);
    const old = await client.read('secret/data/airlock/openai?version=1');
    expect(old.data.data).toEqual({ api_key: first });
    expect(old.data.metadata.version).toBe(1);
    expect(server.getSecret('secret', 'airlock/openai')).toEqual({ api_key: second });

    const pastLast = await apiError(client.read('secret/data/airlock/openai?version=3'));
    expect(pastLast.response.statusCode).toBe(404);

    expect(server.count('kv-read')).toBe(4);
    expect(server.count('kv-write')).toBe(1);
    expect(server.requests.find((r) => r.endpoint === 'kv-write')).toMatchObject({ method: 'POST', path: '/v1/secret/data/airlock/openai' });
    expect(JSON.stringify(server.requests)).not.toContain(second);
  });

  it('serves a mount the test registers, and refuses a write without data', async () => {
    server.addKvMount('kv-team');
    const value = canary('teamkv');
    server.putSecret('kv-team', 'stripe', { key: value });
    const client = vaultClient(server, { token: server.createToken() });
    expect((await client.read('kv-team/data/stripe')).data.data).toEqual({ key: value });
    const noData = await apiError(client.write('kv-team/data/stripe', { key: value }));
    expect(noData.response.statusCode).toBe(400);
    expect(noData.message).toBe('no data provided');
  });

  it('answers a missing path with 404 and an empty errors list (node-vault ApiResponseError)', async () => {
    const client = vaultClient(server, { token: server.createToken() });
    const missing = await apiError(client.read('secret/data/does/not/exist'));
    expect(missing.response.statusCode).toBe(404);
    expect(missing.response.body).toEqual({ errors: [] });
    expect(missing.message).toBe('Status 404');

    const noMount = await apiError(client.read('nomount/data/x'));
    expect(noMount.response.statusCode).toBe(404);
    expect(noMount.message).toBe('no handler for route "nomount/data/x". route entry not found.');

    server.putSecret('secret', 'gone', { v: canary('gone') });
    server.deleteSecret('secret', 'gone');
    const deleted = await apiError(client.read('secret/data/gone'));
    expect(deleted.response.statusCode).toBe(404);
    expect(deleted.response.body).toMatchObject({ data: { data: null, metadata: { version: 1 } } });
  });
});

describe('dynamic secrets and sys/leases', () => {
  it('mints a lease per read, renews it (capped at max TTL) and revokes it', async () => {
    let n = 0;
    const passwords: string[] = [];
    server.addLeaseRole(
      'database/creds/readonly',
      () => {
        n += 1;
        const password = canary('dbpassword');
        passwords.push(password);
        return { username: `v-airlock-readonly-${n}`, password };
      },
      { ttl: 300, maxTtl: 900 },
    );
    const client = vaultClient(server, { token: server.createToken() });

    const creds = await client.read('database/creds/readonly');
    expect(creds.lease_id).toMatch(/^database\/creds\/readonly\/[A-Za-z0-9]+$/);
    expect(creds).toMatchObject({ lease_duration: 300, renewable: true, data: { username: 'v-airlock-readonly-1', password: passwords[0] } });
    // Like kubernetesPath, node-vault needs the database mount passed with the call.
    const other = await client.generateDatabaseCredentials({ databasePath: 'database', name: 'readonly' });
    expect(other.lease_id).not.toBe(creds.lease_id);
    expect(other.data.password).toBe(passwords[1]);

    const renewed = await client.renew({ lease_id: creds.lease_id, increment: 600 });
    expect(renewed).toMatchObject({ lease_id: creds.lease_id, renewable: true, lease_duration: 600 });
    const capped = await client.renew({ lease_id: creds.lease_id, increment: 5_000 });
    expect(capped.lease_duration).toBeLessThanOrEqual(900);
    expect(capped.lease_duration).toBeGreaterThan(890);
    expect(capped.warnings[0]).toMatch(/capped/);

    await client.revoke({ lease_id: creds.lease_id });
    const lease = server.leases().find((l) => l.id === creds.lease_id);
    expect(lease).toMatchObject({ path: 'database/creds/readonly', revoked: true, renewCount: 2 });
    expect(server.leases().find((l) => l.id === other.lease_id)?.revoked).toBe(false);

    const afterRevoke = await apiError(client.renew({ lease_id: creds.lease_id }));
    expect(afterRevoke.response.statusCode).toBe(400);
    expect(afterRevoke.response.body).toEqual({ errors: ['lease not found'] });
    const unknown = await apiError(client.renew({ lease_id: 'database/creds/readonly/nosuchlease' }));
    expect(unknown.message).toBe('lease not found');
    server.expireLease(other.lease_id);
    const expired = await apiError(client.renew({ lease_id: other.lease_id }));
    expect(expired.message).toBe('lease not found');
    // Revoking an unknown lease succeeds, as in Vault.
    await client.revoke({ lease_id: 'database/creds/readonly/nosuchlease' });

    expect(server.count('lease-create')).toBe(2);
    expect(server.count('lease-renew')).toBe(5);
    expect(server.count('lease-revoke')).toBe(2);
    const renewRecord = server.requests.find((r) => r.endpoint === 'lease-renew');
    expect(renewRecord).toMatchObject({ method: 'PUT', path: '/v1/sys/leases/renew', status: 200 });
    expect(server.requests.find((r) => r.endpoint === 'lease-revoke')).toMatchObject({ method: 'PUT', path: '/v1/sys/leases/revoke', status: 204 });
  });
});

describe('token validity', () => {
  it('answers 403 permission denied for an expired, unknown or absent token', async () => {
    const token = server.createToken({ ttl: 600 });
    server.putSecret('secret', 'app', { key: canary('app') });
    const client = vaultClient(server, { token });
    await client.read('secret/data/app');

    server.expireToken(token);
    const expired = await apiError(client.read('secret/data/app'));
    expect(expired.response.statusCode).toBe(403);
    expect(expired.response.body).toEqual({ errors: ['permission denied'] });
    expect(expired.message).toBe('permission denied');
    expect((await apiError(client.tokenLookupSelf())).response.statusCode).toBe(403);

    const unknown = await apiError(vaultClient(server, { token: canary('unknowntoken') }).read('secret/data/app'));
    expect(unknown.response.statusCode).toBe(403);
    const absent = await apiError(vaultClient(server).read('secret/data/app'));
    expect(absent.response.statusCode).toBe(403);
    expect(server.requests.at(-1)).toMatchObject({ tokenPresented: false, tokenFingerprint: undefined, status: 403 });
  });

  it('expires a token when the server clock passes its TTL', async () => {
    const token = server.createToken({ ttl: 5, renewable: true });
    const client = vaultClient(server, { token });
    expect((await client.tokenLookupSelf()).data.ttl).toBeLessThanOrEqual(5);
    server.advanceClock(6);
    expect((await apiError(client.tokenLookupSelf())).message).toBe('permission denied');
    expect((await apiError(client.tokenRenewSelf())).response.statusCode).toBe(403);
    expect(server.tokenInfo(token)?.live).toBe(false);
  });

  it('expires every token at once', async () => {
    const a = vaultClient(server, { token: server.createToken() });
    const b = vaultClient(server, { token: server.createToken({ ttl: 3_600, renewable: true }) });
    server.expireAllTokens();
    expect((await apiError(a.tokenLookupSelf())).response.statusCode).toBe(403);
    expect((await apiError(b.tokenLookupSelf())).response.statusCode).toBe(403);
  });
});

describe('namespaces', () => {
  it('records X-Vault-Namespace on each request', async () => {
    const token = server.createToken();
    await vaultClient(server, { token, namespace: 'team-a' }).tokenLookupSelf();
    await vaultClient(server, { token }).tokenLookupSelf();
    expect(server.requests.map((r) => r.namespace)).toEqual(['team-a', undefined]);
  });

  it('with requireNamespace, answers 403 to requests from any other namespace (health excepted)', async () => {
    await fresh({ requireNamespace: 'team-a' });
    const roleId = canary('roleid');
    const secretId = canary('secretid');
    server.addAppRole(roleId, secretId);
    const outside = await apiError(vaultClient(server).approleLogin({ role_id: roleId, secret_id: secretId }));
    expect(outside.response.statusCode).toBe(403);
    expect(outside.message).toBe('permission denied');
    const elsewhere = await apiError(vaultClient(server, { namespace: 'team-b' }).approleLogin({ role_id: roleId, secret_id: secretId }));
    expect(elsewhere.response.statusCode).toBe(403);

    const inside = vaultClient(server, { namespace: 'team-a' });
    await inside.approleLogin({ role_id: roleId, secret_id: secretId });
    expect((await inside.tokenLookupSelf()).data.policies).toEqual(['default']);
    expect((await vaultClient(server).health()).sealed).toBe(false);
    expect(server.requests.map((r) => [r.endpoint, r.namespace, r.status])).toEqual([
      ['approle-login', undefined, 403],
      ['approle-login', 'team-b', 403],
      ['approle-login', 'team-a', 200],
      ['lookup-self', 'team-a', 200],
      ['health', undefined, 200],
    ]);
  });
});

describe('faults', () => {
  it('setDelay holds every answer: a client timeout shorter than the delay fails, a longer one succeeds', async () => {
    const token = server.createToken();
    server.setDelay(1_000);
    const impatient = vaultClient(server, { token, timeoutMs: 100 });
    const started = Date.now();
    const code = await transportErrorCode(impatient.tokenLookupSelf());
    expect(code).toBe('ECONNABORTED'); // axios's timeout, long before the answer would have come
    expect(Date.now() - started).toBeLessThan(900);

    const patient = vaultClient(server, { token, timeoutMs: 5_000 });
    const slowStart = Date.now();
    await patient.tokenLookupSelf();
    expect(Date.now() - slowStart).toBeGreaterThanOrEqual(950);

    server.setDelay(0);
    await impatient.tokenLookupSelf();
    expect(server.count('lookup-self')).toBe(3);
  });

  it("setDown(true) destroys every connection ('reset'); setDown(false) serves again on the same URL", async () => {
    const token = server.createToken();
    const client = vaultClient(server, { token, timeoutMs: 2_000 });
    await client.tokenLookupSelf(); // leaves a keep-alive connection open, which going down must kill too

    await server.setDown(true);
    // The first call may still meet the killed keep-alive socket; the second needs a new connection.
    for (let i = 0; i < 2; i++) {
      const code = await transportErrorCode(client.tokenLookupSelf());
      expect(['ECONNRESET', 'EPIPE', 'ERR_BAD_RESPONSE']).toContain(code);
    }
    expect(server.droppedConnections).toBeGreaterThan(0);
    expect(server.count('lookup-self')).toBe(1);

    await server.setDown(false);
    await client.tokenLookupSelf();
    expect(server.count('lookup-self')).toBe(2);
  });

  it("setDown(true, 'refuse') closes the listener (ECONNREFUSED) and reopens it on the same port", async () => {
    const token = server.createToken();
    const client = vaultClient(server, { token, timeoutMs: 2_000 });
    const { url, port } = server;
    await server.setDown(true, 'refuse');
    expect(await transportErrorCode(client.tokenLookupSelf())).toBe('ECONNREFUSED');
    await server.setDown(false);
    expect(server.url).toBe(url);
    expect(server.port).toBe(port);
    expect((await client.tokenLookupSelf()).data.id).toBe(token);
  });

  it("setDown(true, 'hang') accepts requests and never answers, so only the client timeout ends them", async () => {
    const client = vaultClient(server, { token: server.createToken(), timeoutMs: 200 });
    await server.setDown(true, 'hang');
    expect(await transportErrorCode(client.tokenLookupSelf())).toBe('ECONNABORTED');
    expect(server.requests.at(-1)).toMatchObject({ endpoint: 'lookup-self', status: undefined });
    await server.setDown(false);
    await client.tokenLookupSelf();
  });
});

describe('TLS mode', () => {
  let dir: string | undefined;
  afterEach(() => {
    if (dir !== undefined) rmSync(dir, { recursive: true, force: true });
    dir = undefined;
  });

  function selfSigned(): { key: string; cert: string } | undefined {
    try {
      dir = mkdtempSync(join(tmpdir(), 'airlock-vault-tls-'));
      const keyPath = join(dir, 'key.pem');
      const certPath = join(dir, 'cert.pem');
      execFileSync(
        'openssl',
        ['req', '-x509', '-newkey', 'rsa:2048', '-nodes', '-keyout', keyPath, '-out', certPath, '-days', '1', '-subj', '/CN=127.0.0.1', '-addext', 'subjectAltName=IP:127.0.0.1'],
        { stdio: 'ignore', timeout: 20_000 },
      );
      return { key: readFileSync(keyPath, 'utf8'), cert: readFileSync(certPath, 'utf8') };
    } catch {
      return undefined;
    }
  }

  it('serves HTTPS with the given key and certificate', async (context) => {
    const tls = selfSigned();
    if (tls === undefined) {
      context.skip();
      return;
    }
    await fresh({ tls });
    expect(server.url).toMatch(/^https:\/\/127\.0\.0\.1:\d+$/);
    const value = canary('tlskv');
    server.putSecret('secret', 'tls', { v: value });
    const client = vaultClient(server, { token: server.createToken(), ca: tls.cert });
    expect((await client.read('secret/data/tls')).data.data).toEqual({ v: value });
    // A client that does not trust the certificate cannot talk to it.
    const untrusting = vaultClient(server, { token: server.createToken() });
    expect(await transportErrorCode(untrusting.read('secret/data/tls'))).toMatch(/SELF_SIGNED|UNABLE_TO_VERIFY|DEPTH_ZERO/);
  });
});
