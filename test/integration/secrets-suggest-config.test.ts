/**
 * Found by an ops walkthrough: `airlock secrets set NAME --config F` with nothing on stdin answered "pipe
 * it in, e.g. printf %s "$KEY" | npx airlock secrets set NAME", without --config F; run as shown, the
 * suggestion uses another config (./config/airlock.yaml, or AIRLOCK_CONFIG) and stores the secret in
 * that config's data_dir, which the running Airlock never reads. `secrets rotate` of a name the config
 * does not use suggested `secrets list` and `secrets set` the same way. Every suggestion names the config
 * the command used, unless the command would find it by itself.
 */
import { rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { runCliCapture } from '../helpers/operator.js';
import { tempDir } from '../helpers/start-proxy.js';

const seen: string[] = [];
let dir: string;
let file: string;

beforeAll(() => {
  dir = tempDir('airlock-secrets-suggest-');
  file = join(dir, 'prod.yaml');
  const services = { api: { upstream: 'http://127.0.0.1:9', credential: { secret: 'file:api-key' }, routes: [{ method: 'GET', path: '/v1/*', scope: 'read' }] } };
  writeFileSync(file, JSON.stringify({ listen: '127.0.0.1:0', data_dir: join(dir, 'data'), services, agents: {} }));
});

afterAll(() => {
  rmSync(dir, { recursive: true, force: true });
});

describe('what airlock secrets suggests names the config it used', () => {
  it('set with nothing on stdin', async () => {
    const run = await runCliCapture(['secrets', 'set', 'api-key', '--config', file], {}, seen, dir);
    expect(run.code).toBe(1);
    expect(run.stderr).toContain(`printf %s "$KEY" | npx airlock secrets set api-key --config ${file}\n`);
  });

  it('rotate with nothing on stdin', async () => {
    const run = await runCliCapture(['secrets', 'rotate', 'api-key', '--config', file], {}, seen, dir);
    expect(run.code).toBe(1);
    expect(run.stderr).toContain(`printf %s "$KEY" | npx airlock secrets rotate api-key --config ${file}\n`);
  });

  it('rotate of a name the config does not use', async () => {
    const run = await runCliCapture(['secrets', 'rotate', 'other-key', '--config', file], {}, seen, dir, 'a-value-long-enough-1234');
    expect(run.code).toBe(1);
    expect(run.stderr).toContain(`\`npx airlock secrets list --config ${file}\``);
    expect(run.stderr).toContain(`\`npx airlock secrets set other-key --config ${file}\``);
  });

  it('found by itself (AIRLOCK_CONFIG): no --config in the suggestion', async () => {
    const run = await runCliCapture(['secrets', 'set', 'api-key'], { AIRLOCK_CONFIG: file }, seen, dir);
    expect(run.code).toBe(1);
    expect(run.stderr).toContain('printf %s "$KEY" | npx airlock secrets set api-key\n');
  });
});
