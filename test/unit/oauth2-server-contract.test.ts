/**
 * The OAuth2 stand-in (test/support/oauth2-server.ts) implements the client credentials grant of RFC 6749
 * (section 4.4) the way the RFC says: form-encoded POST to the token endpoint, client authentication by
 * HTTP Basic with form-urlencoded id and secret (2.3.1) or by body parameters, a Bearer token response
 * with Cache-Control: no-store (5.1), and the error codes and statuses of 5.2. Driven with undici over
 * real sockets on 127.0.0.1; every request carries undici timeouts so nothing hangs.
 */
import { Agent, request } from 'undici';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { canary } from '../helpers/canary.js';
import { startOAuth2Server, type OAuth2Server, type OAuth2ServerOptions } from '../support/oauth2-server.js';

/** application/x-www-form-urlencoded encoding of one component (RFC 6749 appendix B). */
function formEncode(value: string): string {
  return encodeURIComponent(value).replace(/%20/g, '+');
}

function basic(clientId: string, secret: string): string {
  return `Basic ${Buffer.from(`${formEncode(clientId)}:${formEncode(secret)}`, 'utf8').toString('base64')}`;
}

function form(params: Array<[string, string]> | Record<string, string>): string {
  const pairs = Array.isArray(params) ? params : Object.entries(params);
  return pairs.map(([k, v]) => `${formEncode(k)}=${formEncode(v)}`).join('&');
}

interface TokenReply {
  status: number;
  headers: Record<string, string | string[] | undefined>;
  json: Record<string, unknown>;
}

let server: OAuth2Server;
let agent: Agent;
let clientId: string;
let clientSecret: string;

async function post(
  body: string,
  headers: Record<string, string> = {},
  opts: { method?: 'POST' | 'GET' | 'PUT'; headersTimeout?: number; contentType?: string | null } = {},
): Promise<TokenReply> {
  const allHeaders: Record<string, string> = { ...headers };
  if (opts.contentType !== null) allHeaders['content-type'] = opts.contentType ?? 'application/x-www-form-urlencoded';
  const res = await request(server.tokenUrl, {
    method: opts.method ?? 'POST',
    headers: allHeaders,
    ...(opts.method === 'GET' ? {} : { body }),
    dispatcher: agent,
    headersTimeout: opts.headersTimeout ?? 5_000,
    bodyTimeout: 5_000,
  });
  const text = await res.body.text();
  return { status: res.statusCode, headers: res.headers, json: JSON.parse(text) as Record<string, unknown> };
}

async function restart(options: OAuth2ServerOptions): Promise<void> {
  await server.close();
  server = await startOAuth2Server(options);
}

beforeEach(async () => {
  clientId = `airlock-${canary('clientid').slice(-8)}`;
  // Characters that Basic's form-urlencoding must carry: space, plus, colon, percent, slash, non-ASCII.
  clientSecret = `${canary('clientsecret')} +:%/é`;
  server = await startOAuth2Server({ clients: [{ clientId, clientSecret, allowedScopes: ['read', 'write'], defaultScopes: ['read'] }] });
  agent = new Agent({ connect: { timeout: 2_000 } });
});

afterEach(async () => {
  await agent.destroy();
  await server.close();
});

describe('client credentials grant (RFC 6749 4.4)', () => {
  it('issues a Bearer token to a client authenticated with HTTP Basic (2.3.1 form-urlencoded id and secret)', async () => {
    const reply = await post(form({ grant_type: 'client_credentials', scope: 'read write' }), { authorization: basic(clientId, clientSecret) });
    expect(reply.status).toBe(200);
    expect(reply.headers['content-type']).toMatch(/^application\/json/);
    expect(reply.headers['cache-control']).toBe('no-store');
    expect(reply.headers['pragma']).toBe('no-cache');
    expect(reply.json).toEqual({ access_token: server.issued[0], token_type: 'Bearer', expires_in: 3600, scope: 'read write' });
    expect(reply.json).not.toHaveProperty('refresh_token');
    expect(server.tokenRequests).toHaveLength(1);
    expect(server.tokenRequests[0]).toMatchObject({
      authMethod: 'basic',
      clientId,
      grantType: 'client_credentials',
      scope: 'read write',
      params: { grant_type: 'client_credentials', scope: 'read write' },
      status: 200,
    });
    expect(server.validate(reply.json['access_token'] as string)).toMatchObject({ clientId, scope: 'read write' });
  });

  it('issues a token to a client authenticated by client_id/client_secret body parameters, a fresh one each time', async () => {
    const body = form({ grant_type: 'client_credentials', client_id: clientId, client_secret: clientSecret, audience: 'https://api.example.test', resource: 'tenant-7' });
    const first = await post(body);
    const second = await post(body);
    expect(first.status).toBe(200);
    expect(second.status).toBe(200);
    expect(first.json['access_token']).not.toBe(second.json['access_token']);
    expect(first.json['scope']).toBe('read'); // the client's default scope when none is requested
    expect(server.issued).toEqual([first.json['access_token'], second.json['access_token']]);
    expect(server.tokenRequests[0]).toMatchObject({
      authMethod: 'body',
      clientId,
      audience: 'https://api.example.test',
      params: { grant_type: 'client_credentials', client_id: clientId, audience: 'https://api.example.test', resource: 'tenant-7' },
    });
    // No record holds the client secret.
    expect(server.tokenRequests[0]?.params).not.toHaveProperty('client_secret');
    expect(JSON.stringify(server.tokenRequests)).not.toContain(clientSecret.slice(0, 30));
  });

  it('uses the token factory the test passes, and setExpiresIn', async () => {
    const made: string[] = [];
    await restart({
      clients: [{ clientId, clientSecret }],
      tokenFactory: ({ n, clientId: id }) => {
        const token = `${canary('oauthat')}-${n}`;
        made.push(token);
        expect(id).toBe(clientId);
        return token;
      },
    });
    server.setExpiresIn(60);
    const reply = await post(form({ grant_type: 'client_credentials' }), { authorization: basic(clientId, clientSecret) });
    expect(reply.json).toEqual({ access_token: made[0], token_type: 'Bearer', expires_in: 60 });
    expect(made[0]).toMatch(/-1$/);
  });
});

describe('errors (RFC 6749 5.2)', () => {
  it('401 invalid_client with WWW-Authenticate: Basic for a wrong secret, an unknown client, or no authentication', async () => {
    const attempts: Array<Record<string, string>> = [
      { authorization: basic(clientId, canary('wrongsecret')) },
      { authorization: basic(canary('nobody'), clientSecret) },
      {},
    ];
    for (const headers of attempts) {
      const reply = await post(form({ grant_type: 'client_credentials' }), headers);
      expect(reply.status).toBe(401);
      expect(reply.json['error']).toBe('invalid_client');
      expect(reply.headers['www-authenticate']).toMatch(/^Basic realm="/);
      expect(reply.headers['cache-control']).toBe('no-store');
    }
    const wrongBody = await post(form({ grant_type: 'client_credentials', client_id: clientId, client_secret: canary('wrongsecret') }));
    expect(wrongBody.status).toBe(401);
    expect(wrongBody.json['error']).toBe('invalid_client');
    expect(server.issued).toEqual([]);
  });

  it('400 invalid_request for a missing grant_type, a repeated parameter, two authentication methods, or a JSON body', async () => {
    const auth = { authorization: basic(clientId, clientSecret) };
    const cases: Array<Promise<TokenReply>> = [
      post(form({ scope: 'read' }), auth),
      post(form([['grant_type', 'client_credentials'], ['scope', 'read'], ['scope', 'write']]), auth),
      post(form({ grant_type: 'client_credentials', client_id: clientId, client_secret: clientSecret }), auth),
      post(JSON.stringify({ grant_type: 'client_credentials' }), auth, { contentType: 'application/json' }),
    ];
    for (const reply of await Promise.all(cases)) {
      expect(reply.status).toBe(400);
      expect(reply.json['error']).toBe('invalid_request');
    }
    const get = await post('', auth, { method: 'GET' });
    expect(get.status).toBe(405);
    expect(get.json['error']).toBe('invalid_request');
  });

  it('400 unsupported_grant_type for another grant, 400 invalid_scope for a scope the client may not have', async () => {
    const auth = { authorization: basic(clientId, clientSecret) };
    const password = await post(form({ grant_type: 'password', username: 'u', password: canary('userpw') }), auth);
    expect(password.status).toBe(400);
    expect(password.json['error']).toBe('unsupported_grant_type');
    expect(server.tokenRequests[0]?.params).toMatchObject({ grant_type: 'password' });
    const scope = await post(form({ grant_type: 'client_credentials', scope: 'read admin' }), auth);
    expect(scope.status).toBe(400);
    expect(scope.json['error']).toBe('invalid_scope');
  });

  it('answers each error mode as named, and recovers with setMode("ok")', async () => {
    const auth = { authorization: basic(clientId, clientSecret) };
    const body = form({ grant_type: 'client_credentials' });
    const expected = [
      ['invalid_grant', 400, 'invalid_grant'],
      ['invalid_client', 401, 'invalid_client'],
      ['invalid_scope', 400, 'invalid_scope'],
      ['server_error', 500, 'server_error'],
    ] as const;
    for (const [mode, status, error] of expected) {
      server.setMode(mode);
      const reply = await post(body, auth);
      expect(reply.status, mode).toBe(status);
      expect(reply.json['error'], mode).toBe(error);
      expect(reply.json).not.toHaveProperty('access_token');
    }
    expect(server.issued).toEqual([]);
    server.setMode('ok');
    expect((await post(body, auth)).status).toBe(200);
    expect(server.tokenRequests.map((r) => r.status)).toEqual([400, 401, 400, 500, 200]);
  });
});

describe('faults', () => {
  it("'down' destroys every connection; 'ok' serves again", async () => {
    const auth = { authorization: basic(clientId, clientSecret) };
    const body = form({ grant_type: 'client_credentials' });
    await post(body, auth); // leaves a keep-alive connection open, which 'down' must kill too
    server.setMode('down');
    for (let i = 0; i < 2; i++) {
      const error: unknown = await post(body, auth).then(
        () => undefined,
        (caught: unknown) => caught,
      );
      expect(error).toBeInstanceOf(Error);
      expect(['UND_ERR_SOCKET', 'ECONNRESET', 'EPIPE']).toContain((error as { code?: string }).code);
    }
    expect(server.droppedConnections).toBeGreaterThan(0);
    expect(server.tokenRequests).toHaveLength(1);
    server.setMode('ok');
    expect((await post(body, auth)).status).toBe(200);
  });

  it("'slow' holds the answer past a client's headers timeout; setDelay delays every answer", async () => {
    await restart({ clients: [{ clientId, clientSecret }], slowMs: 10_000 }); // close() cuts it short
    const auth = { authorization: basic(clientId, clientSecret) };
    const body = form({ grant_type: 'client_credentials' });
    server.setMode('slow');
    const error: unknown = await post(body, auth, { headersTimeout: 150 }).then(
      () => undefined,
      (caught: unknown) => caught,
    );
    expect((error as { code?: string }).code).toBe('UND_ERR_HEADERS_TIMEOUT');
    expect(server.tokenRequests).toHaveLength(1);

    server.setMode('ok');
    server.setDelay(300);
    const started = Date.now();
    const reply = await post(body, auth);
    expect(reply.status).toBe(200);
    expect(Date.now() - started).toBeGreaterThanOrEqual(280);
  });
});
