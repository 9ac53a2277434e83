/**
 * An in-process OAuth 2.0 authorization server that implements the token endpoint for the client
 * credentials grant (RFC 6749 section 4.4) on 127.0.0.1, for tests of Airlock's OAuth2 credential source.
 *
 *   POST <tokenPath, default /token>
 *     Content-Type: application/x-www-form-urlencoded (charset parameter allowed)
 *     grant_type=client_credentials [&scope=a b] [&audience=...] [&any extra params]
 *     client authentication, exactly one of (RFC 6749 2.3.1):
 *       Authorization: Basic base64(form-urlencode(client_id) ":" form-urlencode(client_secret))
 *       client_id=...&client_secret=... in the body
 *   200 {"access_token","token_type":"Bearer","expires_in","scope"} with Cache-Control: no-store and
 *       Pragma: no-cache (RFC 6749 5.1); no refresh_token (4.4.3 says it SHOULD NOT be issued).
 *   Errors (RFC 6749 5.2), always JSON with Cache-Control: no-store:
 *     400 invalid_request          wrong method/content type, missing or repeated parameter, two auth methods
 *     400 unsupported_grant_type   grant_type other than client_credentials
 *     400 invalid_scope            a requested scope outside the client's allowed scopes
 *     400 invalid_grant            mode 'invalid_grant'
 *     401 invalid_client           unknown client, wrong secret, no authentication, or mode 'invalid_client';
 *                                  with `WWW-Authenticate: Basic realm="airlock-test-oauth2"`
 *     500 server_error             mode 'server_error' (not an RFC 6749 5.2 code; what real servers do on failure)
 *   Any other path is 404 {"error":"not_found"}.
 *
 * Modes: 'ok' | 'invalid_grant' | 'invalid_client' | 'invalid_scope' | 'server_error' answer as named
 * (after authentication and parsing, so requests are still recorded); 'down' destroys every connection as
 * soon as it is accepted (the port stays bound); 'slow' holds each answer `slowMs` (default 10 s) before
 * answering as in 'ok'. setDelay(ms) delays every answer in every mode.
 *
 * Nothing records a client secret: `tokenRequests` keeps the parsed parameters minus client_secret, and
 * the authentication method and client id. `issued` lists every access token handed out, for leak checks.
 */
import { once } from 'node:events';
import { createServer, type IncomingMessage, type ServerResponse } from 'node:http';
import type { AddressInfo, Socket } from 'node:net';
import { canary } from '../helpers/canary.js';

export type OAuth2Mode = 'ok' | 'invalid_grant' | 'invalid_client' | 'invalid_scope' | 'server_error' | 'down' | 'slow';

export interface OAuth2Client {
  readonly clientId: string;
  readonly clientSecret: string;
  /** Scopes the client may request; undefined allows any. */
  readonly allowedScopes?: readonly string[];
  /** Granted when the request names no scope; default: allowedScopes, else none. */
  readonly defaultScopes?: readonly string[];
}

export interface TokenRequestRecord {
  readonly seq: number;
  readonly at: number;
  readonly method: string;
  readonly path: string;
  readonly contentType: string | undefined;
  readonly authMethod: 'basic' | 'body' | 'both' | 'none';
  readonly clientId: string | undefined;
  readonly grantType: string | undefined;
  readonly scope: string | undefined;
  readonly audience: string | undefined;
  /** Every body parameter except client_secret (first value of each). */
  readonly params: Readonly<Record<string, string>>;
  /** Answered status; undefined while pending or when the connection died first. */
  readonly status: number | undefined;
  readonly error: string | undefined;
}

export interface IssuedGrant {
  readonly accessToken: string;
  readonly clientId: string;
  readonly scope: string;
  readonly expiresIn: number;
  /** ms since the epoch. */
  readonly issuedAt: number;
  readonly audience: string | undefined;
}

export interface TokenFactoryContext {
  readonly clientId: string;
  readonly scope: string;
  readonly audience: string | undefined;
  /** 1 for the first token this server issues. */
  readonly n: number;
}

export interface OAuth2ServerOptions {
  /** Registered clients; default none (add with addClient). */
  clients?: OAuth2Client[];
  /** Default "/token". */
  tokenPath?: string;
  /** Default 3600. */
  expiresIn?: number;
  /** Default canary("oauth2at"). */
  tokenFactory?: (context: TokenFactoryContext) => string;
  /** How long 'slow' mode holds an answer; default 10_000 ms. */
  slowMs?: number;
}

export interface OAuth2Server {
  /** http://127.0.0.1:PORT */
  readonly url: string;
  /** url + tokenPath */
  readonly tokenUrl: string;
  readonly port: number;
  readonly mode: OAuth2Mode;
  readonly tokenRequests: readonly TokenRequestRecord[];
  /** Every access token issued, in order. */
  readonly issued: readonly string[];
  readonly grants: readonly IssuedGrant[];
  /** Connections destroyed in 'down' mode. */
  readonly droppedConnections: number;
  /** Connections open now: a token request held in 'slow' mode keeps one until it is answered or its client goes away. */
  readonly openConnections: number;
  addClient(client: OAuth2Client): void;
  setMode(mode: OAuth2Mode): void;
  setExpiresIn(seconds: number): void;
  setDelay(ms: number): void;
  /** The grant for an issued, unexpired token (for a test's protected resource), else undefined. */
  validate(accessToken: string): IssuedGrant | undefined;
  resetObservations(): void;
  close(): Promise<void>;
}

const REALM = 'airlock-test-oauth2';
const MAX_BODY_BYTES = 64 * 1024;

class OAuthError extends Error {
  constructor(
    readonly status: number,
    readonly code: string,
    readonly description: string,
  ) {
    super(description);
  }
}

interface MutableTokenRecord {
  seq: number;
  at: number;
  method: string;
  path: string;
  contentType: string | undefined;
  authMethod: 'basic' | 'body' | 'both' | 'none';
  clientId: string | undefined;
  grantType: string | undefined;
  scope: string | undefined;
  audience: string | undefined;
  params: Record<string, string>;
  status: number | undefined;
  error: string | undefined;
}

/** application/x-www-form-urlencoded decoding of one component (RFC 6749 appendix B). */
function formDecode(value: string): string {
  return decodeURIComponent(value.replace(/\+/g, ' '));
}

/** Parses a form body keeping every value, so repeated parameters can be refused (RFC 6749 3.2). */
function parseForm(body: string): Map<string, string[]> {
  const out = new Map<string, string[]>();
  if (body === '') return out;
  for (const pair of body.split('&')) {
    if (pair === '') continue;
    const eq = pair.indexOf('=');
    let name: string;
    let value: string;
    try {
      name = formDecode(eq === -1 ? pair : pair.slice(0, eq));
      value = eq === -1 ? '' : formDecode(pair.slice(eq + 1));
    } catch {
      throw new OAuthError(400, 'invalid_request', 'malformed form encoding');
    }
    const list = out.get(name) ?? [];
    list.push(value);
    out.set(name, list);
  }
  return out;
}

export async function startOAuth2Server(options: OAuth2ServerOptions = {}): Promise<OAuth2Server> {
  const tokenPath = options.tokenPath ?? '/token';
  const slowMs = options.slowMs ?? 10_000;
  const tokenFactory = options.tokenFactory ?? (() => canary('oauth2at'));
  const clients = new Map<string, OAuth2Client>();
  for (const client of options.clients ?? []) clients.set(client.clientId, client);

  let mode: OAuth2Mode = 'ok';
  let expiresIn = options.expiresIn ?? 3600;
  let delayMs = 0;
  let closed = false;
  let dropped = 0;
  let seq = 0;
  const records: MutableTokenRecord[] = [];
  const issued: string[] = [];
  const grants: IssuedGrant[] = [];
  const sockets = new Set<Socket>();
  const sleepers = new Set<{ timer: NodeJS.Timeout; resolve: () => void }>();

  function sleep(ms: number): Promise<void> {
    return new Promise((resolve) => {
      const entry = {
        timer: setTimeout(() => {
          sleepers.delete(entry);
          resolve();
        }, ms),
        resolve,
      };
      sleepers.add(entry);
    });
  }

  function send(res: ServerResponse, status: number, body: unknown, extraHeaders: Record<string, string> = {}): void {
    if (res.destroyed || res.writableEnded) return;
    const text = JSON.stringify(body);
    res.writeHead(status, {
      'content-type': 'application/json;charset=UTF-8',
      'cache-control': 'no-store',
      pragma: 'no-cache',
      'content-length': Buffer.byteLength(text),
      ...extraHeaders,
    });
    res.end(text);
  }

  function single(form: Map<string, string[]>, name: string): string | undefined {
    const values = form.get(name);
    if (values === undefined) return undefined;
    if (values.length > 1) throw new OAuthError(400, 'invalid_request', `parameter ${name} repeated`);
    return values[0];
  }

  /** Runs the token endpoint; returns the success body or throws an OAuthError. Fills the record as it learns. */
  function tokenEndpoint(req: IncomingMessage, rawBody: string, record: MutableTokenRecord): Record<string, unknown> {
    if (record.method !== 'POST') throw new OAuthError(405, 'invalid_request', 'the token endpoint accepts POST only');
    const mediaType = (record.contentType ?? '').split(';')[0]?.trim().toLowerCase();
    if (mediaType !== 'application/x-www-form-urlencoded') {
      throw new OAuthError(400, 'invalid_request', 'body must be application/x-www-form-urlencoded');
    }
    const form = parseForm(rawBody);
    for (const [name, values] of form) if (name !== 'client_secret') record.params[name] = values[0] ?? '';

    // Client authentication (RFC 6749 2.3.1): Basic header or body parameters, never both.
    let basic: { id: string; secret: string } | undefined;
    const authorization = req.headers['authorization'];
    let attemptedBasic = false;
    if (typeof authorization === 'string' && /^Basic\s/i.test(authorization)) {
      attemptedBasic = true;
      const decoded = Buffer.from(authorization.slice(6).trim(), 'base64').toString('utf8');
      const colon = decoded.indexOf(':');
      if (colon !== -1) {
        try {
          basic = { id: formDecode(decoded.slice(0, colon)), secret: formDecode(decoded.slice(colon + 1)) };
        } catch {
          basic = undefined;
        }
      }
    }
    const bodyId = single(form, 'client_id');
    const bodySecret = single(form, 'client_secret');
    const usedBody = bodySecret !== undefined;
    record.authMethod = attemptedBasic && usedBody ? 'both' : attemptedBasic ? 'basic' : usedBody ? 'body' : 'none';
    record.clientId = basic?.id ?? bodyId;
    const grantType = single(form, 'grant_type');
    const scopeParam = single(form, 'scope');
    const audience = single(form, 'audience');
    record.grantType = grantType;
    record.scope = scopeParam;
    record.audience = audience;

    const invalidClient = (why: string): OAuthError => new OAuthError(401, 'invalid_client', why);
    if (record.authMethod === 'both') throw new OAuthError(400, 'invalid_request', 'more than one client authentication method');
    if (grantType === undefined || grantType === '') throw new OAuthError(400, 'invalid_request', 'missing grant_type');
    let clientId: string;
    let secret: string;
    if (attemptedBasic) {
      if (basic === undefined) throw invalidClient('malformed Basic credentials');
      if (bodyId !== undefined && bodyId !== basic.id) throw new OAuthError(400, 'invalid_request', 'client_id does not match the authenticated client');
      clientId = basic.id;
      secret = basic.secret;
    } else if (usedBody) {
      if (bodyId === undefined || bodyId === '') throw new OAuthError(400, 'invalid_request', 'missing client_id');
      clientId = bodyId;
      secret = bodySecret;
    } else {
      throw invalidClient('client authentication required');
    }
    const client = clients.get(clientId);
    if (client === undefined || client.clientSecret !== secret) throw invalidClient('client authentication failed');
    if (mode === 'invalid_client') throw invalidClient('client authentication failed');
    if (grantType !== 'client_credentials') throw new OAuthError(400, 'unsupported_grant_type', `grant_type ${grantType} is not supported`);

    const requested = (scopeParam ?? '').split(' ').filter((s) => s !== '');
    if (client.allowedScopes !== undefined && requested.some((s) => !client.allowedScopes?.includes(s))) {
      throw new OAuthError(400, 'invalid_scope', 'requested scope exceeds what the client may have');
    }
    if (mode === 'invalid_scope') throw new OAuthError(400, 'invalid_scope', 'requested scope is invalid');
    if (mode === 'invalid_grant') throw new OAuthError(400, 'invalid_grant', 'the grant is invalid or was revoked');
    if (mode === 'server_error') throw new OAuthError(500, 'server_error', 'the authorization server failed');

    const granted = requested.length > 0 ? requested : [...(client.defaultScopes ?? client.allowedScopes ?? [])];
    const scope = granted.join(' ');
    const accessToken = tokenFactory({ clientId, scope, audience, n: issued.length + 1 });
    issued.push(accessToken);
    grants.push({ accessToken, clientId, scope, expiresIn, issuedAt: Date.now(), audience });
    const body: Record<string, unknown> = { access_token: accessToken, token_type: 'Bearer', expires_in: expiresIn };
    if (scope !== '') body['scope'] = scope;
    return body;
  }

  async function onRequest(req: IncomingMessage, res: ServerResponse): Promise<void> {
    const chunks: Buffer[] = [];
    let size = 0;
    for await (const chunk of req as AsyncIterable<Buffer>) {
      size += chunk.length;
      if (size <= MAX_BODY_BYTES) chunks.push(chunk);
    }
    const method = (req.method ?? 'GET').toUpperCase();
    const path = new URL(req.url ?? '/', 'http://oauth.invalid').pathname;
    if (path !== tokenPath) {
      send(res, 404, { error: 'not_found' });
      return;
    }
    const contentType = req.headers['content-type'];
    const record: MutableTokenRecord = {
      seq: ++seq,
      at: Date.now(),
      method,
      path,
      contentType,
      authMethod: 'none',
      clientId: undefined,
      grantType: undefined,
      scope: undefined,
      audience: undefined,
      params: {},
      status: undefined,
      error: undefined,
    };
    records.push(record);
    const modeAtArrival = mode;
    if (delayMs > 0) await sleep(delayMs);
    if (modeAtArrival === 'slow') await sleep(slowMs);
    if (closed) return;

    let status: number;
    let body: Record<string, unknown>;
    const headers: Record<string, string> = {};
    try {
      if (size > MAX_BODY_BYTES) throw new OAuthError(413, 'invalid_request', 'body too large');
      body = tokenEndpoint(req, Buffer.concat(chunks).toString('utf8'), record);
      status = 200;
    } catch (error: unknown) {
      if (!(error instanceof OAuthError)) throw error;
      status = error.status;
      body = { error: error.code, error_description: error.description };
      record.error = error.code;
      if (status === 401) headers['www-authenticate'] = `Basic realm="${REALM}", charset="UTF-8"`;
      if (status === 405) headers['allow'] = 'POST';
    }
    record.status = status;
    send(res, status, body, headers);
  }

  const server = createServer((req, res) => {
    onRequest(req, res).catch((error: unknown) => res.destroy(error as Error));
  });
  server.on('connection', (socket: Socket) => {
    if (mode === 'down' || closed) {
      dropped += 1;
      socket.destroy();
      return;
    }
    sockets.add(socket);
    socket.on('close', () => sockets.delete(socket));
  });
  server.on('clientError', (_error, socket) => socket.destroy());
  server.listen(0, '127.0.0.1');
  await once(server, 'listening');
  const port = (server.address() as AddressInfo).port;
  const url = `http://127.0.0.1:${port}`;

  return {
    url,
    tokenUrl: `${url}${tokenPath}`,
    port,
    get mode(): OAuth2Mode {
      return mode;
    },
    get tokenRequests(): readonly TokenRequestRecord[] {
      return records;
    },
    get issued(): readonly string[] {
      return issued;
    },
    get grants(): readonly IssuedGrant[] {
      return grants;
    },
    get droppedConnections(): number {
      return dropped;
    },
    get openConnections(): number {
      return sockets.size;
    },
    addClient(client) {
      clients.set(client.clientId, client);
    },
    setMode(next) {
      mode = next;
      if (next === 'down') for (const socket of sockets) socket.destroy();
    },
    setExpiresIn(seconds) {
      expiresIn = seconds;
    },
    setDelay(ms) {
      delayMs = Math.max(0, ms);
    },
    validate(accessToken) {
      const grant = grants.find((g) => g.accessToken === accessToken);
      if (grant === undefined || Date.now() >= grant.issuedAt + grant.expiresIn * 1000) return undefined;
      return grant;
    },
    resetObservations() {
      records.length = 0;
      dropped = 0;
    },
    async close() {
      if (closed) return;
      closed = true;
      for (const sleeper of sleepers) {
        clearTimeout(sleeper.timer);
        sleeper.resolve();
      }
      sleepers.clear();
      await new Promise<void>((resolve) => {
        server.close(() => resolve());
        for (const socket of sockets) socket.destroy();
        server.closeAllConnections();
      });
    },
  };
}
