/**
 * One entry of data_dir/secrets.json that does not decrypt (the file was edited, or an entry moved under
 * another name) costs its own name only (found by a fresh-user walkthrough: it made every file: secret
 * unavailable, and the agent's 503 named data_dir's path and another secret). Over a real proxy: the
 * other file: secrets are served; a request that needs the damaged one gets 503 credential_unavailable
 * with a fixed detail, while the audit record, the log line and the admin API name the entry and what to
 * run; start-up says which entries are damaged, as `secrets list` names them (a key-like name is not
 * repeated). A value fetched before the damage is served up to its max_staleness, as while the whole file
 * cannot be read (credentials/file-source.ts), then refused.
 */
import { randomBytes } from 'node:crypto';
import { readFileSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import type { CliIo } from '../../src/cli/cli-io.js';
import { runCli } from '../../src/cli/run-cli.js';
import { EncryptedSecretFile } from '../../src/credentials/encrypted-secret-file.js';
import { generateAgentToken } from '../../src/identity/agent-token.js';
import type { AuditRecord } from '../../src/observability/audit-record.js';
import { assertNoLeak, type Surface } from '../helpers/assert-no-leak.js';
import { canary } from '../helpers/canary.js';
import { adminClient, eventually, writeConfigFile } from '../helpers/operator.js';
import { sendRequest, type Problem, type SentResponse } from '../helpers/send-request.js';
import { startProxy, tempDir, type ProxyFixture } from '../helpers/start-proxy.js';
import { startUpstream, type Upstream } from '../helpers/start-upstream.js';

const dirs: string[] = [];
afterAll(() => {
  for (const dir of dirs) rmSync(dir, { recursive: true, force: true });
});

const UNAVAILABLE = 'The credential file:stripe is unavailable: its store could not be read, and the request was not sent. An operator finds why in the audit record and the proxy log under this request id.';
const WARNING = 'entries of the secrets file do not decrypt';
const KEY_LIKE_SHOWN = '(a name that looks like a key, not shown)';

interface Store {
  readonly dir: string;
  readonly key: Buffer;
  readonly file: EncryptedSecretFile;
  readonly values: Record<string, string>;
  /** A stored entry whose name looks like a key. */
  readonly keyName: string;
}

/** A data_dir with openai, stripe, gitlab and a key-named entry, all good. */
function storeOf(): Store {
  const dir = tempDir('airlock-damaged-entry-');
  dirs.push(dir);
  const key = randomBytes(32);
  const file = new EncryptedSecretFile(dir, key);
  const keyName = canary('entry-name');
  const values: Record<string, string> = { openai: canary('openai'), stripe: canary('stripe'), gitlab: canary('gitlab'), [keyName]: canary('keynamed') };
  for (const [name, value] of Object.entries(values)) file.set(name, value, new Date());
  return { dir, key, file, values, keyName };
}

/** Puts `from`'s ciphertext under each of `names`: sealed with `from`'s name, they no longer decrypt. */
function moveEntry(store: Store, from: string, names: readonly string[]): void {
  const document = JSON.parse(readFileSync(store.file.path, 'utf8')) as { secrets: Record<string, unknown> };
  for (const name of names) document.secrets[name] = document.secrets[from];
  writeFileSync(store.file.path, JSON.stringify(document));
}

/** The admin listener on port 0: tests reach it at the address it was bound to (proxy.airlock.adminUrl). */
function proxyConfig(upstream: Upstream, agentHash: string, adminHash: string, stripeCredential: Record<string, unknown> = {}): Record<string, unknown> {
  return {
    admin: { listen: '127.0.0.1:0', tokens: [{ name: 'oncall', hash: adminHash }] },
    services: {
      openai: { upstream: upstream.url, credential: { secret: 'file:openai', inject: 'bearer' }, routes: [{ method: 'GET', path: '/v1/*', scope: 'call' }] },
      stripe: { upstream: upstream.url, credential: { secret: 'file:stripe', inject: 'bearer', ...stripeCredential }, routes: [{ method: 'GET', path: '/v1/*', scope: 'call' }] },
    },
    agents: { bot: { tokens: [agentHash], credentials: [{ service: 'openai', max_scope: ['*'] }, { service: 'stripe', max_scope: ['*'] }] } },
  };
}

function answerText(response: SentResponse): string {
  return `${response.status}\n${JSON.stringify(response.headers)}\n${response.text}`;
}

async function recordOf(proxy: ProxyFixture, response: SentResponse): Promise<AuditRecord> {
  const id = response.headers['x-airlock-request-id'];
  return eventually('its audit record', () => proxy.auditRecords().find((r) => r.request_id === id));
}

describe('a damaged entry in the secrets file', () => {
  it('leaves the other file: secrets served; the damaged one is 503 with a fixed detail, and the operator is told which entry and what to run', async () => {
    const store = storeOf();
    moveEntry(store, 'gitlab', ['stripe']);
    moveEntry(store, 'openai', [store.keyName]);
    const upstream = await startUpstream();
    const agent = generateAgentToken();
    const adminToken = generateAgentToken();
    const proxy = await startProxy(proxyConfig(upstream, agent.hash, adminToken.hash), { dataDir: store.dir, env: { AIRLOCK_MASTER_KEY: store.key.toString('hex') } });
    const admin = adminClient(() => proxy.airlock.adminUrl as string, adminToken.token);
    try {
      const call = (service: string): Promise<SentResponse> => sendRequest(`${proxy.url}/${service}/v1/items`, { headers: { authorization: `Bearer ${agent.token}` } });
      // Start-up said so, naming the entries as `secrets list` does.
      const warning = proxy.logRecords().find((line) => String(line['msg']).startsWith(WARNING));
      expect(warning, proxy.logLines.join('')).toMatchObject({ level: 'warn', damaged: ['stripe', KEY_LIKE_SHOWN], secrets_file: store.file.path });
      expect(String(warning?.['msg'])).toContain('npx airlock secrets set NAME');

      const served = await call('openai');
      expect(served.status, served.text).toBe(200);
      expect(upstream.requests.at(-1)?.header('authorization')).toEqual([`Bearer ${store.values['openai']}`]);

      const before = upstream.requests.length;
      const refused = await call('stripe');
      expect(refused.status, refused.text).toBe(503);
      expect(refused.json<Problem>()).toMatchObject({ code: 'credential_unavailable', detail: UNAVAILABLE });
      expect(upstream.requests.length).toBe(before);
      // No path, no other entry's name, in any encoding.
      // (gitlab, not github: Airlock's refusals carry x-github-request-id for octokit, a header name, not this entry's.)
      assertNoLeak([store.dir, 'secrets.json', 'gitlab', 'openai', store.keyName], [{ name: 'agent answer', text: answerText(refused) }]);

      // The operator's surfaces name the entry, the file and the command.
      const operatorText = `secret "stripe" in ${store.file.path} does not decrypt: the file was edited or its entry moved; set it again with \`npx airlock secrets set stripe\``;
      expect(await recordOf(proxy, refused)).toMatchObject({ credential: 'file:stripe', code: 'credential_unavailable', status: 503, reason: `The credential file:stripe is not available: ${operatorText}.` });
      const line = proxy.logRecords().find((l) => l['request_id'] === refused.headers['x-airlock-request-id'] && l['msg'] === 'request');
      expect(JSON.stringify(line?.['err'])).toContain(JSON.stringify(operatorText).slice(1, -1));
      const credentials = (await admin.call('GET', '/v1/credentials')).json<{ credentials: Array<Record<string, unknown>> }>().credentials;
      expect(credentials.find((c) => c['ref'] === 'file:stripe')).toMatchObject({ state: 'missing', failing: true, last_error: `The credential file:stripe is not available: ${operatorText}.` });

      // Set again, it is served within a second or two, without a restart.
      const rotated = canary('stripe-again');
      store.file.set('stripe', rotated, new Date());
      await eventually('stripe served again', async () => (await call('stripe')).status === 200, 5_000, 100);
      expect(upstream.requests.at(-1)?.header('authorization')).toEqual([`Bearer ${rotated}`]);

      const surfaces: Surface[] = [
        { name: 'proxy log', text: proxy.logLines.join('') },
        { name: 'audit', text: proxy.auditText() },
        { name: 'admin', text: admin.seen.join('\n') },
        { name: 'agent answer', text: answerText(refused) },
      ];
      assertNoLeak([store.keyName, store.key.toString('hex'), ...Object.values(store.values), rotated], surfaces);
    } finally {
      await proxy.close();
      await upstream.close();
    }
  });

  it('damaged while running: the value fetched before is served up to its max_staleness, then refused; the other entries are untouched', async () => {
    const store = storeOf();
    const upstream = await startUpstream();
    const agent = generateAgentToken();
    const adminToken = generateAgentToken();
    // file: values are fetched again each second (their ttl); the last good one is kept 5 s.
    const proxy = await startProxy(proxyConfig(upstream, agent.hash, adminToken.hash, { max_staleness: 5 }), { dataDir: store.dir, env: { AIRLOCK_MASTER_KEY: store.key.toString('hex') } });
    const admin = adminClient(() => proxy.airlock.adminUrl as string, adminToken.token);
    try {
      const call = (service: string): Promise<SentResponse> => sendRequest(`${proxy.url}/${service}/v1/items`, { headers: { authorization: `Bearer ${agent.token}` } });
      const servesTheOldValue = async (): Promise<void> => {
        const answer = await call('stripe');
        expect(answer.status, answer.text).toBe(200);
        expect(upstream.requests.at(-1)?.header('authorization')).toEqual([`Bearer ${store.values['stripe']}`]);
      };
      const damageLogged = (): boolean => proxy.logRecords().some((l) => String(l['msg']).startsWith(WARNING) && JSON.stringify(l['damaged']) === '["stripe"]');
      await servesTheOldValue();
      expect(damageLogged()).toBe(false);
      moveEntry(store, 'gitlab', ['stripe']);
      // The value is fetched again only when a request needs it (past 3/4 of its 1 s ttl): requests keep
      // coming until a refetch has read the damaged file, which is when the proxy names the entry.
      await eventually('the damage logged (a refetch read the damaged entry)', async () => {
        await servesTheOldValue();
        return damageLogged();
      }, 5_000, 100);
      // That refetch failed: the admin API says so, and the value fetched before is still what is served.
      const status = (await admin.call('GET', '/v1/credentials')).json<{ credentials: Array<Record<string, unknown>> }>().credentials.find((c) => c['ref'] === 'file:stripe');
      expect(status).toMatchObject({ failing: true });
      await servesTheOldValue();

      const refused = await eventually('stripe refused past its max_staleness', async () => {
        const answer = await call('stripe');
        return answer.status === 503 ? answer : undefined;
      }, 10_000, 200);
      expect(refused.json<Problem>().code).toBe('credential_unavailable');
      expect(refused.json<Problem>().detail).toContain(UNAVAILABLE);
      assertNoLeak([store.dir, 'secrets.json', 'gitlab', 'openai', store.keyName], [{ name: 'agent answer', text: answerText(refused) }]);
      expect((await recordOf(proxy, refused)).reason).toContain(`secret "stripe" in ${store.file.path} does not decrypt`);
      const served = await call('openai');
      expect(served.status).toBe(200);
      expect(upstream.requests.at(-1)?.header('authorization')).toEqual([`Bearer ${store.values['openai']}`]);
    } finally {
      await proxy.close();
      await upstream.close();
    }
  });

  it('`airlock serve` says at start-up which entries are damaged, as `secrets list` names them', async () => {
    const store = storeOf();
    moveEntry(store, 'gitlab', ['stripe']);
    moveEntry(store, 'openai', [store.keyName]);
    const configFile = writeConfigFile(store.dir, {
      listen: '127.0.0.1:0',
      data_dir: store.dir,
      services: {
        openai: { upstream: 'http://127.0.0.1:9', credential: { secret: 'file:openai' }, routes: [{ method: 'GET', path: '/v1/*', scope: 'call' }] },
        stripe: { upstream: 'http://127.0.0.1:9', credential: { secret: 'file:stripe' }, routes: [{ method: 'GET', path: '/v1/*', scope: 'call' }] },
      },
      agents: {},
    });
    let stdout = '';
    let stderr = '';
    let stop: (signal: string) => void = () => undefined;
    const io: CliIo = {
      args: ['serve', '--config', configFile],
      env: { AIRLOCK_MASTER_KEY: store.key.toString('hex') },
      cwd: store.dir,
      stdout: { write: (text: string) => (stdout += text) },
      stderr: { write: (text: string) => (stderr += text) },
      stdin: (async function* noInput() {})(),
      stopRequested: new Promise<string>((resolve) => (stop = resolve)),
    };
    const exit = runCli(io);
    let code: number;
    try {
      await eventually('the summary', () => stderr.includes('Stop with Ctrl-C.'), 10_000, 10);
    } finally {
      // Stopped whatever happened above, so a timeout does not leave it listening.
      stop('SIGTERM');
      code = await exit;
    }
    expect(code).toBe(0);
    expect(stderr).toContain(
      `Set again the secrets whose entries do not decrypt (the file was edited, or an entry moved): stripe (services.stripe.credential), ${KEY_LIKE_SHOWN} (unused). Requests that need them get 503 until then; the other secrets are served. \`npx airlock secrets set stripe --config ${configFile}\` (value on stdin); \`npx airlock secrets list --config ${configFile}\` marks them DAMAGED.`,
    );
    const warning = stdout
      .split('\n')
      .filter((line) => line.startsWith('{'))
      .map((line) => JSON.parse(line) as Record<string, unknown>)
      .find((line) => String(line['msg']).startsWith(WARNING));
    expect(warning, stdout).toMatchObject({ level: 'warn', damaged: ['stripe', KEY_LIKE_SHOWN] });
    assertNoLeak([store.keyName, store.key.toString('hex'), ...Object.values(store.values)], [
      { name: 'serve stdout', text: stdout },
      { name: 'serve stderr', text: stderr },
    ]);
  });
});
