/**
 * Where the CLI sends AIRLOCK_ADMIN_TOKEN (found by review): without --config or AIRLOCK_CONFIG it reads
 * ./config/airlock.yaml, and sent the token in the clear to whatever admin.listen that file named, so a
 * checkout someone else wrote could collect it. A config found in the current directory is now trusted
 * with the token only when its admin API is on this machine; a named one is trusted as named.
 */
import { once } from 'node:events';
import { mkdirSync, rmSync } from 'node:fs';
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { generateAgentToken } from '../../src/identity/agent-token.js';
import { assertNoLeak } from '../helpers/assert-no-leak.js';
import { runCliCapture, writeConfigFile, type CliRun } from '../helpers/operator.js';
import { tempDir } from '../helpers/start-proxy.js';

describe('the admin address the CLI sends its token to', () => {
  const admin = generateAgentToken();
  const dirs: string[] = [];
  const seen: string[] = [];
  const received: string[] = [];
  let catcher: Server;
  let port: number;

  beforeAll(async () => {
    // Stands in for an admin API: records the Authorization it is sent, answers an empty list.
    catcher = createServer((req, res) => {
      received.push(req.headers.authorization ?? '');
      res.writeHead(200, { 'content-type': 'application/json' });
      res.end('{"approvals":[]}');
    });
    catcher.listen(0, '127.0.0.1');
    await once(catcher, 'listening');
    port = (catcher.address() as AddressInfo).port;
  });

  afterAll(async () => {
    assertNoLeak([admin.token], [{ name: 'cli output', text: seen.join('\n') }]);
    catcher.close();
    for (const dir of dirs) rmSync(dir, { recursive: true, force: true });
  });

  /** A checkout whose config/airlock.yaml names `listen` as its admin address; the CLI runs in it. */
  function runIn(listen: string, args: string[]): Promise<CliRun> {
    const dir = tempDir('airlock-cli-cwd-');
    dirs.push(dir);
    mkdirSync(join(dir, 'config'));
    writeConfigFile(join(dir, 'config'), { listen: '127.0.0.1:0', admin: { listen, tokens: [admin.hash] }, services: {}, agents: {} });
    return runCliCapture(args, { AIRLOCK_ADMIN_TOKEN: admin.token }, seen, dir);
  }

  it('a config found in the current directory naming another host gets no token: exit 1, saying to name the config', async () => {
    const run = await runIn('192.0.2.10:7701', ['approvals', 'list']);
    expect(run.code).toBe(1);
    expect(run.stderr).toContain('found in the current directory');
    expect(run.stderr).toContain('192.0.2.10:7701');
    expect(run.stderr).toContain('--config');
  });

  // Found by the next review: a name under .localhost was taken for this machine by its name, and the
  // resolver may ask DNS for it.
  it('nor one naming a host under .localhost: only loopback addresses and localhost itself count', async () => {
    const run = await runIn('evil.localhost:7701', ['approvals', 'list']);
    expect(run.code).toBe(1);
    expect(run.stderr).toContain('found in the current directory');
  });

  it('a config found in the current directory with its admin API on this machine is used as before', async () => {
    const before = received.length;
    const run = await runIn(`127.0.0.1:${port}`, ['approvals', 'list']);
    expect(run.code, run.stderr).toBe(0);
    expect(received.slice(before)).toEqual([`Bearer ${admin.token}`]);
  });

  // Found by review: after admin.listen was edited and reloaded (a reload does not move the admin API),
  // the CLI followed the file and said only "is it running?".
  it('nothing answering at admin.listen: says a changed admin.listen waits for a restart, and what to do', async () => {
    const closed = createServer();
    closed.listen(0, '127.0.0.1');
    await once(closed, 'listening');
    const unused = (closed.address() as AddressInfo).port;
    closed.close();
    await once(closed, 'close');
    const run = await runIn(`127.0.0.1:${unused}`, ['approvals', 'list']);
    expect(run.code).toBe(1);
    expect(run.stderr).toContain(`No Airlock answered at admin 127.0.0.1:${unused}`);
    expect(run.stderr).toContain('If admin.listen was changed since it started, its admin API is still at the old address until a restart');
  });

  // Found by review: only the short spelling ::1 counted as this machine.
  it('and one naming IPv6 loopback written out in full', async () => {
    const catcher6 = createServer((req, res) => {
      received.push(req.headers.authorization ?? '');
      res.writeHead(200, { 'content-type': 'application/json' });
      res.end('{"approvals":[]}');
    });
    catcher6.listen(0, '::1');
    await once(catcher6, 'listening');
    try {
      const before = received.length;
      const run = await runIn(`[0:0:0:0:0:0:0:1]:${(catcher6.address() as AddressInfo).port}`, ['approvals', 'list']);
      expect(run.code, run.stderr).toBe(0);
      expect(received.slice(before)).toEqual([`Bearer ${admin.token}`]);
    } finally {
      catcher6.close();
    }
  });
});
