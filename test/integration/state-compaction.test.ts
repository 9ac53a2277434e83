/**
 * The embedded state file stays the size of the live state while Airlock runs. Found by review: it was
 * compacted only at start-up, so an agent minting and ending task sessions in a loop (each mint a line
 * of up to ~58 KB, its justification and scopes) grew data_dir/state.jsonl ~15 MB/s until the disk
 * filled, and a file past V8's longest string (~512 MiB) could not be read by the next start-up at all.
 * Now the file is compacted while running (GovernanceState, COMPACT_AFTER_EVENTS) and read line by line.
 */
import { statSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { generateAgentToken } from '../../src/identity/agent-token.js';
import { assertNoLeak, responsesSurface } from '../helpers/assert-no-leak.js';
import { canary } from '../helpers/canary.js';
import { sendRequest, type SentResponse } from '../helpers/send-request.js';
import { startProxy, tempDir, type ProxyFixture } from '../helpers/start-proxy.js';
import { startUpstream, type Upstream } from '../helpers/start-upstream.js';

describe('state.jsonl under a loop of session mints and ends', () => {
  const agent = generateAgentToken();
  const serviceKey = canary('compaction');
  const dataDir = tempDir('airlock-compaction-');
  const tokens: string[] = [agent.token];
  const seen: SentResponse[] = [];
  const logs: string[] = [];
  let upstream: Upstream;
  let proxy: ProxyFixture;

  const config = (): Record<string, unknown> => ({
    // The loop mints far faster than an agent is let by default (limits.session_mint_rate).
    limits: { session_mint_rate: { requests: 100_000, per: 1 } },
    services: { api: { upstream: upstream.url, credential: { secret: 'env:COMPACTION_KEY', inject: 'bearer' }, routes: [{ method: 'GET', path: '/v1/*', scope: 'read' }] } },
    agents: { bot: { tokens: [agent.hash], credentials: [{ service: 'api', max_scope: ['*'], max_ttl: 600 }] } },
  });
  const start = (): Promise<ProxyFixture> => startProxy(config(), { dataDir, env: { COMPACTION_KEY: serviceKey } });

  beforeAll(async () => {
    upstream = await startUpstream();
    proxy = await start();
  });

  afterAll(async () => {
    logs.push(proxy.logLines.join(''));
    await proxy.close();
    await upstream.close();
    assertNoLeak([serviceKey, ...tokens], [
      responsesSurface(seen),
      { name: 'logs', text: logs.join('\n') },
    ]);
  });

  /** A request; its response is leak-checked unless it is a mint's (which hands the session token out). */
  async function send(token: string, method: string, path: string, body?: unknown, checked = true): Promise<SentResponse> {
    const response = await sendRequest(`${proxy.url}${path}`, {
      method,
      headers: { authorization: `Bearer ${token}`, ...(body === undefined ? {} : { 'content-type': 'application/json' }) },
      ...(body === undefined ? {} : { body: JSON.stringify(body) }),
    });
    if (checked) seen.push(response);
    return response;
  }

  async function mint(justification: string): Promise<string> {
    const minted = await send(agent.token, 'POST', '/_airlock/sessions', { scopes: { api: ['read'] }, ttl_seconds: 600, justification }, false);
    expect(minted.status, minted.text).toBe(201);
    const token = minted.json<{ session_token: string }>().session_token;
    tokens.push(token);
    return token;
  }

  it('stays near the live state, and a restart still knows the sessions alive', async () => {
    const stateFile = join(dataDir, 'state.jsonl');
    const kept = await mint('kept across the churn');
    const long = 'x'.repeat(900);
    for (let i = 0; i < 1_500; i++) {
      const token = await mint(`churn ${i} ${long}`);
      expect((await send(token, 'DELETE', '/_airlock/sessions/current')).status).toBe(204);
    }
    // 3,000 events were kept, half of them ~1.2 KB: appended only, the file held 2.1 MB; compacted
    // every 1,000 events it holds at most what came since the last time.
    const size = statSync(stateFile).size;
    expect(size, 'bytes in state.jsonl after 1,500 mints and ends').toBeLessThan(1_000_000);
    expect((await send(kept, 'GET', '/api/v1/items')).status).toBe(200);

    logs.push(proxy.logLines.join(''));
    await proxy.close();
    proxy = await start();
    expect((await send(kept, 'GET', '/api/v1/items')).status, 'the live session survives the restart').toBe(200);
    const ended = await mint('ended before the restart');
    expect((await send(ended, 'DELETE', '/_airlock/sessions/current')).status).toBe(204);
    expect((await send(ended, 'GET', '/api/v1/items')).status).toBe(401);
  });
});
