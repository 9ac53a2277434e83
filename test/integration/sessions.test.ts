/**
 * Task sessions over real sockets: an agent mints a short-lived, task-scoped `als_` token with its own
 * token (POST /_airlock/sessions), calls with it inside its scopes and is refused outside them; a session
 * mints narrower children (attenuation) that can neither widen nor outlive it; sessions expire, are ended
 * by DELETE /_airlock/sessions/current (children too) and describe themselves on GET; `require_session`
 * leaves the agent's own token good only for minting; every audit record made under a session carries
 * its id, justification and task id; no session token reaches a log line, an audit record or an upstream.
 */
import OpenAI from 'openai';
import { randomBytes } from 'node:crypto';
import { existsSync, readFileSync } from 'node:fs';
import { request as httpRequest, type IncomingMessage, type ServerResponse } from 'node:http';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { generateAgentToken } from '../../src/identity/agent-token.js';
import { assertNoLeak } from '../helpers/assert-no-leak.js';
import { canary } from '../helpers/canary.js';
import { eventually, sleep } from '../helpers/operator.js';
import { sendRequest, type Problem, type SentResponse } from '../helpers/send-request.js';
import { startProxy, type ProxyFixture } from '../helpers/start-proxy.js';
import { echoHandler, startUpstream, type RecordedRequest, type Upstream } from '../helpers/start-upstream.js';

const SESSION_TOKEN = /^als_[A-Za-z0-9_-]{43}$/;

interface MintedSession {
  session_token: string;
  session_id: string;
  agent: string;
  parent: string | null;
  scopes: Record<string, string[]>;
  justification: string;
  task_id: string | null;
  created_at: string;
  expires_at: string;
}

describe('task sessions', () => {
  const openaiKey = canary('openai');
  const billingKey = canary('billing');
  const bot = generateAgentToken();
  const zsp = generateAgentToken();
  /** Every session token minted in this file: each is a canary. */
  const sessionTokens: string[] = [];
  /** Everything agents received, for the leak check of the upstream keys. */
  const agentSeen: string[] = [];
  let openai: Upstream;
  let billing: Upstream;
  let proxy: ProxyFixture;

  function openaiHandler(req: IncomingMessage, res: ServerResponse, recorded: RecordedRequest): void {
    if (req.url === '/v1/chat/completions') {
      const body = JSON.parse(recorded.body.toString('utf8') || '{}') as { messages?: Array<{ content: string }> };
      const reply = JSON.stringify({
        id: 'c1',
        object: 'chat.completion',
        created: 1,
        model: 'gpt-test',
        choices: [{ index: 0, message: { role: 'assistant', content: `echo: ${body.messages?.[0]?.content ?? ''}` }, finish_reason: 'stop' }],
        usage: { prompt_tokens: 1, completion_tokens: 1, total_tokens: 2 },
      });
      res.writeHead(200, { 'content-type': 'application/json' });
      res.end(reply);
      return;
    }
    echoHandler(req, res, recorded);
  }

  beforeAll(async () => {
    openai = await startUpstream(openaiHandler);
    billing = await startUpstream(echoHandler);
    proxy = await startProxy(
      {
        services: {
          openai: {
            upstream: openai.url,
            credential: { secret: 'env:OPENAI_API_KEY', inject: 'bearer' },
            routes: [
              { method: 'POST', path: '/v1/chat/completions', scope: 'chat:write' },
              { method: 'GET', path: '/v1/models', scope: 'models:read' },
              { method: 'GET', path: '/v1/files/*', scope: 'files:read' },
              { method: 'DELETE', path: '/v1/files/*', scope: 'files:delete' },
            ],
          },
          billing: {
            upstream: billing.url,
            credential: { secret: 'env:BILLING_KEY', inject: 'bearer' },
            routes: [{ method: 'GET', path: '/v1/invoices', scope: 'invoices:read' }],
          },
        },
        agents: {
          bot: {
            tokens: [bot.hash],
            credentials: [
              { service: 'openai', max_scope: ['chat:write', 'models:read', 'files:*'], max_ttl: 600 },
              { service: 'billing', max_scope: ['invoices:read'], max_ttl: 120 },
            ],
          },
          zsp: { tokens: [zsp.hash], credentials: [{ service: 'openai', max_scope: ['*'], require_session: true, max_ttl: 300 }] },
        },
      },
      { env: { OPENAI_API_KEY: openaiKey, BILLING_KEY: billingKey } },
    );
  });

  afterAll(async () => {
    await proxy?.close();
    await openai?.close();
    await billing?.close();
  });

  async function keep(response: Promise<SentResponse>): Promise<SentResponse> {
    const answer = await response;
    agentSeen.push(`${answer.status}\n${JSON.stringify(answer.headers)}\n${answer.text}`);
    return answer;
  }

  function mintRaw(token: string, body: unknown): Promise<SentResponse> {
    return keep(
      sendRequest(`${proxy.url}/_airlock/sessions`, {
        method: 'POST',
        headers: { authorization: `Bearer ${token}`, 'content-type': 'application/json' },
        body: typeof body === 'string' ? body : JSON.stringify(body),
      }),
    );
  }

  async function mint(token: string, body: Record<string, unknown>): Promise<MintedSession> {
    const response = await mintRaw(token, body);
    expect(response.status, response.text).toBe(201);
    const minted = response.json<MintedSession>();
    sessionTokens.push(minted.session_token);
    return minted;
  }

  function call(token: string, method: string, path: string, body?: string): Promise<SentResponse> {
    return keep(
      sendRequest(`${proxy.url}${path}`, {
        method,
        headers: { authorization: `Bearer ${token}`, ...(body === undefined ? {} : { 'content-type': 'application/json' }) },
        ...(body === undefined ? {} : { body }),
      }),
    );
  }

  function expectProblem(response: SentResponse, status: number, code: string): Problem {
    expect(response.status, response.text).toBe(status);
    expect(response.headers['content-type']).toContain('application/problem+json');
    const problem = response.json<Problem>();
    expect(problem.code).toBe(code);
    expect(problem.error.code).toBe(code);
    return problem;
  }

  function secondsUntil(iso: string): number {
    return (Date.parse(iso) - Date.now()) / 1000;
  }

  it('mints a session with the agent token: 201, an als_ token, its scopes and when it expires', async () => {
    const before = Date.now();
    const response = await mintRaw(bot.token, { scopes: { openai: ['chat:write'] }, ttl_seconds: 300, justification: 'summarise ticket 4411', task_id: 'T-4411' });
    expect(response.status, response.text).toBe(201);
    expect(response.headers['content-type']).toContain('application/json');
    expect(response.headers['cache-control']).toBe('no-store');
    expect(response.headers['x-airlock-request-id']).toMatch(/^[0-9a-f-]{36}$/);
    const minted = response.json<MintedSession>();
    sessionTokens.push(minted.session_token);
    expect(minted.session_token).toMatch(SESSION_TOKEN);
    expect(minted).toMatchObject({ agent: 'bot', parent: null, scopes: { openai: ['chat:write'] }, justification: 'summarise ticket 4411', task_id: 'T-4411' });
    expect(minted.session_id).toMatch(/^ses_[A-Za-z0-9_-]+$/);
    const expires = Date.parse(minted.expires_at);
    expect(expires).toBeGreaterThanOrEqual(before + 299_000);
    expect(expires).toBeLessThanOrEqual(Date.now() + 301_000);
    expect(Date.parse(minted.created_at)).toBeGreaterThanOrEqual(before - 1000);
    // Nothing went upstream for the mint.
    expect(openai.requests.length + billing.requests.length).toBe(0);
  });

  it('a session token works within its scopes and is refused (403 scope_denied) outside them', async () => {
    const session = await mint(bot.token, { scopes: { openai: ['chat:write', 'files:*'] }, ttl_seconds: 300, justification: 'read the report files' });
    const chat = await call(session.session_token, 'POST', '/openai/v1/chat/completions', '{"messages":[{"content":"hi"}]}');
    expect(chat.status, chat.text).toBe(200);
    const seen = openai.requests.at(-1);
    expect(seen?.header('authorization')).toEqual([`Bearer ${openaiKey}`]);
    expect(seen?.rawHeaders.join('\n')).not.toContain(session.session_token);
    expect(seen?.rawHeaders.join('\n')).not.toContain('als_');

    const file = await call(session.session_token, 'GET', '/openai/v1/files/reports/q3.txt');
    expect(file.status, file.text).toBe(200);
    expect(openai.requests.at(-1)?.target).toBe('/v1/files/reports/q3.txt');

    const before = openai.requests.length + billing.requests.length;
    // In the agent's grant, but not in the session.
    const models = expectProblem(await call(session.session_token, 'GET', '/openai/v1/models'), 403, 'scope_denied');
    expect(models.detail).toContain(`Session ${session.session_id} does not include scope models:read`);
    // A service the session does not name at all.
    expectProblem(await call(session.session_token, 'GET', '/billing/v1/invoices'), 403, 'scope_denied');
    // Within files:* of the grant and of the session's pattern, but files:delete is in both: allowed.
    const deleted = await call(session.session_token, 'DELETE', '/openai/v1/files/old.txt');
    expect(deleted.status, deleted.text).toBe(200);
    expect(openai.requests.length + billing.requests.length).toBe(before + 1);
    // The agent's own token still has its standing grant (no require_session on bot).
    expect((await call(bot.token, 'GET', '/openai/v1/models')).status).toBe(200);
  });

  it('refuses a session wider than the grant, or longer than max_ttl, saying why', async () => {
    const upstreamBefore = openai.requests.length + billing.requests.length;
    const beyondGrant = expectProblem(await mintRaw(bot.token, { scopes: { openai: ['embeddings:write'] }, justification: 'x' }), 403, 'scope_denied');
    expect(beyondGrant.detail).toContain('Scope embeddings:write on openai is not within agent bot');
    expect(beyondGrant.detail).toContain('chat:write, models:read, files:*');
    const everything = expectProblem(await mintRaw(bot.token, { scopes: { openai: ['*'] }, justification: 'x' }), 403, 'scope_denied');
    expect(everything.detail).toContain('Scope * on openai');
    const widerPattern = expectProblem(await mintRaw(bot.token, { scopes: { openai: ['chat:*'] }, justification: 'x' }), 403, 'scope_denied');
    expect(widerPattern.detail).toContain('chat:*');
    const noGrant = expectProblem(await mintRaw(zsp.token, { scopes: { billing: ['invoices:read'] }, justification: 'x' }), 403, 'scope_denied');
    expect(noGrant.detail).toContain('no grant for service billing');

    const tooLong = expectProblem(await mintRaw(bot.token, { scopes: { openai: ['chat:write'] }, ttl_seconds: 601, justification: 'x' }), 403, 'scope_denied');
    expect(tooLong.detail).toContain("ttl_seconds 601 exceeds the grants' max_ttl of 600 seconds");
    // Several services: the smallest max_ttl of the grants involved bounds the session.
    const mixed = expectProblem(
      await mintRaw(bot.token, { scopes: { openai: ['chat:write'], billing: ['invoices:read'] }, ttl_seconds: 300, justification: 'x' }),
      403,
      'scope_denied',
    );
    expect(mixed.detail).toContain('max_ttl of 120 seconds');
    // Without ttl_seconds the session lives as long as the grants allow.
    const longest = await mint(bot.token, { scopes: { openai: ['chat:write'], billing: ['invoices:read'] }, justification: 'both services' });
    expect(secondsUntil(longest.expires_at)).toBeGreaterThan(115);
    expect(secondsUntil(longest.expires_at)).toBeLessThanOrEqual(120);

    // Malformed requests are 400 with the rule that was broken.
    const cases: Array<[unknown, string]> = [
      [{ scopes: { openai: ['chat:write'] } }, '"justification" is required'],
      [{ scopes: { openai: ['chat:write'] }, justification: '   ' }, '"justification" is required'],
      [{ scopes: {}, justification: 'x' }, '"scopes" must map at least one service'],
      [{ scopes: { openai: [] }, justification: 'x' }, '"scopes.openai" must be a non-empty list'],
      [{ scopes: { openai: ['chat:write'] }, ttl_seconds: 0, justification: 'x' }, '"ttl_seconds" must be a positive whole number'],
      [{ scopes: { openai: ['chat:write'] }, ttl_seconds: 1.5, justification: 'x' }, '"ttl_seconds" must be a positive whole number'],
      [{ scopes: { openai: ['chat:write'] }, justification: 'x', admin: true }, 'Unknown field "admin"'],
      [{ scopes: { openai: ['chat:write'] }, justification: 'x', task_id: 'has spaces' }, '"task_id"'],
      ['not json', 'not JSON'],
      // Found by review: escape sequences and a line break printed a fake "approved" line in
      // `airlock approvals list`, and bidi overrides reorder text in the console and chat.
      [{ scopes: { openai: ['chat:write'] }, justification: 'refund ok\u001b[2K\r\u001b[1Aapr_FAKE approved' }, 'holds U+001B at character 10'],
      [{ scopes: { openai: ['chat:write'] }, justification: 'pay \u202egnp.exe' }, 'holds U+202E at character 5'],
      [{ scopes: { openai: ['chat:write'] }, justification: 'zero\u200bwidth' }, 'holds U+200B'],
      // Invisible too (found by review): a soft hyphen, a Hangul filler, a tag character (two UTF-16 units).
      [{ scopes: { openai: ['chat:write'] }, justification: 'soft\u00adhyphen' }, 'holds U+00AD'],
      [{ scopes: { openai: ['chat:write'] }, justification: 'filler \u3164' }, 'holds U+3164'],
      [{ scopes: { openai: ['chat:write'] }, justification: 'tag \u{e0041}\u{e0042}' }, 'holds U+E0041 at character 5'],
    ];
    for (const [body, detail] of cases) {
      const problem = expectProblem(await mintRaw(bot.token, body), 400, 'invalid_request');
      expect(problem.detail).toContain(detail);
    }
    // Line breaks and tabs are plain text: a justification may have several lines.
    for (const text of ['Task: refunds\n\tticket 42', 'line\r\nbreaks \u2028 and \u2029 separators']) {
      expect((await mint(bot.token, { scopes: { openai: ['chat:write'] }, justification: text })).justification).toBe(text);
    }
    // GET on the minting endpoint is not a mint.
    expectProblem(await call(bot.token, 'GET', '/_airlock/sessions'), 405, 'method_not_allowed');
    // Without any token, nothing is minted.
    const anonymous = await keep(sendRequest(`${proxy.url}/_airlock/sessions`, { method: 'POST', body: '{"scopes":{"openai":["chat:write"]},"justification":"x"}' }));
    expectProblem(anonymous, 401, 'unauthenticated');
    expect(openai.requests.length + billing.requests.length).toBe(upstreamBefore);
  });

  // Found by probing: JSON.parse makes "__proto__" an own key, and assigning it set the parsed scopes'
  // prototype instead, so the session had no service, no max_ttl and no expiry: a 500 after it was
  // stored, and every later listing of sessions failed on it.
  it('a service named __proto__ is refused as a service without a grant, and no session is stored', async () => {
    const stateFile = join(proxy.dataDir, 'state.jsonl');
    const storedBefore = existsSync(stateFile) ? readFileSync(stateFile, 'utf8') : '';
    for (const body of ['{"scopes":{"__proto__":["chat:write"]},"justification":"probe"}', '{"scopes":{"__proto__":["chat:write"]},"ttl_seconds":5,"justification":"probe"}']) {
      const problem = expectProblem(await mintRaw(bot.token, body), 403, 'scope_denied');
      expect(problem.detail).toContain('no grant for service __proto__');
    }
    const storedAfter = existsSync(stateFile) ? readFileSync(stateFile, 'utf8') : '';
    expect(storedAfter).toBe(storedBefore);
    // The proxy is unharmed: a session is minted and described as usual.
    const minted = await mint(bot.token, { scopes: { openai: ['models:read'] }, ttl_seconds: 60, justification: 'after the probe' });
    expect((await call(minted.session_token, 'GET', '/_airlock/sessions/current')).status).toBe(200);
  });

  // A justification is echoed in the answer and kept in the state file and the audit log: one that
  // carries a managed credential's value is refused as a proxied body carrying it is, in whatever form.
  it('a session request carrying a managed credential is refused 400 and kept nowhere, even spelled with JSON escapes', async () => {
    const stateFile = join(proxy.dataDir, 'state.jsonl');
    const last = openaiKey.charCodeAt(openaiKey.length - 1).toString(16).padStart(4, '0');
    const bodies = [
      JSON.stringify({ scopes: { openai: ['chat:write'] }, justification: `leak ${openaiKey}` }),
      JSON.stringify({ scopes: { openai: ['chat:write'] }, justification: `leak ${Buffer.from(openaiKey).toString('base64')}` }),
      `{"scopes":{"openai":["chat:write"]},"justification":"leak ${openaiKey.slice(0, -1)}\\u${last}"}`,
      JSON.stringify({ scopes: { openai: ['chat:write'] }, justification: 'ok', task_id: `t-${openaiKey}`.replace(/[^A-Za-z0-9_.:/#-]/g, '-') }),
    ];
    for (const body of bodies) {
      const response = await mintRaw(bot.token, body);
      const problem = expectProblem(response, 400, 'invalid_request');
      expect(problem.detail).toContain('the credential env:OPENAI_API_KEY');
      const record = await eventually('the refusal audited', () => proxy.auditRecords().find((r) => r.request_id === response.headers['x-airlock-request-id']));
      expect(record).toMatchObject({ decision: 'deny', status: 400, credential: 'env:OPENAI_API_KEY' });
    }
    // An Airlock token in the justification is refused too: it would be kept in the state file and the audit log.
    const withToken = expectProblem(await mintRaw(bot.token, { scopes: { openai: ['chat:write'] }, justification: `my token is ${zsp.token}` }), 400, 'invalid_request');
    expect(withToken.detail).toContain('an Airlock agent or session token');
    // Encoded, or named as a scope within a pattern the grant allows (files:*), and a workload JWT
    // (found by review: the hex of a token, named as a scope, went into the audit record's session_scopes).
    const hex = Buffer.from(zsp.token).toString('hex');
    const jwt = `eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJjaSJ9.${Buffer.from(randomBytes(48)).toString('base64url')}`;
    const encoded = [
      { scopes: { openai: [`files:${hex}`] }, justification: 'read one file' },
      { scopes: { openai: ['chat:write'] }, justification: `token ${Buffer.from(zsp.token).toString('base64url')}` },
      { scopes: { openai: ['chat:write'] }, justification: `token ${encodeURIComponent(zsp.token).replace(/_/g, '%5F')}` },
    ];
    for (const body of encoded) {
      const refused = expectProblem(await mintRaw(bot.token, body), 400, 'invalid_request');
      expect(refused.detail).toContain('an Airlock agent or session token');
    }
    const withJwt = expectProblem(await mintRaw(bot.token, { scopes: { openai: [`files:${jwt}`] }, justification: 'a jwt' }), 400, 'invalid_request');
    expect(withJwt.detail).toContain('a signed JWT');
    const audited = proxy.auditText();
    expect(audited).not.toContain(hex);
    expect(audited).not.toContain(jwt);
    const stored = existsSync(stateFile) ? readFileSync(stateFile, 'utf8') : '';
    expect(stored).not.toContain(zsp.token);
    expect(stored).not.toContain(hex);
    expect(stored).not.toContain(jwt);
    expect(stored).not.toContain(openaiKey);
    expect(stored).not.toContain(Buffer.from(openaiKey).toString('base64'));
  });

  // Found by review: a child minted while its parent was being ended (the mint's body still arriving)
  // was created after the end had cascaded, and lived on. The caller is checked again once the body is
  // in, and a session whose parent is gone is refused wherever it is used.
  it('a child cannot be minted from a parent ended while the mint request was still arriving', async () => {
    const parent = await mint(bot.token, { scopes: { openai: ['files:*'] }, ttl_seconds: 300, justification: 'parent that ends mid-mint' });
    const body = JSON.stringify({ scopes: { openai: ['files:read'] }, justification: 'child racing the end' });
    const slow = httpRequest(`${proxy.url}/_airlock/sessions`, {
      method: 'POST',
      headers: { authorization: `Bearer ${parent.session_token}`, 'content-type': 'application/json', 'content-length': String(Buffer.byteLength(body)) },
    });
    const answered = new Promise<{ status: number; text: string }>((resolve, reject) => {
      slow.on('response', (res) => {
        const chunks: Buffer[] = [];
        res.on('data', (chunk: Buffer) => chunks.push(chunk));
        res.on('end', () => resolve({ status: res.statusCode ?? 0, text: Buffer.concat(chunks).toString('utf8') }));
      });
      slow.on('error', reject);
    });
    slow.write(body.slice(0, 10));
    let result: { status: number; text: string };
    try {
      await new Promise((resolve) => setTimeout(resolve, 100));
      expect((await call(parent.session_token, 'DELETE', '/_airlock/sessions/current')).status).toBe(204);
      slow.end(body.slice(10));
      result = await answered;
    } finally {
      slow.destroy();
    }
    agentSeen.push(result.text);
    expect(result.status, result.text).toBe(401);
    expect((JSON.parse(result.text) as Problem).code).toBe('unauthenticated');
    expect(result.text).toContain('ended while the request waited');
  });

  it('a child session minted with a session token narrows its parent, never widens it, never outlives it', async () => {
    const parent = await mint(bot.token, { scopes: { openai: ['chat:write', 'files:*'] }, ttl_seconds: 300, justification: 'parent task', task_id: 'T-parent' });
    const child = await mint(parent.session_token, { scopes: { openai: ['files:read'] }, ttl_seconds: 60, justification: 'sub-task: read one file', task_id: 'T-child' });
    expect(child).toMatchObject({ agent: 'bot', parent: parent.session_id, scopes: { openai: ['files:read'] } });
    expect((await call(child.session_token, 'GET', '/openai/v1/files/a.txt')).status).toBe(200);
    expectProblem(await call(child.session_token, 'POST', '/openai/v1/chat/completions', '{}'), 403, 'scope_denied');
    expectProblem(await call(child.session_token, 'DELETE', '/openai/v1/files/a.txt'), 403, 'scope_denied');

    // Wider than the parent, though within the agent's grant: refused.
    const wider = expectProblem(await mintRaw(parent.session_token, { scopes: { openai: ['models:read'] }, justification: 'x' }), 403, 'scope_denied');
    expect(wider.detail).toContain("not within the parent session's scopes");
    // Beyond the agent's grant, asked with a session token: refused by the grant first.
    const widerPattern = expectProblem(await mintRaw(parent.session_token, { scopes: { openai: ['chat:*'] }, justification: 'x' }), 403, 'scope_denied');
    expect(widerPattern.detail).toContain("not within agent bot's grant");
    const otherService = expectProblem(await mintRaw(parent.session_token, { scopes: { billing: ['invoices:read'] }, justification: 'x' }), 403, 'scope_denied');
    expect(otherService.detail).toContain('parent session has no scopes on billing');
    // A grandchild cannot widen the child back to its parent's pattern.
    const regrow = expectProblem(await mintRaw(child.session_token, { scopes: { openai: ['files:*'] }, justification: 'x' }), 403, 'scope_denied');
    expect(regrow.detail).toContain("parent session's scopes (files:read)");

    // Longer than the parent has left (within the grant's max_ttl of 600): refused.
    const outlive = expectProblem(await mintRaw(parent.session_token, { scopes: { openai: ['files:read'] }, ttl_seconds: 400, justification: 'x' }), 403, 'scope_denied');
    expect(outlive.detail).toContain('ttl_seconds 400 outlives the parent session');
    // Without a ttl, a child ends no later than its parent.
    const defaulted = await mint(parent.session_token, { scopes: { openai: ['files:read'] }, justification: 'default ttl' });
    expect(Date.parse(defaulted.expires_at)).toBeLessThanOrEqual(Date.parse(parent.expires_at));
    const grandchild = await mint(child.session_token, { scopes: { openai: ['files:read'] }, justification: 'grandchild' });
    expect(grandchild.parent).toBe(child.session_id);
    expect(Date.parse(grandchild.expires_at)).toBeLessThanOrEqual(Date.parse(child.expires_at));
  });

  it('expires: ttl_seconds 1 works at once, then 401 unauthenticated', async () => {
    const session = await mint(bot.token, { scopes: { openai: ['models:read'] }, ttl_seconds: 1, justification: 'one second' });
    // TTLs are whole seconds, so a session with less than a second left cannot have a child. (A child
    // asked for within the millisecond its parent was minted would still find a whole second left.)
    await sleep(5);
    const child = expectProblem(await mintRaw(session.session_token, { scopes: { openai: ['models:read'] }, justification: 'child of a short session' }), 403, 'scope_denied');
    expect(child.detail).toContain('no time left');
    const first = await call(session.session_token, 'GET', '/openai/v1/models');
    // Minting and the first call take milliseconds; the session still has most of its second.
    expect(first.status, first.text).toBe(200);
    const expired = await eventually(
      'the 1 s session to expire',
      async () => {
        const response = await call(session.session_token, 'GET', '/openai/v1/models');
        return response.status === 401 ? response : undefined;
      },
      4_000,
      100,
    );
    const problem = expectProblem(expired, 401, 'unauthenticated');
    // A probe that arrived in the session's last instant is refused by the check made again before the
    // upstream is asked (a loaded CI run saw it): it ended while that request was in the pipeline.
    expect(problem.detail).toMatch(/expired|ended while the request waited/);
    expect(expired.headers['www-authenticate']).toContain('error="invalid_token"');
    expectProblem(await call(session.session_token, 'GET', '/_airlock/sessions/current'), 401, 'unauthenticated');
    expectProblem(await mintRaw(session.session_token, { scopes: { openai: ['models:read'] }, justification: 'x' }), 401, 'unauthenticated');
  });

  it('GET /_airlock/sessions/current describes the session; DELETE ends it and the sessions narrowed from it', async () => {
    const parent = await mint(bot.token, { scopes: { openai: ['models:read', 'files:*'] }, ttl_seconds: 300, justification: 'to be ended', task_id: 'T-end' });
    const child = await mint(parent.session_token, { scopes: { openai: ['files:read'] }, justification: 'child' });
    const grandchild = await mint(child.session_token, { scopes: { openai: ['files:read'] }, justification: 'grandchild' });
    const sibling = await mint(bot.token, { scopes: { openai: ['models:read'] }, ttl_seconds: 300, justification: 'unrelated' });

    const current = await call(parent.session_token, 'GET', '/_airlock/sessions/current');
    expect(current.status, current.text).toBe(200);
    const described = current.json<Record<string, unknown>>();
    expect(described).toEqual({
      session_id: parent.session_id,
      agent: 'bot',
      parent: null,
      scopes: { openai: ['models:read', 'files:*'] },
      justification: 'to be ended',
      task_id: 'T-end',
      created_at: parent.created_at,
      expires_at: parent.expires_at,
    });
    expect(current.text).not.toContain(parent.session_token);
    expect(current.text).not.toContain('als_');
    // With the agent's own token there is no "current session".
    expectProblem(await call(bot.token, 'GET', '/_airlock/sessions/current'), 400, 'invalid_request');
    expectProblem(await call(parent.session_token, 'POST', '/_airlock/sessions/current', '{}'), 405, 'method_not_allowed');

    // Ending the child ends the grandchild but not the parent.
    const endChild = await call(child.session_token, 'DELETE', '/_airlock/sessions/current');
    expect(endChild.status, endChild.text).toBe(204);
    expectProblem(await call(child.session_token, 'GET', '/openai/v1/files/x'), 401, 'unauthenticated');
    expectProblem(await call(grandchild.session_token, 'GET', '/openai/v1/files/x'), 401, 'unauthenticated');
    expect((await call(parent.session_token, 'GET', '/openai/v1/files/x')).status).toBe(200);

    const child2 = await mint(parent.session_token, { scopes: { openai: ['files:read'] }, justification: 'second child' });
    const endParent = await call(parent.session_token, 'DELETE', '/_airlock/sessions/current');
    expect(endParent.status).toBe(204);
    for (const token of [parent.session_token, child2.session_token]) {
      expectProblem(await call(token, 'GET', '/openai/v1/models'), 401, 'unauthenticated');
      expectProblem(await call(token, 'GET', '/_airlock/sessions/current'), 401, 'unauthenticated');
      expectProblem(await call(token, 'DELETE', '/_airlock/sessions/current'), 401, 'unauthenticated');
    }
    // Another session of the same agent is untouched, and the agent's token still mints.
    expect((await call(sibling.session_token, 'GET', '/openai/v1/models')).status).toBe(200);
    await mint(bot.token, { scopes: { openai: ['models:read'] }, ttl_seconds: 10, justification: 'after the end' });
  });

  it('require_session: the agent token only mints sessions (403 session_required on calls)', async () => {
    const before = openai.requests.length;
    const refused = expectProblem(await call(zsp.token, 'POST', '/openai/v1/chat/completions', '{"messages":[{"content":"x"}]}'), 403, 'session_required');
    expect(refused.detail).toContain('POST /_airlock/sessions');
    expect(refused.detail).toContain('"openai": ["chat:write"]');
    expectProblem(await call(zsp.token, 'GET', '/openai/v1/models'), 403, 'session_required');
    expect(openai.requests.length).toBe(before);

    const tooLong = expectProblem(await mintRaw(zsp.token, { scopes: { openai: ['chat:write'] }, ttl_seconds: 301, justification: 'x' }), 403, 'scope_denied');
    expect(tooLong.detail).toContain('max_ttl of 300');
    const session = await mint(zsp.token, { scopes: { openai: ['chat:write'] }, ttl_seconds: 60, justification: 'answer one customer', task_id: 'ZSP-1' });
    const chat = await call(session.session_token, 'POST', '/openai/v1/chat/completions', '{"messages":[{"content":"ok"}]}');
    expect(chat.status, chat.text).toBe(200);
    expect(openai.requests.length).toBe(before + 1);
    // The grant's "*" is still bounded by the session's scopes.
    expectProblem(await call(session.session_token, 'GET', '/openai/v1/models'), 403, 'scope_denied');
    // A child of a zero-standing-privilege session is a session too.
    const child = await mint(session.session_token, { scopes: { openai: ['chat:write'] }, justification: 'child' });
    expect((await call(child.session_token, 'POST', '/openai/v1/chat/completions', '{}')).status).toBe(200);
  });

  it('every audit record of a call made with a session carries its id, justification and task id', async () => {
    const session = await mint(bot.token, { scopes: { openai: ['chat:write', 'files:*'] }, ttl_seconds: 120, justification: 'audit me: refund #77', task_id: 'JIRA-77' });
    const responses = [
      await call(session.session_token, 'POST', '/openai/v1/chat/completions', '{"messages":[{"content":"a"}]}'),
      await call(session.session_token, 'GET', '/openai/v1/files/x/y'),
      await call(session.session_token, 'GET', '/openai/v1/models'), // denied: not in the session
      await call(session.session_token, 'GET', '/openai/v1/nope'), // denied: no route
      await call(session.session_token, 'GET', '/_airlock/sessions/current'),
    ];
    const child = await mint(session.session_token, { scopes: { openai: ['files:read'] }, justification: 'child of audit', task_id: 'JIRA-77/1' });
    responses.push(await call(child.session_token, 'GET', '/openai/v1/files/z'));
    responses.push(await call(session.session_token, 'DELETE', '/_airlock/sessions/current'));
    expect(responses.map((r) => r.status)).toEqual([200, 200, 403, 403, 200, 200, 204]);

    const ids = responses.map((r) => r.headers['x-airlock-request-id'] as string);
    const records = await eventually('the audit records of the session calls', () => {
      const all = proxy.auditRecords();
      const found = ids.map((id) => all.find((r) => r.request_id === id));
      return found.every((r) => r !== undefined) ? found : undefined;
    });
    records.forEach((record, index) => {
      const isChild = index === 5;
      expect(record, `record ${index}`).toMatchObject({
        agent: 'bot',
        session: isChild ? child.session_id : session.session_id,
        justification: isChild ? 'child of audit' : 'audit me: refund #77',
        task_id: isChild ? 'JIRA-77/1' : 'JIRA-77',
      });
    });
    expect(records[2]).toMatchObject({ decision: 'deny', code: 'scope_denied', status: 403, scope: 'models:read' });
    expect(records[0]).toMatchObject({ decision: 'allow', status: 200, upstream_status: 200, credential: 'env:OPENAI_API_KEY' });
    // The mint itself is audited with the new session's id, what it was given, until when, and from
    // which session it was narrowed; the session's other records carry none of that.
    const mintRecord = proxy.auditRecords().find((r) => r.session === child.session_id && r.route === '/_airlock/sessions');
    expect(mintRecord).toMatchObject({ status: 201, decision: 'allow', justification: 'child of audit', task_id: 'JIRA-77/1' });
    expect(mintRecord).toMatchObject({ session_scopes: 'openai/files:read', session_expires_at: child.expires_at, session_parent: session.session_id });
    const parentMint = proxy.auditRecords().find((r) => r.session === session.session_id && r.route === '/_airlock/sessions');
    expect(parentMint).toMatchObject({ status: 201, session_scopes: 'openai/chat:write openai/files:*', session_expires_at: session.expires_at, session_parent: null });
    for (const record of records) expect(record).toMatchObject({ session_scopes: null, session_expires_at: null, session_parent: null });
    // Calls with the agent's own token carry no session.
    const plain = await call(bot.token, 'GET', '/openai/v1/models');
    const plainRecord = await eventually('the plain call record', () => proxy.auditRecords().find((r) => r.request_id === plain.headers['x-airlock-request-id']));
    expect(plainRecord).toMatchObject({ session: null, justification: null, task_id: null });
  });

  it('the official openai SDK works with a session token as its apiKey', async () => {
    const session = await mint(bot.token, { scopes: { openai: ['chat:write'] }, ttl_seconds: 120, justification: 'sdk test' });
    const client = new OpenAI({ baseURL: `${proxy.url}/openai/v1`, apiKey: session.session_token, maxRetries: 0 });
    const completion = await client.chat.completions.create({ model: 'gpt-test', messages: [{ role: 'user', content: 'ping' }] });
    expect(completion.choices[0]?.message.content).toBe('echo: ping');
    expect(openai.requests.at(-1)?.header('authorization')).toEqual([`Bearer ${openaiKey}`]);
    const error = await client.models.list().then(
      () => null,
      (e: unknown) => e,
    );
    expect(error).toBeInstanceOf(OpenAI.PermissionDeniedError);
    expect((error as InstanceType<typeof OpenAI.PermissionDeniedError>).message).toContain('does not include scope models:read');
    await keep(sendRequest(`${proxy.url}/_airlock/sessions/current`, { method: 'DELETE', headers: { authorization: `Bearer ${session.session_token}` } }));
    const ended = await client.chat.completions.create({ model: 'gpt-test', messages: [{ role: 'user', content: 'again' }] }).then(
      () => null,
      (e: unknown) => e,
    );
    expect(ended).toBeInstanceOf(OpenAI.AuthenticationError);
  });

  it('no session token (nor agent token, nor upstream key) reaches logs, audit or an upstream', async () => {
    expect(sessionTokens.length).toBeGreaterThan(15);
    await proxy.waitForAudit(1);
    const upstreamSeen = [...openai.requests, ...billing.requests].map((r) => `${r.target}\n${r.rawHeaders.join('\n')}\n${r.body.toString('utf8')}`).join('\n');
    assertNoLeak([...sessionTokens, bot.token, zsp.token, openaiKey, billingKey], [
      { name: 'log', text: proxy.logLines.join('') },
      { name: 'audit', text: proxy.auditText() },
    ]);
    assertNoLeak([...sessionTokens, bot.token, zsp.token], [{ name: 'upstream requests', text: upstreamSeen }]);
    assertNoLeak([openaiKey, billingKey], [{ name: 'agent responses', text: agentSeen.join('\n') }]);
  });
});

// Found by review: minting comes before any rate limit, and each session is kept (memory, state file or
// Redis) until it expires, so an agent could mint without bound.
describe('limits.max_sessions_per_agent', () => {
  const busy = generateAgentToken();
  const calm = generateAgentToken();
  const key = canary('sessions-cap');
  let upstream: Upstream;
  let proxy: ProxyFixture;
  const grant = { service: 'api', max_scope: ['*'], max_ttl: 600 };

  beforeAll(async () => {
    upstream = await startUpstream();
    proxy = await startProxy(
      {
        limits: { max_sessions_per_agent: 2 },
        services: { api: { upstream: upstream.url, credential: { secret: 'env:CAP_KEY' }, routes: [{ method: 'GET', path: '/v1/*', scope: 'api:read' }] } },
        agents: { busy: { tokens: [busy.hash], credentials: [grant] }, calm: { tokens: [calm.hash], credentials: [grant] } },
      },
      { env: { CAP_KEY: key } },
    );
  });

  afterAll(async () => {
    await proxy?.close();
    await upstream?.close();
  });

  const mint = (token: string): Promise<SentResponse> =>
    sendRequest(`${proxy.url}/_airlock/sessions`, {
      method: 'POST',
      headers: { authorization: `Bearer ${token}`, 'content-type': 'application/json' },
      body: JSON.stringify({ scopes: { api: ['api:read'] }, ttl_seconds: 300, justification: 'cap test' }),
    });

  it("refuses an agent's third live session with 429 until one ends; another agent is not affected", async () => {
    const first = await mint(busy.token);
    expect(first.status, first.text).toBe(201);
    expect((await mint(busy.token)).status).toBe(201);
    const refused = await mint(busy.token);
    expect(refused.status, refused.text).toBe(429);
    expect(refused.json<Problem>()).toMatchObject({ code: 'rate_limited' });
    expect(refused.json<Problem>().detail).toContain('Agent busy already holds 2 live sessions (limits.max_sessions_per_agent)');
    expect((await mint(calm.token)).status).toBe(201);
    const token = first.json<{ session_token: string }>().session_token;
    const ended = await sendRequest(`${proxy.url}/_airlock/sessions/current`, { method: 'DELETE', headers: { authorization: `Bearer ${token}` } });
    expect(ended.status).toBe(204);
    const again = await mint(busy.token);
    expect(again.status, again.text).toBe(201);
    assertNoLeak([key], [{ name: 'answers', text: [first, refused, again].map((r) => r.text).join('\n') }]);
  });
});
