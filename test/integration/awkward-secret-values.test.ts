/**
 * A stored key with whitespace at an edge (pasted with a trailing space, or written from a file with
 * its newline stripped but a tab left): injected into a header, it reaches the upstream without that
 * whitespace (RFC 9110 5.5: leading and trailing whitespace is not part of a field value). An upstream
 * that echoes the header then echoes the trimmed key, which redaction must know too. Found by probing
 * the CLI: `printf 'KEY \n' | airlock secrets set NAME` and an echoing upstream showed the key to the agent.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { generateAgentToken } from '../../src/identity/agent-token.js';
import { assertNoLeak } from '../helpers/assert-no-leak.js';
import { plainCanary } from '../helpers/canary.js';
import { sendRequest } from '../helpers/send-request.js';
import { startProxy, type ProxyFixture } from '../helpers/start-proxy.js';
import { echoHandler, startUpstream, type Upstream } from '../helpers/start-upstream.js';

describe('a managed key with whitespace at its edges', () => {
  // Plain canaries: a key shape (sk-...) would be masked by the shape rules whatever the forms.
  const trailing = plainCanary('edge-trailing');
  const both = plainCanary('edge-both');
  const agent = generateAgentToken();
  let upstream: Upstream;
  let proxy: ProxyFixture;

  beforeAll(async () => {
    upstream = await startUpstream(echoHandler);
    proxy = await startProxy(
      {
        services: {
          bearer: { upstream: upstream.url, credential: { secret: 'env:TRAILING_KEY', inject: 'bearer' }, routes: [{ method: 'GET', path: '/echo', scope: 'echo:read' }] },
          header: {
            upstream: upstream.url,
            credential: { secret: 'env:BOTH_KEY', inject: { header: 'x-api-key', value: '${secret}' } },
            routes: [{ method: 'GET', path: '/echo', scope: 'echo:read' }],
          },
        },
        agents: { bot: { tokens: [agent.hash], credentials: [{ service: 'bearer', max_scope: ['*'] }, { service: 'header', max_scope: ['*'] }] } },
      },
      { env: { TRAILING_KEY: `${trailing} `, BOTH_KEY: `\t ${both}  ` } },
    );
  });

  afterAll(async () => {
    await proxy?.close();
    await upstream?.close();
  });

  it('reaches the upstream trimmed, and its echo reaches the agent redacted', async () => {
    const answers = [];
    for (const service of ['bearer', 'header']) {
      const response = await sendRequest(`${proxy.url}/${service}/echo`, { headers: { authorization: `Bearer ${agent.token}` } });
      expect(response.status, response.text).toBe(200);
      expect(response.text).toContain('[REDACTED]');
      answers.push({ name: `${service} answer`, text: `${JSON.stringify(response.headers)}\n${response.text}` });
    }
    // What the upstream saw: the key without its edge whitespace.
    const seen = upstream.requests.map((r) => `${r.header('authorization').join()}|${r.header('x-api-key').join()}`);
    expect(seen.some((line) => line.includes(`Bearer ${trailing}|`))).toBe(true);
    expect(seen.some((line) => line.endsWith(`|${both}`))).toBe(true);
    await proxy.waitForAudit(2);
    assertNoLeak([trailing, both], [...answers, { name: 'audit', text: proxy.auditText() }, { name: 'log', text: proxy.logLines.join('\n') }]);
  });
});

// A control character in a stored value (typed at the hidden prompt, or written to Vault by a script)
// cannot go in a header: undici refused the request, and the agent saw 502 upstream_unreachable.
describe('a managed key holding a control character', () => {
  const key = plainCanary('edge-ctl');
  const agent = generateAgentToken();
  let upstream: Upstream;
  let proxy: ProxyFixture;

  beforeAll(async () => {
    upstream = await startUpstream(echoHandler);
    proxy = await startProxy(
      {
        services: { ctl: { upstream: upstream.url, credential: { secret: 'env:CTL_KEY', inject: 'bearer' }, routes: [{ method: 'GET', path: '/echo', scope: 'echo:read' }] } },
        agents: { bot: { tokens: [agent.hash], credentials: [{ service: 'ctl', max_scope: ['*'] }] } },
      },
      { env: { CTL_KEY: `${key}\x1b[D` } },
    );
  });

  afterAll(async () => {
    await proxy?.close();
    await upstream?.close();
  });

  it('is 503 credential_unavailable naming the reference, and nothing reaches the upstream', async () => {
    const response = await sendRequest(`${proxy.url}/ctl/echo`, { headers: { authorization: `Bearer ${agent.token}` } });
    expect(response.status, response.text).toBe(503);
    expect(response.json()).toMatchObject({ code: 'credential_unavailable' });
    expect(response.text).toContain('env:CTL_KEY');
    expect(response.text).toContain('control character');
    expect(upstream.requests).toEqual([]);
    await proxy.waitForAudit(1);
    assertNoLeak([key], [{ name: 'answer', text: response.text }, { name: 'audit', text: proxy.auditText() }, { name: 'log', text: proxy.logLines.join('\n') }]);
  });
});
