/**
 * An echo upstream that writes the injected key in a form the README lists under Leak-proof responses,
 * in the hex case it does not usually come in. The README promises both hex cases for every percent
 * style and every \u escape; found by review, two combinations were missing from the forms:
 * - percent-encoding with "/" kept (Python's quote, safe='/') in lower-case hex: `Xy/7Kp%2b...`;
 * - PHP's JSON style (non-ASCII as \uXXXX, and "\/") in upper-case hex: `P\u00E4\/ss...`.
 * A key whose "/" falls within its first 8 characters has no head of another form that would catch a
 * piece of it, so each echo reached the agent whole.
 */
import { randomBytes } from 'node:crypto';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { generateAgentToken } from '../../src/identity/agent-token.js';
import { assertNoLeak, proxySurfaces, responsesSurface } from '../helpers/assert-no-leak.js';
import { sendRequest, type SentResponse } from '../helpers/send-request.js';
import { startProxy, type ProxyFixture } from '../helpers/start-proxy.js';
import { startUpstream, type Upstream } from '../helpers/start-upstream.js';

/** A base64-style key (as AWS secret keys and many API keys are) with a "/" among its first characters. */
const KEY = `Xy/7Kp+2${randomBytes(18).toString('base64').replace(/=/g, 'Q')}`;
/** A stored password with non-ASCII and a "/", injected as a query parameter (a header carries ASCII only). */
const PASSWORD = `grüne/äpfel-über-brücken-${randomBytes(4).toString('hex')}`;

/** Python's urllib.parse.quote(s) (safe='/'), with lower-case hex. */
function quoteLower(text: string): string {
  return [...Buffer.from(text, 'utf8')].map((byte) => (/[A-Za-z0-9_.~/-]/.test(String.fromCharCode(byte)) ? String.fromCharCode(byte) : `%${byte.toString(16).padStart(2, '0')}`)).join('');
}

/** PHP's json_encode string body (non-ASCII as \uXXXX, "/" as "\/"), with upper-case hex. */
function phpJsonUpper(text: string): string {
  return JSON.stringify(text)
    .slice(1, -1)
    .replace(/[^\x00-\x7f]/g, (ch) => `\\u${ch.charCodeAt(0).toString(16).toUpperCase().padStart(4, '0')}`)
    .replace(/\//g, '\\/');
}

describe('an echo of the key in the hex case its style does not usually use', () => {
  const agent = generateAgentToken();
  let upstream: Upstream;
  let proxy: ProxyFixture;
  const answers: SentResponse[] = [];

  beforeAll(async () => {
    upstream = await startUpstream((req, res, recorded) => {
      let body: string;
      if (req.url === '/bearer/v1/echo') {
        body = `{"echo":"${quoteLower((recorded.header('authorization')[0] ?? '').replace(/^Bearer /, ''))}"}`;
      } else {
        body = `{"echo":"${phpJsonUpper(new URL(recorded.target, 'http://x').searchParams.get('password') ?? '')}"}`;
      }
      res.writeHead(200, { 'content-type': 'application/json', 'content-length': Buffer.byteLength(body) });
      res.end(body);
    });
    proxy = await startProxy(
      {
        services: {
          bearer: { upstream: `${upstream.url}/bearer`, credential: { secret: 'env:HEXCASE_KEY', inject: 'bearer' }, routes: [{ method: 'GET', path: '/v1/echo', scope: 'read' }] },
          password: { upstream: `${upstream.url}/password`, credential: { secret: 'env:HEXCASE_PASSWORD', inject: { query: 'password' } }, routes: [{ method: 'GET', path: '/v1/echo', scope: 'read' }] },
        },
        agents: { bot: { tokens: [agent.hash], credentials: [{ service: 'bearer', max_scope: ['*'] }, { service: 'password', max_scope: ['*'] }] } },
      },
      { env: { HEXCASE_KEY: KEY, HEXCASE_PASSWORD: PASSWORD } },
    );
  });

  afterAll(async () => {
    await proxy?.close();
    await upstream?.close();
  });

  it('percent-encoded with "/" kept, lower-case hex: masked', async () => {
    const answer = await sendRequest(`${proxy.url}/bearer/v1/echo`, { headers: { authorization: `Bearer ${agent.token}` } });
    answers.push(answer);
    expect(answer.status).toBe(200);
    expect(upstream.requests.at(-1)?.header('authorization')[0]).toBe(`Bearer ${KEY}`);
    expect(answer.text).toBe('{"echo":"[REDACTED]"}');
    expect(answer.text).not.toContain(quoteLower(KEY).slice(8, 24));
  });

  it('PHP-style JSON (non-ASCII and "/" escaped), upper-case hex: masked', async () => {
    const answer = await sendRequest(`${proxy.url}/password/v1/echo`, { headers: { authorization: `Bearer ${agent.token}` } });
    answers.push(answer);
    expect(answer.status).toBe(200);
    expect(answer.text).toBe('{"echo":"[REDACTED]"}');
    expect(answer.text).not.toContain(phpJsonUpper(PASSWORD).slice(8, 30));
  });

  it('nothing the agent received, no log line and no audit record holds any form of either', () => {
    assertNoLeak([KEY, PASSWORD, agent.token], [responsesSurface(answers), ...proxySurfaces(proxy)]);
  });
});
