/**
 * `airlock check` on a CA file that holds no certificate node can read. It said OK, `serve` started, and
 * the first request to the upstream got 502 with a certificate error naming no file (node's TLS ignores
 * text that is not a PEM certificate). check and serve now refuse it with its YAML path and line.
 */
import { rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { generateAgentToken } from '../../src/identity/agent-token.js';
import { assertNoLeak } from '../helpers/assert-no-leak.js';
import { canary } from '../helpers/canary.js';
import { runCliCapture, writeConfigFile } from '../helpers/operator.js';
import { tempDir } from '../helpers/start-proxy.js';
import { FIXED_CA_PEM } from '../helpers/test-certificates.js';

const dir = tempDir('airlock-check-ca-');
afterAll(() => rmSync(dir, { recursive: true, force: true }));

const apiKey = canary('check-ca-api-key');

function configNaming(caFile: string): string {
  return writeConfigFile(dir, {
    listen: '127.0.0.1:0',
    log: { level: 'silent' },
    data_dir: './data',
    services: { api: { upstream: 'https://api.example.com', ca: caFile, credential: { secret: 'env:API_KEY' }, routes: [{ method: 'GET', path: '/v1/items', scope: 'items:read' }] } },
    agents: { bot: { tokens: [generateAgentToken().hash], credentials: [{ service: 'api', max_scope: ['items:read'] }] } },
  });
}

describe('check: a CA file that holds no certificate', () => {
  const seen: string[] = [];
  afterAll(() => assertNoLeak([apiKey], [{ name: 'CLI output', text: seen.join('\n') }]));

  it('check and serve refuse it, naming the setting, its line and what to give', async () => {
    writeFileSync(join(dir, 'wrong.pem'), 'the CA is on the wiki\n');
    const file = configNaming('wrong.pem');
    const check = await runCliCapture(['check', '--config', file], { API_KEY: apiKey }, seen);
    expect(check.code).toBe(1);
    expect(check.stderr).toMatch(new RegExp(`${file.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')}:\\d+:\\d+: error at services\\.api\\.ca: CA file ${join(dir, 'wrong.pem').replace(/[.*+?^${}()|[\]\\]/g, '\\$&')} holds no PEM certificate \\(a BEGIN CERTIFICATE block\\).*give the CA's certificate in PEM form`));
    const serve = await runCliCapture(['serve', '--config', file], { API_KEY: apiKey }, seen);
    expect(serve.code).toBe(1);
  });

  it('a PEM certificate passes', async () => {
    writeFileSync(join(dir, 'ca.pem'), FIXED_CA_PEM);
    const check = await runCliCapture(['check', '--config', configNaming('ca.pem')], { API_KEY: apiKey }, seen);
    expect(check.stderr).not.toMatch(/services\.api\.ca/);
    expect(check.code).toBe(0);
  });
});
