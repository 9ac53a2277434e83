/**
 * The cluster primary's restriction relay (run-cluster.ts; from review: with `workers` above 1, a
 * revocation made while Redis is unreachable held only on the worker that took the admin call). A
 * restriction one worker sends over the cluster IPC reaches every other worker, not the sender, and only
 * restrictions travel (a lift or a grant must be kept in Redis first).
 *
 * Real node:cluster processes: a small program (written to a temporary directory) runs the built
 * primary half (serveRestrictionRelay) and the worker half (restrictionChannel over process.send /
 * process.on('message'), as main.ts builds the channel) from dist/cli/run-cluster.js.
 */
import { spawnSync } from 'node:child_process';
import { existsSync, rmSync, writeFileSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';
import { afterAll, describe, expect, it } from 'vitest';
import { tempDir } from '../helpers/start-proxy.js';

const RUN_CLUSTER = resolve(fileURLToPath(new URL('../..', import.meta.url)), 'dist/cli/run-cluster.js');

const PROGRAM = `
import cluster from 'node:cluster';
const { serveRestrictionRelay, restrictionChannel } = await import(process.env.RUN_CLUSTER_URL);
if (cluster.isPrimary) {
  serveRestrictionRelay();
  const reports = {};
  let ready = 0;
  const workers = [1, 2, 3].map((id) => cluster.fork({ WORKER: String(id) }));
  for (const worker of workers) {
    worker.on('message', (message) => {
      if (message?.kind === 'ready' && ++ready === workers.length) workers[0].send({ kind: 'go' });
      if (message?.kind === 'sent') setTimeout(() => { for (const w of workers) w.send({ kind: 'report?' }); }, 1000);
      if (message?.kind === 'report') {
        reports[message.worker] = message.heard;
        if (Object.keys(reports).length === workers.length) {
          process.stdout.write(JSON.stringify(reports));
          for (const w of workers) w.kill();
        }
      }
    });
  }
  setTimeout(() => { process.stderr.write('timed out'); process.exit(3); }, 10000).unref();
} else {
  const channel = restrictionChannel({
    send: (message) => process.send(message),
    onMessage(listener) { process.on('message', listener); return () => process.off('message', listener); },
  });
  const heard = [];
  channel.onRelayed((event) => heard.push(event));
  process.on('message', (message) => {
    if (message?.kind === 'go') {
      channel.publish({ type: 'revocation.added', revocation: { kind: 'agent', target: 'bot', reason: 'leaked', by: 'oncall', at: 1 } });
      channel.publish({ type: 'revocation.lifted', kind: 'agent', target: 'bot', by: 'oncall', at: 2 });
      channel.publish({ type: 'session.ended', id: 'ses_1', reason: 'its agent was revoked', at: 1 });
      // Sent by hand past the channel: the primary passes on no grant, whoever sends it.
      process.send({ type: 'airlock:cluster-restriction', event: { type: 'session.created', session: { id: 'ses_2' } } });
      process.send({ kind: 'sent' });
    }
    if (message?.kind === 'report?') process.send({ kind: 'report', worker: process.env.WORKER, heard });
  });
  process.send({ kind: 'ready' });
}
`;

describe('the cluster primary relays restrictions between workers', () => {
  const dir = tempDir('airlock-relay-');
  afterAll(() => rmSync(dir, { recursive: true, force: true }));

  it('a revocation and a session end sent by one worker reach every other worker; no lift, no grant, no echo', () => {
    expect(existsSync(RUN_CLUSTER), `${RUN_CLUSTER} is missing: run \`npm run build\` (npm test does)`).toBe(true);
    const program = join(dir, 'relay.mjs');
    writeFileSync(program, PROGRAM);
    const run = spawnSync(process.execPath, [program], { env: { PATH: process.env['PATH'] ?? '', RUN_CLUSTER_URL: pathToFileURL(RUN_CLUSTER).href }, encoding: 'utf8', timeout: 20_000 });
    expect(run.status, run.stderr).toBe(0);
    const reports = JSON.parse(run.stdout) as Record<string, Array<{ type: string }>>;
    const restrictions = [
      { type: 'revocation.added', revocation: { kind: 'agent', target: 'bot', reason: 'leaked', by: 'oncall', at: 1 } },
      { type: 'session.ended', id: 'ses_1', reason: 'its agent was revoked', at: 1 },
    ];
    expect(reports).toEqual({ '1': [], '2': restrictions, '3': restrictions });
  });
});
