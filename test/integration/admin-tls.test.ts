/**
 * `admin.tls` serves the admin API, console and /metrics over HTTPS. The CLI reaches it with the
 * certificate of admin.tls.cert_file pinned, and sends no token to a listener presenting another one;
 * a plain-HTTP call is answered 400 saying to use https://, and one that carried a token is logged as
 * exposed; a reload serves a renewed certificate; health, status and metrics report its end; check
 * lists a broken admin.tls against its path. Private keys and tokens reach no output.
 */
import { once } from 'node:events';
import { X509Certificate } from 'node:crypto';
import { copyFileSync, existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createServer as createHttpsServer } from 'node:https';
import type { AddressInfo } from 'node:net';
import { chromium } from 'playwright-core';
import { Agent, fetch as undiciFetch } from 'undici';
import { afterAll, beforeAll, describe, expect, it, vi } from 'vitest';
import { formatProblem } from '../../src/config/config-problem.js';
import { buildConfig } from '../../src/config/load-config.js';
import { generateAgentToken } from '../../src/identity/agent-token.js';
import { assertNoLeak } from '../helpers/assert-no-leak.js';
import { canary } from '../helpers/canary.js';
import { eventually, freePort, runCliCapture, writeConfigFile } from '../helpers/operator.js';
import { rawRequest } from '../helpers/raw-http.js';
import { spawnServe } from '../helpers/spawn-serve.js';
import { startProxy, tempDir, type ProxyFixture } from '../helpers/start-proxy.js';
import { startUpstream, type Upstream } from '../helpers/start-upstream.js';
import { HAVE_OPENSSL, makeTestCa, servedFingerprint, warnWithoutOpenssl, type TestCa } from '../helpers/test-certificates.js';

warnWithoutOpenssl('admin-tls.test.ts', 'the HTTPS admin listener tests');

const CHROMIUM = '/usr/bin/chromium';
const haveChromium = existsSync(CHROMIUM);
if (!haveChromium) {
  console.warn(`\n*** admin-tls.test.ts: ${CHROMIUM} is missing, so the console over HTTPS is SKIPPED. Install the Debian package \`chromium\` (apt-get install chromium; .ci/run does this). ***\n`);
}

const agent = generateAgentToken();
const admin = generateAgentToken();
const serviceKey = canary('admin-tls-service');

function config(upstream: string, files: { key: string; cert: string }, adminListen = '127.0.0.1:0'): Record<string, unknown> {
  return {
    admin: { listen: adminListen, tokens: [admin.hash], tls: { cert_file: files.cert, key_file: files.key } },
    services: {
      api: { upstream, credential: { secret: 'env:SERVICE_KEY', inject: 'bearer' }, routes: [{ method: 'GET', path: '/v1/things', scope: 'things:read' }] },
    },
    agents: { bot: { tokens: [agent.hash], credentials: [{ service: 'api', max_scope: ['things:read'] }] } },
  };
}


describe.skipIf(!HAVE_OPENSSL)('HTTPS on the admin listener (admin.tls)', () => {
  let dir: string;
  let authority: TestCa;
  let first: { key: string; cert: string };
  let upstream: Upstream;
  let proxy: ProxyFixture;
  let dispatcher: Agent;
  const seen: string[] = [];

  beforeAll(async () => {
    dir = tempDir('airlock-admin-tls-');
    authority = makeTestCa(dir);
    first = authority.issue('admin-first', 30);
    upstream = await startUpstream((_req, res) => {
      res.writeHead(200, { 'content-type': 'application/json' });
      res.end('{"data":[]}');
    });
    // A fixed port, so that a reload's admin.listen is the running one's.
    proxy = await startProxy(config(upstream.url, first, `127.0.0.1:${await freePort()}`), { env: { SERVICE_KEY: serviceKey } });
    dispatcher = new Agent({ connect: { ca: readFileSync(authority.ca), servername: 'localhost' } });
  });

  afterAll(async () => {
    await dispatcher?.close();
    await proxy?.close();
    await upstream?.close();
    assertNoLeak([serviceKey, admin.token, agent.token, readFileSync(first.key, 'utf8')], [
      { name: 'log', text: proxy.logLines.join('') },
      { name: 'audit', text: proxy.auditText() },
      { name: 'answers and CLI output', text: seen.join('\n') },
    ]);
    if (dir !== undefined) rmSync(dir, { recursive: true, force: true });
  });

  const call = async (path: string, token: string | null = admin.token): Promise<{ status: number; text: string }> => {
    const response = await undiciFetch(`${proxy.airlock.adminUrl}${path}`, { headers: token === null ? {} : { authorization: `Bearer ${token}` }, dispatcher });
    const text = await response.text();
    seen.push(text);
    return { status: response.status, text };
  };

  it('listens on https, and health names the admin certificate apart from the agent listeners', async () => {
    expect(proxy.airlock.adminUrl).toMatch(/^https:\/\/127\.0\.0\.1:\d+$/);
    // The agent listener has no tls: it stays plain HTTP.
    expect(proxy.url).toMatch(/^http:\/\//);
    const health = await call('/v1/health');
    expect(health.status).toBe(200);
    expect(JSON.parse(health.text)).toMatchObject({ status: 'ok', tls: null, admin_tls: { subject: 'CN=admin-first', names: 'IP Address:127.0.0.1, DNS:localhost', expires_in_days: 29 } });
    expect(await servedFingerprint(proxy.airlock.adminUrl as string, authority.ca)).toBe(new X509Certificate(readFileSync(first.cert)).fingerprint256);
    expect(proxy.logRecords().find((r) => r['msg'] === 'airlock listening')).toMatchObject({ admin: proxy.airlock.adminUrl, admin_tls: { subject: 'CN=admin-first' } });
  });

  it('serves /metrics and the console over https, with the certificate end labelled admin', async () => {
    const metrics = await call('/metrics', null);
    expect(metrics.status).toBe(200);
    const expiry = Number(/^airlock_tls_certificate_expiry_timestamp_seconds\{listener="admin",subject="CN=admin-first"\} (\d+)$/m.exec(metrics.text)?.[1]);
    expect(Math.abs(expiry - (Date.now() / 1000 + 30 * 86_400))).toBeLessThan(300);
    expect(metrics.text).not.toContain('listener="agent"');
    const page = await call('/', null);
    expect(page.status).toBe(200);
    expect(page.text).toContain('<html');
  });

  it('answers a plain-HTTP call with 400 saying to use https://, and logs a token it carried as exposed', async () => {
    const plain = (proxy.airlock.adminUrl as string).replace('https:', 'http:');
    const response = await rawRequest(plain, `GET /v1/health HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer ${admin.token}\r\n\r\n`);
    seen.push(response.body);
    expect(response.status).toBe(400);
    expect(JSON.parse(response.body)).toMatchObject({ code: 'invalid_request', detail: expect.stringContaining('speaks HTTPS only (admin.tls)') });
    const warning = await eventually('the exposure warning', () => proxy.logRecords().find((r) => String(r['msg']).includes('reached the HTTPS admin listener carrying a token')));
    expect(warning['level']).toBe('warn');
    // Without a token: refused the same way, and nothing logged as exposed.
    const count = proxy.logRecords().filter((r) => String(r['msg']).includes('carrying a token')).length;
    const bare = await rawRequest(plain, 'GET /metrics HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n');
    expect(bare.status).toBe(400);
    expect(proxy.logRecords().filter((r) => String(r['msg']).includes('carrying a token')).length).toBe(count);
    // The listener goes on answering over https.
    expect((await call('/v1/health')).status).toBe(200);
  });

  it.skipIf(!haveChromium)('the console works over https in headless Chromium: sign-in, agents and the live audit feed', async () => {
    const profileDir = mkdtempSync(join(tmpdir(), 'airlock-chromium-'));
    // The test CA is not in Chromium's trust store; the certificate is what this file checks elsewhere.
    const context = await chromium.launchPersistentContext(profileDir, {
      executablePath: CHROMIUM,
      headless: true,
      ignoreHTTPSErrors: true,
      args: ['--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run', '--disable-background-networking', '--disable-component-update', '--disable-sync'],
      timeout: 45_000,
    });
    try {
      context.setDefaultTimeout(6_000);
      const page = await context.newPage();
      const errors: string[] = [];
      page.on('console', (message) => {
        if (message.type() === 'error') errors.push(`console: ${message.text()}`);
      });
      page.on('pageerror', (error) => errors.push(`pageerror: ${error.message}`));
      const opened = await page.goto(`${proxy.airlock.adminUrl}/`, { waitUntil: 'load' });
      expect(opened?.status()).toBe(200);
      await page.getByTestId('token-input').fill(admin.token);
      await page.getByTestId('token-submit').click();
      await page.getByTestId('agent-row').first().waitFor({ state: 'visible' });
      await page.getByTestId('audit-state').filter({ hasText: '(live)' }).waitFor({ state: 'visible' });
      const response = await fetch(`${proxy.url}/api/v1/things`, { headers: { authorization: `Bearer ${agent.token}` } });
      expect(response.status).toBe(200);
      const requestId = response.headers.get('x-airlock-request-id') as string;
      await page.locator(`tr[data-testid="audit-row"][data-request-id="${requestId}"]`).waitFor({ state: 'visible' });
      seen.push(await page.content());
      expect(errors).toEqual([]);
    } finally {
      await context.close();
      rmSync(profileDir, { recursive: true, force: true, maxRetries: 10, retryDelay: 200 });
    }
  }, 60_000);

  it('airlock status reaches it with the certificate of admin.tls.cert_file pinned, and names its end', async () => {
    const cliConfig = writeConfigFile(dir, { admin: { listen: new URL(proxy.airlock.adminUrl as string).host, tokens: [admin.hash], tls: { cert_file: first.cert, key_file: first.key } } }, 'cli.yaml');
    const run = await runCliCapture(['status', '--config', cliConfig], { AIRLOCK_ADMIN_TOKEN: admin.token }, seen);
    expect(run.code, run.stdout + run.stderr).toBe(0);
    expect(run.stdout).toMatch(/^ {2}admin tls {4}CN=admin-first, expires \d{4}-\d\d-\d\dT[\d:.]+Z \(in 29 days\)$/m);
    expect(run.stdout).not.toMatch(/^ {2}tls /m);
  });

  it('the CLI needs the certificate of admin.tls.cert_file, not the key: a key it cannot read stops no command', async () => {
    // An operator's copy of the config, or an operator's user, without the key (mode 600, Airlock's
    // user's): the CLI checked the key as serve does, said the file had an error at admin.tls.key_file,
    // and no command (status, revoke: the kill switch) reached the running Airlock.
    const cliConfig = writeConfigFile(dir, { admin: { listen: new URL(proxy.airlock.adminUrl as string).host, tokens: [admin.hash], tls: { cert_file: first.cert, key_file: `${dir}/airlocks-own.key` } } }, 'operator.yaml');
    const status = await runCliCapture(['status', '--config', cliConfig], { AIRLOCK_ADMIN_TOKEN: admin.token }, seen);
    expect(status.stderr).not.toContain('key_file');
    expect(status.code, status.stdout + status.stderr).toBe(0);
    expect(status.stdout).toMatch(/^ {2}admin tls {4}CN=admin-first/m);
    const revoke = await runCliCapture(['revoke', 'agent', 'bot', '--reason', 'operator without the key'], { AIRLOCK_ADMIN_TOKEN: admin.token, AIRLOCK_CONFIG: cliConfig }, seen);
    expect(revoke.code, revoke.stdout + revoke.stderr).toBe(0);
    const restore = await runCliCapture(['restore', 'agent', 'bot', '--reason', 'done'], { AIRLOCK_ADMIN_TOKEN: admin.token, AIRLOCK_CONFIG: cliConfig }, seen);
    expect(restore.code, restore.stdout + restore.stderr).toBe(0);
    // check and serve still read the key: they are what starts a listener with it.
    const check = await runCliCapture(['check', '--config', cliConfig], {}, seen);
    expect(check.code).toBe(1);
    expect(check.stderr + check.stdout).toMatch(/admin\.tls\.key_file: .*airlocks-own\.key does not exist/);
  });

  it('an expired admin certificate stops no operator command: status names the file problem, revoke still works', async () => {
    const cliConfig = writeConfigFile(dir, { admin: { listen: new URL(proxy.airlock.adminUrl as string).host, tokens: [admin.hash], tls: { cert_file: first.cert, key_file: first.key } } }, 'expired.yaml');
    // 31 days on: the running Airlock still presents the certificate it loaded (30 days), now past its end.
    vi.useFakeTimers({ toFake: ['Date'] });
    vi.setSystemTime(Date.now() + 31 * 86_400_000);
    try {
      const status = await runCliCapture(['status', '--config', cliConfig], { AIRLOCK_ADMIN_TOKEN: admin.token }, seen);
      expect(status.stderr).toMatch(/admin\.tls\.cert_file: .* expired on/);
      expect(status.code, status.stdout + status.stderr).toBe(2);
      // The file is one the running Airlock would refuse to reload; what it serves is shown still.
      expect(status.stdout).toMatch(/^ {2}config {7}.*expired\.yaml HAS 1 ERROR/m);
      expect(status.stdout).toMatch(/^ {2}admin tls {4}.*CN=admin-first/m);
      // Said of the admin listener's clients, not agents.
      expect(status.stderr).toContain('operators (the CLI, browsers, scrapers) would refuse it');
      const revoke = await runCliCapture(['revoke', 'agent', 'bot', '--reason', 'during the certificate incident'], { AIRLOCK_ADMIN_TOKEN: admin.token, AIRLOCK_CONFIG: cliConfig }, seen);
      expect(revoke.code, revoke.stdout + revoke.stderr).toBe(0);
      const restore = await runCliCapture(['restore', 'agent', 'bot', '--reason', 'done'], { AIRLOCK_ADMIN_TOKEN: admin.token, AIRLOCK_CONFIG: cliConfig }, seen);
      expect(restore.code, restore.stdout + restore.stderr).toBe(0);
    } finally {
      vi.useRealTimers();
    }
  });

  it('sends no token to a listener presenting another certificate', async () => {
    // Something else answers at the admin address: a server with a certificate the same CA signed.
    const impostorFiles = authority.issue('impostor');
    const calls: string[] = [];
    const impostor = createHttpsServer({ cert: readFileSync(impostorFiles.cert), key: readFileSync(impostorFiles.key) }, (req, res) => {
      calls.push(`${req.method} ${req.url} ${req.headers.authorization ?? ''}`);
      res.end('{}');
    });
    impostor.listen(0, '127.0.0.1');
    await once(impostor, 'listening');
    try {
      const port = (impostor.address() as AddressInfo).port;
      const cliConfig = writeConfigFile(dir, { admin: { listen: `127.0.0.1:${port}`, tokens: [admin.hash], tls: { cert_file: first.cert, key_file: first.key } } }, 'impostor.yaml');
      const run = await runCliCapture(['status', '--config', cliConfig], { AIRLOCK_ADMIN_TOKEN: admin.token }, seen);
      expect(run.code).toBe(1);
      expect(run.stderr).toContain(`presents a certificate other than the one in admin.tls.cert_file ${first.cert}`);
      expect(run.stderr).toContain('AIRLOCK_ADMIN_TOKEN was not sent');
      expect(calls).toEqual([]);
    } finally {
      impostor.close();
    }
  });

  it('says what to do when the CLI cannot read admin.tls.cert_file', async () => {
    const cliConfig = writeConfigFile(dir, { admin: { listen: new URL(proxy.airlock.adminUrl as string).host, tokens: [admin.hash], tls: { cert_file: `${dir}/absent.pem`, key_file: first.key } } }, 'absent.yaml');
    const run = await runCliCapture(['status', '--config', cliConfig], { AIRLOCK_ADMIN_TOKEN: admin.token }, seen);
    expect(run.code).toBe(1);
    expect(run.stdout + run.stderr).toMatch(/absent\.pem does not exist/);
  });

  it('serves a renewed certificate after a reload, and logs the change', async () => {
    const before = await servedFingerprint(proxy.airlock.adminUrl as string, authority.ca);
    const renewed = authority.issue('admin-renewed', 20);
    const built = buildConfig({ listen: '127.0.0.1:0', data_dir: proxy.dataDir, ...config(upstream.url, renewed, new URL(proxy.airlock.adminUrl as string).host) }, { baseDir: proxy.dataDir });
    if (built.config === null) throw new Error(built.problems.map((p) => formatProblem(p, null)).join('\n'));
    expect(await proxy.airlock.reload(built.config)).toEqual({ ok: true });
    const after = await servedFingerprint(proxy.airlock.adminUrl as string, authority.ca);
    expect(after).not.toBe(before);
    expect(after).toBe(new X509Certificate(readFileSync(renewed.cert)).fingerprint256);
    expect(proxy.logRecords().find((r) => r['msg'] === 'the admin listener now presents a new certificate')).toMatchObject({ admin_tls: { subject: 'CN=admin-renewed' } });
    const health = JSON.parse((await call('/v1/health')).text) as { admin_tls: { subject: string; expires_in_days: number } };
    expect(health.admin_tls).toMatchObject({ subject: 'CN=admin-renewed', expires_in_days: 19 });
    assertNoLeak([readFileSync(renewed.key, 'utf8')], [{ name: 'log', text: proxy.logLines.join('') }]);
  });

  it('a reload turning admin.tls off waits for a restart: the listener stays https', async () => {
    const host = new URL(proxy.airlock.adminUrl as string).host;
    const plainAdmin = { ...config(upstream.url, first, host), admin: { listen: host, tokens: [admin.hash] } };
    const built = buildConfig({ listen: '127.0.0.1:0', data_dir: proxy.dataDir, ...plainAdmin }, { baseDir: proxy.dataDir });
    if (built.config === null) throw new Error(built.problems.map((p) => formatProblem(p, null)).join('\n'));
    const result = await proxy.airlock.reload(built.config);
    expect(result.ok).toBe(true);
    expect(proxy.logLines.join('')).toContain('admin.tls (on or off)');
    expect((await call('/v1/health')).status).toBe(200);
  });
});

describe.skipIf(!HAVE_OPENSSL)('airlock check and admin.tls', () => {
  it('lists a missing certificate against admin.tls.cert_file, and no longer warns of plain HTTP beyond loopback', () => {
    const dir = tempDir('airlock-admin-tls-check-');
    try {
      const authority = makeTestCa(dir);
      const files = authority.issue('check');
      const missing = buildConfig({ data_dir: dir, admin: { listen: '127.0.0.1:7701', tokens: [admin.hash], tls: { cert_file: `${dir}/nope.pem`, key_file: files.key } }, services: {}, agents: {} }, { baseDir: dir });
      expect(missing.config).toBeNull();
      expect(missing.problems.map((p) => formatProblem(p, null)).join('\n')).toMatch(/admin\.tls\.cert_file: .*nope\.pem does not exist/);
      const wide = (tls: boolean): string[] =>
        buildConfig({ data_dir: dir, admin: { listen: '0.0.0.0:7701', tokens: [admin.hash], ...(tls ? { tls: { cert_file: files.cert, key_file: files.key } } : {}) }, services: {}, agents: {} }, { baseDir: dir }).problems.map((p) => formatProblem(p, null));
      expect(wide(false).join('\n')).toMatch(/admin\.listen: .*over plain HTTP.*admin\.tls/);
      expect(wide(true).join('\n')).not.toMatch(/over plain HTTP/);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});

describe.skipIf(!HAVE_OPENSSL)('a renewal written over admin.tls files is served without a signal (reload.watch)', () => {
  it('serve watches the admin certificate and key, and presents the new certificate', async () => {
    const root = tempDir('airlock-admin-tls-watch-');
    const authority = makeTestCa(root);
    const first = authority.issue('admin-watch-first');
    const cert = join(root, 'admin.crt');
    const key = join(root, 'admin.key');
    copyFileSync(first.cert, cert);
    copyFileSync(first.key, key);
    const configFile = join(root, 'airlock.yaml');
    writeFileSync(configFile, JSON.stringify({ listen: '127.0.0.1:0', data_dir: join(root, 'data'), admin: { listen: `127.0.0.1:${await freePort()}`, tokens: [admin.hash], tls: { cert_file: cert, key_file: key } }, services: {}, agents: {} }));
    const serve = spawnServe(configFile, {});
    try {
      await eventually('serve to listen', () => /Airlock is listening on/.test(serve.err()) || undefined, 10_000);
      const adminUrl = await eventually('the admin URL', () => /"admin":"(https:\/\/[^"]+)"/.exec(serve.out())?.[1], 5_000);
      expect(await servedFingerprint(adminUrl, authority.ca)).toBe(new X509Certificate(readFileSync(first.cert)).fingerprint256);
      const next = authority.issue('admin-watch-next');
      // The key first, then the certificate, as a renewal tool writes them; each write is a change.
      copyFileSync(next.key, key);
      copyFileSync(next.cert, cert);
      const wanted = new X509Certificate(readFileSync(next.cert)).fingerprint256;
      await eventually('the renewed admin certificate to be served', async () => ((await servedFingerprint(adminUrl, authority.ca)) === wanted ? true : undefined), 8_000, 100);
      assertNoLeak([readFileSync(first.key, 'utf8'), readFileSync(next.key, 'utf8')], [{ name: 'serve output', text: serve.out() + serve.err() }]);
    } finally {
      serve.child.kill('SIGTERM');
      await serve.exited;
      rmSync(root, { recursive: true, force: true });
    }
  }, 30_000);

  it('a config naming admin.tls files not written yet is refused, and writing them reloads, as for tls', async () => {
    // Found by review: the files a refused config names are watched through the config's operator
    // fallback, which a problem anywhere under admin (admin.tls.cert_file: does not exist) left out, so
    // only SIGHUP took the files once written.
    const root = tempDir('airlock-admin-tls-watch-new-');
    const authority = makeTestCa(root);
    const first = authority.issue('admin-watch-before');
    const configFile = join(root, 'airlock.yaml');
    const adminListen = `127.0.0.1:${await freePort()}`;
    const write = (files: { cert: string; key: string }): void =>
      writeFileSync(configFile, JSON.stringify({ listen: '127.0.0.1:0', data_dir: join(root, 'data'), admin: { listen: adminListen, tokens: [admin.hash], tls: { cert_file: files.cert, key_file: files.key } }, services: {}, agents: {} }));
    write(first);
    const serve = spawnServe(configFile, {});
    try {
      await eventually('serve to listen', () => /Airlock is listening on/.test(serve.err()) || undefined, 10_000);
      const adminUrl = `https://${adminListen}`;
      expect(await servedFingerprint(adminUrl, authority.ca)).toBe(new X509Certificate(readFileSync(first.cert)).fingerprint256);
      const later = { cert: join(root, 'admin-2027.crt'), key: join(root, 'admin-2027.key') };
      write(later);
      await eventually('the refused reload', () => serve.logs().find((line) => line['msg'] === 'config reload failed: the new file has problems; the running config stays'), 8_000);
      const next = authority.issue('admin-watch-after');
      copyFileSync(next.key, later.key);
      copyFileSync(next.cert, later.cert);
      const wanted = new X509Certificate(readFileSync(next.cert)).fingerprint256;
      await eventually('the new admin certificate to be served', async () => ((await servedFingerprint(adminUrl, authority.ca)) === wanted ? true : undefined), 8_000, 100);
    } finally {
      serve.child.kill('SIGTERM');
      await serve.exited;
      rmSync(root, { recursive: true, force: true });
    }
  }, 30_000);
});

describe.skipIf(!HAVE_OPENSSL)('client certificates on the admin listener (admin.tls.client_ca_file)', () => {
  let dir: string;
  let serverCa: TestCa;
  let clientCa: TestCa;
  let strangerCa: TestCa;
  let server: { key: string; cert: string };
  let proxy: ProxyFixture;
  const seen: string[] = [];

  beforeAll(async () => {
    dir = tempDir('airlock-admin-mtls-');
    const sub = (name: string): string => {
      const path = join(dir, name);
      mkdirSync(path);
      return path;
    };
    serverCa = makeTestCa(sub('server'));
    clientCa = makeTestCa(sub('clients'));
    strangerCa = makeTestCa(sub('stranger'));
    server = serverCa.issue('admin-mtls', 30);
    proxy = await startProxy({
      admin: { listen: `127.0.0.1:${await freePort()}`, tokens: [admin.hash], tls: { cert_file: server.cert, key_file: server.key, client_ca_file: clientCa.ca } },
      services: {},
      agents: {},
    });
  });

  afterAll(async () => {
    await proxy?.close();
    assertNoLeak([admin.token, readFileSync(server.key, 'utf8')], [
      { name: 'log', text: proxy.logLines.join('') },
      { name: 'audit', text: proxy.auditText() },
      { name: 'CLI output', text: seen.join('\n') },
    ]);
    if (dir !== undefined) rmSync(dir, { recursive: true, force: true });
  });

  const healthWith = async (client: { key: string; cert: string } | null): Promise<number | string> => {
    const dispatcher = new Agent({ connect: { ca: readFileSync(serverCa.ca), servername: 'localhost', ...(client === null ? {} : { cert: readFileSync(client.cert), key: readFileSync(client.key) }) } });
    try {
      const response = await undiciFetch(`${proxy.airlock.adminUrl}/v1/health`, { headers: { authorization: `Bearer ${admin.token}` }, dispatcher });
      await response.arrayBuffer();
      return response.status;
    } catch (error) {
      return `refused: ${String((error as { cause?: { code?: string } }).cause?.code ?? (error as Error).message)}`;
    } finally {
      await dispatcher.close();
    }
  };

  it('answers a caller with a certificate the client CA signed, and no one else, before any token is read', async () => {
    expect(await healthWith(clientCa.issueClient('operator'))).toBe(200);
    expect(await healthWith(null)).toMatch(/^refused: /);
    expect(await healthWith(strangerCa.issueClient('stranger'))).toMatch(/^refused: /);
    // Counted as failed handshakes on the admin listener.
    const metrics = await eventually('the refused handshakes counted', async () => {
      const text = await proxy.airlock.metrics.registry.metrics();
      // No certificate is a certificate failure; a stranger's may end as the client's reset (TLS 1.3).
      const counts = [...text.matchAll(/^airlock_tls_handshake_failures_total\{listener="admin",reason="(\w+)"\} (\d+)$/gm)];
      return counts.some((m) => m[1] === 'certificate') && counts.reduce((sum, m) => sum + Number(m[2]), 0) >= 2 ? text : undefined;
    });
    expect(metrics).not.toContain('listener="agent"');
  });

  it('the CLI shows the certificate AIRLOCK_ADMIN_CLIENT_CERT and _KEY name, and says what to set without one', async () => {
    const operator = clientCa.issueClient('cli-operator');
    const cliConfig = writeConfigFile(dir, { admin: { listen: new URL(proxy.airlock.adminUrl as string).host, tokens: [admin.hash], tls: { cert_file: server.cert, key_file: server.key, client_ca_file: clientCa.ca } } }, 'cli.yaml');
    const ok = await runCliCapture(['status', '--config', cliConfig], { AIRLOCK_ADMIN_TOKEN: admin.token, AIRLOCK_ADMIN_CLIENT_CERT: operator.cert, AIRLOCK_ADMIN_CLIENT_KEY: operator.key }, seen);
    expect(ok.code, ok.stdout + ok.stderr).toBe(0);
    expect(ok.stdout).toMatch(/^ {2}admin tls {4}CN=admin-mtls/m);
    const without = await runCliCapture(['status', '--config', cliConfig], { AIRLOCK_ADMIN_TOKEN: admin.token }, seen);
    expect(without.code).toBe(1);
    expect(without.stderr).toContain('set AIRLOCK_ADMIN_CLIENT_CERT and AIRLOCK_ADMIN_CLIENT_KEY');
    const stranger = strangerCa.issueClient('cli-stranger');
    const refused = await runCliCapture(['status', '--config', cliConfig], { AIRLOCK_ADMIN_TOKEN: admin.token, AIRLOCK_ADMIN_CLIENT_CERT: stranger.cert, AIRLOCK_ADMIN_CLIENT_KEY: stranger.key }, seen);
    expect(refused.code).toBe(1);
    expect(refused.stderr).toContain('which is how it refuses a client certificate');
  });

  it('reads a relative client_ca_file against the config file, as cert_file and key_file are, wherever check runs', async () => {
    // The config in its own directory with relative paths, check run from elsewhere (the repository):
    // the client CA was looked up in the current directory, so check (and serve) said it did not exist.
    const home = join(dir, 'relative');
    mkdirSync(join(home, 'tls'), { recursive: true });
    copyFileSync(server.cert, join(home, 'tls', 'admin.crt'));
    copyFileSync(server.key, join(home, 'tls', 'admin.key'));
    copyFileSync(clientCa.ca, join(home, 'tls', 'clients.pem'));
    const file = writeConfigFile(home, { data_dir: './data', admin: { listen: '127.0.0.1:7701', tokens: [admin.hash], tls: { cert_file: './tls/admin.crt', key_file: './tls/admin.key', client_ca_file: './tls/clients.pem' } }, services: {}, agents: {} });
    const run = await runCliCapture(['check', '--config', file], {}, seen);
    expect(run.stdout + run.stderr).not.toContain('does not exist');
    expect(run.code, run.stdout + run.stderr).toBe(0);
  });

  it('names a swapped client certificate and key, and hints at client_ca_file when the CLI config lacks it', async () => {
    const operator = clientCa.issueClient('cli-swapped');
    const host = new URL(proxy.airlock.adminUrl as string).host;
    const cliConfig = writeConfigFile(dir, { admin: { listen: host, tokens: [admin.hash], tls: { cert_file: server.cert, key_file: server.key, client_ca_file: clientCa.ca } } }, 'swapped.yaml');
    const swapped = await runCliCapture(['status', '--config', cliConfig], { AIRLOCK_ADMIN_TOKEN: admin.token, AIRLOCK_ADMIN_CLIENT_CERT: operator.key, AIRLOCK_ADMIN_CLIENT_KEY: operator.cert }, seen);
    expect(swapped.code).toBe(1);
    expect(swapped.stderr).toContain(`AIRLOCK_ADMIN_CLIENT_CERT names ${operator.key}, which holds no PEM certificate it can read (swapped with AIRLOCK_ADMIN_CLIENT_KEY?)`);
    const other = clientCa.issueClient('cli-other');
    const mismatched = await runCliCapture(['status', '--config', cliConfig], { AIRLOCK_ADMIN_TOKEN: admin.token, AIRLOCK_ADMIN_CLIENT_CERT: operator.cert, AIRLOCK_ADMIN_CLIENT_KEY: other.key }, seen);
    expect(mismatched.stderr).toContain(`AIRLOCK_ADMIN_CLIENT_KEY (${other.key}) is not the key of the certificate in AIRLOCK_ADMIN_CLIENT_CERT`);
    // The operator's config names no client CA: the listener closes the connection, and the message says why that may be.
    const without = writeConfigFile(dir, { admin: { listen: host, tokens: [admin.hash], tls: { cert_file: server.cert, key_file: server.key } } }, 'no-client-ca.yaml');
    const refused = await runCliCapture(['status', '--config', without], { AIRLOCK_ADMIN_TOKEN: admin.token }, seen);
    expect(refused.code).toBe(1);
    expect(refused.stderr).toContain('If the running Airlock asks for client certificates (admin.tls.client_ca_file in its config)');
    assertNoLeak([readFileSync(operator.key, 'utf8'), readFileSync(other.key, 'utf8')], [{ name: 'CLI output', text: seen.join('\n') }]);
  });

  it('check lists a client CA file that holds no certificate against admin.tls.client_ca_file', () => {
    const built = buildConfig({ data_dir: dir, admin: { listen: '127.0.0.1:7701', tokens: [admin.hash], tls: { cert_file: server.cert, key_file: server.key, client_ca_file: server.key } }, services: {}, agents: {} }, { baseDir: dir });
    expect(built.config).toBeNull();
    expect(built.problems.map((p) => formatProblem(p, null)).join('\n')).toMatch(/admin\.tls\.client_ca_file: CA file .* holds no PEM certificate/);
  });
});
