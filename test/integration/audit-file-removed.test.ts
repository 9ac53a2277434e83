/**
 * The audit file removed or renamed away while Airlock runs: the next records land in a new file at the
 * configured path, chained on from the last record written (not from genesis, as a restart would), so
 * `airlock audit verify` accepts the new file as a continuation (of the renamed file, as one whole
 * chain), and shows that the log should have begun earlier when the records before were deleted. The
 * admin API's health and audit_head follow the new file; the event is logged as an error. Rotation
 * (max_bytes/keep) goes on as before afterwards.
 */
import { existsSync, readFileSync, renameSync, rmSync } from 'node:fs';
import { afterEach, describe, expect, it } from 'vitest';
import { generateAgentToken } from '../../src/identity/agent-token.js';
import { GENESIS } from '../../src/observability/audit-chain.js';
import { assertNoLeak } from '../helpers/assert-no-leak.js';
import { canary } from '../helpers/canary.js';
import { adminClient, eventually, runCliCapture } from '../helpers/operator.js';
import { sendRequest } from '../helpers/send-request.js';
import { startProxy, type ProxyFixture } from '../helpers/start-proxy.js';
import { startUpstream, type Upstream } from '../helpers/start-upstream.js';

const agent = generateAgentToken();
const admin = generateAgentToken();

interface ChainLine {
  readonly path: string | null;
  readonly prev: string;
  readonly hash: string;
}

function linesOf(file: string): ChainLine[] {
  if (!existsSync(file)) return [];
  return readFileSync(file, 'utf8')
    .split('\n')
    .filter((l) => l !== '')
    .map((l) => JSON.parse(l) as ChainLine);
}

describe('an audit file removed or renamed while Airlock runs', () => {
  let upstream: Upstream;
  let proxy: ProxyFixture;
  const key = canary('audit-removed-key');
  const seen: string[] = [];

  async function start(audit: Record<string, unknown> = {}): Promise<string> {
    upstream = await startUpstream();
    proxy = await startProxy(
      {
        audit: { file: 'audit.jsonl', ...audit },
        admin: { listen: '127.0.0.1:0', tokens: [{ name: 'alice', hash: admin.hash }] },
        services: { echo: { upstream: upstream.url, credential: { secret: 'env:REMOVED_KEY', inject: 'bearer' }, routes: [{ method: 'GET', path: '/v1/*', scope: 'read' }] } },
        agents: { 'audit-bot': { tokens: [agent.hash], credentials: [{ service: 'echo', max_scope: ['read'] }] } },
      },
      { env: { REMOVED_KEY: key } },
    );
    return proxy.config.audit.file;
  }

  async function get(path: string): Promise<void> {
    const response = await sendRequest(`${proxy.url}/echo${path}`, { headers: { authorization: `Bearer ${agent.token}` } });
    expect(response.status, response.text).toBe(200);
  }

  function verify(...files: string[]): ReturnType<typeof runCliCapture> {
    return runCliCapture(['audit', 'verify', ...files], {}, seen);
  }

  afterEach(async () => {
    assertNoLeak([key, agent.token, admin.token], [
      { name: 'logs', text: proxy.logLines.join('') },
      { name: 'audit', text: proxy.auditText() },
      { name: 'CLI and admin output', text: seen.join('\n') },
    ]);
    seen.length = 0;
    await proxy?.close();
    await upstream?.close();
  });

  it('writes on to a new file at the path, chained from the last record written, which verify accepts as a continuation', async () => {
    const file = await start();
    await get('/v1/before-removal');
    const before = await eventually('the record before the removal', () => linesOf(file).find((l) => l.path === '/echo/v1/before-removal'));
    const headBefore = linesOf(file).at(-1)?.hash as string;
    expect(before.hash).toBe(headBefore);

    rmSync(file);
    await get('/v1/after-removal');
    const after = await eventually('the record after the removal, in a file at the configured path', () => linesOf(file).find((l) => l.path === '/echo/v1/after-removal'));
    expect(linesOf(file)[0]?.path).toBe('/echo/v1/after-removal');
    expect(after.prev).toBe(headBefore);
    expect(after.prev).not.toBe(GENESIS);

    const explicit = await verify(file);
    expect(explicit.code, explicit.stdout + explicit.stderr).toBe(0);
    expect(explicit.stdout).toContain(`follows hash ${headBefore.slice(0, 16)}`);
    // Verified against the config, the log must start at its beginning: the removed records show as a break.
    const configured = await runCliCapture(['audit', 'verify', '--complete', file], {}, seen);
    expect(configured.code).toBe(2);

    const client = adminClient(() => proxy.airlock.adminUrl as string, admin.token);
    const health = (await client.call('GET', '/v1/health')).json();
    seen.push(...client.seen);
    expect(health['audit']).toBe('writable');
    expect(health['audit_head']).toBe(linesOf(file).at(-1)?.hash);
    const logged = proxy.logRecords().filter((l) => String(l['msg']).startsWith('the audit file was removed'));
    expect(logged).toHaveLength(1);
    expect(logged[0]?.['level']).toBe('error');
    expect(logged[0]?.['head']).toBe(headBefore);
  });

  it('continues the chain of a file renamed away, so the two verify as one chain from the beginning', async () => {
    const file = await start();
    await get('/v1/before-rename');
    await eventually('the record before the rename', () => linesOf(file).find((l) => l.path === '/echo/v1/before-rename'));
    const moved = `${file}.moved`;
    renameSync(file, moved);
    await get('/v1/after-rename');
    await eventually('the record after the rename, at the configured path', () => linesOf(file).find((l) => l.path === '/echo/v1/after-rename'));
    expect(linesOf(moved).some((l) => l.path === '/echo/v1/after-rename')).toBe(false);
    const run = await verify(moved, file);
    expect(run.code, run.stdout + run.stderr).toBe(0);
    expect(run.stdout).toContain('from the beginning of the log');
    expect(proxy.logRecords().filter((l) => String(l['msg']).startsWith('the audit file was removed'))).toHaveLength(1);
  });

  it('still rotates by max_bytes after a removal, the chain whole across the rotated copies', async () => {
    const file = await start({ max_bytes: 4096, keep: 5 });
    await get('/v1/first');
    await eventually('the first record', () => linesOf(file).find((l) => l.path === '/echo/v1/first'));
    const moved = `${file}.moved`;
    renameSync(file, moved);
    for (let i = 0; i < 20; i++) await get(`/v1/rotated-${i}-${'r'.repeat(200)}`);
    await eventually('the last record', () => linesOf(file).find((l) => l.path?.startsWith('/echo/v1/rotated-19-')));
    expect(existsSync(`${file}.1`)).toBe(true);
    const rotated: string[] = [];
    for (let n = 5; n >= 1; n--) if (existsSync(`${file}.${n}`)) rotated.push(`${file}.${n}`);
    const run = await verify(moved, ...rotated, file);
    expect(run.code, run.stdout + run.stderr).toBe(0);
    expect(run.stdout).toContain('from the beginning of the log');
  });
});
