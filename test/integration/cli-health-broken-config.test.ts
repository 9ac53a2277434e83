/**
 * Found by review: `airlock health` loads the config for operator commands (loadConfigOrReport
 * 'operator'), whose fallback vouches only for data_dir, audit, admin, state and workers. A config file
 * edited with a mistake in `tls` (a misspelt key) or `listen` has that block dropped and defaults put
 * in its place: the probe then asks http:// (or 127.0.0.1:7700) while the running Airlock, which refused
 * the reload, serves https on the old config. The HEALTHCHECK marks a healthy container unhealthy, and
 * says the listener answered 400, not that the file is broken.
 */
import { rmSync } from 'node:fs';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { generateAgentToken } from '../../src/identity/agent-token.js';
import { freePort, runCliCapture, writeConfigFile } from '../helpers/operator.js';
import { startProxy, tempDir } from '../helpers/start-proxy.js';
import { HAVE_OPENSSL, makeTestCa } from '../helpers/test-certificates.js';

const agent = generateAgentToken();
const seen: string[] = [];
const policy = { services: {}, agents: { bot: { tokens: [agent.hash], credentials: [] } }, anomalies: { enabled: false } };
let dir: string;

beforeAll(() => {
  dir = tempDir('airlock-health-broken-');
});

afterAll(() => {
  rmSync(dir, { recursive: true, force: true });
});

describe('airlock health with a config file the running Airlock refused to reload', () => {
  it.skipIf(!HAVE_OPENSSL).each([
    ['a misspelt key inside tls', (tls: Record<string, unknown>) => ({ tls: { ...tls, min_verison: 'TLSv1.3' } })],
    ['tls misspelt at the top (tsl:)', (tls: Record<string, unknown>) => ({ tsl: tls })],
  ])('%s: says the file cannot tell where and how to probe, and probes nothing (exit 1)', async (_name, edit) => {
    const issued = makeTestCa(dir).issue('health');
    const port = await freePort();
    const tls = { cert_file: issued.cert, key_file: issued.key };
    const proxy = await startProxy({ listen: `127.0.0.1:${port}`, tls, ...policy });
    const plainBefore = proxy.auditText().split('\n').filter((line) => line.includes('plain-HTTP')).length;
    try {
      // The operator's later edit (the running Airlock refuses it and keeps its config).
      const file = writeConfigFile(dir, { listen: `127.0.0.1:${port}`, data_dir: proxy.dataDir, ...edit(tls), ...policy }, `edited-${port}.yaml`);
      const health = await runCliCapture(['health', '--config', file], {}, seen);
      expect(health.code).toBe(1);
      expect(health.stdout).toBe('');
      expect(health.stderr).toContain(`unknown: ${file} has errors in tls, so where and how to probe cannot be told; fix them (npx airlock check lists them).\n`);
      // No plain-HTTP probe reached the HTTPS listener (each would be audited as one).
      await new Promise((resolve) => setTimeout(resolve, 100));
      expect(proxy.auditText().split('\n').filter((line) => line.includes('plain-HTTP')).length).toBe(plainBefore);
    } finally {
      await proxy.close();
    }
  });
});
