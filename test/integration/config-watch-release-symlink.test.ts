/**
 * reload.watch with the config under a directory symlink that a deploy swaps (found by review): a
 * release layout such as Capistrano's, or a config checkout switched by `ln -sfn releases/N current`,
 *
 *   root/releases/1/airlock.yaml
 *   root/releases/2/airlock.yaml
 *   root/current -> releases/2        swapped by renaming a new symlink over it (atomic)
 *
 * with serve started on root/current/airlock.yaml. The watch covered the file's directory (as resolved
 * when the watch began: releases/1) and its target's (releases/1 again); the swap changes neither, so
 * the new release was never loaded without a SIGHUP. The directory that holds a symlinked ancestor is
 * watched too now. `airlock serve` runs in process (runCli), with real file-system events.
 */
import { mkdirSync, readFileSync, renameSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { CliIo } from '../../src/cli/cli-io.js';
import { runCli } from '../../src/cli/run-cli.js';
import { generateAgentToken } from '../../src/identity/agent-token.js';
import { assertNoLeak } from '../helpers/assert-no-leak.js';
import { canary } from '../helpers/canary.js';
import { eventually } from '../helpers/operator.js';
import { sendRequest } from '../helpers/send-request.js';
import { tempDir } from '../helpers/start-proxy.js';
import { startUpstream, type Upstream } from '../helpers/start-upstream.js';

describe('reload.watch follows a release directory swapped by symlink', () => {
  const key = canary('release-swap');
  const agent = generateAgentToken();
  const root = tempDir('airlock-release-');
  let upstream: Upstream;
  let stdout = '';
  let stderr = '';
  let stop: (signal: string) => void = () => undefined;
  let exit: Promise<number>;
  let url = '';

  /** Release `n`, whose agent grant holds the route's scope when `granted`. */
  function release(n: number, granted: boolean): void {
    mkdirSync(join(root, 'releases', String(n)), { recursive: true });
    writeFileSync(
      join(root, 'releases', String(n), 'airlock.yaml'),
      JSON.stringify({
        listen: '127.0.0.1:0',
        data_dir: join(root, 'data'),
        anomalies: { enabled: false },
        services: { things: { upstream: upstream.url, credential: { secret: 'env:RELEASE_KEY' }, routes: [{ method: 'GET', path: '/v1/things', scope: 'things:read' }] } },
        agents: { bot: { tokens: [agent.hash], credentials: [{ service: 'things', max_scope: [granted ? 'things:read' : 'things:write'] }] } },
      }),
    );
  }

  /** `ln -sfn releases/N current`, atomically: a new link renamed over the old. */
  function deploy(n: number): void {
    symlinkSync(join('releases', String(n)), join(root, 'current.new'));
    renameSync(join(root, 'current.new'), join(root, 'current'));
  }

  async function status(): Promise<number> {
    return (await sendRequest(`${url}/things/v1/things`, { headers: { authorization: `Bearer ${agent.token}` } })).status;
  }

  beforeAll(async () => {
    upstream = await startUpstream();
    release(1, true);
    deploy(1);
    const io: CliIo = {
      args: ['serve', '--config', join(root, 'current', 'airlock.yaml')],
      env: { RELEASE_KEY: key },
      cwd: root,
      stdout: { write: (text: string) => (stdout += text) },
      stderr: { write: (text: string) => (stderr += text) },
      stdin: (async function* noInput() {})(),
      stopRequested: new Promise<string>((resolve) => {
        stop = resolve;
      }),
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

  it('a new release deployed by swapping the symlink is in force without a signal', async () => {
    expect(await status()).toBe(200);
    release(2, false);
    deploy(2);
    await eventually('release 2 to be in force', async () => (await status()) === 403, 5_000);
  });

  it('and the one after it, and an edit of the release in force', async () => {
    release(3, true);
    deploy(3);
    await eventually('release 3 to be in force', async () => (await status()) === 200, 5_000);
    release(3, false);
    await eventually('the edit of release 3 to be in force', async () => (await status()) === 403, 5_000);
  });
});
