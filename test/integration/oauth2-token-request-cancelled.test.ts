/**
 * A token request under way when the credential broker that made it closes: at shutdown, or when a
 * reload retires the configuration whose OAuth2 client it was for. The request is cancelled (the token
 * endpoint sees the connection go), nothing rejects unhandled, and an agent request waiting on the token
 * is answered 503 credential_unavailable, not reset or held until the client's `timeout`.
 *
 * Until this was fixed, closing a broker closed its undici agents, which wait for requests under way:
 * a token endpoint that held its answer held shutdown (and a retired configuration) for the client's
 * whole `timeout`, and an agent request waiting on that token had its connection cut with no answer
 * when shutdown_timeout ran out.
 */
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { buildConfig } from '../../src/config/load-config.js';
import { generateAgentToken } from '../../src/identity/agent-token.js';
import { assertNoLeak, responsesSurface } from '../helpers/assert-no-leak.js';
import { canary } from '../helpers/canary.js';
import { eventually, sleep } from '../helpers/operator.js';
import { sendRequest, type Problem, type SentResponse } from '../helpers/send-request.js';
import { startProxy, type ProxyFixture, type ProxyOptions } from '../helpers/start-proxy.js';
import { startUpstream, type Upstream } from '../helpers/start-upstream.js';
import { startOAuth2Server, type OAuth2Server } from '../support/oauth2-server.js';

const agent = generateAgentToken();
const clientId = 'airlock-crm';
const clientSecret = canary('crm-secret');
const apiKey = canary('api-key');
const env = { CRM_ID: clientId, CRM_SECRET: clientSecret, API_KEY: apiKey };
const unhandled: unknown[] = [];
const onUnhandled = (reason: unknown): void => void unhandled.push(reason);
const warnings: Error[] = [];
const onWarning = (warning: Error): void => void warnings.push(warning);
let upstream: Upstream;
let tokens: OAuth2Server;

beforeAll(async () => {
  process.on('unhandledRejection', onUnhandled);
  process.on('warning', onWarning);
  upstream = await startUpstream();
});

afterAll(async () => {
  process.off('unhandledRejection', onUnhandled);
  process.off('warning', onWarning);
  await upstream?.close();
});

afterEach(async () => {
  await tokens?.close();
});

function input(options: { oauth2: boolean; shutdownTimeout?: number; level?: string }): Record<string, unknown> {
  const routes = [{ method: 'GET', path: '/v1/*', scope: 'r' }];
  return {
    ...(options.shutdownTimeout === undefined ? {} : { shutdown_timeout: options.shutdownTimeout }),
    log: { level: options.level ?? 'info' },
    secrets: options.oauth2 ? { oauth2: { crm: { token_url: tokens.tokenUrl, client_id: 'env:CRM_ID', client_secret: 'env:CRM_SECRET', timeout: 60 } } } : {},
    services: { crm: { upstream: upstream.url, credential: { secret: options.oauth2 ? 'oauth2:crm' : 'env:API_KEY', inject: 'bearer' }, routes } },
    agents: { bot: { tokens: [agent.hash], credentials: [{ service: 'crm', max_scope: ['r'] }] } },
  };
}

async function call(proxy: ProxyFixture): Promise<SentResponse> {
  return sendRequest(`${proxy.url}/crm/v1/tickets`, { headers: { authorization: `Bearer ${agent.token}` }, timeoutMs: 20_000 });
}

function secrets(): string[] {
  return [agent.token, clientSecret, apiKey, ...tokens.issued];
}

describe('a token request under way when its broker closes', () => {
  it('at shutdown: the request waiting on the token is answered 503 credential_unavailable, and stopping does not wait for the token endpoint', async () => {
    // The token endpoint holds every answer for a minute; the client would wait 60 s.
    tokens = await startOAuth2Server({ clients: [{ clientId, clientSecret }], slowMs: 60_000 });
    tokens.setMode('slow');
    const proxy = await startProxy(input({ oauth2: true, shutdownTimeout: 1 }), { env } satisfies ProxyOptions);
    const seen: SentResponse[] = [];
    try {
      const pending = call(proxy);
      await eventually('the token endpoint to be asked', () => tokens.tokenRequests.length > 0 && tokens.openConnections > 0);
      // The agent's request is in, waiting for the token.
      await sleep(300);
      const startedAt = Date.now();
      const closing = proxy.airlock.close();

      const response = await pending;
      seen.push(response);
      expect(response.status, response.text).toBe(503);
      const problem = response.json<Problem>();
      expect(problem.code).toBe('credential_unavailable');
      expect(problem.detail).toMatch(/stopping/);
      expect(problem.detail).toContain('oauth2:crm');

      // shutdown_timeout (1 s), then the cut: not the token client's 60 s.
      const outcome = await Promise.race([closing.then(() => 'stopped'), sleep(10_000).then(() => 'still stopping')]);
      expect(outcome).toBe('stopped');
      expect(Date.now() - startedAt).toBeLessThan(8_000);
      await eventually('the token request to be cancelled', () => tokens.openConnections === 0, 3_000);

      const records = proxy.auditRecords();
      expect(records.map((r) => r.code)).toEqual(['credential_unavailable']);
      const routes = proxy.auditText().trim().split('\n').map((line) => (JSON.parse(line) as { route: string }).route);
      expect(routes.at(-1)).toBe('airlock:stop');
      await sleep(50);
      expect(unhandled).toEqual([]);
      assertNoLeak(secrets(), [responsesSurface(seen), { name: 'log', text: proxy.logLines.join('\n') }, { name: 'audit', text: proxy.auditText() }]);
    } finally {
      await proxy.close();
    }
  });

  it('with many clients fetching at once: each is cancelled, and node warns of no listener leak', async () => {
    tokens = await startOAuth2Server({ clients: [{ clientId, clientSecret }], slowMs: 60_000 });
    tokens.setMode('slow');
    const names = Array.from({ length: 12 }, (_, i) => `crm${i}`);
    const routes = [{ method: 'GET', path: '/v1/*', scope: 'r' }];
    const proxy = await startProxy(
      {
        shutdown_timeout: 1,
        secrets: { oauth2: Object.fromEntries(names.map((name) => [name, { token_url: tokens.tokenUrl, client_id: 'env:CRM_ID', client_secret: 'env:CRM_SECRET', timeout: 60 }])) },
        services: Object.fromEntries(names.map((name) => [name, { upstream: upstream.url, credential: { secret: `oauth2:${name}`, inject: 'bearer' }, routes }])),
        agents: { bot: { tokens: [agent.hash], credentials: names.map((name) => ({ service: name, max_scope: ['r'] })) } },
      },
      { env },
    );
    try {
      // Start-up's warm-up asked for every token at once; the endpoint holds them all.
      await eventually('every token request to be held', () => tokens.openConnections === names.length);
      await proxy.airlock.close();
      await eventually('every token request to be cancelled', () => tokens.openConnections === 0, 3_000);
      await sleep(50);
      expect(warnings.filter((w) => w.name === 'MaxListenersExceededWarning').map((w) => w.message)).toEqual([]);
      expect(unhandled).toEqual([]);
      assertNoLeak(secrets(), [{ name: 'log', text: proxy.logLines.join('\n') }, { name: 'audit', text: proxy.auditText() }]);
    } finally {
      await proxy.close();
    }
  });

  it('at a reload that drops the client: a refresh under way on the retired configuration is cancelled, and it closes at once', async () => {
    tokens = await startOAuth2Server({ clients: [{ clientId, clientSecret }], slowMs: 60_000 });
    let clock = Date.now();
    const proxy = await startProxy(input({ oauth2: true, level: 'debug' }), { env, now: () => new Date(clock) });
    const seen: SentResponse[] = [];
    try {
      const first = await call(proxy);
      seen.push(first);
      expect(first.status, first.text).toBe(200);
      expect(tokens.issued).toHaveLength(1);

      // Past refresh-ahead (3/4 of the token's hour): the next request is served the token it holds and
      // starts a refresh in the background, which the token endpoint now holds.
      tokens.setMode('slow');
      clock += 50 * 60_000;
      const second = await call(proxy);
      seen.push(second);
      expect(second.status, second.text).toBe(200);
      await eventually('the refresh to reach the token endpoint', () => tokens.tokenRequests.length === 2 && tokens.openConnections > 0);

      const next = buildConfig({ listen: '127.0.0.1:0', data_dir: proxy.dataDir, ...input({ oauth2: false, level: 'debug' }) }, { baseDir: proxy.dataDir });
      expect(next.problems.filter((p) => p.severity === 'error')).toEqual([]);
      const linesBefore = proxy.logLines.length;
      expect(await proxy.airlock.reload(next.config!)).toEqual({ ok: true });

      // The retired configuration had no request left: it closes now, its token request cancelled,
      // rather than when the token endpoint answers (a minute) or the client's timeout ends.
      await eventually('the retired configuration to close', () => proxy.logLines.slice(linesBefore).some((line) => line.includes('a previous configuration generation was closed')), 3_000);
      await eventually('the token request to be cancelled', () => tokens.openConnections === 0, 3_000);
      // A cancelled refresh is no store failure: nothing says "refreshing a credential failed".
      const after = proxy.logLines.slice(linesBefore).map((line) => JSON.parse(line) as { level: string; msg: string });
      expect(after.filter((line) => line.level !== 'info' && line.level !== 'debug')).toEqual([]);
      expect(after.some((line) => line.msg.includes('a credential refresh under way was given up'))).toBe(true);

      const third = await call(proxy);
      seen.push(third);
      expect(third.status, third.text).toBe(200);
      expect(upstream.requests.at(-1)?.header('authorization')).toEqual([`Bearer ${apiKey}`]);
      await sleep(50);
      expect(unhandled).toEqual([]);
      assertNoLeak(secrets(), [responsesSurface(seen), { name: 'log', text: proxy.logLines.join('\n') }, { name: 'audit', text: proxy.auditText() }]);
    } finally {
      await proxy.close();
    }
  });
});
