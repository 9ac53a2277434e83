/**
 * A managed secret in a request path spelled with an encoded slash beside raw characters (found by
 * review once %2F was accepted in paths): an AWS-shaped base64 key holds "/" and "+", and
 * `…%2F…+…` is none of the key's forms (raw, fully percent-encoded, base64, hex), while the canonical
 * path keeps %2F as sent. The guard also checks the path with its escapes decoded.
 */
import { randomBytes } from 'node:crypto';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { generateAgentToken } from '../../src/identity/agent-token.js';
import { assertNoLeak } from '../helpers/assert-no-leak.js';
import { sendRequest, type Problem, type SentResponse } from '../helpers/send-request.js';
import { startProxy, type ProxyFixture } from '../helpers/start-proxy.js';
import { startUpstream, type Upstream } from '../helpers/start-upstream.js';

describe('a managed key with "/" and "+" in a path, its slash encoded', () => {
  // Shaped like an AWS secret access key: 40 base64 characters, a "/" and a "+" among them.
  const key = `wJalrXUtnF${randomBytes(6).toString('hex')}/K7MD+bPx${randomBytes(5).toString('hex')}Q`;
  const agent = generateAgentToken();
  const seen: SentResponse[] = [];
  let upstream: Upstream;
  let proxy: ProxyFixture;

  beforeAll(async () => {
    upstream = await startUpstream();
    proxy = await startProxy(
      {
        services: { store: { upstream: upstream.url, credential: { secret: 'env:STORE_KEY', inject: 'bearer' }, routes: [{ method: 'GET', path: '/v1/objects/*', scope: 'objects:read' }] } },
        agents: { bot: { tokens: [agent.hash], credentials: [{ service: 'store', max_scope: ['*'] }] } },
      },
      { env: { STORE_KEY: key } },
    );
  });

  afterAll(async () => {
    await proxy?.close();
    await upstream?.close();
  });

  it.each([
    ['its "/" as %2F, its "+" raw', () => key.replace('/', '%2F')],
    ['its "/" as %2f and its "+" as %2B', () => key.replace('/', '%2f').replace('+', '%2B')],
    ['after a prefix, in one segment', () => `x${key.replace('/', '%2F')}`],
  ])('%s: 400, named, nothing forwarded', async (_name, spelled) => {
    const before = upstream.requests.length;
    const response = await sendRequest(`${proxy.url}/store/v1/objects/${spelled()}`, { headers: { authorization: `Bearer ${agent.token}` } });
    seen.push(response);
    expect(response.status, response.text).toBe(400);
    expect(response.json<Problem>().code).toBe('invalid_request');
    expect(response.json<Problem>().detail).toContain('env:STORE_KEY');
    expect(upstream.requests.length).toBe(before);
  });

  it('control: an ordinary path with an encoded slash goes through', async () => {
    const response = await sendRequest(`${proxy.url}/store/v1/objects/docs%2Freport.pdf`, { headers: { authorization: `Bearer ${agent.token}` } });
    seen.push(response);
    expect(response.status, response.text).toBe(200);
    expect(upstream.requests.at(-1)?.target).toBe('/v1/objects/docs%2Freport.pdf');
  });

  it('leaves no form of the key in responses, logs or audit', () => {
    assertNoLeak([key], [
      { name: 'responses', text: seen.map((r) => `${JSON.stringify(r.headers)}\n${r.text}`).join('\n') },
      { name: 'log', text: proxy.logLines.join('') },
      { name: 'audit', text: proxy.auditText() },
    ]);
  });
});
