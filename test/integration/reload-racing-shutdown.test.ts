/**
 * A reload that is still building its configuration when Airlock is told to stop (a save of the file, or
 * SIGHUP, just before SIGTERM; a credential store slow to answer the warm-up holds the build for up to
 * 2 s). reload() looked for a shutdown only before it started building: once built, it switched the
 * stopped Airlock to the new generation after close() had closed the running one, so that generation's
 * pools, credential stores and token timers were never closed (nor its Vault leases revoked), and its
 * airlock:reload record came after airlock:stop, which must be the last. Now such a reload is refused,
 * and what it built is closed.
 */
import { createServer, type Server, type Socket } from 'node:net';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { buildConfig } from '../../src/config/load-config.js';
import { generateAgentToken } from '../../src/identity/agent-token.js';
import { eventually } from '../helpers/operator.js';
import { startProxy, type ProxyFixture } from '../helpers/start-proxy.js';

describe('a reload racing shutdown', () => {
  // A token endpoint that takes connections and never answers: the reload's warm-up waits on it.
  const sockets = new Set<Socket>();
  let silent: Server;
  let tokenUrl: string;
  beforeAll(async () => {
    silent = createServer((socket) => {
      sockets.add(socket);
      socket.on('close', () => sockets.delete(socket));
      socket.on('error', () => undefined);
      // Read (and drop) what comes, so the client hanging up is seen and the socket closes.
      socket.resume();
    });
    await new Promise<void>((resolve) => silent.listen(0, '127.0.0.1', () => resolve()));
    tokenUrl = `http://127.0.0.1:${(silent.address() as { port: number }).port}/token`;
  });
  afterAll(async () => {
    for (const socket of sockets) socket.destroy();
    await new Promise<void>((resolve) => silent.close(() => resolve()));
  });

  const agent = generateAgentToken();
  const service = (secret: string): Record<string, unknown> => ({
    upstream: 'http://127.0.0.1:9',
    credential: { secret },
    routes: [{ method: 'GET', path: '/v1/*', scope: 'r' }],
  });

  it('is refused, what it built is closed, and airlock:stop stays the last record', async () => {
    const proxy: ProxyFixture = await startProxy(
      { services: { api: service('env:API_KEY') }, agents: { bot: { tokens: [agent.hash], credentials: [{ service: 'api', max_scope: ['r'] }] } } },
      { env: { API_KEY: 'k'.repeat(24), CRM_ID: 'crm-client', CRM_SECRET: 's'.repeat(24) } },
    );
    const next = buildConfig(
      {
        listen: '127.0.0.1:0',
        data_dir: proxy.dataDir,
        // A long deadline: closing the refused build's broker cancels its token request, rather than
        // waiting the deadline out (it did, until oauth2-token-request-cancelled.test.ts).
        secrets: { oauth2: { crm: { token_url: tokenUrl, client_id: 'env:CRM_ID', client_secret: 'env:CRM_SECRET', timeout: 60 } } },
        services: { api: service('env:API_KEY'), crm: service('oauth2:crm') },
        agents: { bot: { tokens: [agent.hash], credentials: [{ service: 'api', max_scope: ['r'] }] } },
      },
      { baseDir: proxy.dataDir },
    );
    expect(next.problems.filter((p) => p.severity === 'error')).toEqual([]);

    const reloading = proxy.airlock.reload(next.config!);
    // The build is under way: its warm-up has asked the token endpoint.
    await eventually('the reload to ask the token endpoint', () => sockets.size > 0);
    await proxy.airlock.close(0);
    const result = await reloading;

    expect(result).toEqual({ ok: false, reason: 'Airlock is shutting down' });
    const routes = proxy.auditText().trim().split('\n').map((line) => (JSON.parse(line) as { route: string }).route);
    expect(routes.at(-1)).toBe('airlock:stop');
    expect(routes).not.toContain('airlock:reload');
    await eventually('the refused build to cancel its token request', () => sockets.size === 0, 3_000);
    await proxy.close();
  });
});
