/**
 * What a review of the response path found (stop 30), each against a real upstream:
 * - a Content-Encoding Airlock cannot decode was quoted into the 502's detail, where a key shape the
 *   response scan masks everywhere else (a `ghp_` token the upstream hands out) reached the agent;
 * - a streamed deflate body whose first chunk was one byte was taken for raw deflate and refused;
 * - a masked piece of the key took the backslash of a JSON `\"` after it, and the body no longer parsed
 *   (the escaped quote is masked with it now);
 * - a HEAD answer relayed the Content-Digest of the body a GET would get, which GET itself drops (a
 *   digest of a body holding the key lets an agent test guesses offline);
 * - an AWS key id (or a Google key) in a header NAME passed: names arrive lower case, and the shapes as
 *   written (AKIA, AIza) never matched; upper-casing `x-akia...` gives the key id back whole.
 */
import { randomBytes, createHash } from 'node:crypto';
import { deflateRawSync, deflateSync } from 'node:zlib';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { generateAgentToken } from '../../src/identity/agent-token.js';
import { assertNoLeak, proxySurfaces, responsesSurface } from '../helpers/assert-no-leak.js';
import { sleep } from '../helpers/operator.js';
import { sendRequest, type SentResponse } from '../helpers/send-request.js';
import { startProxy, type ProxyFixture } from '../helpers/start-proxy.js';
import { startUpstream, type Upstream } from '../helpers/start-upstream.js';
import { auditRecordOf, expectProblem, hostileWatch } from './support/hostile-watch.js';

/** A unique canary with a head (letters and digits mixed from its start), so a piece of it is masked. */
const KEY = `Ab12Cd34quirks${randomBytes(16).toString('hex')}`;
/** What the built-in github shape masks, handed out by the upstream as a new token would be. */
const HANDED_OUT = `ghp_${randomBytes(18).toString('base64url').replace(/[-_]/g, 'x')}`;
const TEXT = 'hello world '.repeat(10_000);
const AWS_ID = `AKIA${randomBytes(16).toString('hex').toUpperCase().slice(0, 16)}`;
const GOOGLE_KEY = `AIza${randomBytes(27).toString('base64url').slice(0, 35)}`;

describe('upstream response quirks', () => {
  const watch = hostileWatch();
  const agent = generateAgentToken();
  let upstream: Upstream;
  let proxy: ProxyFixture;
  const answers: SentResponse[] = [];

  beforeAll(async () => {
    upstream = await startUpstream(async (req, res, recorded) => {
      const url = req.url ?? '/';
      const key = (recorded.header('authorization')[0] ?? '').replace(/^Bearer /, '');
      if (url === '/v1/coding-shape') {
        res.writeHead(200, { 'content-encoding': HANDED_OUT, 'content-length': 2 });
        res.end('hi');
      } else if (url === '/v1/coding-key') {
        res.writeHead(200, { 'content-encoding': key, 'content-length': 2 });
        res.end('hi');
      } else if (url === '/v1/deflate' || url === '/v1/deflate-raw') {
        const body = url === '/v1/deflate' ? deflateSync(Buffer.from(TEXT)) : deflateRawSync(Buffer.from(TEXT));
        res.writeHead(200, { 'content-encoding': 'deflate', 'content-type': 'text/plain' });
        res.write(body.subarray(0, 1));
        await sleep(50);
        res.end(body.subarray(1));
      } else if (url === '/v1/json-piece') {
        const body = `{"msg":"got ${key.slice(0, -3)}\\" done","n":1}`;
        res.writeHead(200, { 'content-type': 'application/json', 'content-length': Buffer.byteLength(body) });
        res.end(body);
      } else if (url === '/v1/shape-names') {
        res.writeHead(200, { [`x-${AWS_ID}`]: '1', [`x-g-${GOOGLE_KEY}`]: '1', 'x-plain': 'kept', 'content-length': 2 });
        res.end('ok');
      } else if (url === '/v1/digest') {
        const body = `token=${key}`;
        res.writeHead(200, { 'content-type': 'text/plain', 'content-length': Buffer.byteLength(body), 'content-digest': `sha-256=:${createHash('sha256').update(body).digest('base64')}:` });
        res.end(req.method === 'HEAD' ? undefined : body);
      } else {
        res.writeHead(404);
        res.end();
      }
    });
    proxy = await startProxy(
      {
        services: { api: { upstream: upstream.url, credential: { secret: 'env:QUIRKS_KEY' }, routes: [{ method: ['GET', 'HEAD'], path: '/v1/*', scope: 'api:read' }] } },
        agents: { bot: { tokens: [agent.hash], credentials: [{ service: 'api', max_scope: ['*'] }] } },
      },
      { env: { QUIRKS_KEY: KEY } },
    );
    watch.start();
  });

  afterAll(async () => {
    const folded = responsesSurface(answers);
    assertNoLeak([KEY, HANDED_OUT, AWS_ID, GOOGLE_KEY, agent.token], [responsesSurface(answers), { ...folded, text: folded.text.toUpperCase() }, ...proxySurfaces(proxy)]);
    await proxy?.close();
    await upstream?.close();
  });

  async function get(path: string, method = 'GET'): Promise<SentResponse> {
    const answer = await sendRequest(`${proxy.url}/api${path}`, { method, headers: { authorization: `Bearer ${agent.token}` } });
    answers.push(answer);
    return answer;
  }

  it('a Content-Encoding it cannot decode is a 502 that does not quote it: neither a key shape nor the key', async () => {
    for (const path of ['/v1/coding-shape', '/v1/coding-key']) {
      const answer = await get(path);
      const problem = expectProblem({ status: answer.status, contentType: answer.headers['content-type'] as string | undefined, body: answer.text }, 502, 'unscannable_response');
      expect(problem.detail).toContain('Content-Encoding Airlock cannot decode');
      expect(answer.text).not.toContain(HANDED_OUT);
      const record = await auditRecordOf(proxy, answer.headers['x-airlock-request-id'] as string);
      expect(record.code).toBe('unscannable_response');
    }
  });

  it('a streamed deflate body whose first chunk is one byte is decoded, zlib-wrapped or raw', async () => {
    for (const path of ['/v1/deflate', '/v1/deflate-raw']) {
      const answer = await get(path);
      expect(answer.status, answer.text.slice(0, 300)).toBe(200);
      expect(answer.text).toBe(TEXT);
    }
  });

  it('a piece of the key before an escaped quote is masked, and the JSON still parses', async () => {
    const answer = await get('/v1/json-piece');
    expect(answer.status).toBe(200);
    const body = JSON.parse(answer.text) as { msg: string; n: number };
    expect(body.n).toBe(1);
    expect(body.msg).toMatch(/^got \[REDACTED[^\]]*\] done$/);
  });

  it('HEAD drops the digest of a body holding the key, as GET does', async () => {
    const head = await get('/v1/digest', 'HEAD');
    const got = await get('/v1/digest');
    expect(head.status).toBe(200);
    expect(got.status).toBe(200);
    expect(got.headers['content-digest']).toBeUndefined();
    expect(head.headers['content-digest']).toBeUndefined();
  });

  it('a header whose name holds a key shape in lower case is dropped, name and value', async () => {
    const answer = await get('/v1/shape-names');
    expect(answer.status).toBe(200);
    expect(answer.headers['x-plain']).toBe('kept');
    const names = Object.keys(answer.headers).join('\n');
    expect(names).not.toContain(AWS_ID.toLowerCase());
    expect(names).not.toContain(GOOGLE_KEY.toLowerCase());
    expect(answer.text).toBe('ok');
  });

  it('the proxy stayed healthy (no unhandled rejection or uncaught exception, event loop responsive)', () => {
    watch.assertHealthy();
  });
});
