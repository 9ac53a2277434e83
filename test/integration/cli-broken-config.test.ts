/**
 * The operator commands while the config file on disk has a problem the running Airlock refused to
 * reload (found by an ops walkthrough: a typo in a grant made `airlock revoke` refuse, mid-incident).
 * `revoke`, `restore`, `status`, `approvals`, `anomalies`, `secrets` and `audit verify` go on with the
 * file's data_dir, audit, admin and state settings when those are well formed, after listing the
 * problems; `check`, `explain` and `serve` still refuse it; a malformed admin block is refused too.
 */
import { mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { generateAgentToken } from '../../src/identity/agent-token.js';
import { assertNoLeak } from '../helpers/assert-no-leak.js';
import { canary } from '../helpers/canary.js';
import { freePort, runCliCapture, writeConfigFile } from '../helpers/operator.js';
import { sendRequest } from '../helpers/send-request.js';
import { startProxy, tempDir, type ProxyFixture } from '../helpers/start-proxy.js';
import { startUpstream, type Upstream } from '../helpers/start-upstream.js';

describe('operator commands with a config file that has a problem', () => {
  const key = canary('broken-config');
  const agent = generateAgentToken();
  const alice = generateAgentToken();
  const seen: string[] = [];
  let upstream: Upstream;
  let proxy: ProxyFixture;
  let dir: string;
  let broken: string;
  let adminBroken: string;

  beforeAll(async () => {
    upstream = await startUpstream();
    const port = await freePort();
    const admin = { listen: `127.0.0.1:${port}`, tokens: [{ name: 'alice', hash: alice.hash }] };
    const services = { api: { upstream: upstream.url, credential: { secret: 'env:BROKEN_KEY' }, routes: [{ method: 'GET', path: '/v1/*', scope: 'read' }] } };
    proxy = await startProxy({ admin, services, agents: { bot: { tokens: [agent.hash], credentials: [{ service: 'api', max_scope: ['read'] }] } } }, { env: { BROKEN_KEY: key } });
    dir = tempDir('airlock-broken-config-');
    mkdirSync(join(dir, 'data'));
    // The same deployment, its file edited with a typo in a grant (service "aip").
    broken = writeConfigFile(dir, { data_dir: proxy.dataDir, admin, services, agents: { bot: { tokens: [agent.hash], credentials: [{ service: 'aip', max_scope: ['read'] }] } } });
    adminBroken = writeConfigFile(dir, { data_dir: proxy.dataDir, admin: { listen: 'nowhere', tokens: [alice.hash] }, services }, 'admin-broken.yaml');
  });

  afterAll(async () => {
    assertNoLeak([key, agent.token, alice.token], [{ name: 'CLI output', text: seen.join('\n') }]);
    await proxy?.close();
    await upstream?.close();
  });

  const cli = (args: string[]) => runCliCapture([...args, '--config', broken], { AIRLOCK_ADMIN_TOKEN: alice.token }, seen);
  const call = () => sendRequest(`${proxy.url}/api/v1/x`, { headers: { authorization: `Bearer ${agent.token}` } });

  it('revoke and restore still reach the running Airlock, after naming the problem', async () => {
    expect((await call()).status).toBe(200);
    const revoked = await cli(['revoke', 'agent', 'bot', '--reason', 'incident 42']);
    expect(revoked.code, revoked.stderr).toBe(0);
    expect(revoked.stderr).toContain('error at agents.bot.credentials[0].service: no service named "aip"; did you mean "api"?');
    expect(revoked.stderr).toContain(`${broken} has 1 problem (a running Airlock refuses to reload it, and keeps its last good config). This command goes on with the file's data_dir, audit, admin and state settings`);
    expect((await call()).status).toBe(401);
    const status = await cli(['status']);
    expect(status.code).toBe(2);
    expect(status.stdout).toContain('agent bot');
    const restored = await cli(['restore', 'agent', 'bot', '--reason', 'resolved']);
    expect(restored.code, restored.stderr).toBe(0);
    expect((await call()).status).toBe(200);
    // Nothing else needs an operator now but the file itself, which the running Airlock did not load
    // (found by a README walkthrough: status said ok).
    const after = await cli(['status']);
    expect(after.code).toBe(2);
    expect(after.stdout).toContain(`: NEEDS ATTENTION\n  config       ${broken} HAS 1 ERROR: a running Airlock refuses to reload it and serves the config it last loaded; npx airlock check lists them\n`);
    const json = JSON.parse((await cli(['status', '--json'])).stdout) as { config: unknown };
    expect(json.config).toEqual({ file: broken, errors: 1 });
  });

  it('secrets, approvals, anomalies and audit verify go on too', async () => {
    expect((await cli(['approvals', 'list'])).code).toBe(0);
    expect((await cli(['anomalies'])).code).toBe(0);
    const verify = await cli(['audit', 'verify']);
    expect(verify.code, verify.stdout + verify.stderr).toBe(0);
    expect(verify.stdout).toMatch(/^OK: \d+ records in 1 file, the hash chain is intact from the beginning of the log/);
    expect((await cli(['secrets', 'list'])).stdout).toContain('No secrets stored yet.');
  });

  it('check, explain and serve still refuse it', async () => {
    expect((await cli(['check'])).code).toBe(1);
    const explain = await cli(['explain', '--agent', 'bot', 'GET', '/api/v1/x']);
    expect(explain.code).toBe(1);
    expect(explain.stderr).toContain('has 1 problem; fix it and run again');
  });

  // Found by review: `datadir:` (a typo) left data_dir at its default, and `secrets rekey` re-keyed a
  // new, empty store there while reporting success.
  it('an unknown key that is an operator setting misspelt, or a problem in one of them, is not gone on with', async () => {
    const services = { api: { upstream: upstream.url, credential: { secret: 'env:BROKEN_KEY' }, routes: [{ method: 'GET', path: '/v1/*', scope: 'read' }] } };
    const typo = writeConfigFile(dir, { datadir: proxy.dataDir, services }, 'typo.yaml');
    const secrets = await runCliCapture(['secrets', 'rekey', '--config', typo], {}, seen);
    expect(secrets.code).toBe(1);
    expect(secrets.stderr).toContain('unknown key "datadir"; did you mean "data_dir"?');
    expect(secrets.stderr).toContain('fix it and run again');
    expect(secrets.stdout).toBe('');
    const clash = writeConfigFile(dir, { listen: '127.0.0.1:7799', data_dir: proxy.dataDir, admin: { listen: '127.0.0.1:7799', tokens: [alice.hash] }, services }, 'clash.yaml');
    const revoke = await runCliCapture(['revoke', 'agent', 'bot', '--reason', 'x', '--config', clash], { AIRLOCK_ADMIN_TOKEN: alice.token }, seen);
    expect(revoke.code).toBe(1);
    expect(revoke.stderr).toContain('error at admin.listen');
  });

  it('a malformed admin block is not gone on with: the command refuses', async () => {
    const run = await runCliCapture(['revoke', 'agent', 'bot', '--reason', 'x', '--config', adminBroken], { AIRLOCK_ADMIN_TOKEN: alice.token }, seen);
    expect(run.code).toBe(1);
    expect(run.stderr).toContain('fix it and run again');
    expect((await call()).status).toBe(200);
  });

  // Found by an ops walkthrough: a half-finished edit (a stray "}") stopped `revoke` mid-incident with
  // only "fix them and run again"; the command cannot read the admin address, but it says how to act.
  it('a file that is not valid YAML: the command refuses, and says how to reach the kill switch anyway', async () => {
    const torn = join(dir, 'torn.yaml');
    writeFileSync(torn, `data_dir: ${proxy.dataDir}\nagents:\n  bot: {tokens: [], credentials: [{service: api, max_scope: [read]}] }}\n`);
    const run = await runCliCapture(['revoke', 'agent', 'bot', '--reason', 'x', '--config', torn], { AIRLOCK_ADMIN_TOKEN: alice.token }, seen);
    expect(run.code).toBe(1);
    expect(run.stderr).toMatch(/error at .*YAML/);
    expect(run.stderr).toContain('run it with --config naming a good copy of the file, or call the admin API directly, e.g.  curl -X POST -H "authorization: Bearer $AIRLOCK_ADMIN_TOKEN"');
    expect(run.stderr).toContain('/v1/agents/NAME/revoke');
    expect((await call()).status).toBe(200);
  });
});
