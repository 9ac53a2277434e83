/**
 * Found by an ops walkthrough: with a config file that cannot be read at all (not valid YAML, a
 * half-finished edit), every operator command printed the kill switch's way out: "this command cannot
 * reach the running Airlock ... call the admin API directly ... /v1/agents/NAME/revoke". That fits
 * revoke, restore, status, approvals and anomalies. `health` (a container's HEALTHCHECK) probes the
 * agent listener, not the admin API; `secrets` works on data_dir; `audit verify` reads files it can be
 * given by name: each says what it could not read and how to go on.
 */
import { rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { runCliCapture } from '../helpers/operator.js';
import { tempDir } from '../helpers/start-proxy.js';

const seen: string[] = [];
let dir: string;
let torn: string;

beforeAll(() => {
  dir = tempDir('airlock-unreadable-hints-');
  torn = join(dir, 'torn.yaml');
  writeFileSync(torn, 'listen: 127.0.0.1:7799\nservices: {\n  api: [\n');
});

afterAll(() => {
  rmSync(dir, { recursive: true, force: true });
});

describe('operator commands on a config file that is not valid YAML', () => {
  it.each([[['health']], [['health', '--ready']]])('airlock %j: says where and how to probe cannot be read, not the kill switch', async (args) => {
    const run = await runCliCapture([...args, '--config', torn], {}, seen);
    expect(run.code).toBe(1);
    expect(run.stderr).toMatch(/error at .*YAML/);
    expect(run.stderr).toContain('Where and how to probe the agent listener (listen, tls) cannot be read from it, so nothing was probed; fix it, or run the probe with --config naming a good copy of the file.');
    expect(run.stderr).not.toContain('admin API');
    expect(run.stderr).not.toContain('kill switch');
  });

  it('airlock health on a config file that does not exist: the same, not the kill switch', async () => {
    const run = await runCliCapture(['health', '--config', join(dir, 'missing.yaml')], {}, seen);
    expect(run.code).toBe(1);
    expect(run.stderr).toContain('the file does not exist');
    expect(run.stderr).not.toContain('kill switch');
  });

  it('airlock secrets list: says its data_dir cannot be read from the file', async () => {
    const run = await runCliCapture(['secrets', 'list', '--config', torn], {}, seen);
    expect(run.code).toBe(1);
    expect(run.stderr).toContain('Its data_dir, where the secrets are kept, cannot be read from it; fix it, or run the command with --config naming a good copy of the file.');
    expect(run.stderr).not.toContain('kill switch');
  });

  it('airlock audit verify: says the audit files can be named instead', async () => {
    const run = await runCliCapture(['audit', 'verify', '--config', torn], {}, seen);
    expect(run.code).toBe(1);
    expect(run.stderr).toContain('Where the audit log is (data_dir, audit) cannot be read from it; fix it, or name the files: airlock audit verify FILE...');
    expect(run.stderr).not.toContain('kill switch');
  });

  it('airlock revoke keeps the kill switch way out', async () => {
    const run = await runCliCapture(['revoke', 'agent', 'bot', '--reason', 'x', '--config', torn], {}, seen);
    expect(run.code).toBe(1);
    expect(run.stderr).toContain('call the admin API directly');
  });
});
