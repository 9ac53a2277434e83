/**
 * Agent authentication (DESIGN.md section 5): the alk_ token is accepted in every position an official
 * SDK puts its API key, and every header that carried it is gone before the request leaves; a missing,
 * unknown, truncated or ambiguous token is 401 with WWW-Authenticate and nothing is forwarded; two
 * agents with different grants are told apart by their tokens.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { generateAgentToken } from '../../src/identity/agent-token.js';
import { TOKEN_CARRIER_HEADERS } from '../../src/identity/token-carriers.js';
import { assertNoLeak } from '../helpers/assert-no-leak.js';
import { canary } from '../helpers/canary.js';
import { rawRequest, type RawResponse } from '../helpers/raw-http.js';
import { startProxy, type ProxyFixture } from '../helpers/start-proxy.js';
import { startUpstream, type RecordedRequest, type Upstream } from '../helpers/start-upstream.js';

/** RFC 9457 media type; a charset parameter may follow. */
const PROBLEM_JSON = /^application\/problem\+json\s*(;|$)/;

function expectProblemContentType(response: RawResponse): void {
  const types = response.headers['content-type'] ?? [];
  expect(types).toHaveLength(1);
  expect(types[0]).toMatch(PROBLEM_JSON);
}

type HeaderLines = ReadonlyArray<readonly [string, string]>;

function basic(user: string, password: string): string {
  return `Basic ${Buffer.from(`${user}:${password}`, 'utf8').toString('base64')}`;
}

interface ProblemJson {
  status: number;
  code: string;
  detail: string;
  request_id: string;
  error: { type: string; code: string; message: string };
}

describe('agent authentication', () => {
  const realKey = canary('authn');
  const reader = generateAgentToken();
  const writer = generateAgentToken();
  const unknown = generateAgentToken();
  const responses: string[] = [];
  let upstream: Upstream;
  let proxy: ProxyFixture;

  beforeAll(async () => {
    upstream = await startUpstream();
    proxy = await startProxy(
      {
        services: {
          openai: {
            upstream: upstream.url,
            credential: { secret: 'env:OPENAI_API_KEY', inject: 'bearer' },
            routes: [
              { method: 'GET', path: '/v1/models', scope: 'models:read' },
              { method: 'POST', path: '/v1/chat/completions', scope: 'chat:write' },
            ],
          },
        },
        agents: {
          reader: { tokens: [reader.hash], credentials: [{ service: 'openai', max_scope: ['models:read'] }] },
          writer: { tokens: [writer.hash], credentials: [{ service: 'openai', max_scope: ['chat:write'] }] },
        },
      },
      { env: { OPENAI_API_KEY: realKey } },
    );
  });

  afterAll(async () => {
    await proxy.close();
    await upstream.close();
  });

  async function send(method: string, target: string, headers: HeaderLines, body = ''): Promise<RawResponse> {
    const lines = [`${method} ${target} HTTP/1.1`, 'Host: 127.0.0.1', 'Connection: close'];
    for (const [name, value] of headers) lines.push(`${name}: ${value}`);
    if (body !== '') lines.push(`Content-Length: ${Buffer.byteLength(body)}`);
    const response = await rawRequest(proxy.url, `${lines.join('\r\n')}\r\n\r\n${body}`);
    responses.push(response.raw);
    return response;
  }

  /** The carrier headers (Authorization, x-api-key, ...) the upstream saw, as [name, value]. */
  function carriersSeen(seen: RecordedRequest): Array<[string, string]> {
    const found: Array<[string, string]> = [];
    for (let i = 0; i < seen.rawHeaders.length; i += 2) {
      const name = (seen.rawHeaders[i] as string).toLowerCase();
      if (TOKEN_CARRIER_HEADERS.has(name)) found.push([name, seen.rawHeaders[i + 1] as string]);
    }
    return found;
  }

  describe('the token is accepted in every carrier position', () => {
    it.each<{ position: string; headers: () => HeaderLines }>([
      { position: 'Authorization: Bearer', headers: () => [['Authorization', `Bearer ${reader.token}`]] },
      { position: 'Authorization: bearer (scheme case-insensitive)', headers: () => [['authorization', `bearer ${reader.token}`]] },
      { position: 'Authorization: token (octokit)', headers: () => [['Authorization', `token ${reader.token}`]] },
      { position: 'Authorization: Basic, token as user', headers: () => [['Authorization', basic(reader.token, '')]] },
      { position: 'Authorization: Basic, token as password', headers: () => [['Authorization', basic('anything', reader.token)]] },
      { position: 'x-api-key (anthropic)', headers: () => [['x-api-key', reader.token]] },
      { position: 'X-Api-Key in another case', headers: () => [['X-Api-Key', reader.token]] },
      { position: 'api-key (azure openai)', headers: () => [['api-key', reader.token]] },
      { position: 'x-goog-api-key (google)', headers: () => [['x-goog-api-key', reader.token]] },
      { position: 'Proxy-Authorization: Bearer', headers: () => [['Proxy-Authorization', `Bearer ${reader.token}`]] },
      { position: 'x-airlock-token', headers: () => [['x-airlock-token', reader.token]] },
      { position: 'the same token in two carriers', headers: () => [['Authorization', `Bearer ${reader.token}`], ['x-api-key', reader.token]] },
      { position: 'the token next to a provider key in another carrier', headers: () => [['x-api-key', reader.token], ['api-key', 'sk-not-an-airlock-token']] },
    ])('$position', async ({ headers }) => {
      const before = upstream.requests.length;
      const response = await send('GET', '/openai/v1/models', headers());
      expect(response.status, response.body).toBe(200);
      expect(upstream.requests.length).toBe(before + 1);
      const seen = upstream.requests[before] as RecordedRequest;
      // No carrier survives except the one Airlock injected; the token is nowhere.
      expect(carriersSeen(seen)).toEqual([['authorization', `Bearer ${realKey}`]]);
      expect(seen.rawHeaders.join('\n')).not.toContain(reader.token);
      expect(seen.rawHeaders.join('\n')).not.toContain(Buffer.from(reader.token).toString('base64').slice(0, 40));
      expect(seen.target).toBe('/v1/models');
    });
  });

  describe('refusals', () => {
    const truncated = (): string => reader.token.slice(0, -1);
    it.each<{ name: string; headers: () => HeaderLines; challenge: RegExp }>([
      { name: 'no token at all', headers: () => [], challenge: /^Bearer realm="airlock"$/ },
      // A key was sent, and it is no Airlock token: invalid_token (RFC 6750 3.1), the detail naming the header.
      { name: 'a provider key instead of a token', headers: () => [['Authorization', 'Bearer sk-proj-not-airlock']], challenge: /^Bearer realm="airlock", error="invalid_token"$/ },
      { name: 'an unknown (well-formed) token', headers: () => [['Authorization', `Bearer ${unknown.token}`]], challenge: /invalid_token/ },
      { name: 'a truncated alk_ token', headers: () => [['Authorization', `Bearer ${truncated()}`]], challenge: /invalid_token/ },
      { name: 'a truncated alk_ token in x-api-key', headers: () => [['x-api-key', truncated()]], challenge: /invalid_token/ },
      { name: 'an alk_ token with a character outside base64url', headers: () => [['x-api-key', `${reader.token.slice(0, -1)}!`]], challenge: /invalid_token/ },
      { name: 'a bare "alk_"', headers: () => [['x-airlock-token', 'alk_']], challenge: /invalid_token/ },
      { name: 'two different known tokens', headers: () => [['Authorization', `Bearer ${reader.token}`], ['x-api-key', writer.token]], challenge: /invalid_request/ },
      { name: 'two different tokens in two Authorization lines', headers: () => [['Authorization', `Bearer ${reader.token}`], ['Authorization', `Bearer ${unknown.token}`]], challenge: /invalid_request/ },
      { name: 'a known and an unknown token in Basic user and x-airlock-token', headers: () => [['Authorization', basic(reader.token, '')], ['x-airlock-token', unknown.token]], challenge: /invalid_request/ },
      { name: 'the token only in the query string', headers: () => [], challenge: /^Bearer realm="airlock"$/ },
    ])('401 for $name, nothing forwarded', async ({ name, headers, challenge }) => {
      const before = upstream.requests.length;
      const target = name.includes('query') ? `/openai/v1/models?api_key=${reader.token}` : '/openai/v1/models';
      const response = await send('GET', target, headers());
      expect(response.status).toBe(401);
      expectProblemContentType(response);
      expect(response.headers['www-authenticate']?.[0]).toMatch(challenge);
      const problem = JSON.parse(response.body) as ProblemJson;
      expect(problem).toMatchObject({ status: 401, code: 'unauthenticated', error: { type: 'airlock_error', code: 'unauthenticated' } });
      expect(problem.request_id).toBe(response.headers['x-airlock-request-id']?.[0]);
      expect(upstream.requests.length).toBe(before);
      // The refusal does not echo any token back, whole or truncated.
      for (const token of [reader.token, writer.token, unknown.token]) expect(response.raw).not.toContain(token.slice(4, -1));
    });
  });

  describe('two agents with different grants are told apart', () => {
    const ids: string[] = [];
    const idOf = (response: RawResponse): RawResponse => {
      ids.push(response.headers['x-airlock-request-id']?.[0] ?? '');
      return response;
    };
    it('reader may list models but not chat', async () => {
      const before = upstream.requests.length;
      expect(idOf(await send('GET', '/openai/v1/models', [['Authorization', `Bearer ${reader.token}`]])).status).toBe(200);
      const denied = idOf(await send('POST', '/openai/v1/chat/completions', [['Authorization', `Bearer ${reader.token}`], ['Content-Type', 'application/json']], '{}'));
      expect(denied.status).toBe(403);
      expect((JSON.parse(denied.body) as ProblemJson).code).toBe('scope_denied');
      expect(upstream.requests.slice(before).map((r) => `${r.method} ${r.target}`)).toEqual(['GET /v1/models']);
    });

    it('writer may chat but not list models', async () => {
      const before = upstream.requests.length;
      expect(idOf(await send('POST', '/openai/v1/chat/completions', [['x-api-key', writer.token], ['Content-Type', 'application/json']], '{}')).status).toBe(200);
      const denied = idOf(await send('GET', '/openai/v1/models', [['x-api-key', writer.token]]));
      expect(denied.status).toBe(403);
      expect((JSON.parse(denied.body) as ProblemJson).code).toBe('scope_denied');
      expect(upstream.requests.slice(before).map((r) => `${r.method} ${r.target}`)).toEqual(['POST /v1/chat/completions']);
    });

    it('audits each request under the agent whose token was presented', async () => {
      // Allowed requests are audited when their response ends, so look records up by request id.
      const deadline = Date.now() + 5000;
      let records = proxy.auditRecords();
      while (!ids.every((id) => records.some((r) => r.request_id === id)) && Date.now() < deadline) {
        await new Promise((resolve) => setTimeout(resolve, 10));
        records = proxy.auditRecords();
      }
      const mine = ids.map((id) => records.find((r) => r.request_id === id)).map((r) => [r?.agent, r?.method, r?.decision, r?.status, r?.scope]);
      expect(mine).toEqual([
        ['reader', 'GET', 'allow', 200, 'models:read'],
        ['reader', 'POST', 'deny', 403, 'chat:write'],
        ['writer', 'POST', 'allow', 200, 'chat:write'],
        ['writer', 'GET', 'deny', 403, 'models:read'],
      ]);
    });
  });

  it('leaves no trace of the credential or the tokens in responses, logs or audit', async () => {
    await proxy.waitForAudit(responses.length);
    assertNoLeak([realKey, reader.token, writer.token, unknown.token], [
      { name: 'responses', text: responses.join('\n') },
      { name: 'log', text: proxy.logLines.join('') },
      { name: 'audit', text: proxy.auditText() },
    ]);
  });
});
