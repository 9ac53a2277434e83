/**
 * reload.watch changed by a reload. serve read the setting once, at start-up: a save turning it off was
 * reported applied ("config reloaded", no restart needed), and every later save was still applied on its
 * own, which is what the operator had turned off (to stage edits and apply them with SIGHUP); turned on
 * by SIGHUP, saves were not watched until a restart, and nothing said so. The setting in force now is
 * the one of the config last applied. `airlock serve` runs in process (runCli), with real file events.
 */
import { readFileSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { CliIo } from '../../src/cli/cli-io.js';
import { runCli } from '../../src/cli/run-cli.js';
import { generateAgentToken } from '../../src/identity/agent-token.js';
import { assertNoLeak } from '../helpers/assert-no-leak.js';
import { canary } from '../helpers/canary.js';
import { eventually, sleep } from '../helpers/operator.js';
import { sendRequest } from '../helpers/send-request.js';
import { tempDir } from '../helpers/start-proxy.js';
import { startUpstream, type Upstream } from '../helpers/start-upstream.js';

describe('reload.watch follows the config in force', () => {
  const key = canary('reload-watch');
  const agent = generateAgentToken();
  const root = tempDir('airlock-reload-watch-');
  const file = join(root, 'airlock.yaml');
  let upstream: Upstream;
  let stdout = '';
  let stderr = '';
  let stop: (signal: string) => void = () => undefined;
  let hangUp: () => void = () => undefined;
  let exit: Promise<number>;
  let url = '';

  /** The config with reload.watch `watch`; the agent's grant holds the route's scope when `granted`. */
  const save = (watch: boolean, granted: boolean): void =>
    writeFileSync(
      file,
      JSON.stringify({
        listen: '127.0.0.1:0',
        data_dir: join(root, 'data'),
        reload: { watch },
        anomalies: { enabled: false },
        services: { things: { upstream: upstream.url, credential: { secret: 'env:RELOAD_WATCH_KEY' }, routes: [{ method: 'GET', path: '/v1/things', scope: 'things:read' }] } },
        agents: { bot: { tokens: [agent.hash], credentials: [{ service: 'things', max_scope: [granted ? 'things:read' : 'things:write'] }] } },
      }),
    );

  async function status(): Promise<number> {
    return (await sendRequest(`${url}/things/v1/things`, { headers: { authorization: `Bearer ${agent.token}` } })).status;
  }

  const applied = (): number => stdout.split('\n').filter((line) => line.includes('"config reloaded')).length;

  beforeAll(async () => {
    upstream = await startUpstream();
    save(true, true);
    const io: CliIo = {
      args: ['serve', '--config', file],
      env: { RELOAD_WATCH_KEY: key },
      cwd: root,
      stdout: { write: (text: string) => (stdout += text) },
      stderr: { write: (text: string) => (stderr += text) },
      stdin: (async function* noInput() {})(),
      stopRequested: new Promise<string>((resolve) => {
        stop = resolve;
      }),
      onReloadRequested(listener) {
        hangUp = listener;
        return () => {
          hangUp = () => undefined;
        };
      },
    };
    exit = runCli(io);
    url = await eventually('serve to listen', () => /Airlock is listening on (http:\/\/\S+)/.exec(stderr)?.[1], 10_000);
  });

  afterAll(async () => {
    stop('SIGTERM');
    expect(await exit).toBe(0);
    assertNoLeak([key], [
      { name: 'stdout', text: stdout },
      { name: 'stderr', text: stderr },
      { name: 'audit', text: readFileSync(join(root, 'data', 'audit.jsonl'), 'utf8') },
    ]);
    await upstream.close();
    rmSync(root, { recursive: true, force: true });
  });

  it('a save turning it off is applied; the saves after it wait for SIGHUP', async () => {
    expect(await status()).toBe(200);
    save(false, true);
    await eventually('the save turning watch off to be applied', () => applied() === 1, 5_000);
    save(false, false);
    // Well past the watch's settle time (300 ms, at most 1 s): not applied on its own.
    await sleep(2_000);
    expect(applied()).toBe(1);
    expect(await status()).toBe(200);
    hangUp();
    await eventually('SIGHUP to apply the staged save', async () => (await status()) === 403, 5_000);
  });

  it('turned on again by SIGHUP, saves are applied on their own from then on', async () => {
    save(true, false);
    hangUp();
    await eventually('SIGHUP to apply watch: true', () => applied() === 3, 5_000);
    save(true, true);
    await eventually('the next save to be applied without a signal', async () => (await status()) === 200, 5_000);
  });
});
