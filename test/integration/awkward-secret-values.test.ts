/**
 * Stored keys that a header cannot carry as they are, behind one proxy and one echoing upstream:
 * - whitespace at an edge (pasted with a trailing space, or a tab left from a file): injected into a
 *   header it reaches the upstream without it (RFC 9110 5.5: leading and trailing whitespace is not part
 *   of a field value), so an upstream that echoes the header echoes the trimmed key, which redaction must
 *   know too. Found by probing the CLI: `printf 'KEY \n' | airlock secrets set NAME` and an echoing
 *   upstream showed the key to the agent;
 * - a control character (typed at the hidden prompt, or written to Vault by a script): undici refused
 *   the header and the agent saw 502 upstream_unreachable; it is a 503 naming the reference;
 * - a character past ASCII (found by review): undici wrote é as the one byte 0xE9, which redaction (it
 *   looks for UTF-8 forms) did not know, so an echo reached the agent unmasked; past U+00FF undici
 *   refused it (502). A header-injected one is a 503 naming the reference; a query-injected one (UTF-8,
 *   percent-encoded) still goes, and its echo is masked.
 * Plain canaries: a key shape (sk-...) would be masked by the shape rules whatever the forms.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { generateAgentToken } from '../../src/identity/agent-token.js';
import { assertNoLeak } from '../helpers/assert-no-leak.js';
import { plainCanary } from '../helpers/canary.js';
import { sendRequest } from '../helpers/send-request.js';
import { startProxy, type ProxyFixture } from '../helpers/start-proxy.js';
import { echoHandler, startUpstream, type Upstream } from '../helpers/start-upstream.js';

describe('stored keys a header cannot carry as they are', () => {
  const trailing = plainCanary('edge-trailing');
  const both = plainCanary('edge-both');
  const control = plainCanary('edge-ctl');
  const latin = `${plainCanary('latin')}-café-ééé`;
  const cyrillic = `${plainCanary('cyr')}-ключ`;
  const agent = generateAgentToken();
  let upstream: Upstream;
  let proxy: ProxyFixture;

  const echoService = (secret: string, inject: unknown): Record<string, unknown> => ({
    upstream: upstream.url,
    credential: { secret, inject },
    routes: [{ method: 'GET', path: '/echo', scope: 'echo:read' }],
  });

  beforeAll(async () => {
    upstream = await startUpstream(echoHandler);
    proxy = await startProxy(
      {
        services: {
          bearer: echoService('env:TRAILING_KEY', 'bearer'),
          header: echoService('env:BOTH_KEY', { header: 'x-api-key', value: '${secret}' }),
          ctl: echoService('env:CTL_KEY', 'bearer'),
          latin: echoService('env:LATIN_KEY', { header: 'x-api-key', value: '${secret}' }),
          cyrillic: echoService('env:CYRILLIC_KEY', 'bearer'),
          query: echoService('env:LATIN_KEY', { query: 'key' }),
        },
        agents: { bot: { tokens: [agent.hash], credentials: ['bearer', 'header', 'ctl', 'latin', 'cyrillic', 'query'].map((service) => ({ service, max_scope: ['*'] })) } },
      },
      { env: { TRAILING_KEY: `${trailing} `, BOTH_KEY: `\t ${both}  `, CTL_KEY: `${control}\x1b[D`, LATIN_KEY: latin, CYRILLIC_KEY: cyrillic } },
    );
  });

  afterAll(async () => {
    await proxy?.close();
    await upstream?.close();
  });

  const call = (service: string) => sendRequest(`${proxy.url}/${service}/echo`, { headers: { authorization: `Bearer ${agent.token}` } });

  it('whitespace at an edge: the key reaches the upstream trimmed, and its echo reaches the agent redacted', async () => {
    const mark = proxy.auditRecords().length;
    const answers = [];
    for (const service of ['bearer', 'header']) {
      const response = await call(service);
      expect(response.status, response.text).toBe(200);
      expect(response.text).toContain('[REDACTED]');
      answers.push({ name: `${service} answer`, text: `${JSON.stringify(response.headers)}\n${response.text}` });
    }
    // What the upstream saw: the key without its edge whitespace.
    const seen = upstream.requests.map((r) => `${r.header('authorization').join()}|${r.header('x-api-key').join()}`);
    expect(seen.some((line) => line.includes(`Bearer ${trailing}|`))).toBe(true);
    expect(seen.some((line) => line.endsWith(`|${both}`))).toBe(true);
    await proxy.waitForAudit(mark + 2);
    assertNoLeak([trailing, both], [...answers, { name: 'audit', text: proxy.auditText() }, { name: 'log', text: proxy.logLines.join('\n') }]);
  });

  it('a control character: 503 credential_unavailable naming the reference, and nothing reaches the upstream', async () => {
    const before = upstream.requests.length;
    const mark = proxy.auditRecords().length;
    const response = await call('ctl');
    expect(response.status, response.text).toBe(503);
    expect(response.json()).toMatchObject({ code: 'credential_unavailable' });
    expect(response.text).toContain('env:CTL_KEY');
    expect(response.text).toContain('control character');
    expect(upstream.requests.length).toBe(before);
    await proxy.waitForAudit(mark + 1);
    assertNoLeak([control], [{ name: 'answer', text: response.text }, { name: 'audit', text: proxy.auditText() }, { name: 'log', text: proxy.logLines.join('\n') }]);
  });

  it.each([
    ['latin', 'env:LATIN_KEY'],
    ['cyrillic', 'env:CYRILLIC_KEY'],
  ])('a character past ASCII in a header-injected key (%s): 503 credential_unavailable naming the reference, nothing sent', async (service, ref) => {
    const before = upstream.requests.length;
    const mark = proxy.auditRecords().length;
    const response = await call(service);
    expect(response.status, response.text).toBe(503);
    expect(response.json()).toMatchObject({ code: 'credential_unavailable' });
    expect(response.text).toContain(ref);
    expect(response.text).toContain('outside ASCII');
    expect(upstream.requests.length).toBe(before);
    await proxy.waitForAudit(mark + 1);
    assertNoLeak([latin, cyrillic], [{ name: 'answer', text: response.text }, { name: 'audit', text: proxy.auditText() }, { name: 'log', text: proxy.logLines.join('\n') }]);
  });

  it('the same key injected into the query goes, percent-encoded, and its echo is masked', async () => {
    const response = await call('query');
    expect(response.status, response.text).toBe(200);
    expect(upstream.requests.at(-1)?.target).toContain(`key=${encodeURIComponent(latin)}`);
    assertNoLeak([latin], [{ name: 'answer', text: `${JSON.stringify(response.headers)}\n${response.text}` }]);
  });
});
