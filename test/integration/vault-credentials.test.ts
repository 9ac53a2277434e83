/**
 * vault: and vault-lease: credentials end to end: a real Airlock (startProxy) in front of a recording
 * upstream, its secrets read by the real node-vault client inside Airlock from the Vault stand-in
 * (test/support/vault-server.ts) over real sockets.
 *
 * Covered: token, AppRole (role_id from env:, secret_id from file:) and Kubernetes login; namespace
 * header; TLS with ca_file; the KV version as the audit `generation`; rotation under a steady stream of
 * requests with no failed request; Vault down at start, down mid-run (last known good up to
 * max_staleness, then 503, then recovery), slow (single flight, bounded 503); token expiry and
 * re-login, token renewal; leases (renewal, replacement past max TTL, revocation at shutdown); missing
 * field / path; retry_on [401] replay with a rotated credential; the admin API and `secrets rotate`;
 * a forced refresh of a lease (rotate, admin refresh, 401 with retry_on) taking a new lease; which
 * bodies a 401 replays (up to 64 KiB with a Content-Length; not larger, not chunked); a lease kept, never
 * revoked, through a renewal that failed transiently (503, connection reset).
 * No Vault canary (secret values, tokens the stand-in minted, AppRole and Kubernetes credentials) may
 * appear in agent responses, logs, audit, admin responses or CLI output.
 */
import { execFileSync } from 'node:child_process';
import { readFileSync, rmSync, writeFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { CliIo } from '../../src/cli/cli-io.js';
import { runCli } from '../../src/cli/run-cli.js';
import { generateAgentToken } from '../../src/identity/agent-token.js';
import type { AuditRecord } from '../../src/observability/audit-record.js';
import { assertNoLeak, type Surface } from '../helpers/assert-no-leak.js';
import { canary, plainCanary } from '../helpers/canary.js';
import { eventually, freePort, sleep } from '../helpers/operator.js';
import { sendRequest, type Problem, type SendOptions, type SentResponse } from '../helpers/send-request.js';
import { startProxy, tempDir, type ProxyFixture, type ProxyOptions } from '../helpers/start-proxy.js';
import { startUpstream, type RecordedRequest, type Upstream } from '../helpers/start-upstream.js';
import { startVaultServer, tokenFingerprint, type VaultServer } from '../support/vault-server.js';

// --- shared fixtures ------------------------------------------------------------------------------

const agent = generateAgentToken();
const adminToken = generateAgentToken();
/** Every secret this file plants (Vault values, AppRole/Kubernetes credentials, admin token). */
const planted: string[] = [agent.token, adminToken.token];
/** Every Vault stand-in started, so the tokens each minted are leak-checked too. */
const vaults: VaultServer[] = [];
/** Everything an agent, an admin caller or a CLI user saw: status line, headers and body. */
const agentSeen: string[] = [];
const adminSeen: string[] = [];
const cliSeen: string[] = [];
const dirs: string[] = [];

function plant(label: string): string {
  const value = canary(label);
  planted.push(value);
  return value;
}

function allCanaries(): string[] {
  return [...planted, ...vaults.flatMap((v) => v.issuedTokens())];
}

async function vaultServer(options: Parameters<typeof startVaultServer>[0] = {}): Promise<VaultServer> {
  const server = await startVaultServer(options);
  vaults.push(server);
  return server;
}

function scratch(prefix: string): string {
  const dir = tempDir(prefix);
  dirs.push(dir);
  return dir;
}

function service(upstream: Upstream, secret: string, credential: Record<string, unknown> = {}): Record<string, unknown> {
  return {
    upstream: upstream.url,
    credential: { secret, inject: 'bearer', ...credential },
    routes: [{ method: ['GET', 'POST'], path: '/v1/*', scope: 'api:call' }],
  };
}

function agents(...services: string[]): Record<string, unknown> {
  return { bot: { tokens: [agent.hash], credentials: services.map((name) => ({ service: name, max_scope: ['*'] })) } };
}

const TOKEN_AUTH = { method: 'token', token: 'env:VAULT_TOKEN' } as const;

function vaultSpec(vault: VaultServer, auth: Record<string, unknown> = TOKEN_AUTH, extra: Record<string, unknown> = {}): Record<string, unknown> {
  return { address: vault.url, timeout: 2, auth, ...extra };
}

/** A request from the agent through Airlock; whatever comes back is kept for the leak check. */
async function call(proxy: ProxyFixture, serviceName: string, path = '/v1/charges', options: SendOptions = {}): Promise<SentResponse> {
  const response = await sendRequest(`${proxy.url}/${serviceName}${path}`, {
    ...options,
    headers: { authorization: `Bearer ${agent.token}`, ...(options.headers ?? {}) },
  });
  agentSeen.push(`${response.status}\n${JSON.stringify(response.headers)}\n${response.text}`);
  return response;
}

function bearerOf(recorded: RecordedRequest | undefined): string | undefined {
  const value = recorded?.header('authorization')[0];
  return value === undefined ? undefined : value.replace(/^Bearer /, '');
}

async function auditOf(proxy: ProxyFixture, response: SentResponse): Promise<AuditRecord> {
  const id = response.headers['x-airlock-request-id'];
  return eventually(`the audit record of ${String(id)}`, () => proxy.auditRecords().find((r) => r.request_id === id), 5_000, 10);
}

function expectProblem(response: SentResponse, code: string, status = 503): Problem {
  expect(response.status, response.text).toBe(status);
  const problem = response.json<Problem>();
  expect(problem.code).toBe(code);
  return problem;
}

function surfacesOf(proxy: ProxyFixture): Surface[] {
  return [
    { name: 'agent responses', text: agentSeen.join('\n') },
    { name: 'log', text: proxy.logLines.join('') },
    { name: 'audit', text: proxy.auditText() },
    { name: 'admin responses', text: adminSeen.join('\n') },
    { name: 'CLI output', text: cliSeen.join('\n') },
  ];
}

function expectNoVaultLeak(proxies: readonly ProxyFixture[]): void {
  expect(proxies.length).toBeGreaterThan(0);
  for (const proxy of proxies) assertNoLeak(allCanaries(), surfacesOf(proxy));
}


/** The real CLI with string streams; its output is kept for the leak check. */
async function cli(args: string[], env: Record<string, string> = {}, stdinText = ''): Promise<{ code: number; stdout: string; stderr: string }> {
  let stdout = '';
  let stderr = '';
  const io: CliIo = {
    args,
    env,
    cwd: process.cwd(),
    stdout: { write: (text: string) => (stdout += text) },
    stderr: { write: (text: string) => (stderr += text) },
    stdin: (async function* stdinChunks() {
      if (stdinText !== '') yield Buffer.from(stdinText, 'utf8');
    })(),
    stopRequested: new Promise<string>(() => undefined),
  };
  const code = await runCli(io);
  cliSeen.push(stdout, stderr);
  return { code, stdout, stderr };
}

/** Starts a proxy from an object that is also written as the YAML (JSON) file a CLI run reads. */
async function startProxyWithFile(input: Record<string, unknown>, options: ProxyOptions = {}): Promise<{ proxy: ProxyFixture; configFile: string; dataDir: string }> {
  const dataDir = options.dataDir ?? scratch('airlock-vault-data-');
  const configFile = join(dataDir, 'airlock.yaml');
  writeFileSync(configFile, JSON.stringify({ listen: '127.0.0.1:0', data_dir: dataDir, ...input }, null, 2));
  const proxy = await startProxy(input, { ...options, dataDir });
  return { proxy, configFile, dataDir };
}

afterAll(async () => {
  await Promise.all(vaults.map((v) => v.close()));
  for (const dir of dirs) rmSync(dir, { recursive: true, force: true });
});

// --- auth methods, namespace, TLS, generation, missing secrets -------------------------------------

describe('a vault: credential with each auth method', () => {
  const oldKey = plant('stripe-v1');
  const key = plant('stripe-v2');
  const roleId = plant('approle-role-id');
  const secretId = plant('approle-secret-id');
  const jwt = plant('k8s-jwt');
  let vault: VaultServer;
  let upstream: Upstream;
  let version: number;
  const proxies: ProxyFixture[] = [];

  async function start(input: Record<string, unknown>, options: ProxyOptions = {}): Promise<ProxyFixture> {
    const proxy = await startProxy(input, options);
    proxies.push(proxy);
    return proxy;
  }

  beforeAll(async () => {
    vault = await vaultServer();
    vault.putSecret('secret', 'stripe', { api_key: oldKey });
    version = vault.putSecret('secret', 'stripe', { api_key: key, owner: 'payments' });
    upstream = await startUpstream();
  });

  afterAll(async () => {
    await Promise.all(proxies.map((p) => p.close()));
    await upstream.close();
  });

  it('token from env: injects the latest KV version and audits its number as the generation', async () => {
    vault.resetObservations();
    const token = vault.createToken({ policies: ['airlock'] });
    const proxy = await start(
      { secrets: { vault: vaultSpec(vault) }, services: { stripe: service(upstream, 'vault:secret/stripe#api_key') }, agents: agents('stripe') },
      { env: { VAULT_TOKEN: token } },
    );
    const response = await call(proxy, 'stripe');
    expect(response.status).toBe(200);
    expect(bearerOf(upstream.requests.at(-1))).toBe(key);
    const record = await auditOf(proxy, response);
    expect(version).toBe(2);
    expect(record).toMatchObject({ decision: 'allow', status: 200, credential: 'vault:secret/stripe#api_key', generation: '2', rotated_from: null });
    // Airlock used exactly the token it was given, for the lookup and the read.
    const used = vault.requests.filter((r) => r.endpoint === 'lookup-self' || r.endpoint === 'kv-read');
    expect(used.length).toBeGreaterThanOrEqual(2);
    expect(used.every((r) => r.tokenFingerprint === tokenFingerprint(token))).toBe(true);
  });

  // node-vault reads VAULT_PREFIX (prepended to every path) and VAULT_NAMESPACE from the environment when
  // its options leave them out; another tool's settings in Airlock's environment must not move its reads.
  it('ignores VAULT_PREFIX and VAULT_NAMESPACE in its environment: the config alone says where it reads', async () => {
    vault.resetObservations();
    const saved = { prefix: process.env['VAULT_PREFIX'], namespace: process.env['VAULT_NAMESPACE'] };
    process.env['VAULT_PREFIX'] = '/elsewhere';
    process.env['VAULT_NAMESPACE'] = 'other-team';
    try {
      const proxy = await start(
        { secrets: { vault: vaultSpec(vault) }, services: { stripe: service(upstream, 'vault:secret/stripe#api_key') }, agents: agents('stripe') },
        { env: { VAULT_TOKEN: vault.createToken({ policies: ['airlock'] }) } },
      );
      const response = await call(proxy, 'stripe');
      expect(response.status, response.text).toBe(200);
      expect(bearerOf(upstream.requests.at(-1))).toBe(key);
      const reads = vault.requests.filter((r) => r.endpoint === 'kv-read');
      expect(reads.length).toBeGreaterThanOrEqual(1);
      expect(reads.every((r) => r.namespace === undefined)).toBe(true);
    } finally {
      for (const [name, value] of [['VAULT_PREFIX', saved.prefix], ['VAULT_NAMESPACE', saved.namespace]] as const) {
        if (value === undefined) delete process.env[name];
        else process.env[name] = value;
      }
    }
  });

  it('AppRole with role_id from env: and secret_id from file: logs in and reads with the minted token', async () => {
    vault.resetObservations();
    vault.addAppRole(roleId, secretId, { roleName: 'airlock', policies: ['airlock'] });
    const dataDir = scratch('airlock-approle-');
    const input = {
      secrets: { vault: vaultSpec(vault, { method: 'approle', role_id: 'env:VAULT_ROLE_ID', secret_id: 'file:vault-secret-id' }) },
      services: { stripe: service(upstream, 'vault:secret/stripe#api_key') },
      agents: agents('stripe'),
    };
    const configFile = join(dataDir, 'airlock.yaml');
    writeFileSync(configFile, JSON.stringify({ listen: '127.0.0.1:0', data_dir: dataDir, ...input }, null, 2));
    const stored = await cli(['secrets', 'set', 'vault-secret-id', '--config', configFile], {}, `${secretId}\n`);
    expect(stored.code, stored.stderr).toBe(0);

    const proxy = await start(input, { dataDir, env: { VAULT_ROLE_ID: roleId } });
    const response = await call(proxy, 'stripe');
    expect(response.status, response.text).toBe(200);
    expect(bearerOf(upstream.requests.at(-1))).toBe(key);
    expect(vault.count('approle-login')).toBe(1);
    const minted = vault.issuedTokens().at(-1) as string;
    expect(vault.tokenInfo(minted)?.path).toBe('auth/approle/login');
    const reads = vault.requests.filter((r) => r.endpoint === 'kv-read');
    expect(reads.length).toBeGreaterThan(0);
    expect(reads.every((r) => r.tokenFingerprint === tokenFingerprint(minted))).toBe(true);
  });

  /** A proxy that logs in to Vault as Kubernetes does, with the service-account JWT in a file of its own. */
  async function kubernetesProxy(dirPrefix: string): Promise<ProxyFixture> {
    const jwtFile = join(scratch(dirPrefix), 'token');
    writeFileSync(jwtFile, `${jwt}\n`);
    vault.addKubernetesRole('airlock', jwt, { serviceAccountName: 'airlock', policies: ['airlock'] });
    return start({
      secrets: { vault: vaultSpec(vault, { method: 'kubernetes', role: 'airlock', jwt_file: jwtFile }) },
      services: { stripe: service(upstream, 'vault:secret/stripe#api_key') },
      agents: agents('stripe'),
    });
  }

  // node-vault logs each request's body through the `debug` package when DEBUG names it; a login's body
  // is the AppRole secret_id or the Kubernetes JWT. Airlock hands node-vault a silent debug function.
  it("node-vault's debug log stays silent even when DEBUG enables it: a login's JWT never reaches stderr", async () => {
    vault.resetObservations();
    // The very `debug` node-vault uses, switched on for it as DEBUG=node-vault would at start-up.
    const debug = createRequire(createRequire(import.meta.url).resolve('node-vault'))('debug') as { (namespace: string): (text: string) => void; enable(namespaces: string): void; disable(): string };
    const previous = debug.disable();
    debug.enable('node-vault');
    const written: string[] = [];
    const write = process.stderr.write;
    process.stderr.write = ((chunk: string | Uint8Array) => {
      written.push(typeof chunk === 'string' ? chunk : Buffer.from(chunk).toString('utf8'));
      return true;
    }) as typeof process.stderr.write;
    try {
      // The capture hears node-vault's debug output when it is on: a probe in its namespace.
      debug('node-vault')('capture-probe');
      expect(written.join('')).toContain('capture-probe');
      const proxy = await kubernetesProxy('airlock-k8s-debug-');
      const response = await call(proxy, 'stripe');
      expect(response.status, response.text).toBe(200);
      expect(vault.count('kubernetes-login')).toBe(1);
    } finally {
      process.stderr.write = write;
      debug.disable();
      debug.enable(previous);
    }
    cliSeen.push(written.join(''));
    expect(written.join('')).not.toContain(jwt);
  });

  it('Kubernetes logs in with the service-account JWT read from its file', async () => {
    vault.resetObservations();
    const proxy = await kubernetesProxy('airlock-k8s-');
    const response = await call(proxy, 'stripe');
    expect(response.status, response.text).toBe(200);
    expect(bearerOf(upstream.requests.at(-1))).toBe(key);
    expect(vault.count('kubernetes-login')).toBe(1);
    expect(vault.requests.find((r) => r.endpoint === 'kubernetes-login')).toMatchObject({ path: '/v1/auth/kubernetes/login', status: 200 });
  });

  it('a Kubernetes login Vault refuses (a role it does not know: 400) is reported as a refused login, not as Vault unreachable', async () => {
    vault.resetObservations();
    const jwtFile = join(scratch('airlock-k8s-refused-'), 'token');
    writeFileSync(jwtFile, `${jwt}\n`);
    const proxy = await start({
      secrets: { vault: vaultSpec(vault, { method: 'kubernetes', role: 'no-such-role', jwt_file: jwtFile }) },
      services: { stripe: service(upstream, 'vault:secret/stripe#api_key') },
      agents: agents('stripe'),
    });
    const response = await call(proxy, 'stripe');
    expect(response.status, response.text).toBe(503);
    const problem = JSON.parse(response.text) as Problem;
    expect(problem.code).toBe('credential_unavailable');
    expect(problem.detail).toContain('Vault refused');
    expect(problem.detail).toContain('status 400');
    expect(problem.detail).not.toContain('did not answer');
    expect(vault.requests.find((r) => r.endpoint === 'kubernetes-login')).toMatchObject({ status: 400 });
  });

  it('sends X-Vault-Namespace on every call when a namespace is configured', async () => {
    const nsVault = await vaultServer({ requireNamespace: 'team-a' });
    const nsKey = plant('ns-key');
    nsVault.putSecret('secret', 'stripe', { api_key: nsKey });
    const token = nsVault.createToken();
    const proxy = await start(
      { secrets: { vault: vaultSpec(nsVault, TOKEN_AUTH, { namespace: 'team-a' }) }, services: { stripe: service(upstream, 'vault:secret/stripe#api_key') }, agents: agents('stripe') },
      { env: { VAULT_TOKEN: token } },
    );
    const response = await call(proxy, 'stripe');
    expect(response.status, response.text).toBe(200);
    expect(bearerOf(upstream.requests.at(-1))).toBe(nsKey);
    expect(nsVault.requests.length).toBeGreaterThan(0);
    expect(nsVault.requests.every((r) => r.namespace === 'team-a')).toBe(true);

    // Without the namespace the same Vault refuses Airlock, and the agent gets a 503, not a forward.
    const before = upstream.requests.length;
    const without = await start(
      { secrets: { vault: vaultSpec(nsVault) }, services: { stripe: service(upstream, 'vault:secret/stripe#api_key') }, agents: agents('stripe') },
      { env: { VAULT_TOKEN: token } },
    );
    const refused = await call(without, 'stripe');
    expectProblem(refused, 'credential_unavailable');
    expect(upstream.requests.length).toBe(before);
  });

  it('talks TLS to a Vault whose certificate is trusted through ca_file', async (context) => {
    const dir = scratch('airlock-vault-tls-');
    const keyPath = join(dir, 'key.pem');
    const certPath = join(dir, 'ca.pem');
    try {
      execFileSync(
        'openssl',
        ['req', '-x509', '-newkey', 'rsa:2048', '-nodes', '-keyout', keyPath, '-out', certPath, '-days', '1', '-subj', '/CN=127.0.0.1', '-addext', 'subjectAltName=IP:127.0.0.1'],
        { stdio: 'ignore', timeout: 20_000 },
      );
    } catch {
      console.warn('SKIPPED: Vault TLS with ca_file needs the `openssl` binary; install the Debian package `openssl` (apt-get install openssl).');
      context.skip();
      return;
    }
    const tlsVault = await vaultServer({ tls: { key: readFileSync(keyPath, 'utf8'), cert: readFileSync(certPath, 'utf8') } });
    expect(tlsVault.url).toMatch(/^https:/);
    const tlsKey = plant('tls-key');
    tlsVault.putSecret('secret', 'stripe', { api_key: tlsKey });
    const token = tlsVault.createToken();
    const proxy = await start(
      { secrets: { vault: vaultSpec(tlsVault, TOKEN_AUTH, { ca_file: certPath }) }, services: { stripe: service(upstream, 'vault:secret/stripe#api_key') }, agents: agents('stripe') },
      { env: { VAULT_TOKEN: token } },
    );
    const response = await call(proxy, 'stripe');
    expect(response.status, response.text).toBe(200);
    expect(bearerOf(upstream.requests.at(-1))).toBe(tlsKey);

    // Without the CA the certificate is not trusted: 503, nothing forwarded.
    const before = upstream.requests.length;
    const untrusting = await start(
      { secrets: { vault: vaultSpec(tlsVault) }, services: { stripe: service(upstream, 'vault:secret/stripe#api_key') }, agents: agents('stripe') },
      { env: { VAULT_TOKEN: token } },
    );
    expectProblem(await call(untrusting, 'stripe'), 'credential_unavailable');
    expect(upstream.requests.length).toBe(before);

    // Nor when the environment tells Node to skip certificate checks (read at each connect): the
    // Vault client asks for verification itself.
    const saved = process.env['NODE_TLS_REJECT_UNAUTHORIZED'];
    process.env['NODE_TLS_REJECT_UNAUTHORIZED'] = '0';
    try {
      const untrustingToo = await start(
        { secrets: { vault: vaultSpec(tlsVault) }, services: { stripe: service(upstream, 'vault:secret/stripe#api_key') }, agents: agents('stripe') },
        { env: { VAULT_TOKEN: token } },
      );
      expectProblem(await call(untrustingToo, 'stripe'), 'credential_unavailable');
    } finally {
      if (saved === undefined) delete process.env['NODE_TLS_REJECT_UNAUTHORIZED'];
      else process.env['NODE_TLS_REJECT_UNAUTHORIZED'] = saved;
    }
    expect(upstream.requests.length).toBe(before);
  });

  it('answers 503 with a clear detail for a missing field or a missing path, and sends nothing upstream', async () => {
    const token = vault.createToken();
    const proxy = await start(
      {
        secrets: { vault: vaultSpec(vault) },
        services: { nofield: service(upstream, 'vault:secret/stripe#no_such_field'), nopath: service(upstream, 'vault:secret/no/such/path#api_key') },
        agents: agents('nofield', 'nopath'),
      },
      { env: { VAULT_TOKEN: token } },
    );
    const before = upstream.requests.length;
    const noField = expectProblem(await call(proxy, 'nofield'), 'credential_unavailable');
    expect(noField.detail).toContain('vault:secret/stripe#no_such_field');
    expect(noField.detail).toContain('"no_such_field"');
    expect(noField.error.message).toBe(noField.detail);
    const noPath = expectProblem(await call(proxy, 'nopath'), 'credential_unavailable');
    expect(noPath.detail).toContain('vault:secret/no/such/path#api_key');
    expect(noPath.detail).toMatch(/not in Vault/);
    expect(upstream.requests.length).toBe(before);
    const records = await proxy.waitForAudit(2);
    expect(records.map((r) => [r.service, r.code, r.status])).toEqual([
      ['nofield', 'credential_unavailable', 503],
      ['nopath', 'credential_unavailable', 503],
    ]);
  });

  // Found by review: "\ud800" is valid JSON, so a store can hand out a value with an unpaired surrogate.
  // It has no UTF-8 form; building its forms for the scrubber threw (URIError) in every later log call,
  // and the next request's log line ended the process.
  it('answers 503 for a value that is not well-formed text (an unpaired surrogate), and logs and serves on', async () => {
    const token = vault.createToken();
    const lone = `${plant('lone-surrogate')}\ud800`;
    vault.putSecret('secret', 'broken', { api_key: lone });
    const proxy = await start(
      { secrets: { vault: vaultSpec(vault) }, services: { broken: service(upstream, 'vault:secret/broken#api_key'), stripe: service(upstream, 'vault:secret/stripe#api_key') }, agents: agents('broken', 'stripe') },
      { env: { VAULT_TOKEN: token } },
    );
    const before = upstream.requests.length;
    const problem = expectProblem(await call(proxy, 'broken'), 'credential_unavailable');
    expect(problem.detail).toContain('vault:secret/broken#api_key');
    expect(problem.detail).toContain('not well-formed text');
    expect(upstream.requests.length).toBe(before);
    const ok = await call(proxy, 'stripe');
    expect(ok.status).toBe(200);
    expect(bearerOf(upstream.requests.at(-1))).toBe(key);
    const records = await proxy.waitForAudit(2);
    expect(records.map((r) => [r.service, r.code, r.status])).toEqual([
      ['broken', 'credential_unavailable', 503],
      ['stripe', null, 200],
    ]);
    await eventually('both request log lines', () => proxy.logRecords().filter((line) => line['msg'] === 'request').length >= 2, 8_000, 100);
  });

  it('leaks no Vault canary into responses, logs, audit or CLI output', () => {
    expectNoVaultLeak(proxies);
  });
});

// --- rotation under a steady stream ---------------------------------------------------------------

describe('rotation under a steady stream of requests', () => {
  const v1 = plant('rotate-v1');
  const v2 = plant('rotate-v2');
  let vault: VaultServer;
  let upstream: Upstream;
  let proxy: ProxyFixture;

  beforeAll(async () => {
    vault = await vaultServer();
    vault.putSecret('secret', 'stripe', { api_key: v1 });
    upstream = await startUpstream();
    proxy = await startProxy(
      { secrets: { vault: vaultSpec(vault) }, services: { stripe: service(upstream, 'vault:secret/stripe#api_key', { ttl: 1 }) }, agents: agents('stripe') },
      { env: { VAULT_TOKEN: vault.createToken() } },
    );
  });

  afterAll(async () => {
    await proxy.close();
    await upstream.close();
  });

  it('serves every request while the secret changes: old key, then new key, never anything else', async () => {
    const RUN_MS = 3_600;
    const WRITE_AT_MS = 1_000;
    const TTL_MS = 1_000;
    const started = Date.now();
    let writtenAt = Infinity;
    const sent: Array<{ target: string; sequence: number | null; startedAt: number; status: number }> = [];

    async function one(target: string, sequence: number | null): Promise<void> {
      const startedAt = Date.now();
      const response = await call(proxy, 'stripe', target);
      sent.push({ target, sequence, startedAt, status: response.status });
    }
    const sequential = (async () => {
      for (let i = 0; Date.now() - started < RUN_MS; i++) await one(`/v1/charges?seq=${i}`, i);
    })();
    const bursts = (async () => {
      for (let n = 0; Date.now() - started < RUN_MS; n++) {
        await Promise.all([0, 1, 2, 3].map((j) => one(`/v1/charges?burst=${n}-${j}`, null)));
        await sleep(150);
      }
    })();
    const writer = (async () => {
      await sleep(WRITE_AT_MS);
      vault.putSecret('secret', 'stripe', { api_key: v2 });
      writtenAt = Date.now();
    })();
    await Promise.all([sequential, bursts, writer]);

    expect(sent.length).toBeGreaterThan(20);
    expect(sent.filter((s) => s.status !== 200)).toEqual([]);
    const keyByTarget = new Map(upstream.requests.map((r) => [r.target, bearerOf(r)]));
    expect(keyByTarget.size).toBe(sent.length);
    const keys = sent.map((s) => keyByTarget.get(s.target));
    expect(new Set(keys)).toEqual(new Set([v1, v2]));

    // The sequential stream switches once, from old to new, and never back.
    const sequence = sent.filter((s) => s.sequence !== null).sort((a, b) => (a.sequence as number) - (b.sequence as number)).map((s) => keyByTarget.get(s.target));
    const firstNew = sequence.indexOf(v2);
    expect(firstNew).toBeGreaterThan(0);
    expect(sequence.slice(0, firstNew).every((k) => k === v1)).toBe(true);
    expect(sequence.slice(firstNew).every((k) => k === v2)).toBe(true);

    // Once the TTL (plus a generous margin for the background fetch) has passed, only the new key.
    const late = sent.filter((s) => s.startedAt >= writtenAt + TTL_MS + 1_000);
    expect(late.length).toBeGreaterThan(0);
    expect(late.every((s) => keyByTarget.get(s.target) === v2)).toBe(true);

    const records = await proxy.waitForAudit(sent.length);
    expect(new Set(records.map((r) => r.generation))).toEqual(new Set(['1', '2']));
    expect(records.every((r) => r.status === 200 && r.rotated_from === null)).toBe(true);
    // Refresh ahead, not a read per request.
    expect(vault.count('kv-read')).toBeLessThan(sent.length / 2);
  });

  it('leaks no Vault canary', () => {
    expectNoVaultLeak([proxy]);
  });
});

// --- Vault down at start ---------------------------------------------------------------------------

describe('Vault down when Airlock starts', () => {
  const vaultKey = plant('down-start-vault');
  const plainKey = plant('down-start-env');
  let vault: VaultServer;
  let upstream: Upstream;
  let proxy: ProxyFixture;

  beforeAll(async () => {
    vault = await vaultServer();
    vault.putSecret('secret', 'stripe', { api_key: vaultKey });
    upstream = await startUpstream();
    await vault.setDown(true);
    proxy = await startProxy(
      {
        secrets: { vault: vaultSpec(vault) },
        services: { stripe: service(upstream, 'vault:secret/stripe#api_key'), plain: service(upstream, 'env:PLAIN_KEY') },
        agents: agents('stripe', 'plain'),
      },
      { env: { VAULT_TOKEN: vault.createToken(), PLAIN_KEY: plainKey } },
    );
  });

  afterAll(async () => {
    await proxy.close();
    await upstream.close();
  });

  it('starts, serves other services, answers 503 for the Vault one, and recovers when Vault returns', async () => {
    expect(vault.droppedConnections).toBeGreaterThan(0);
    const plain = await call(proxy, 'plain');
    expect(plain.status).toBe(200);
    expect(bearerOf(upstream.requests.at(-1))).toBe(plainKey);

    const before = upstream.requests.length;
    const refused = expectProblem(await call(proxy, 'stripe'), 'credential_unavailable');
    expect(refused.detail).toContain('Vault');
    expect(upstream.requests.length).toBe(before);

    await vault.setDown(false);
    const statuses: number[] = [];
    await eventually(
      'the vault service to recover',
      async () => {
        const response = await call(proxy, 'stripe');
        statuses.push(response.status);
        if (response.status !== 200) expectProblem(response, 'credential_unavailable');
        return response.status === 200;
      },
      15_000,
      200,
    );
    expect(bearerOf(upstream.requests.at(-1))).toBe(vaultKey);
    expect(statuses.every((s) => s === 200 || s === 503)).toBe(true);
    expect((await call(proxy, 'plain')).status).toBe(200);
  });

  it('leaks no Vault canary', () => {
    expectNoVaultLeak([proxy]);
  });
});

// --- Vault down mid-run ----------------------------------------------------------------------------

describe('Vault down while Airlock runs', () => {
  const key = plant('down-mid');
  let vault: VaultServer;
  let upstream: Upstream;
  let proxy: ProxyFixture;

  beforeAll(async () => {
    vault = await vaultServer();
    vault.putSecret('secret', 'stripe', { api_key: key });
    upstream = await startUpstream();
    proxy = await startProxy(
      { secrets: { vault: vaultSpec(vault) }, services: { stripe: service(upstream, 'vault:secret/stripe#api_key', { ttl: 1, max_staleness: 2 }) }, agents: agents('stripe') },
      { env: { VAULT_TOKEN: vault.createToken() } },
    );
  });

  afterAll(async () => {
    await proxy.close();
    await upstream.close();
  });

  it('serves the cached value up to max_staleness, then 503, then recovers', async () => {
    expect((await call(proxy, 'stripe')).status).toBe(200);
    await vault.setDown(true);
    const downAt = Date.now();

    // Right after the outage the last good value is still served.
    const during: number[] = [];
    const first = await call(proxy, 'stripe');
    expect(first.status).toBe(200);
    during.push(first.status);
    const refused = await eventually(
      'a 503 once max_staleness has passed',
      async () => {
        const response = await call(proxy, 'stripe');
        during.push(response.status);
        return response.status === 503 ? response : undefined;
      },
      8_000,
      100,
    );
    const stale = expectProblem(refused, 'credential_unavailable');
    expect(stale.detail).toMatch(/max_staleness/);
    // It served for a while with Vault down (more than one request), then stopped.
    expect(during.filter((s) => s === 200).length).toBeGreaterThan(1);
    expect(during.slice(0, during.indexOf(503)).every((s) => s === 200)).toBe(true);
    expect(Date.now() - downAt).toBeGreaterThan(0);
    const served = upstream.requests.map(bearerOf);
    expect(served.every((k) => k === key)).toBe(true);
    const forwardedBefore = upstream.requests.length;
    expectProblem(await call(proxy, 'stripe'), 'credential_unavailable');
    expect(upstream.requests.length).toBe(forwardedBefore);

    await vault.setDown(false);
    await eventually('recovery after Vault returns', async () => (await call(proxy, 'stripe')).status === 200, 15_000, 200);
    expect(bearerOf(upstream.requests.at(-1))).toBe(key);
  });

  it('leaks no Vault canary', () => {
    expectNoVaultLeak([proxy]);
  });
});

// --- Vault slow -----------------------------------------------------------------------------------

describe('Vault slower than secrets.vault.timeout', () => {
  const key = plant('slow');
  let vault: VaultServer;
  let upstream: Upstream;
  let proxy: ProxyFixture;

  beforeAll(async () => {
    vault = await vaultServer();
    upstream = await startUpstream();
    // The secret does not exist yet, so nothing is cached when the burst comes.
    proxy = await startProxy(
      { secrets: { vault: vaultSpec(vault, TOKEN_AUTH, { timeout: 1 }) }, services: { stripe: service(upstream, 'vault:secret/slow#api_key') }, agents: agents('stripe') },
      { env: { VAULT_TOKEN: vault.createToken() } },
    );
  });

  afterAll(async () => {
    vault.setDelay(0);
    await proxy.close();
    await upstream.close();
  });

  it('a burst with an empty cache makes one Vault read at a time and gets a bounded 503', async () => {
    vault.putSecret('secret', 'slow', { api_key: key });
    vault.setDelay(5_000);
    // Let the backoff of the failed warm-up read (404 at start) run out, so the burst does reach Vault.
    await sleep(700);
    vault.resetObservations();
    const burst = await Promise.all(Array.from({ length: 40 }, (_, i) => call(proxy, 'stripe', `/v1/charges?slow=${i}`, { timeoutMs: 4_000 })));
    for (const response of burst) {
      const problem = expectProblem(response, 'credential_unavailable');
      expect(problem.detail).toMatch(/did not answer in time or is unreachable/);
      // Where Vault is, is the operator's: in the audit record's reason, not in the agent's answer.
      expect(response.text).not.toContain(vault.url.replace(/^https?:\/\//, ''));
    }
    const record = await auditOf(proxy, burst[0] as SentResponse);
    expect(record.reason).toContain(`Vault at ${vault.url} did not answer in time or is unreachable`);
    // Single flight: the 40 requests shared one read (no pile-up on a struggling Vault).
    expect(vault.count('kv-read')).toBeGreaterThanOrEqual(1);
    expect(vault.count('kv-read')).toBeLessThanOrEqual(2);
    expect(upstream.requests.length).toBe(0);

    // Right after, within the backoff, more requests fail fast without asking Vault again.
    const again = await Promise.all(Array.from({ length: 10 }, () => call(proxy, 'stripe', '/v1/charges', { timeoutMs: 4_000 })));
    for (const response of again) expectProblem(response, 'credential_unavailable');
    expect(vault.count('kv-read')).toBeLessThanOrEqual(2);

    vault.setDelay(0);
    await eventually('recovery once Vault is fast again', async () => (await call(proxy, 'stripe')).status === 200, 15_000, 200);
    expect(bearerOf(upstream.requests.at(-1))).toBe(key);
  });

  it('leaks no Vault canary', () => {
    expectNoVaultLeak([proxy]);
  });
});

// --- tokens: expiry, re-login, renewal ------------------------------------------------------------

describe('Vault tokens: expiry and re-login, renewal', () => {
  const roleId = plant('relogin-role-id');
  const secretId = plant('relogin-secret-id');
  const v1 = plant('relogin-v1');
  const v2 = plant('relogin-v2');
  const r1 = plant('renew-v1');
  const r2 = plant('renew-v2');
  let vault: VaultServer;
  let upstream: Upstream;
  const proxies: ProxyFixture[] = [];

  beforeAll(async () => {
    vault = await vaultServer();
    vault.putSecret('secret', 'relogin', { api_key: v1 });
    vault.putSecret('secret', 'renew', { api_key: r1 });
    upstream = await startUpstream();
  });

  afterAll(async () => {
    await Promise.all(proxies.map((p) => p.close()));
    await upstream.close();
  });

  it('logs in again (AppRole) after Vault forgets the token, without a failed request', async () => {
    vault.addAppRole(roleId, secretId, { tokenTtl: 5, renewable: false });
    const proxy = await startProxy(
      {
        secrets: { vault: vaultSpec(vault, { method: 'approle', role_id: 'env:VAULT_ROLE_ID', secret_id: 'env:VAULT_SECRET_ID' }) },
        services: { stripe: service(upstream, 'vault:secret/relogin#api_key', { ttl: 1 }) },
        agents: agents('stripe'),
      },
      { env: { VAULT_ROLE_ID: roleId, VAULT_SECRET_ID: secretId } },
    );
    proxies.push(proxy);
    expect((await call(proxy, 'stripe')).status).toBe(200);
    const logins = vault.count('approle-login');
    expect(logins).toBe(1);

    vault.expireAllTokens();
    vault.putSecret('secret', 'relogin', { api_key: v2 });
    const statuses: number[] = [];
    await eventually(
      'the new value, read with a new token',
      async () => {
        const response = await call(proxy, 'stripe');
        statuses.push(response.status);
        return bearerOf(upstream.requests.at(-1)) === v2;
      },
      8_000,
      100,
    );
    expect(statuses.every((s) => s === 200)).toBe(true);
    expect(vault.count('approle-login')).toBeGreaterThan(logins);
    // Vault did refuse the expired token once, which is what made Airlock log in again.
    expect(vault.requests.some((r) => r.endpoint === 'kv-read' && r.status === 403)).toBe(true);
    expect(vault.requests.filter((r) => r.endpoint === 'kv-read' && r.status === 200).length).toBeGreaterThan(0);
  });

  // Found by review: 2/3 of a TTL over ~37 days is past node's longest timer (2^31 - 1 ms); node then
  // fires it after 1 ms, and each renewal, answered with the same long TTL, scheduled the next at once.
  it('a token with a TTL of a year is renewed in its time, not in a loop', async () => {
    const token = vault.createToken({ ttl: 365 * 24 * 3600, renewable: true });
    const before = vault.count('renew-self');
    const proxy = await startProxy(
      { secrets: { vault: vaultSpec(vault) }, services: { stripe: service(upstream, 'vault:secret/renew#api_key') }, agents: agents('stripe') },
      { env: { VAULT_TOKEN: token } },
    );
    proxies.push(proxy);
    expect((await call(proxy, 'stripe')).status).toBe(200);
    await sleep(500);
    expect(vault.count('renew-self') - before).toBe(0);
  });

  it('renews a renewable token before it expires, and keeps using it', async () => {
    const token = vault.createToken({ ttl: 3, renewable: true });
    const issuedAt = Date.now();
    const before = { renew: vault.count('renew-self'), lookup: vault.count('lookup-self') };
    const proxy = await startProxy(
      { secrets: { vault: vaultSpec(vault) }, services: { stripe: service(upstream, 'vault:secret/renew#api_key', { ttl: 1 }) }, agents: agents('stripe') },
      { env: { VAULT_TOKEN: token } },
    );
    proxies.push(proxy);
    expect((await call(proxy, 'stripe')).status).toBe(200);
    await eventually('a renew-self call', () => vault.count('renew-self') > before.renew, 5_000, 100);
    expect(vault.tokenInfo(token)?.renewCount).toBeGreaterThan(0);

    // Past the token's original TTL it is still alive, and Airlock still reads with it (no re-login).
    await sleep(Math.max(0, issuedAt + 3_300 - Date.now()));
    expect(vault.tokenInfo(token)?.live).toBe(true);
    vault.putSecret('secret', 'renew', { api_key: r2 });
    const statuses: number[] = [];
    await eventually(
      'the new value read with the renewed token',
      async () => {
        const response = await call(proxy, 'stripe');
        statuses.push(response.status);
        return bearerOf(upstream.requests.at(-1)) === r2;
      },
      6_000,
      100,
    );
    expect(statuses.every((s) => s === 200)).toBe(true);
    expect(vault.count('lookup-self') - before.lookup).toBe(1);
    const lateReads = vault.requests.filter((r) => r.endpoint === 'kv-read' && r.at > issuedAt + 3_000);
    expect(lateReads.length).toBeGreaterThan(0);
    expect(lateReads.every((r) => r.tokenFingerprint === tokenFingerprint(token) && r.status === 200)).toBe(true);
  });

  it('leaks no Vault canary', () => {
    expectNoVaultLeak(proxies);
  });
});

// --- leases ---------------------------------------------------------------------------------------

describe('vault-lease: dynamic secrets', () => {
  /** Capped: a 3 s lease that Vault extends to at most 4 s after its creation, then must be replaced. */
  const CAPPED = 'database/creds/readonly';
  /**
   * Renewable for an hour: 3 s leases that Vault keeps extending. Ten independent ones, because the renewal
   * time is jittered at random in src, and a race with it must show up in every run, not one in three.
   */
  const LONG = Array.from({ length: 10 }, (_, i) => `database/creds/longlived${i}`);
  /** A lease of a year: 2/3 of it is past node's longest timer (2^31 - 1 ms), which node fires after 1 ms. */
  const YEAR = 'database/creds/yearlong';
  const passwords = new Map<string, string[]>();
  let vault: VaultServer;
  let upstream: Upstream;
  let proxy: ProxyFixture;

  function generator(path: string): () => Record<string, unknown> {
    const list: string[] = [];
    passwords.set(path, list);
    return () => {
      const password = plant('lease-password');
      list.push(password);
      return { username: `v-airlock-${list.length}`, password };
    };
  }

  beforeAll(async () => {
    vault = await vaultServer();
    vault.addLeaseRole(CAPPED, generator(CAPPED), { ttl: 3, maxTtl: 4 });
    for (const path of LONG) vault.addLeaseRole(path, generator(path), { ttl: 3, maxTtl: 3600 });
    vault.addLeaseRole(YEAR, generator(YEAR), { ttl: 365 * 24 * 3600, maxTtl: 365 * 24 * 3600 });
    upstream = await startUpstream();
    const services: Record<string, unknown> = { db: service(upstream, `vault-lease:${CAPPED}#password`) };
    LONG.forEach((path, i) => (services[`long${i}`] = service(upstream, `vault-lease:${path}#password`)));
    services['year'] = service(upstream, `vault-lease:${YEAR}#password`);
    proxy = await startProxy({ secrets: { vault: vaultSpec(vault) }, services, agents: agents(...Object.keys(services)) }, { env: { VAULT_TOKEN: vault.createToken() } });
  });

  afterAll(async () => {
    await proxy.close();
    await upstream.close();
  });

  const leasesOf = (path: string) => vault.leases().filter((l) => l.path === path);

  it('renews leases, replaces one that can no longer be extended, and fails no request', async () => {
    expect(leasesOf(CAPPED)).toHaveLength(1);
    for (const path of LONG) expect(leasesOf(path)).toHaveLength(1);
    const started = Date.now();
    const statuses: number[] = [];
    const capped = passwords.get(CAPPED) as string[];
    await eventually(
      'renewals and a replacement of the capped lease in use (and 5 s of traffic)',
      async () => {
        const round = await Promise.all(['db', ...LONG.map((_, i) => `long${i}`)].map((name) => call(proxy, name, `/v1/${name}`)));
        statuses.push(...round.map((r) => r.status));
        const lastCapped = bearerOf(upstream.requests.filter((r) => r.target === '/v1/db').at(-1));
        return Date.now() - started > 5_000 && vault.count('lease-renew') > 0 && leasesOf(CAPPED).length >= 2 && lastCapped !== capped[0];
      },
      12_000,
      25,
    );
    expect(statuses.every((s) => s === 200)).toBe(true);
    // Only values of the leases Vault minted, in the order it minted them: a lease once replaced is not used again.
    const seen = upstream.requests.filter((r) => r.target === '/v1/db').map((r) => capped.indexOf(bearerOf(r) ?? ''));
    expect(seen.every((i) => i >= 0)).toBe(true);
    expect(seen[0]).toBe(0);
    expect(seen.every((i, n) => n === 0 || i >= (seen[n - 1] as number))).toBe(true);
    expect(Math.max(...seen)).toBeGreaterThanOrEqual(1);
    // Rotated-out leases are kept through a grace period (30 s in src: not waited for here), not revoked at once.
    expect(vault.leases().filter((l) => l.revoked)).toEqual([]);
    expect(vault.count('lease-revoke')).toBe(0);
    // The audit generation names the lease (the last segment of its id).
    const records = await proxy.waitForAudit(statuses.length);
    const generations = new Set(records.filter((r) => r.service === 'db').map((r) => r.generation));
    expect(generations.size).toBe(new Set(seen).size);
    expect([...generations].every((g) => g !== null && leasesOf(CAPPED).some((l) => l.id.endsWith(`/${g}`)))).toBe(true);
  });

  // A renewable lease is kept and renewed by its timer, never replaced while Vault extends it.
  it('keeps one lease that Vault keeps extending, renewing it instead of replacing it', () => {
    const renewals = LONG.map((path) => leasesOf(path).map((l) => l.renewCount));
    expect(renewals.filter((counts) => counts.length !== 1 || (counts[0] as number) < 2)).toEqual([]);
  });

  // The session's renewal timer had this bug too (its test is above); the lease's is capped the same way.
  it('a lease of a year is renewed in its time, not in a loop', async () => {
    expect((await call(proxy, 'year', '/v1/year')).status).toBe(200);
    const year = leasesOf(YEAR);
    expect(year).toHaveLength(1);
    // Minted when the proxy started, seconds ago: on the uncapped timer it had been renewed thousands of times.
    expect(year[0]?.renewCount).toBe(0);
  });

  it('revokes every lease, including the rotated-out ones still in their grace period, at shutdown', async () => {
    expectNoVaultLeak([proxy]);
    await proxy.close();
    const leases = vault.leases();
    expect(leases.length).toBeGreaterThanOrEqual(1 + LONG.length + 1);
    expect(leases.filter((l) => !l.revoked)).toEqual([]);
    expect(vault.count('lease-revoke')).toBeGreaterThanOrEqual(leases.length);
  });
});

// --- retry_on: the upstream already refuses the old key ------------------------------------------

describe('retry_on [401]: replay once with the rotated credential', () => {
  const pay = [plant('pay-v1'), plant('pay-v2'), plant('pay-v3')] as const;
  const ledger = [plant('ledger-v1'), plant('ledger-v2')] as const;
  /** The keys the upstream accepts right now; any other gets a 401 that echoes the key, as some APIs do. */
  const accepted = new Set<string>();
  let vault: VaultServer;
  let upstream: Upstream;
  let proxy: ProxyFixture;

  beforeAll(async () => {
    vault = await vaultServer();
    vault.putSecret('secret', 'pay', { api_key: pay[0] });
    vault.putSecret('secret', 'ledger', { api_key: ledger[0] });
    accepted.add(pay[0]).add(ledger[0]);
    upstream = await startUpstream((_req, res, recorded) => {
      const presented = bearerOf(recorded) ?? '';
      const ok = accepted.has(presented);
      const body = ok
        ? JSON.stringify({ ok: true, method: recorded.method, bytes: recorded.body.length })
        : JSON.stringify({ error: { type: 'invalid_request_error', message: `Invalid API key provided: ${presented}` } });
      res.writeHead(ok ? 200 : 401, { 'content-type': 'application/json', 'content-length': Buffer.byteLength(body) });
      res.end(body);
    });
    proxy = await startProxy(
      {
        secrets: { vault: vaultSpec(vault) },
        services: {
          pay: service(upstream, 'vault:secret/pay#api_key', { ttl: 3600, retry_on: [401] }),
          ledger: service(upstream, 'vault:secret/ledger#api_key', { ttl: 3600 }),
        },
        agents: agents('pay', 'ledger'),
      },
      { env: { VAULT_TOKEN: vault.createToken() } },
    );
  });

  afterAll(async () => {
    await proxy.close();
    await upstream.close();
  });

  it('GET: after a rotation in Vault the 401 is replayed once with the new key; audit shows both generations', async () => {
    const first = await call(proxy, 'pay', '/v1/balance');
    expect(first.status).toBe(200);
    expect((await auditOf(proxy, first)).generation).toBe('1');

    vault.putSecret('secret', 'pay', { api_key: pay[1] });
    accepted.delete(pay[0]);
    accepted.add(pay[1]);
    const before = upstream.requests.length;
    const response = await call(proxy, 'pay', '/v1/balance');
    expect(response.status, response.text).toBe(200);
    const attempts = upstream.requests.slice(before);
    expect(attempts.map(bearerOf)).toEqual([pay[0], pay[1]]);
    expect(attempts.map((r) => r.target)).toEqual(['/v1/balance', '/v1/balance']);
    expect(await auditOf(proxy, response)).toMatchObject({ status: 200, upstream_status: 200, generation: '2', rotated_from: '1' });
  });

  it('POST: the small body arrives byte-exact on the replay', async () => {
    vault.putSecret('secret', 'pay', { api_key: pay[2] });
    accepted.delete(pay[1]);
    accepted.add(pay[2]);
    const body = Buffer.concat([Buffer.from('{"amount":1200,"currency":"eur","note":"Grüße ✓"}\r\n', 'utf8'), Buffer.from([0x00, 0x01, 0x7f, 0x80, 0xfe, 0xff])]);
    const before = upstream.requests.length;
    const response = await call(proxy, 'pay', '/v1/charges', { method: 'POST', body, headers: { 'content-type': 'application/octet-stream' } });
    expect(response.status, response.text).toBe(200);
    expect(response.json()).toMatchObject({ ok: true, method: 'POST', bytes: body.length });
    const attempts = upstream.requests.slice(before);
    expect(attempts.map(bearerOf)).toEqual([pay[1], pay[2]]);
    for (const attempt of attempts) {
      expect(attempt.method).toBe('POST');
      expect(attempt.body.equals(body)).toBe(true);
    }
    expect(await auditOf(proxy, response)).toMatchObject({ method: 'POST', status: 200, generation: '3', rotated_from: '2' });
  });

  it('without retry_on the agent gets the 401 (redacted), after one upstream request', async () => {
    expect((await call(proxy, 'ledger', '/v1/entries')).status).toBe(200);
    vault.putSecret('secret', 'ledger', { api_key: ledger[1] });
    accepted.delete(ledger[0]);
    accepted.add(ledger[1]);
    const before = upstream.requests.length;
    const reads = vault.count('kv-read');
    const response = await call(proxy, 'ledger', '/v1/entries');
    expect(response.status).toBe(401);
    expect(response.text).toContain('Invalid API key provided: ');
    expect(response.text).not.toContain(ledger[0]);
    expect(upstream.requests.length - before).toBe(1);
    expect(bearerOf(upstream.requests.at(-1))).toBe(ledger[0]);
    expect(vault.count('kv-read')).toBe(reads);
    expect(await auditOf(proxy, response)).toMatchObject({ status: 401, upstream_status: 401, generation: '1', rotated_from: null });
  });

  it('when the value did not change the agent gets the original 401 (redacted), one upstream request per attempt, one Vault read per few seconds', async () => {
    accepted.delete(pay[2]);
    for (let attempt = 0; attempt < 2; attempt++) {
      const before = upstream.requests.length;
      const reads = vault.count('kv-read');
      const response = await call(proxy, 'pay', '/v1/balance');
      expect(response.status).toBe(401);
      const error = response.json<{ error: { type: string; message: string } }>().error;
      expect(error.type).toBe('invalid_request_error');
      expect(error.message.startsWith('Invalid API key provided: ')).toBe(true);
      expect(response.text).not.toContain(pay[2]);
      expect(upstream.requests.length - before).toBe(1);
      expect(bearerOf(upstream.requests.at(-1))).toBe(pay[2]);
      // Airlock looked again (one read) before handing the first 401 over; the second, moments later, is
      // not another read (a refetch that found nothing new is spaced by a few seconds).
      expect(vault.count('kv-read') - reads).toBe(attempt === 0 ? 1 : 0);
      expect(await auditOf(proxy, response)).toMatchObject({ status: 401, upstream_status: 401, generation: '3', rotated_from: null });
    }
  });

  it('a replay refused too and echoing the new key: the agent gets it masked, in every encoding', async () => {
    // Shaped like no provider key, so only Airlock knowing the rotated value can mask it.
    const rotated = plainCanary('pay-v4');
    planted.push(rotated);
    // Past the spacing of forced refetches (the test above just made one).
    await new Promise((resolve) => setTimeout(resolve, 2_100));
    vault.putSecret('secret', 'pay', { api_key: rotated });
    const before = upstream.requests.length;
    const response = await call(proxy, 'pay', '/v1/balance');
    expect(response.status).toBe(401);
    expect(upstream.requests.slice(before).map(bearerOf)).toEqual([pay[2], rotated]);
    expect(response.json<{ error: { message: string } }>().error.message).toBe('Invalid API key provided: [REDACTED]');
    assertNoLeak([rotated], [{ name: 'agent response', text: `${JSON.stringify(response.headers)}\n${response.text}` }]);
    expect(await auditOf(proxy, response)).toMatchObject({ status: 401, generation: '4', rotated_from: '3' });
  });

  it('leaks no Vault canary', () => {
    expectNoVaultLeak([proxy]);
  });
});

// --- retry_on: only a buffered body up to 64 KiB with a Content-Length is replayed ----------------

describe('retry_on [401]: which request bodies are replayed', () => {
  const keys = [plant('bulk-v1'), plant('bulk-v2'), plant('bulk-v3')] as const;
  const accepted = new Set<string>();
  let vault: VaultServer;
  let upstream: Upstream;
  let proxy: ProxyFixture;
  /** When the last forced refetch happened: refusals force at most one every 2 s per reference. */
  let lastForced = 0;

  /** A body of exactly `size` bytes that is not all one byte, so truncation or reordering shows. */
  function bodyOf(size: number): Buffer {
    const body = Buffer.alloc(size);
    for (let i = 0; i < size; i++) body[i] = (i * 31 + 7) & 0xff;
    return body;
  }

  function rotateTo(version: 1 | 2): void {
    vault.putSecret('secret', 'bulk', { api_key: keys[version] });
    accepted.clear();
    accepted.add(keys[version]);
  }

  beforeAll(async () => {
    vault = await vaultServer();
    vault.putSecret('secret', 'bulk', { api_key: keys[0] });
    accepted.add(keys[0]);
    upstream = await startUpstream((_req, res, recorded) => {
      const presented = bearerOf(recorded) ?? '';
      const ok = accepted.has(presented);
      const body = ok
        ? JSON.stringify({ ok: true, bytes: recorded.body.length })
        : JSON.stringify({ error: { type: 'invalid_request_error', message: `Invalid API key provided: ${presented}` } });
      res.writeHead(ok ? 200 : 401, { 'content-type': 'application/json', 'content-length': Buffer.byteLength(body) });
      res.end(body);
    });
    proxy = await startProxy(
      {
        secrets: { vault: vaultSpec(vault) },
        services: { bulk: service(upstream, 'vault:secret/bulk#api_key', { ttl: 3600, retry_on: [401] }) },
        agents: agents('bulk'),
      },
      { env: { VAULT_TOKEN: vault.createToken() } },
    );
  });

  afterAll(async () => {
    await proxy.close();
    await upstream.close();
  });

  it('a small body with a Content-Length is still replayed once with the rotated key', async () => {
    expect((await call(proxy, 'bulk')).status).toBe(200);
    rotateTo(1);
    const body = bodyOf(1000);
    const before = upstream.requests.length;
    lastForced = Date.now();
    const response = await call(proxy, 'bulk', '/v1/charges', { method: 'POST', body, headers: { 'content-type': 'application/octet-stream' } });
    expect(response.status, response.text).toBe(200);
    const attempts = upstream.requests.slice(before);
    expect(attempts.map(bearerOf)).toEqual([keys[0], keys[1]]);
    for (const attempt of attempts) expect(attempt.body.equals(body)).toBe(true);
    expect(await auditOf(proxy, response)).toMatchObject({ method: 'POST', status: 200, upstream_status: 200, generation: '2', rotated_from: '1' });
  });

  it('a body over 64 KiB is streamed, not replayed: the agent gets the 401 (redacted) after exactly one upstream request', async () => {
    rotateTo(2);
    const body = bodyOf(64 * 1024 + 1);
    const before = upstream.requests.length;
    const reads = vault.count('kv-read');
    const response = await call(proxy, 'bulk', '/v1/charges', { method: 'POST', body, headers: { 'content-type': 'application/octet-stream' } });
    expect(response.status, response.text).toBe(401);
    expect(response.text).toContain('Invalid API key provided: ');
    expect(response.text).not.toContain(keys[1]);
    const attempts = upstream.requests.slice(before);
    expect(attempts).toHaveLength(1);
    expect(bearerOf(attempts[0])).toBe(keys[1]);
    expect(attempts[0]?.body.equals(body)).toBe(true);
    // Nothing to replay, so nothing is fetched again either.
    expect(vault.count('kv-read')).toBe(reads);
    expect(await auditOf(proxy, response)).toMatchObject({ method: 'POST', status: 401, upstream_status: 401, generation: '2', rotated_from: null });
  });

  it('a chunked body (no Content-Length), however small, is streamed, not replayed: the 401 after exactly one upstream request', async () => {
    const chunks = ['{"amount":', '1200,', '"currency":"eur"}'];
    const before = upstream.requests.length;
    const reads = vault.count('kv-read');
    const response = await call(proxy, 'bulk', '/v1/charges', { method: 'POST', chunks, headers: { 'content-type': 'application/json' } });
    expect(response.status, response.text).toBe(401);
    expect(response.text).not.toContain(keys[1]);
    const attempts = upstream.requests.slice(before);
    expect(attempts).toHaveLength(1);
    expect(bearerOf(attempts[0])).toBe(keys[1]);
    expect(attempts[0]?.body.toString('utf8')).toBe(chunks.join(''));
    expect(vault.count('kv-read')).toBe(reads);
    expect(await auditOf(proxy, response)).toMatchObject({ method: 'POST', status: 401, upstream_status: 401, generation: '2', rotated_from: null });
  });

  it('a body of exactly 64 KiB with a Content-Length is replayed byte-exact', async () => {
    // Past the 2 s spacing of forced refetches since the first test's replay.
    await sleep(Math.max(0, lastForced + 2_200 - Date.now()));
    const body = bodyOf(64 * 1024);
    const before = upstream.requests.length;
    const response = await call(proxy, 'bulk', '/v1/charges', { method: 'POST', body, headers: { 'content-type': 'application/octet-stream' } });
    expect(response.status, response.text).toBe(200);
    expect(response.json()).toMatchObject({ ok: true, bytes: body.length });
    const attempts = upstream.requests.slice(before);
    expect(attempts.map(bearerOf)).toEqual([keys[1], keys[2]]);
    for (const attempt of attempts) expect(attempt.body.equals(body)).toBe(true);
    expect(await auditOf(proxy, response)).toMatchObject({ method: 'POST', status: 200, upstream_status: 200, generation: '3', rotated_from: '2' });
  });

  it('leaks no Vault canary', () => {
    expectNoVaultLeak([proxy]);
  });
});

// --- vault-lease: a transient failure never revokes a lease ----------------------------------------

describe('vault-lease: a transient Vault failure during renewal never revokes the lease', () => {
  const PATH = 'database/creds/steady';
  const passwords: string[] = [];
  let vault: VaultServer;
  let upstream: Upstream;
  let proxy: ProxyFixture;

  const leases = () => vault.leases().filter((l) => l.path === PATH);
  const renewals = () => vault.requests.filter((r) => r.endpoint === 'lease-renew');

  beforeAll(async () => {
    vault = await vaultServer();
    // 6 s renewable leases: renewed at about 4 s; a failed renewal is retried after about a third of what is left.
    vault.addLeaseRole(
      PATH,
      () => {
        const password = plant('steady-pass');
        passwords.push(password);
        return { username: `v-steady-${passwords.length}`, password };
      },
      { ttl: 6, maxTtl: 3600 },
    );
    upstream = await startUpstream();
    proxy = await startProxy(
      { secrets: { vault: vaultSpec(vault) }, services: { steady: service(upstream, `vault-lease:${PATH}#password`) }, agents: agents('steady') },
      { env: { VAULT_TOKEN: vault.createToken() } },
    );
  });

  afterAll(async () => {
    await proxy.close();
    await upstream.close();
  });

  /**
   * Sends requests every 50 ms while `body` runs; returns each response status with the password the
   * upstream saw.
   */
  async function underTraffic(body: () => Promise<void>): Promise<Array<{ status: number; password: string | undefined }>> {
    const seen: Array<{ status: number; password: string | undefined }> = [];
    let running = true;
    const traffic = (async () => {
      while (running) {
        const before = upstream.requests.length;
        const response = await call(proxy, 'steady');
        seen.push({ status: response.status, password: bearerOf(upstream.requests.slice(before).at(-1)) });
        await sleep(50);
      }
    })();
    try {
      await body();
    } finally {
      running = false;
      await traffic;
    }
    return seen;
  }

  function expectSteady(seen: ReadonlyArray<{ status: number; password: string | undefined }>): void {
    expect(seen.length).toBeGreaterThan(10);
    expect(seen.filter((s) => s.status !== 200)).toEqual([]);
    expect(new Set(seen.map((s) => s.password))).toEqual(new Set([passwords[0]]));
    expect(leases()).toHaveLength(1);
    expect(leases()[0]).toMatchObject({ revoked: false, expired: false });
    expect(vault.count('lease-revoke')).toBe(0);
    expect(vault.count('lease-create')).toBe(1);
  }

  it('a renewal answered 503 (Vault sealed) keeps the lease; requests keep its password; the retry renews it', async () => {
    const seen = await underTraffic(async () => {
      expect(leases()).toHaveLength(1);
      vault.seal();
      try {
        await eventually('a renewal refused while sealed', () => renewals().some((r) => r.status === 503), 8_000, 10);
      } finally {
        vault.unseal();
      }
      const failedAt = renewals().findIndex((r) => r.status === 503);
      await eventually('a successful renewal after the failure', () => renewals().slice(failedAt + 1).some((r) => r.status === 200), 4_000, 10);
    });
    expectSteady(seen);
    expect(leases()[0]?.renewCount).toBeGreaterThanOrEqual(1);
  });

  it('a renewal whose connection is reset keeps the lease too, and a later renewal succeeds past its first TTL', async () => {
    const renewCount = leases()[0]?.renewCount ?? 0;
    const seen = await underTraffic(async () => {
      // Drop every connection until the next renewal (about 4 s after the last one) has been tried.
      const dropped = vault.droppedConnections;
      await vault.setDown(true, 'reset');
      try {
        await eventually('a renewal attempt dropped', () => vault.droppedConnections > dropped, 8_000, 10);
      } finally {
        await vault.setDown(false);
      }
      await eventually('a renewal after the reset', () => (leases()[0]?.renewCount ?? 0) > renewCount, 4_000, 10);
    });
    expectSteady(seen);
    const lease = leases()[0];
    expect(Date.now() - (lease?.created ?? Date.now())).toBeGreaterThan(6_000);
  });

  it('leaks no Vault canary', () => {
    expectNoVaultLeak([proxy]);
  });
});

// --- admin API and `secrets rotate` ---------------------------------------------------------------

describe('admin API and `airlock secrets rotate`', () => {
  const REF = 'vault:secret/stripe#api_key';
  const keys = [plant('admin-v1'), plant('admin-v2'), plant('admin-v3'), plant('admin-v4')] as const;
  let vault: VaultServer;
  let upstream: Upstream;
  let proxy: ProxyFixture;
  let configFile: string;
  let adminUrl: string;

  async function admin(method: string, path: string, token: string | null = adminToken.token, body?: unknown): Promise<SentResponse> {
    const response = await sendRequest(`${adminUrl}${path}`, {
      method,
      headers: { ...(token === null ? {} : { authorization: `Bearer ${token}` }), ...(body === undefined ? {} : { 'content-type': 'application/json' }) },
      ...(body === undefined ? {} : { body: JSON.stringify(body) }),
    });
    adminSeen.push(`${response.status}\n${JSON.stringify(response.headers)}\n${response.text}`);
    return response;
  }

  beforeAll(async () => {
    vault = await vaultServer();
    vault.putSecret('secret', 'stripe', { api_key: keys[0] });
    upstream = await startUpstream();
    const port = await freePort();
    const started = await startProxyWithFile(
      {
        secrets: { vault: vaultSpec(vault) },
        services: { stripe: service(upstream, REF, { ttl: 3600 }) },
        agents: agents('stripe'),
        admin: { listen: `127.0.0.1:${port}`, tokens: [adminToken.hash] },
      },
      { env: { VAULT_TOKEN: vault.createToken() } },
    );
    proxy = started.proxy;
    configFile = started.configFile;
    adminUrl = proxy.airlock.adminUrl as string;
    expect(adminUrl).toBe(`http://127.0.0.1:${port}`);
  });

  afterAll(async () => {
    await proxy.close();
    await upstream.close();
  });

  it('GET /v1/credentials shows the reference, state and generation, never a value', async () => {
    expect((await call(proxy, 'stripe')).status).toBe(200);
    const response = await admin('GET', '/v1/credentials');
    expect(response.status).toBe(200);
    const { credentials } = response.json<{ credentials: Array<Record<string, unknown>> }>();
    expect(credentials.find((c) => c['ref'] === REF)).toMatchObject({ ref: REF, state: 'fresh', generation: '1', failing: false, consecutive_failures: 0 });
    assertNoLeak(allCanaries(), [{ name: 'GET /v1/credentials', text: response.text }]);
    const health = await admin('GET', '/v1/health');
    expect(health.status).toBe(200);
    expect(health.json()).toMatchObject({ status: 'ok', credentials: { failing: 0 } });
  });

  it('POST /v1/credentials/refresh picks up a rotated version at once (no waiting for the TTL)', async () => {
    vault.putSecret('secret', 'stripe', { api_key: keys[1] });
    expect((await call(proxy, 'stripe')).status).toBe(200);
    expect(bearerOf(upstream.requests.at(-1))).toBe(keys[0]);
    const refreshed = await admin('POST', '/v1/credentials/refresh', adminToken.token, { ref: REF });
    expect(refreshed.status, refreshed.text).toBe(200);
    expect(refreshed.json()).toEqual({ ref: REF, generation: '2', previous_generation: '1', changed: true });
    const response = await call(proxy, 'stripe');
    expect(response.status).toBe(200);
    expect(bearerOf(upstream.requests.at(-1))).toBe(keys[1]);
    expect((await auditOf(proxy, response)).generation).toBe('2');
  });

  // Found by probing: any reference was fetched and then remembered, so env:PATH became a managed
  // secret (every request carrying that text refused) and made-up references were listed as failing.
  it('POST /v1/credentials/refresh of a reference Airlock does not use is 404, and nothing is fetched or remembered', async () => {
    const reads = vault.count('kv-read');
    for (const ref of ['env:PATH', 'vault:secret/nothing#here', 'file:nope']) {
      const refused = await admin('POST', '/v1/credentials/refresh', adminToken.token, { ref });
      expect(refused.status, refused.text).toBe(404);
      const problem = refused.json<Problem>();
      expect(problem.code).toBe('not_found');
      expect(problem.detail).toContain(`Airlock does not use ${ref}`);
      expect(problem.detail).toContain(REF);
    }
    expect(vault.count('kv-read')).toBe(reads);
    const listed = (await admin('GET', '/v1/credentials')).json<{ credentials: Array<{ ref: string }> }>().credentials.map((c) => c.ref);
    expect(listed).not.toContain('env:PATH');
    expect(listed).not.toContain('vault:secret/nothing#here');
    // The Vault login's own reference is one Airlock uses, read or not: it may be refreshed.
    const login = await admin('POST', '/v1/credentials/refresh', adminToken.token, { ref: 'env:VAULT_TOKEN' });
    expect(login.status, login.text).toBe(200);
    // A request that happens to carry the text of PATH is still forwarded.
    expect((await call(proxy, 'stripe', `/v1/charges?p=${encodeURIComponent(process.env['PATH'] ?? '/usr/bin')}`)).status).toBe(200);
  });

  it('`secrets rotate REF` asks the running proxy to fetch again', async () => {
    vault.putSecret('secret', 'stripe', { api_key: keys[2] });
    const rotated = await cli(['secrets', 'rotate', REF, '--config', configFile], { AIRLOCK_ADMIN_TOKEN: adminToken.token });
    expect(rotated.code, rotated.stderr).toBe(0);
    expect(rotated.stdout).toContain(`Airlock now uses ${REF}, generation 3 (was 2)`);
    const response = await call(proxy, 'stripe');
    expect(bearerOf(upstream.requests.at(-1))).toBe(keys[2]);
    expect((await auditOf(proxy, response)).generation).toBe('3');
  });

  it('refuses a wrong or missing admin token with 401, on the API and through the CLI', async () => {
    for (const token of [null, agent.token, generateAgentToken().token, 'not-a-token']) {
      for (const [method, path, body] of [
        ['GET', '/v1/credentials', undefined],
        ['GET', '/v1/health', undefined],
        ['POST', '/v1/credentials/refresh', { ref: REF }],
      ] as const) {
        const response = await admin(method, path, token, body);
        expect(response.status, `${method} ${path}`).toBe(401);
        expect(response.json<Problem>().code).toBe('unauthenticated');
        expect(response.headers['www-authenticate']).toContain('Bearer');
      }
    }
    const wrong = await cli(['secrets', 'rotate', REF, '--config', configFile], { AIRLOCK_ADMIN_TOKEN: generateAgentToken().token });
    expect(wrong.code).toBe(1);
    expect(wrong.stderr).toContain('401');
    const missing = await cli(['secrets', 'rotate', REF, '--config', configFile], {});
    expect(missing.code).toBe(1);
    expect(missing.stderr).toContain('AIRLOCK_ADMIN_TOKEN');
    // Nothing changed: still generation 3.
    const status = await admin('GET', '/v1/credentials');
    expect(status.json<{ credentials: Array<Record<string, unknown>> }>().credentials.find((c) => c['ref'] === REF)?.['generation']).toBe('3');
  });

  // Regression (found by this file, fixed in credential-cache.ts refresh()): a forced refresh that failed used to
  // return the last known good value, so the admin API answered 200 and `secrets rotate` exited 0.
  it('a forced refresh while Vault is unreachable reports the failure instead of success', async () => {
    vault.putSecret('secret', 'stripe', { api_key: keys[3] });
    await vault.setDown(true);
    try {
      const refreshed = await admin('POST', '/v1/credentials/refresh', adminToken.token, { ref: REF });
      const rotated = await cli(['secrets', 'rotate', REF, '--config', configFile], { AIRLOCK_ADMIN_TOKEN: adminToken.token });
      expect({ admin: refreshed.status, cli: rotated.code }).toEqual({ admin: 503, cli: 1 });
    } finally {
      await vault.setDown(false);
    }
  });

  it('leaks no Vault canary into agent or admin responses, CLI output, logs or audit', () => {
    expect(adminSeen.length).toBeGreaterThan(0);
    expect(cliSeen.join('').length).toBeGreaterThan(0);
    expectNoVaultLeak([proxy]);
  });
});

// --- forced refresh of a lease: rotate, admin refresh, retry_on ------------------------------------

// Regression: a forced refresh (rotate, admin refresh, a 401 with retry_on) of a vault-lease: reference
// used to return the lease in use while enough of its life was left: `changed: false`, and the same
// refused password resent.
describe('vault-lease: a forced refresh takes a new lease', () => {
  const PATH = 'database/creds/app';
  const PASSWORD = `vault-lease:${PATH}#password`;
  /** Every lease this role mints, in order, with its (canary) user name and password. */
  const minted: Array<{ username: string; password: string }> = [];
  /** Passwords the upstream refuses (as a database would once a user is dropped); any other minted one is accepted. */
  const refused = new Set<string>();
  let vault: VaultServer;
  let upstream: Upstream;
  let proxy: ProxyFixture;
  let configFile: string;
  let adminUrl: string;

  const leases = () => vault.leases().filter((l) => l.path === PATH);
  /** The audit generation of a lease: the last segment of its id. */
  const generationOf = (index: number) => {
    const id = leases()[index]?.id ?? '';
    return id.slice(id.lastIndexOf('/') + 1);
  };

  async function admin(path: string, body: unknown): Promise<SentResponse> {
    const response = await sendRequest(`${adminUrl}${path}`, {
      method: 'POST',
      headers: { authorization: `Bearer ${adminToken.token}`, 'content-type': 'application/json' },
      body: JSON.stringify(body),
    });
    adminSeen.push(`${response.status}\n${JSON.stringify(response.headers)}\n${response.text}`);
    return response;
  }

  beforeAll(async () => {
    vault = await vaultServer();
    // Hour-long renewable leases: without a forced refresh the first one would be kept all along.
    vault.addLeaseRole(
      PATH,
      () => {
        const pair = { username: plant('lease-user'), password: plant('lease-pass') };
        minted.push(pair);
        return pair;
      },
      { ttl: 3600, maxTtl: 86_400 },
    );
    upstream = await startUpstream((_req, res, recorded) => {
      const presented = bearerOf(recorded) ?? '';
      const ok = !refused.has(presented) && minted.some((m) => m.password === presented || m.username === presented);
      const body = ok ? '{"ok":true}' : '{"error":"password authentication failed"}';
      res.writeHead(ok ? 200 : 401, { 'content-type': 'application/json', 'content-length': Buffer.byteLength(body) });
      res.end(body);
    });
    const port = await freePort();
    const started = await startProxyWithFile(
      {
        secrets: { vault: vaultSpec(vault) },
        services: {
          app: service(upstream, PASSWORD, { retry_on: [401] }),
          // Another field of the same lease: it must follow the password to the new lease.
          appuser: service(upstream, `vault-lease:${PATH}#username`),
        },
        agents: agents('app', 'appuser'),
        admin: { listen: `127.0.0.1:${port}`, tokens: [adminToken.hash] },
      },
      { env: { VAULT_TOKEN: vault.createToken() } },
    );
    proxy = started.proxy;
    configFile = started.configFile;
    adminUrl = proxy.airlock.adminUrl as string;
  });

  afterAll(async () => {
    await proxy.close();
    await upstream.close();
  });

  it('a 401 with retry_on takes a new lease and replays the request with it; a 401 for that new one moments later mints no further lease', async () => {
    expect((await call(proxy, 'app')).status).toBe(200);
    expect(bearerOf(upstream.requests.at(-1))).toBe(minted[0]?.password);
    expect(leases()).toHaveLength(1);

    refused.add(minted[0]?.password as string);
    const before = upstream.requests.length;
    const response = await call(proxy, 'app', '/v1/charges', { method: 'POST', body: '{"amount":1}', headers: { 'content-type': 'application/json' } });
    expect(response.status, response.text).toBe(200);
    expect(leases()).toHaveLength(2);
    expect(upstream.requests.slice(before).map(bearerOf)).toEqual([minted[0]?.password, minted[1]?.password]);
    expect(upstream.requests.slice(before).map((r) => r.body.toString('utf8'))).toEqual(['{"amount":1}', '{"amount":1}']);
    expect(await auditOf(proxy, response)).toMatchObject({ status: 200, generation: generationOf(1), rotated_from: generationOf(0) });
    // Rotated out, not revoked at once: requests already sent with it may finish (30 s grace in src).
    expect(leases().map((l) => l.revoked)).toEqual([false, false]);

    // The upstream refuses the new one too (it is broken, not the lease): within a few seconds of the
    // forced refresh the current lease is taken again, not a third minted, and the agent gets the 401.
    refused.add(minted[1]?.password as string);
    const again = upstream.requests.length;
    const refusedResponse = await call(proxy, 'app');
    expect(refusedResponse.status).toBe(401);
    expect(upstream.requests.slice(again).map(bearerOf)).toEqual([minted[1]?.password]);
    expect(leases()).toHaveLength(2);
  });

  it('POST /v1/credentials/refresh takes a new lease (changed, new generation); the next request carries its password, and another field of the lease follows', async () => {
    const refreshed = await admin('/v1/credentials/refresh', { ref: PASSWORD });
    expect(refreshed.status, refreshed.text).toBe(200);
    expect(leases()).toHaveLength(3);
    expect(refreshed.json()).toEqual({ ref: PASSWORD, generation: generationOf(2), previous_generation: generationOf(1), changed: true });

    const response = await call(proxy, 'app');
    expect(response.status).toBe(200);
    expect(bearerOf(upstream.requests.at(-1))).toBe(minted[2]?.password);
    expect(await auditOf(proxy, response)).toMatchObject({ credential: PASSWORD, generation: generationOf(2), rotated_from: null });
    // The user name comes from the new lease too: never the old lease's user with the new password.
    expect((await call(proxy, 'appuser')).status).toBe(200);
    expect(bearerOf(upstream.requests.at(-1))).toBe(minted[2]?.username);
  });

  it('`secrets rotate REF` takes another new lease, and the next request carries its password', async () => {
    expect((await call(proxy, 'appuser')).status).toBe(200);
    const rotated = await cli(['secrets', 'rotate', PASSWORD, '--config', configFile], { AIRLOCK_ADMIN_TOKEN: adminToken.token });
    expect(rotated.code, rotated.stderr).toBe(0);
    expect(leases()).toHaveLength(4);
    expect(rotated.stdout).toContain(`Airlock now uses ${PASSWORD}, generation ${generationOf(3)} (was ${generationOf(2)})`);
    const response = await call(proxy, 'app');
    expect(response.status).toBe(200);
    expect(bearerOf(upstream.requests.at(-1))).toBe(minted[3]?.password);
    expect((await auditOf(proxy, response)).generation).toBe(generationOf(3));
    expect((await call(proxy, 'appuser')).status).toBe(200);
    expect(bearerOf(upstream.requests.at(-1))).toBe(minted[3]?.username);
  });

  it('leaks no Vault canary', () => {
    expectNoVaultLeak([proxy]);
  });
});

describe('vault-lease: a replaced lease is revoked once secrets.vault.rotation_grace has passed', () => {
  const PATH = 'database/creds/graced';
  const minted: Array<{ username: string; password: string }> = [];
  let vault: VaultServer;
  let upstream: Upstream;
  let proxy: ProxyFixture;

  const leases = () => vault.leases().filter((l) => l.path === PATH);

  beforeAll(async () => {
    vault = await vaultServer();
    vault.addLeaseRole(
      PATH,
      () => {
        const pair = { username: plant('graced-user'), password: plant('graced-pass') };
        minted.push(pair);
        return pair;
      },
      { ttl: 3600, maxTtl: 86_400 },
    );
    upstream = await startUpstream();
    const port = await freePort();
    proxy = await startProxy(
      {
        secrets: { vault: vaultSpec(vault, TOKEN_AUTH, { rotation_grace: 0.6 }) },
        services: { app: service(upstream, `vault-lease:${PATH}#password`) },
        agents: agents('app'),
        admin: { listen: `127.0.0.1:${port}`, tokens: [adminToken.hash] },
      },
      { env: { VAULT_TOKEN: vault.createToken() } },
    );
  });

  afterAll(async () => {
    await proxy.close();
    await upstream.close();
  });

  it('keeps the old lease valid through the grace (requests in flight finish with it), then revokes it; the new one stays', async () => {
    expect((await call(proxy, 'app')).status).toBe(200);
    expect(leases()).toHaveLength(1);
    const refreshed = await sendRequest(`${proxy.airlock.adminUrl as string}/v1/credentials/refresh`, {
      method: 'POST',
      headers: { authorization: `Bearer ${adminToken.token}`, 'content-type': 'application/json' },
      body: JSON.stringify({ ref: `vault-lease:${PATH}#password` }),
    });
    adminSeen.push(refreshed.text);
    expect(refreshed.status, refreshed.text).toBe(200);
    expect(leases()).toHaveLength(2);
    const [old, fresh] = leases();
    // Within the grace the replaced lease is still valid in Vault.
    expect(old?.revoked).toBe(false);
    await eventually('the replaced lease to be revoked after the grace', () => leases()[0]?.revoked === true, 5_000, 50);
    expect(leases()[1]?.revoked).toBe(false);
    expect(leases()[1]?.id).toBe(fresh?.id);
    expect((await call(proxy, 'app')).status).toBe(200);
    expect(bearerOf(upstream.requests.at(-1))).toBe(minted[1]?.password);
  });
});
