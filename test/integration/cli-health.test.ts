/**
 * `airlock health`: the probe a container's HEALTHCHECK runs. It asks the agent listener the config
 * names, in its scheme (https with tls), and exits 0 only on 200. The image's probe asked
 * http://127.0.0.1:7700 whatever the config said (a known limit until this command).
 */
import { createServer, type Server } from 'node:http';
import { rmSync } from 'node:fs';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { generateAgentToken } from '../../src/identity/agent-token.js';
import { freePort, runCliCapture, writeConfigFile } from '../helpers/operator.js';
import { startProxy, tempDir, type ProxyFixture } from '../helpers/start-proxy.js';
import { HAVE_OPENSSL, makeTestCa, warnWithoutOpenssl } from '../helpers/test-certificates.js';

warnWithoutOpenssl('cli-health.test.ts', 'the health probe of a tls listener');

const agent = generateAgentToken();
const seen: string[] = [];
const policy = { services: {}, agents: { bot: { tokens: [agent.hash], credentials: [] } }, anomalies: { enabled: false } };
let dir: string;

beforeAll(() => {
  dir = tempDir('airlock-health-');
});

afterAll(() => {
  rmSync(dir, { recursive: true, force: true });
});

async function proxyOn(extra: Record<string, unknown> = {}): Promise<{ proxy: ProxyFixture; file: string; port: number }> {
  const port = await freePort();
  const proxy = await startProxy({ listen: `127.0.0.1:${port}`, ...policy, ...extra });
  const file = writeConfigFile(dir, { listen: `127.0.0.1:${port}`, data_dir: proxy.dataDir, ...policy, ...extra }, `airlock-${port}.yaml`);
  return { proxy, file, port };
}

describe('airlock health', () => {
  it('exits 0 when the listener the config names answers 200, and says where it asked', async () => {
    const { proxy, file, port } = await proxyOn();
    try {
      const health = await runCliCapture(['health', '--config', file], {}, seen);
      expect(health.code, health.stderr).toBe(0);
      expect(health.stdout).toBe(`ok: http://127.0.0.1:${port}/_airlock/health answered 200 {"status":"ok"}\n`);
      const ready = await runCliCapture(['health', '--ready', '--config', file], {}, seen);
      expect(ready.code, ready.stderr).toBe(0);
      expect(ready.stdout).toMatch(new RegExp(`^ok: http://127\\.0\\.0\\.1:${port}/_airlock/ready answered 200 \\{"status":"ready"`));
    } finally {
      await proxy.close();
    }
  });

  it('exits 1 when nothing answers, saying what to check', async () => {
    const { proxy, file, port } = await proxyOn();
    await proxy.close();
    const health = await runCliCapture(['health', '--config', file], {}, seen);
    expect(health.code).toBe(1);
    expect(health.stdout).toBe('');
    expect(health.stderr).toMatch(new RegExp(`^unhealthy: nothing answered at http://127\\.0\\.0\\.1:${port}/_airlock/health \\(.+\\); is Airlock running with ${file.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')}\\?\\n$`));
  });

  it('exits 1 on any answer but 200, and shows it', async () => {
    const port = await freePort();
    const server: Server = createServer((_req, res) => res.writeHead(503, { 'content-type': 'application/json' }).end('{"status":"not ready","checks":{"audit":"failing"}}'));
    await new Promise<void>((resolve) => server.listen(port, '127.0.0.1', resolve));
    try {
      const file = writeConfigFile(dir, { listen: `127.0.0.1:${port}`, data_dir: dir, ...policy }, 'other.yaml');
      const ready = await runCliCapture(['health', '--ready', '--config', file], {}, seen);
      expect(ready.code).toBe(1);
      expect(ready.stderr).toBe(`not ready: http://127.0.0.1:${port}/_airlock/ready answered 503 {"status":"not ready","checks":{"audit":"failing"}}\n`);
    } finally {
      server.close();
    }
  });

  it.skipIf(!HAVE_OPENSSL)('asks over https when the config has tls (plain HTTP would get 400)', async () => {
    const authority = makeTestCa(dir);
    const issued = authority.issue('health');
    const { proxy, file, port } = await proxyOn({ tls: { cert_file: issued.cert, key_file: issued.key } });
    try {
      const health = await runCliCapture(['health', '--config', file], {}, seen);
      expect(health.code, health.stderr).toBe(0);
      expect(health.stdout).toBe(`ok: https://127.0.0.1:${port}/_airlock/health answered 200 {"status":"ok"}\n`);
    } finally {
      await proxy.close();
    }
  });
});
