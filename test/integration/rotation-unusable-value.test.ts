/**
 * retry_on [401] when the value fetched again is one Airlock refuses to inject (shorter than the
 * catalogue's minimum, or holding an unpaired surrogate): the refetch counts as failed, nothing more is
 * sent upstream, and the agent gets the held first answer, redacted. Before this rule the rotated value
 * skipped the check resolve-credential.ts applies, was injected, and an upstream that echoed it handed
 * it to the agent unmasked (the catalogue never registered it).
 */
import { randomBytes } from 'node:crypto';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { generateAgentToken } from '../../src/identity/agent-token.js';
import { MIN_SECRET_LENGTH } from '../../src/redaction/secret-catalog.js';
import { assertNoLeak } from '../helpers/assert-no-leak.js';
import { eventually } from '../helpers/operator.js';
import { plainCanary } from '../helpers/canary.js';
import { sendRequest, type SentResponse } from '../helpers/send-request.js';
import { startProxy, type ProxyFixture } from '../helpers/start-proxy.js';
import { startUpstream, type RecordedRequest, type Upstream } from '../helpers/start-upstream.js';
import { startVaultServer, type VaultServer } from '../support/vault-server.js';

const agent = generateAgentToken();
const first = { short: plainCanary('short-v1'), odd: plainCanary('odd-v1'), slow: plainCanary('slow-v1') };
/** Seven characters, none of them hex, so no request id or digest can hold it by chance. */
const shortValue = `rot${randomBytes(2).toString('hex')}`;
const oddPrefix = plainCanary('odd-v2');
/** A JSON "\ud800" escape in Vault arrives as a lone surrogate. */
const oddValue = `${oddPrefix}\ud800`;
const agentSeen: string[] = [];
const refused = new Set<string>();

function bearerOf(recorded: RecordedRequest | undefined): string | undefined {
  return recorded?.header('authorization')[0]?.replace(/^Bearer /, '');
}

describe('retry_on [401]: a rotated value that cannot be redacted is not injected', () => {
  let vault: VaultServer;
  let upstream: Upstream;
  let proxy: ProxyFixture;
  let vaultToken: string;

  beforeAll(async () => {
    expect(shortValue.length).toBeLessThan(MIN_SECRET_LENGTH);
    vault = await startVaultServer();
    vaultToken = vault.createToken();
    vault.putSecret('secret', 'short', { api_key: first.short });
    vault.putSecret('secret', 'odd', { api_key: first.odd });
    vault.putSecret('secret', 'slow', { api_key: first.slow });
    // Keys rotated out upstream get a 401 naming them; any other key is accepted and echoed.
    upstream = await startUpstream((_req, res, recorded) => {
      const presented = bearerOf(recorded) ?? '';
      const ok = !refused.has(presented);
      const body = JSON.stringify(ok ? { ok: true, you_sent: presented } : { error: { message: `Invalid API key provided: ${presented}` } });
      res.writeHead(ok ? 200 : 401, { 'content-type': 'application/json', 'content-length': Buffer.byteLength(body) });
      res.end(body);
    });
    const service = (name: string): Record<string, unknown> => ({
      upstream: upstream.url,
      credential: { secret: `vault:secret/${name}#api_key`, inject: 'bearer', ttl: 3600, retry_on: [401] },
      routes: [{ method: ['GET'], path: '/v1/*', scope: 'api:call' }],
    });
    proxy = await startProxy(
      {
        secrets: { vault: { address: vault.url, timeout: 2, auth: { method: 'token', token: 'env:VAULT_TOKEN' } } },
        services: { short: service('short'), odd: service('odd'), slow: service('slow') },
        agents: { bot: { tokens: [agent.hash], credentials: [{ service: 'short', max_scope: ['*'] }, { service: 'odd', max_scope: ['*'] }, { service: 'slow', max_scope: ['*'] }] } },
      },
      { env: { VAULT_TOKEN: vaultToken } },
    );
  });

  afterAll(async () => {
    await proxy?.close();
    await upstream?.close();
    await vault?.close();
  });

  async function call(serviceName: string): Promise<SentResponse> {
    const response = await sendRequest(`${proxy.url}/${serviceName}/v1/balance`, { headers: { authorization: `Bearer ${agent.token}` } });
    agentSeen.push(`${response.status}\n${JSON.stringify(response.headers)}\n${response.text}`);
    return response;
  }

  for (const [serviceName, rotated, label] of [
    ['short', shortValue, `shorter than ${MIN_SECRET_LENGTH} characters`],
    ['odd', oddValue, 'with an unpaired surrogate'],
  ] as const) {
    it(`a value ${label}: one upstream request, the held 401 relayed redacted, then a 503 saying to fix it`, async () => {
      // Cache the first value, then rotate it out upstream and, in Vault, to the unusable one.
      expect((await call(serviceName)).status).toBe(200);
      refused.add(first[serviceName]);
      vault.putSecret('secret', serviceName, { api_key: rotated });
      const before = upstream.requests.length;
      const response = await call(serviceName);
      expect(response.status, response.text).toBe(401);
      expect(response.json<{ error: { message: string } }>().error.message).toBe('Invalid API key provided: [REDACTED]');
      expect(upstream.requests.slice(before).map(bearerOf)).toEqual([first[serviceName]]);
      // Without a retry the next request resolves the refused value and is told what to do.
      const next = await call(serviceName);
      expect(next.status, next.text).toBe(503);
      expect(next.json<{ code: string }>().code).toBe('credential_unavailable');
      expect(upstream.requests.length - before).toBe(1);
    });
  }

  // Found by review: the held 401 relayed after the refresh was audited complete, whether or not the
  // agent was still there to get it.
  it('an agent that leaves while the refresh waits on Vault: the request is audited incomplete', async () => {
    expect((await call('slow')).status).toBe(200);
    refused.add(first.slow);
    vault.setDelay(1_500);
    try {
      const cut = await sendRequest(`${proxy.url}/slow/v1/balance`, { headers: { authorization: `Bearer ${agent.token}` }, timeoutMs: 500 }).catch((error: Error) => error);
      expect(cut).toBeInstanceOf(Error);
      const record = await eventually('the audit record of the request the agent left', () => proxy.auditRecords().find((r) => r.service === 'slow' && r.upstream_status === 401), 8_000, 50);
      expect(record).toMatchObject({ status: 401, incomplete: true, response_bytes: 0 });
    } finally {
      vault.setDelay(0);
    }
  });

  it('leaks no value, first or rotated, anywhere', () => {
    assertNoLeak(
      [agent.token, vaultToken, first.short, first.odd, first.slow, shortValue, oddPrefix, ...vault.issuedTokens()],
      [
        { name: 'agent responses', text: agentSeen.join('\n') },
        { name: 'log', text: proxy.logLines.join('') },
        { name: 'audit', text: proxy.auditText() },
      ],
    );
  });
});
