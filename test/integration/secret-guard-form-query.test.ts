/**
 * A managed secret holding a space (a passphrase, a Basic password) in the query with its spaces as "+"
 * (found by review): every form parser of a query (URLSearchParams, Rack, PHP, Python's parse_qs) reads
 * "+" as a space, and jQuery's $.param writes encodeURIComponent with "+" for "%20", so "!", "'", "(",
 * ")" and "*" stay as they are. `correct+horse!battery…` is none of the secret's forms (the form-encoded
 * ones escape "!"), and the query decoded as the guard read it kept the "+".
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { generateAgentToken } from '../../src/identity/agent-token.js';
import { assertNoLeak } from '../helpers/assert-no-leak.js';
import { sendRequest, type Problem, type SentResponse } from '../helpers/send-request.js';
import { startProxy, type ProxyFixture } from '../helpers/start-proxy.js';
import { startUpstream, type Upstream } from '../helpers/start-upstream.js';

describe('a managed passphrase in the query, its spaces written "+"', () => {
  const secret = `correct horse!battery staple ${Math.random().toString(36).slice(2, 10)}`;
  const agent = generateAgentToken();
  const seen: SentResponse[] = [];
  let upstream: Upstream;
  let proxy: ProxyFixture;

  beforeAll(async () => {
    upstream = await startUpstream();
    proxy = await startProxy(
      {
        services: { legacy: { upstream: upstream.url, credential: { secret: 'env:LEGACY_PASSWORD', inject: { basic: { username: 'svc', password: '${secret}' } } }, routes: [{ method: 'GET', path: '/v1/*', scope: 'read' }] } },
        agents: { bot: { tokens: [agent.hash], credentials: [{ service: 'legacy', max_scope: ['*'] }] } },
        anomalies: { enabled: false },
      },
      { env: { LEGACY_PASSWORD: secret } },
    );
  });

  afterAll(async () => {
    await proxy?.close();
    await upstream?.close();
  });

  it.each([
    ['as jQuery.param writes it ("!" raw)', () => encodeURIComponent(secret).replace(/%20/g, '+')],
    ['"+" for spaces, the rest raw', () => secret.replace(/ /g, '+')],
    ['"+" for spaces beside an escape', () => secret.replace(/ /g, '+').replace('h', '%68')],
  ])('%s: 400, named, nothing forwarded', async (_name, spelled) => {
    const before = upstream.requests.length;
    const response = await sendRequest(`${proxy.url}/legacy/v1/search?q=${spelled()}`, { headers: { authorization: `Bearer ${agent.token}` } });
    seen.push(response);
    expect(response.status, response.text).toBe(400);
    expect(response.json<Problem>().code).toBe('invalid_request');
    expect(response.json<Problem>().detail).toContain('env:LEGACY_PASSWORD');
    expect(upstream.requests.length).toBe(before);
  });

  it('control: a query with "+" and no secret goes through as sent', async () => {
    const response = await sendRequest(`${proxy.url}/legacy/v1/search?q=correct+horse!&n=1+2`, { headers: { authorization: `Bearer ${agent.token}` } });
    seen.push(response);
    expect(response.status, response.text).toBe(200);
    expect(upstream.requests.at(-1)?.target).toBe('/v1/search?q=correct+horse!&n=1+2');
  });

  it('leaves no form of the secret in responses, logs or audit', () => {
    assertNoLeak([secret], [
      { name: 'responses', text: seen.map((r) => `${JSON.stringify(r.headers)}\n${r.text}`).join('\n') },
      { name: 'log', text: proxy.logLines.join('') },
      { name: 'audit', text: proxy.auditText() },
    ]);
  });
});
