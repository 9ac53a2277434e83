/**
 * A file: secret set while Airlock runs clears its failing state without an agent's request: the admin
 * API's credentials, /_airlock/ready and airlock_credential_failing follow `secrets set` within a few
 * seconds (found by a fresh-user walkthrough: they stayed failing, and alerts firing, until a request
 * needed the secret). Removed again, it shows failing again.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { EncryptedSecretFile } from '../../src/credentials/encrypted-secret-file.js';
import { loadMasterKey } from '../../src/credentials/master-key.js';
import { generateAgentToken } from '../../src/identity/agent-token.js';
import { assertNoLeak } from '../helpers/assert-no-leak.js';
import { canary } from '../helpers/canary.js';
import { adminClient, eventually, freePort, runCliCapture, writeConfigFile, type AdminClient } from '../helpers/operator.js';
import { sendRequest } from '../helpers/send-request.js';
import { startProxy, type ProxyFixture } from '../helpers/start-proxy.js';
import { startUpstream, type Upstream } from '../helpers/start-upstream.js';

interface CredentialView {
  ref: string;
  state: string;
  failing: boolean;
  consecutive_failures: number;
}

describe('a file: secret set while Airlock runs', () => {
  const value = canary('late-file');
  const alice = generateAgentToken();
  const bot = generateAgentToken();
  const seen: string[] = [];
  let upstream: Upstream;
  let proxy: ProxyFixture;
  let admin: AdminClient;
  let cliConfig: string;

  beforeAll(async () => {
    upstream = await startUpstream();
    const port = await freePort();
    const config = {
      admin: { listen: `127.0.0.1:${port}`, tokens: [{ name: 'alice', hash: alice.hash }] },
      services: { late: { upstream: upstream.url, credential: { secret: 'file:late-key' }, routes: [{ method: 'GET', path: '/v1/items', scope: 'items:read' }] } },
      agents: { bot: { tokens: [bot.hash], credentials: [{ service: 'late', max_scope: ['items:read'] }] } },
    };
    proxy = await startProxy(config);
    admin = adminClient(() => `http://127.0.0.1:${port}`, alice.token);
    // The CLI's config names the same data_dir, as an operator's would.
    cliConfig = writeConfigFile(proxy.dataDir, { ...config, listen: '127.0.0.1:0', data_dir: proxy.dataDir });
  });

  afterAll(async () => {
    await proxy?.close();
    await upstream?.close();
  });

  function secretsFile(): EncryptedSecretFile {
    const key = loadMasterKey({ dataDir: proxy.dataDir, env: {}, create: true });
    if (key === null) throw new Error('no master key');
    return new EncryptedSecretFile(proxy.dataDir, key);
  }

  async function lateKey(): Promise<CredentialView | undefined> {
    const answer = await admin.call('GET', '/v1/credentials');
    return answer.json<{ credentials: CredentialView[] }>().credentials.find((c) => c.ref === 'file:late-key');
  }

  async function failingMetric(): Promise<string | undefined> {
    const answer = await admin.call('GET', '/metrics');
    return /^airlock_credential_failing\{ref="file:late-key"\} (\d+)$/m.exec(answer.text)?.[1];
  }

  async function lookups(result: 'miss' | 'refresh_failure'): Promise<number> {
    const answer = await admin.call('GET', '/metrics');
    return Number(new RegExp(`^airlock_credential_cache_total\\{result="${result}"\\} (\\d+)$`, 'm').exec(answer.text)?.[1] ?? 0);
  }

  it("counts an agent's lookups, and not the recheck's reads of a secret not set yet", async () => {
    const failed = await lookups('refresh_failure');
    const missed = await lookups('miss');
    const failures = (await lateKey())?.consecutive_failures ?? 0;
    // Two more rechecks read the file and found no entry: recorded on the credential, not counted as lookups.
    await eventually('two rechecks of file:late-key', async () => ((await lateKey())?.consecutive_failures ?? 0) >= failures + 2, 10_000, 100);
    expect(await lookups('refresh_failure')).toBe(failed);
    expect(await lookups('miss')).toBe(missed);
    const response = await sendRequest(`${proxy.url}/late/v1/items`, { headers: { authorization: `Bearer ${bot.token}` } });
    seen.push(response.text);
    expect(response.status).toBe(503);
    expect(await lookups('miss')).toBe(missed + 1);
  });

  it('is failing before it is set, and fresh within seconds of `secrets set`, with no request made', async () => {
    expect(await lateKey()).toMatchObject({ state: 'missing', failing: true });
    expect(await failingMetric()).toBe('1');
    // What `npx airlock secrets set late-key` does (the CLI reads the value from a terminal or stdin).
    secretsFile().set('late-key', value, new Date());
    // The recheck runs every 2 s; 8 s is room for a loaded machine.
    await eventually('file:late-key to be fresh', async () => (await lateKey())?.state === 'fresh', 8_000, 100);
    expect(await lateKey()).toMatchObject({ failing: false });
    expect(await failingMetric()).toBe('0');
    expect(upstream.requests).toHaveLength(0);
  });

  it('shows failing again once `secrets rm` removed it', async () => {
    const removed = await runCliCapture(['secrets', 'rm', 'late-key', '--config', cliConfig], {}, seen);
    expect(removed.code, removed.stderr).toBe(0);
    expect(removed.stdout).toContain('Removed secret late-key');
    await eventually('file:late-key to fail again', async () => (await lateKey())?.failing === true, 8_000, 100);
  });

  it('leaks nothing', () => {
    assertNoLeak([value], [
      { name: 'admin', text: admin.seen.join('\n') },
      { name: 'cli', text: seen.join('\n') },
      { name: 'logs', text: proxy.logLines.join('\n') },
    ]);
  });
});
