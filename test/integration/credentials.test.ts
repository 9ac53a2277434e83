/**
 * Where the injected credential comes from and how it goes on: env: and file: sources (the file source
 * picks up `airlock secrets set` without a restart), a grant's own credential, every injector kind,
 * and the 503s for a secret that is missing or too short, which never send the request upstream.
 */
import { rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { CliIo } from '../../src/cli/cli-io.js';
import { runCli } from '../../src/cli/run-cli.js';
import { generateAgentToken } from '../../src/identity/agent-token.js';
import type { AuditRecord } from '../../src/observability/audit-record.js';
import { assertNoLeak } from '../helpers/assert-no-leak.js';
import { canary } from '../helpers/canary.js';
import { sendRequest, type Problem, type SentResponse } from '../helpers/send-request.js';
import { startProxy, tempDir, type ProxyFixture } from '../helpers/start-proxy.js';
import { startUpstream, type RecordedRequest, type Upstream } from '../helpers/start-upstream.js';

interface CliRun {
  code: number;
  stdout: string;
  stderr: string;
}

/** Runs the real CLI with string streams, the value on stdin. */
async function runCliWith(args: string[], stdinText: string, env: Record<string, string> = {}): Promise<CliRun> {
  let stdout = '';
  let stderr = '';
  const io: CliIo = {
    args,
    env,
    cwd: process.cwd(),
    stdout: { write: (text: string) => (stdout += text) },
    stderr: { write: (text: string) => (stderr += text) },
    stdin: (async function* stdinChunks() {
      yield Buffer.from(stdinText, 'utf8');
    })(),
    stopRequested: new Promise<string>(() => undefined),
  };
  const code = await runCli(io);
  return { code, stdout, stderr };
}

describe('credentials', () => {
  const keys = {
    env: canary('cred-env'),
    service: canary('cred-service'),
    grant: canary('cred-grant'),
    header: canary('cred-header'),
    basicUser: canary('cred-basic-user'),
    basicPassword: canary('cred-basic-pass'),
    query: canary('cred-query'),
    file: canary('cred-file'),
    rotated: canary('cred-rotated'),
  };
  /** Seven characters: too short to redact reliably, so Airlock must refuse to inject it. */
  const shortSecret = canary('short').slice(-7);
  const agent = generateAgentToken();
  const other = generateAgentToken();
  let upstream: Upstream;
  let proxy: ProxyFixture;
  let dataDir: string;
  let configFile: string;
  const surfaces: string[] = [];

  function service(secret: string, inject: unknown = 'bearer'): Record<string, unknown> {
    return { upstream: upstream.url, credential: { secret, inject }, routes: [{ method: ['GET', 'POST'], path: '/v1/*', scope: 'api:call' }] };
  }

  beforeAll(async () => {
    upstream = await startUpstream();
    dataDir = tempDir();
    const input = {
      services: {
        plain: service('env:PLAIN_KEY'),
        unset: service('env:NOT_SET_ANYWHERE'),
        short: service('env:SHORT_KEY'),
        shared: service('env:SERVICE_KEY'),
        header: service('env:HEADER_KEY', { header: 'X-Api-Token', value: 'Token ${secret}' }),
        'basic-user': service('env:BASIC_USER_KEY', { basic: { username: '${secret}', password: '' } }),
        'basic-password': service('env:BASIC_PASSWORD_KEY', { basic: { username: 'api', password: '${secret}' } }),
        query: service('env:QUERY_KEY', { query: 'key' }),
        stored: service('file:stored-key'),
      },
      agents: {
        bot: {
          tokens: [agent.hash],
          credentials: [
            ...['plain', 'unset', 'short', 'header', 'basic-user', 'basic-password', 'query', 'stored'].map((name) => ({ service: name, max_scope: ['*'] })),
            { service: 'shared', max_scope: ['*'], credential: { secret: 'env:GRANT_KEY', inject: 'bearer' } },
          ],
        },
        other: { tokens: [other.hash], credentials: [{ service: 'shared', max_scope: ['*'] }] },
      },
    };
    // The CLI reads the same config from YAML (JSON is YAML) with the proxy's data_dir.
    configFile = join(dataDir, 'airlock.yaml');
    writeFileSync(configFile, JSON.stringify({ listen: '127.0.0.1:0', data_dir: dataDir, ...input }, null, 2));
    proxy = await startProxy(input, {
      dataDir,
      env: {
        PLAIN_KEY: keys.env,
        SHORT_KEY: shortSecret,
        SERVICE_KEY: keys.service,
        GRANT_KEY: keys.grant,
        HEADER_KEY: keys.header,
        BASIC_USER_KEY: keys.basicUser,
        BASIC_PASSWORD_KEY: keys.basicPassword,
        QUERY_KEY: keys.query,
      },
    });
  });

  afterAll(async () => {
    await proxy?.close();
    await upstream?.close();
    // Passed to startProxy, which removes only a data_dir it made itself.
    if (dataDir !== undefined) rmSync(dataDir, { recursive: true, force: true });
  });

  async function call(path: string, token = agent.token, headers: Record<string, string> = {}): Promise<SentResponse> {
    const response = await sendRequest(`${proxy.url}${path}`, { headers: { authorization: `Bearer ${token}`, ...headers } });
    surfaces.push(response.text, JSON.stringify(response.headers));
    return response;
  }

  /** The one request the upstream received during `act`. */
  async function received(act: () => Promise<SentResponse>): Promise<{ response: SentResponse; seen: RecordedRequest }> {
    const before = upstream.requests.length;
    const response = await act();
    expect(response.status).toBe(200);
    expect(upstream.requests.length).toBe(before + 1);
    return { response, seen: upstream.requests.at(-1) as RecordedRequest };
  }

  async function notForwarded(act: () => Promise<SentResponse>): Promise<SentResponse> {
    const before = upstream.requests.length;
    const response = await act();
    expect(upstream.requests.length).toBe(before);
    return response;
  }

  async function auditFor(response: SentResponse): Promise<AuditRecord> {
    const id = response.headers['x-airlock-request-id'];
    const deadline = Date.now() + 5000;
    for (;;) {
      const found = proxy.auditRecords().find((r) => r.request_id === id);
      if (found !== undefined) return found;
      if (Date.now() > deadline) throw new Error(`no audit record for request ${String(id)}`);
      await new Promise((resolve) => setTimeout(resolve, 10));
    }
  }

  /** Every header value and the target, to check a secret appears exactly where it was injected. */
  function occurrences(seen: RecordedRequest, secret: string): number {
    const text = [seen.target, ...seen.rawHeaders].join('\n');
    return text.split(secret).length - 1;
  }

  describe('env: source', () => {
    it('injects the variable from the proxy environment', async () => {
      const { seen } = await received(() => call('/plain/v1/chat'));
      expect(seen.header('authorization')).toEqual([`Bearer ${keys.env}`]);
      expect(seen.rawHeaders.join('\n')).not.toContain(agent.token);
    });

    it('answers 503 credential_unavailable when the variable is not set, and sends nothing upstream', async () => {
      const response = await notForwarded(() => call('/unset/v1/chat'));
      expect(response.status).toBe(503);
      const problem = response.json<Problem>();
      expect(problem.code).toBe('credential_unavailable');
      expect(problem.detail).toContain('NOT_SET_ANYWHERE');
      expect(problem.detail).not.toContain('undefined');
      expect(await auditFor(response)).toMatchObject({ decision: 'allow', code: 'credential_unavailable', status: 503, upstream_status: null, credential: 'env:NOT_SET_ANYWHERE' });
    });

    it('refuses a secret shorter than 8 characters with 503 and sends nothing upstream', async () => {
      const response = await notForwarded(() => call('/short/v1/chat'));
      expect(response.status).toBe(503);
      const problem = response.json<Problem>();
      expect(problem.code).toBe('credential_unavailable');
      expect(problem.detail).toContain('shorter than 8');
      expect(response.text).not.toContain(shortSecret);
    });
  });

  describe('file: source', () => {
    it('answers 503 telling the operator which command sets a missing secret', async () => {
      const response = await notForwarded(() => call('/stored/v1/chat'));
      expect(response.status).toBe(503);
      const problem = response.json<Problem>();
      expect(problem.code).toBe('credential_unavailable');
      expect(problem.detail).toContain('npx airlock secrets set stored-key');
    });

    it('refuses to store a value shorter than 8 characters', async () => {
      const run = await runCliWith(['secrets', 'set', 'stored-key', '--config', configFile], shortSecret);
      surfaces.push(run.stdout, run.stderr);
      expect(run.code).toBe(1);
      expect(run.stderr).toContain('shorter than 8');
    });

    it('picks up a secret set with the CLI without a restart', async () => {
      const run = await runCliWith(['secrets', 'set', 'stored-key', '--config', configFile], `${keys.file}\n`);
      surfaces.push(run.stdout, run.stderr);
      expect(run.stderr).toBe('');
      expect(run.code).toBe(0);
      expect(run.stdout).toContain('Stored secret stored-key');

      // The file source rechecks the file at most once a second: poll, bounded.
      const deadline = Date.now() + 5000;
      let response = await call('/stored/v1/chat');
      while (response.status === 503 && Date.now() < deadline) {
        await new Promise((resolve) => setTimeout(resolve, 100));
        response = await call('/stored/v1/chat');
      }
      expect(response.status).toBe(200);
      expect(upstream.requests.at(-1)?.header('authorization')).toEqual([`Bearer ${keys.file}`]);
      expect(await auditFor(response)).toMatchObject({ decision: 'allow', status: 200, credential: 'file:stored-key' });
    });

    it('picks up a rotated value without a restart', async () => {
      const run = await runCliWith(['secrets', 'set', 'stored-key', '--config', configFile], keys.rotated);
      surfaces.push(run.stdout, run.stderr);
      expect(run.code).toBe(0);
      const deadline = Date.now() + 5000;
      let response = await call('/stored/v1/chat');
      while (upstream.requests.at(-1)?.header('authorization')[0] !== `Bearer ${keys.rotated}` && Date.now() < deadline) {
        expect(response.status).toBe(200);
        await new Promise((resolve) => setTimeout(resolve, 100));
        response = await call('/stored/v1/chat');
      }
      expect(response.status).toBe(200);
      expect(upstream.requests.at(-1)?.header('authorization')).toEqual([`Bearer ${keys.rotated}`]);
    });

    it('lists the secret by name only', async () => {
      const run = await runCliWith(['secrets', 'list', '--config', configFile], '');
      surfaces.push(run.stdout, run.stderr);
      expect(run.code).toBe(0);
      expect(run.stdout).toContain('stored-key');
    });
  });

  describe('grant credential', () => {
    it('a grant\'s own credential replaces the service\'s for that agent only', async () => {
      const mine = await received(() => call('/shared/v1/chat', agent.token));
      expect(mine.seen.header('authorization')).toEqual([`Bearer ${keys.grant}`]);
      expect(occurrences(mine.seen, keys.service)).toBe(0);

      const theirs = await received(() => call('/shared/v1/chat', other.token));
      expect(theirs.seen.header('authorization')).toEqual([`Bearer ${keys.service}`]);
      expect(occurrences(theirs.seen, keys.grant)).toBe(0);

      expect((await auditFor(mine.response)).credential).toBe('env:GRANT_KEY');
      expect((await auditFor(theirs.response)).credential).toBe('env:SERVICE_KEY');
    });
  });

  describe('injectors', () => {
    it('bearer: Authorization: Bearer <secret>, replacing the agent\'s Authorization', async () => {
      const { seen } = await received(() => call('/plain/v1/chat'));
      expect(seen.header('authorization')).toEqual([`Bearer ${keys.env}`]);
      expect(occurrences(seen, keys.env)).toBe(1);
    });

    it('header template: X-Api-Token: Token <secret>, and no Authorization at all', async () => {
      const { seen } = await received(() => call('/header/v1/chat', agent.token, { 'X-API-Token': 'agent-supplied-value' }));
      expect(seen.header('x-api-token')).toEqual([`Token ${keys.header}`]);
      expect(seen.header('authorization')).toEqual([]);
      expect(occurrences(seen, keys.header)).toBe(1);
      expect(seen.rawHeaders.join('\n')).not.toContain('agent-supplied-value');
    });

    it('basic with the secret as user name: Basic base64("<secret>:")', async () => {
      const { seen } = await received(() => call('/basic-user/v1/chat'));
      expect(seen.header('authorization')).toEqual([`Basic ${Buffer.from(`${keys.basicUser}:`).toString('base64')}`]);
    });

    it('basic with the secret as password: Basic base64("api:<secret>")', async () => {
      const { seen } = await received(() => call('/basic-password/v1/chat'));
      expect(seen.header('authorization')).toEqual([`Basic ${Buffer.from(`api:${keys.basicPassword}`).toString('base64')}`]);
    });

    it('query: appends key=<secret>, removing the agent\'s own key, keeping the rest as sent', async () => {
      const { seen } = await received(() => call('/query/v1/chat?a=1&key=agent-value&b=two%20words'));
      expect(seen.target).toBe(`/v1/chat?a=1&b=two%20words&key=${encodeURIComponent(keys.query)}`);
      expect(seen.header('authorization')).toEqual([]);
      expect(occurrences(seen, keys.query)).toBe(1);
    });

    it('query: removes the agent\'s key in any case, encoding or behind ";"', async () => {
      const { seen } = await received(() => call('/query/v1/chat?KEY=upper&k%65y=encoded&a=1;key=semi'));
      expect(seen.target).toBe(`/v1/chat?a=1&key=${encodeURIComponent(keys.query)}`);
    });
  });

  it('leaves no trace of any secret in responses, CLI output, logs or audit', async () => {
    await proxy.waitForAudit(1);
    assertNoLeak([...Object.values(keys), shortSecret], [
      { name: 'responses', text: surfaces.join('\n') },
      { name: 'log', text: proxy.logLines.join('') },
      { name: 'audit', text: proxy.auditText() },
    ]);
  });
});
