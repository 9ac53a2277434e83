/**
 * A Vault whose error text repeats what it was sent (found by review): Vault's `errors` go to the log
 * as a failure's cause, and the values the session came by itself, the token an AppRole login gave and
 * the Kubernetes service-account JWT it read, were not known to the scrubber (the values read through
 * the broker, a static token among them, were). Both are now, and the log holds neither.
 *
 * A relay in front of the fake Vault answers one KV path with a 500 naming the request's token, and
 * (for the Kubernetes case) a login with a 400 naming the JWT it was sent.
 */
import { once } from 'node:events';
import { writeFileSync } from 'node:fs';
import { createServer, request, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { generateAgentToken } from '../../src/identity/agent-token.js';
import { assertNoLeak, proxySurfaces, responsesSurface } from '../helpers/assert-no-leak.js';
import { canary } from '../helpers/canary.js';
import { sendRequest, type SentResponse } from '../helpers/send-request.js';
import { startProxy, tempDir, type ProxyFixture } from '../helpers/start-proxy.js';
import { startUpstream, type Upstream } from '../helpers/start-upstream.js';
import { startVaultServer, type VaultServer } from '../support/vault-server.js';

describe('Vault error text that repeats a token or a JWT', () => {
  const agent = generateAgentToken();
  const key = canary('vault-echo-key');
  const roleId = canary('vault-echo-role');
  const secretId = canary('vault-echo-secret-id');
  const jwt = `eyJhbGciOiJSUzI1NiJ9.${canary('vault-echo-jwt')}.c2lnbmF0dXJl`;
  const seen: SentResponse[] = [];
  let vault: VaultServer;
  let relay: Server;
  let relayUrl: string;
  let upstream: Upstream;

  beforeAll(async () => {
    vault = await startVaultServer();
    vault.putSecret('secret', 'api', { key });
    vault.addAppRole(roleId, secretId, { roleName: 'airlock', policies: ['airlock'] });
    upstream = await startUpstream();
    const target = new URL(vault.url);
    relay = createServer((req, res) => {
      const chunks: Buffer[] = [];
      req.on('data', (chunk: Buffer) => chunks.push(chunk));
      req.on('end', () => {
        const body = Buffer.concat(chunks);
        if (req.url === '/v1/secret/data/echo') {
          res.writeHead(500, { 'content-type': 'application/json' });
          res.end(JSON.stringify({ errors: [`internal error: storage backend rejected request for token ${String(req.headers['x-vault-token'])}`] }));
          return;
        }
        if (req.url === '/v1/auth/kubernetes/login') {
          res.writeHead(400, { 'content-type': 'application/json' });
          res.end(JSON.stringify({ errors: [`could not verify the service account JWT ${String((JSON.parse(body.toString('utf8')) as { jwt?: string }).jwt)}`] }));
          return;
        }
        const forwarded = request({ host: target.hostname, port: target.port, path: req.url, method: req.method, headers: req.headers }, (answer) => {
          res.writeHead(answer.statusCode ?? 502, answer.headers);
          answer.pipe(res);
        });
        forwarded.end(body);
      });
    });
    relay.listen(0, '127.0.0.1');
    await once(relay, 'listening');
    relayUrl = `http://127.0.0.1:${(relay.address() as AddressInfo).port}`;
  });

  afterAll(async () => {
    relay?.close();
    await vault?.close();
    await upstream?.close();
  });

  function proxyWith(auth: Record<string, unknown>, ref: string): Promise<ProxyFixture> {
    return startProxy(
      {
        secrets: { vault: { address: relayUrl, timeout: 2, auth } },
        services: { api: { upstream: upstream.url, credential: { secret: ref, inject: 'bearer' }, routes: [{ method: 'GET', path: '/v1/*', scope: 'api' }] } },
        agents: { bot: { tokens: [agent.hash], credentials: [{ service: 'api', max_scope: ['*'] }] } },
      },
      { env: { VAULT_ROLE_ID: roleId, VAULT_SECRET_ID: secretId } },
    );
  }

  async function call(proxy: ProxyFixture): Promise<SentResponse> {
    const response = await sendRequest(`${proxy.url}/api/v1/items`, { headers: { authorization: `Bearer ${agent.token}` } });
    seen.push(response);
    return response;
  }

  it('the token an AppRole login gave, repeated in a 500, is masked in the log', async () => {
    const proxy = await proxyWith({ method: 'approle', role_id: 'env:VAULT_ROLE_ID', secret_id: 'env:VAULT_SECRET_ID' }, 'vault:secret/echo#key');
    try {
      const response = await call(proxy);
      expect(response.status, response.text).toBe(503);
      const token = vault.issuedTokens().at(-1) as string;
      expect(token).toMatch(/^hvs\./);
      // The 500's words did reach the log (as the failure's cause), with the token masked.
      expect(proxy.logLines.some((line) => line.includes('storage backend rejected request for token'))).toBe(true);
      assertNoLeak([token, roleId, secretId, key, agent.token], [responsesSurface(seen), ...proxySurfaces(proxy)]);
    } finally {
      await proxy.close();
    }
  });

  it('the Kubernetes JWT, repeated in a refused login, is masked in the log', async () => {
    const jwtFile = join(tempDir('airlock-vault-echo-'), 'token');
    writeFileSync(jwtFile, `${jwt}\n`);
    const proxy = await proxyWith({ method: 'kubernetes', role: 'airlock', jwt_file: jwtFile }, 'vault:secret/api#key');
    try {
      const response = await call(proxy);
      expect(response.status, response.text).toBe(503);
      expect(proxy.logLines.some((line) => line.includes('could not verify the service account JWT'))).toBe(true);
      assertNoLeak([jwt, key, agent.token], [responsesSurface(seen), ...proxySurfaces(proxy)]);
    } finally {
      await proxy.close();
    }
  });
});
