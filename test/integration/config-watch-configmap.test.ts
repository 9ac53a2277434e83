/**
 * reload.watch with the config mounted from a Kubernetes ConfigMap (found by review): the kubelet lays a
 * ConfigMap volume out as
 *
 *   dir/..2026_01_01_00_00_00.1/airlock.yaml   the data, one directory per version
 *   dir/..data -> ..2026_01_01_00_00_00.1       the current version
 *   dir/airlock.yaml -> ..data/airlock.yaml     what the pod reads
 *
 * and updates it by writing a new version directory, making a new symlink `..data_tmp` and renaming it
 * over `..data` (atomic). No event names airlock.yaml, and the watcher, filtered to that name, never
 * reloaded. Now any event in the directory leads to a look at the file, and a reload when its content
 * changed. `airlock serve` runs in process (runCli), with a real upstream and real file-system events.
 */
import { mkdirSync, rmSync, renameSync, symlinkSync, writeFileSync } from 'node:fs';
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

describe('reload.watch follows a ConfigMap update (an atomic swap of the ..data symlink)', () => {
  const key = canary('configmap');
  const agent = generateAgentToken();
  const root = tempDir('airlock-configmap-');
  const volume = join(root, 'config');
  const dataDir = join(root, 'data');
  const seen: string[] = [];
  let upstream: Upstream;
  let stdout = '';
  let stderr = '';
  let stop: (signal: string) => void = () => undefined;
  let exit: Promise<number>;
  let url = '';

  /** The config of one version: the agent's grant names `scope`; none when null. */
  const configText = (scope: string | null): string =>
    JSON.stringify({
      listen: '127.0.0.1:0',
      data_dir: dataDir,
      log: { level: 'info' },
      // The polls below are denied until a reload lands: thirty of them would suspend the agent.
      anomalies: { enabled: false },
      services: { things: { upstream: upstream.url, credential: { secret: 'env:CONFIGMAP_KEY' }, routes: [{ method: 'GET', path: '/v1/things', scope: 'things:read' }] } },
      agents: { bot: { tokens: [agent.hash], credentials: scope === null ? [] : [{ service: 'things', max_scope: [scope] }] } },
    });

  let version = 0;
  /** Publishes a new version as the kubelet does: a new directory, then ..data swapped by rename. */
  function publish(scope: string | null): void {
    version += 1;
    const versionDir = `..2026_01_01_00_00_0${version}.${version}`;
    mkdirSync(join(volume, versionDir));
    writeFileSync(join(volume, versionDir, 'airlock.yaml'), configText(scope));
    if (version === 1) {
      symlinkSync(versionDir, join(volume, '..data'));
      symlinkSync('..data/airlock.yaml', join(volume, 'airlock.yaml'));
      return;
    }
    symlinkSync(versionDir, join(volume, '..data_tmp'));
    renameSync(join(volume, '..data_tmp'), join(volume, '..data'));
    // The kubelet then removes the old version's directory.
    rmSync(join(volume, `..2026_01_01_00_00_0${version - 1}.${version - 1}`), { recursive: true, force: true });
  }

  async function status(): Promise<number> {
    const response = await sendRequest(`${url}/things/v1/things`, { headers: { authorization: `Bearer ${agent.token}` } });
    seen.push(response.text);
    return response.status;
  }

  const reloads = (): number => stdout.split('\n').filter((line) => line.includes('"config reload requested"')).length;

  beforeAll(async () => {
    upstream = await startUpstream();
    mkdirSync(volume, { recursive: true });
    publish('things:read');
    const io: CliIo = {
      args: ['serve', '--config', join(volume, 'airlock.yaml')],
      env: { CONFIGMAP_KEY: key },
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
    await upstream.close();
    assertNoLeak([key, agent.token], [
      { name: 'stdout', text: stdout },
      { name: 'stderr', text: stderr },
      { name: 'responses', text: seen.join('\n') },
    ]);
    rmSync(root, { recursive: true, force: true });
  });

  it('a new version published by swapping ..data is in force without a signal', async () => {
    expect(await status()).toBe(200);
    publish(null);
    // The agent no longer holds the scope: scope_denied (403) once the new version is loaded.
    await eventually('the new ConfigMap version to be in force', async () => (await status()) === 403, 5_000);
    await eventually('the reload line to be logged', () => reloads() >= 1, 3_000);
    expect(stdout).toContain('"reason":"the config file or its TLS files changed"');
  });

  it('the next swap is seen too, while other files in the directory change all the time', async () => {
    // Events that never stop (an audit log beside the config, say) must not hold the reload back forever.
    let noisy = true;
    const noise = (async () => {
      for (let i = 0; noisy; i++) {
        writeFileSync(join(volume, 'noise.txt'), String(i));
        await sleep(50);
      }
    })();
    try {
      publish('things:read');
      await eventually('the next version to be in force', async () => (await status()) === 200, 5_000);
    } finally {
      noisy = false;
      await noise;
    }
  });

  it('events that leave the content as it was do not reload', async () => {
    const before = reloads();
    for (let i = 0; i < 5; i++) {
      writeFileSync(join(volume, 'noise.txt'), `again ${i}`);
      await sleep(100);
    }
    // Republishing the same content under a new version directory is no change either.
    publish('things:read');
    // Longer than the watcher waits for events to settle (at most 1 s), so that the look these events
    // lead to is not merged into the sentinel's. The outcome is not read here, but after the sentinel.
    await sleep(1_500);
    // The sentinel: a real change, published after them. Once it is in force, the events above have been
    // looked at, and a reload they caused would have been logged before the sentinel's.
    publish(null);
    await eventually('the sentinel version to be in force', async () => (await status()) === 403, 5_000);
    await eventually('the sentinel reload line to be logged', () => reloads() > before, 3_000);
    // One reload, the sentinel's: the noise and the same content republished caused none.
    expect(reloads()).toBe(before + 1);
  });
});
