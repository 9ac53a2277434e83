/**
 * Writing an AirlockError to the agent as RFC 9457 problem+json, on a response object or, for
 * connections node refuses to parse (and CONNECT), straight onto the socket.
 *
 * The body passes the secret catalogue's scrub, as every other output does: some details quote what
 * the caller sent (an Expect or Transfer-Encoding value, a reserved path, an admin target), and some
 * quote what an admin wrote (a revocation's reason), which need not be clear of every value the
 * catalogue knows.
 */
import type { IncomingMessage, ServerResponse } from 'node:http';
import { STATUS_CODES } from 'node:http';
import type { Socket } from 'node:net';
import type { Duplex } from 'node:stream';
import { AirlockError, problemBody, retryHelps } from '../errors.js';
import { REQUEST_ID_HEADER } from '../upstream/relay-headers.js';

/** RFC 9457's media type, with a charset. */
export const PROBLEM_CONTENT_TYPE = 'application/problem+json; charset=utf-8';
const JSON_CONTENT_TYPE = 'application/json; charset=utf-8';

/**
 * The problem's media type for a client's Accept (RFC 9110 12.5.1): problem+json unless the client
 * names the types it takes and none covers it (`application/problem+json`, `application/*`, `*` + `/*`),
 * as octokit's `application/vnd.github.v3+json` does; such a client gets the same body as
 * application/json. Found by the SDK walkthrough: @octokit/request parses only application/json, so
 * an Airlock refusal reached octokit's error as a string, its message the whole JSON document.
 */
function problemContentType(accept: string | undefined): string {
  if (accept === undefined || accept === '' || accept.includes('*/*') || accept.includes('application/*') || accept.includes('application/problem+json')) return PROBLEM_CONTENT_TYPE;
  return JSON_CONTENT_TYPE;
}

/**
 * Airlock's request id under the header names provider SDKs read (sendProblem): openai x-request-id,
 * anthropic and stripe request-id, octokit x-github-request-id (its log line said "with id UNKNOWN").
 */
function sdkRequestIdHeaders(requestId: string): Record<string, string> {
  return { 'x-request-id': requestId, 'request-id': requestId, 'x-github-request-id': requestId };
}

/** The problem's JSON, scrubbed; with its detail withheld when the scrub fails (never sent unchecked). */
function problemText(error: AirlockError, requestId: string, scrub: (text: string) => string): string {
  try {
    return scrub(JSON.stringify(problemBody(error, requestId)));
  } catch {
    return JSON.stringify(problemBody(new AirlockError(error.code, 'The detail of this error was withheld: it could not be checked for secrets.'), requestId));
  }
}

export function sendProblem(res: ServerResponse, error: AirlockError, requestId: string, closeConnection: boolean, scrub: (text: string) => string): void {
  if (res.headersSent || res.destroyed) {
    res.destroy();
    return;
  }
  const problem = problemText(error, requestId, scrub);
  // One `error` event, which the openai and anthropic SDKs' stream readers raise as an APIError
  // carrying the problem (found by the SDK walkthrough: a streaming call answered 202 iterated no
  // chunk and ended as if the model had said nothing).
  const body = error.eventStream ? `event: error\ndata: ${problem}\n\n` : problem;
  const headers: Record<string, string | number> = {
    'content-type': error.eventStream ? 'text/event-stream; charset=utf-8' : problemContentType((res as ServerResponse & { req?: IncomingMessage }).req?.headers.accept),
    'content-length': Buffer.byteLength(body),
    'cache-control': 'no-store',
    [REQUEST_ID_HEADER]: requestId,
    // Also under the names the provider SDKs read into their errors' requestID (openai: x-request-id;
    // anthropic, stripe: request-id): found by an SDK walkthrough, Airlock's own refusals left it null, and
    // the id that finds the audit record and log line was only in a header the agent's code never reads.
    // On answers relayed from the upstream these are the provider's own, passed on as they came.
    ...sdkRequestIdHeaders(requestId),
    ...error.headers,
  };
  // stripe-node reads its own header only (found by the SDK walkthrough: a revoked service's 503 was
  // sent three times by one balance.retrieve()).
  if (!retryHelps(error.code)) {
    headers['x-should-retry'] = 'false';
    headers['stripe-should-retry'] = 'false';
  }
  if (closeConnection) headers['connection'] = 'close';
  res.writeHead(error.status, headers);
  res.end(body);
}

/** A refused request's body is read and thrown away up to this many bytes, and for this long (answerRefusal). */
// 64 MiB: above the uploads the providers take in one request (OpenAI's 25 MB audio, Anthropic's 32 MB
// requests), so a refused one of those gets its answer rather than a reset (found by review: 17 MiB read
// as a connection error, and the SDK sent it twice more); on loopback or a LAN that is well within DRAIN_MAX_MS.
const DRAIN_MAX_BYTES = 64 * 1024 * 1024;
const DRAIN_MAX_MS = 10_000;

/**
 * Answers a refused request whose body may still be arriving (refused on its headers, or part-way).
 * Closing at once, as before, reset the connection under a client still writing, and node's HTTP
 * clients (the SDKs' fetch) then reported a connection error (EPIPE), never the answer: found by
 * review, a denied `files.create` read as APIConnectionError 16 times in 16, and each retry counted as
 * one more denial. So the rest is read and thrown away, as nginx's lingering close does, and the
 * connection kept for the next request; past DRAIN_MAX_BYTES (or a Content-Length saying so) or
 * DRAIN_MAX_MS it is closed. A client that asked for 100-continue and got none sends no body: its
 * connection is closed, as its next request would otherwise be read as this one's body.
 *
 * A connection that closes after this answer (the client sent `Connection: close`, as Python's urllib
 * does on every request, or spoke HTTP/1.0 without keep-alive) is closed the way nginx's lingering
 * close does it: node would close the socket outright once the answer is written, the unread body made
 * the kernel send a reset, and the client, still writing, saw a broken pipe instead of the answer (found
 * by review: urllib's `urlopen` raised URLError EPIPE for every denied upload, never HTTPError 401). So
 * only the sending side is closed after the answer (a FIN: the client reads the answer, and one that
 * waits for it before sending its body is answered at once), the rest of the body is read and thrown
 * away within the same bounds, and then the socket is closed.
 */
export function answerRefusal(req: IncomingMessage, res: ServerResponse, error: AirlockError, requestId: string, scrub: (text: string) => string): void {
  const closing = closesAfterAnswer(req);
  if (req.complete || error.headers['connection'] === 'close' || !drainable(req, closing)) {
    sendProblem(res, error, requestId, !req.complete, scrub);
    return;
  }
  if (closing) lingerAfterAnswer(req.socket);
  sendProblem(res, error, requestId, closing, scrub);
  drainBody(req, closing);
}

/**
 * node ends a response that closes its connection with `socket.destroySoon()` (node's _http_server.js
 * resOnFinish): the write side ends, then the socket is destroyed. Here only the write side ends;
 * drainBody destroys it once the body is read or a bound passes.
 */
function lingerAfterAnswer(socket: Socket): void {
  (socket as Socket & { destroySoon?: () => void }).destroySoon = function closeWriteSideOnly() {
    socket.end();
  };
}

/** Whether node closes the connection after this request's answer (RFC 9112 9.3: `close`, or HTTP/1.0 without `keep-alive`). */
function closesAfterAnswer(req: IncomingMessage): boolean {
  const tokens = (req.headers.connection ?? '').toLowerCase().split(',').map((token) => token.trim());
  if (tokens.includes('close')) return true;
  return req.httpVersion !== '1.1' && !tokens.includes('keep-alive');
}

/**
 * Only a Content-Length body: a body framed by Transfer-Encoding may be refused because its framing is
 * faulty (HTTP/1.0 with it, RFC 9112 6.1; a coding other than chunked), and what follows node's idea of
 * its end would be read as a next request (found by review: a smuggled request forwarded). A kept
 * connection is HTTP/1.1 only; one that closes after the answer has no next request to misread.
 */
function drainable(req: IncomingMessage, closing: boolean): boolean {
  if (req.destroyed || req.headers.expect !== undefined || req.headers['transfer-encoding'] !== undefined) return false;
  if (!closing && req.httpVersion !== '1.1') return false;
  const declared = Number(req.headers['content-length'] ?? NaN);
  return !(declared > DRAIN_MAX_BYTES);
}

/** Marks a socket whose request was answered and whose body is being read and thrown away. */
const DRAINING = Symbol('airlock.drainingRefusedBody');

/**
 * True while a refused request's body is drained: node may then report the request as timed out
 * (limits.request_timeout) or malformed, and the listener must close the connection rather than answer
 * a second time (found by review: a 408 followed the 401, with a second audit record).
 */
export function drainingRefusedBody(socket: Duplex): boolean {
  // The request itself, not a flag: node marks it complete as it parses the packet, a tick before its
  // 'end', and a malformed request right behind it in the same packet is owed its 400 (found by review).
  const drained = (socket as { [DRAINING]?: IncomingMessage })[DRAINING];
  return drained !== undefined && !drained.complete;
}

/**
 * Reads the rest of a refused request's body and throws it away, after its answer. Past a bound the
 * connection is closed; a `closing` one is closed once the body has ended too.
 */
function drainBody(req: IncomingMessage, closing: boolean): void {
  // From whatever read it (the body guard undici was reading): the bytes go nowhere now.
  req.unpipe();
  const socket = req.socket;
  (socket as { [DRAINING]?: IncomingMessage })[DRAINING] = req;
  let read = 0;
  const deadline = setTimeout(() => socket.destroy(), DRAIN_MAX_MS);
  deadline.unref();
  req.on('data', function discardRefusedBody(chunk: Buffer) {
    read += chunk.length;
    if (read > DRAIN_MAX_BYTES) socket.destroy();
  });
  req.once('close', () => clearTimeout(deadline));
  req.once('end', () => {
    if ((socket as { [DRAINING]?: IncomingMessage })[DRAINING] === req) delete (socket as { [DRAINING]?: IncomingMessage })[DRAINING];
    // Once the answer has left: the body can end in the same turn as the answer was written.
    if (closing) {
      if (socket.writableFinished) socket.destroy();
      else socket.once('finish', () => socket.destroy());
    }
  });
  req.resume();
}

/** How long a refused socket may take to read its answer before it is destroyed. */
const RAW_ANSWER_GRACE_MS = 1000;

/**
 * Answers on a socket node's HTTP server no longer manages (a parse failure, CONNECT, an Upgrade, a
 * request timed out) and closes it. `end` alone only half-closes: found by review, a client that read
 * the answer and never closed its side held the socket (and a file descriptor) for good, since none of
 * the server's timeouts applies any more, and a single such socket kept shutdown waiting.
 */
export function sendRawProblem(socket: Duplex, error: AirlockError, requestId: string, scrub: (text: string) => string): void {
  socket.end(rawProblemResponse(error, requestId, scrub));
  const timer = setTimeout(() => socket.destroy(), RAW_ANSWER_GRACE_MS);
  timer.unref();
  socket.once('close', () => clearTimeout(timer));
}

/** A complete HTTP/1.1 response for a socket without a parsed request; the connection is closed after. */
function rawProblemResponse(error: AirlockError, requestId: string, scrub: (text: string) => string): string {
  const body = problemText(error, requestId, scrub);
  const extra = Object.entries(error.headers).map(([name, value]) => `${name}: ${value}\r\n`).join('');
  return (
    `HTTP/1.1 ${error.status} ${STATUS_CODES[error.status] ?? ''}\r\n` +
    `content-type: ${PROBLEM_CONTENT_TYPE}\r\n` +
    `content-length: ${Buffer.byteLength(body)}\r\n` +
    `cache-control: no-store\r\n` +
    `${REQUEST_ID_HEADER}: ${requestId}\r\n` +
    Object.entries(sdkRequestIdHeaders(requestId))
      .map(([name, value]) => `${name}: ${value}\r\n`)
      .join('') +
    extra +
    'connection: close\r\n\r\n' +
    body
  );
}
