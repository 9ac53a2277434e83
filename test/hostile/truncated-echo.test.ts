/**
 * An upstream that echoes its request cut short (error pages print the request URL to a fixed width,
 * then "... (truncated)") and an agent that pads its query so the cut falls where it likes. Before
 * heads (secret-forms.ts), only whole forms and a piece at the very end of a body were masked: with the
 * cut one byte before the end of a query-injected key, all but its last character reached the agent,
 * `redactions: 0`.
 *
 * Through the real proxy, for every padding: with the key's head (its first 8 characters that mix two
 * kinds of character, and what comes before them) or more before the cut, the key's place reads "[REDACTED]" and the text after the cut is kept; with fewer, those few are
 * all that shows (the documented bound). And the marker does not answer guesses: an agent that makes
 * the upstream echo the key's head followed by a guessed character gets the same bytes back whether the
 * guess is right or wrong. Plain canaries: no key shape masks them, only the catalogue.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { generateAgentToken } from '../../src/identity/agent-token.js';
import { secretForms } from '../../src/redaction/secret-forms.js';
import { assertNoLeak, type Surface } from '../helpers/assert-no-leak.js';
import { plainCanary } from '../helpers/canary.js';
import { sendRequest, type SentResponse } from '../helpers/send-request.js';
import { startProxy, type ProxyFixture } from '../helpers/start-proxy.js';
import { startUpstream, type Upstream } from '../helpers/start-upstream.js';
import { auditRecordOf, hostileWatch } from './support/hostile-watch.js';

const MARKER = '[REDACTED]';
/** Where the upstream cuts what it prints of the request. */
const WIDTH = 120;
const KEY = plainCanary('cut');
/** Characters of the key a piece must show to be masked: its head in the raw form (secret-forms.ts). */
const HEAD = secretForms(KEY).find((form) => form.bytes.toString('utf8') === KEY)?.head ?? Number.NaN;

/** The heads of the key's forms found in `text`: each is the start of a piece that went out unmasked. */
function headsIn(text: string, secret: string): string[] {
  return secretForms(secret)
    .filter((form) => form.head < form.bytes.length)
    .map((form) => form.bytes.subarray(0, form.head).toString('utf8'))
    .filter((head) => text.includes(head));
}

describe('an upstream that echoes its request cut short', () => {
  const watch = hostileWatch();
  const agent = generateAgentToken();
  const agentSaw: Surface[] = [];
  let upstream: Upstream;
  let proxy: ProxyFixture;

  beforeAll(async () => {
    upstream = await startUpstream((req, res) => {
      const url = req.url ?? '/';
      // An error page printing its request line to WIDTH characters; /v1/echo prints the q parameter
      // as a JSON API would. 400: a burst of 404s is probing to the anomaly watch.
      const body = url.startsWith('/v1/echo')
        ? JSON.stringify({ q: new URL(url, 'http://upstream').searchParams.get('q') })
        : `Bad Request: GET ${url}`.slice(0, WIDTH) + '... (truncated)';
      res.writeHead(400, { 'content-type': 'text/html', 'content-length': Buffer.byteLength(body) });
      res.end(body);
    });
    proxy = await startProxy(
      {
        services: { api: { upstream: upstream.url, credential: { secret: 'env:CUT_KEY', inject: { query: 'key' } }, routes: [{ method: 'GET', path: '/v1/*', scope: 'api' }] } },
        agents: { bot: { tokens: [agent.hash], credentials: [{ service: 'api', max_scope: ['*'] }] } },
      },
      { env: { CUT_KEY: KEY } },
    );
    watch.start();
  });

  afterAll(async () => {
    await proxy?.close();
    await upstream?.close();
  });

  async function call(path: string): Promise<SentResponse> {
    const response = await sendRequest(`${proxy.url}${path}`, { headers: { authorization: `Bearer ${agent.token}` } });
    agentSaw.push({ name: `answer to GET ${path}`, text: `${JSON.stringify(response.headers)}\n${response.text}` });
    return response;
  }

  it(`the key cut after its head (${HEAD} characters) or more, at every padding, shows as the marker; fewer show as they are`, async () => {
    // The upstream prints "Bad Request: GET /v1/cut?pad=<pad>&key=<key>": the key starts at `start`.
    const start = 'Bad Request: GET /v1/cut?pad='.length + '&key='.length;
    let masked = 0;
    for (let shown = 1; shown < KEY.length; shown++) {
      const response = await call(`/api/v1/cut?pad=${'x'.repeat(WIDTH - shown - start)}`);
      expect(response.status).toBe(400);
      // The upstream did cut inside the key where the test meant it to.
      expect(`Bad Request: GET ${upstream.requests.at(-1)?.target ?? ''}`.slice(0, WIDTH).endsWith(`&key=${KEY.slice(0, shown)}`)).toBe(true);
      expect(headsIn(response.text, KEY), `${shown} characters of the key before the cut`).toEqual([]);
      const record = await auditRecordOf(proxy, String(response.headers['x-airlock-request-id']));
      if (shown >= HEAD) {
        expect(response.text).toMatch(new RegExp(`&key=\\[REDACTED\\]\\.\\.\\. \\(truncated\\)$`));
        expect(record.redactions).toBe(1);
        masked++;
      } else {
        expect(response.text.endsWith(`&key=${KEY.slice(0, shown)}... (truncated)`)).toBe(true);
        expect(record.redactions).toBe(0);
      }
    }
    expect(HEAD).toBeLessThanOrEqual(16);
    expect(masked).toBe(KEY.length - HEAD);
  });

  it('the marker answers a guess at the next character the same whether it is right or wrong', async () => {
    const known = KEY.slice(0, HEAD);
    const right = KEY.charAt(HEAD);
    const wrong = right === 'a' ? 'b' : 'a';
    const answers: string[] = [];
    for (const guess of [right, wrong]) {
      const response = await call(`/api/v1/echo?q=${known}${guess}00`);
      expect(upstream.requests.at(-1)?.target).toContain(`q=${known}${guess}00`);
      answers.push(response.text);
    }
    expect(answers[0]).toBe(`{"q":"${MARKER}"}`);
    expect(answers[1]).toBe(answers[0]);
  });

  it('nothing the agent saw, nor the logs and audit, holds the key whole or a head of it', () => {
    expect(agentSaw.length).toBeGreaterThan(KEY.length);
    const surfaces = [...agentSaw, { name: 'log', text: proxy.logLines.join('\n') }, { name: 'audit', text: proxy.auditText() }];
    assertNoLeak([KEY], surfaces);
    for (const surface of surfaces) expect(headsIn(surface.text, KEY), surface.name).toEqual([]);
  });

  it('the proxy stayed healthy (no unhandled rejection or uncaught exception, event loop responsive)', () => {
    watch.assertHealthy();
  });
});
