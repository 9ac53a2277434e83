/**
 * An agent-facing HTTP/1.1 listener (node:http) with the limits that keep one client from hurting the
 * others: bounded header bytes (431), header count checked by the pipeline instead of node's silent
 * truncation, a deadline for the headers and for the whole request (slowloris), idle keep-alive
 * timeout. Parse failures, CONNECT and Upgrade are answered on the raw socket by the pipeline's
 * refusal handler.
 */
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import { createServer as createHttpsServer } from 'node:https';
import type { Socket } from 'node:net';
import type { Duplex } from 'node:stream';
import type { LimitsSpec } from '../config/schema.js';
import type { DeepReadonly } from '../config/types.js';
import { AirlockError, OperatorReason } from '../errors.js';
import { TOKEN_IN_TEXT } from '../identity/agent-token.js';
import { drainingRefusedBody } from '../pipeline/send-problem.js';
import { holdContinue } from './expect-continue.js';
import type { TlsIdentity } from './tls-identity.js';

export interface ListenerHandlers {
  onRequest: (req: IncomingMessage, res: ServerResponse) => void;
  onRefusal: (socket: Duplex, failure: AirlockError, method: string | null) => void;
  /** A TLS handshake that failed (tls), by tlsFailureReason. */
  onTlsFailure?: (reason: TlsFailureReason) => void;
  /** The reference of a managed credential whose value the text holds, or null (a plain-HTTP request's head, tls). */
  heldSecret?: (text: string) => string | null;
}

export type TlsFailureReason = 'version' | 'certificate' | 'cipher' | 'timeout' | 'reset' | 'other';

/** What OpenSSL's error code (as node names it) says went wrong with a handshake. */
function tlsFailureReason(error: NodeJS.ErrnoException): TlsFailureReason {
  const code = error.code ?? '';
  if (code === 'ERR_TLS_HANDSHAKE_TIMEOUT') return 'timeout';
  // node's TLS client (the SDKs') closes without an alert when it does not trust the certificate.
  if (code === 'ECONNRESET') return 'reset';
  if (/PROTOCOL|VERSION/.test(code)) return 'version';
  if (/CERTIFICATE|UNKNOWN_CA|BAD_CERT/.test(code)) return 'certificate';
  if (/CIPHER/.test(code)) return 'cipher';
  return 'other';
}

/** Which settings bound a listener's headers and deadlines, for the messages of its refusals. */
export interface ListenerBounds {
  readonly headerBytes: string;
  readonly deadlines: string;
}

const AGENT_LISTENER_BOUNDS: ListenerBounds = { headerBytes: 'limits.max_header_bytes', deadlines: 'limits.headers_timeout / limits.request_timeout' };

function parseFailure(error: NodeJS.ErrnoException, bounds: ListenerBounds): AirlockError {
  switch (error.code) {
    case 'HPE_HEADER_OVERFLOW':
      return new AirlockError('headers_too_large', `The request headers are larger than the limit (${bounds.headerBytes}).`);
    case 'HPE_INVALID_EOF_STATE':
      // The client half-closed its side mid-request; the answer can still reach it.
      return new AirlockError('invalid_request', 'The connection ended before the request was complete (a body shorter than its Content-Length, or a request cut off); it was refused.');
    case 'HPE_INVALID_METHOD':
      // Found by a README walkthrough: TRACK was told its framing or a header was malformed.
      return new AirlockError('invalid_request', "The request method is not one Airlock's HTTP parser accepts (TRACK, a misspelt or lower-case method); methods are case-sensitive, such as GET or POST. It was refused.");
    case 'ERR_HTTP_REQUEST_TIMEOUT':
      return new AirlockError('request_timeout', `The request was not received in time (${bounds.deadlines}).`);
    default:
      return new AirlockError('invalid_request', 'The request is not valid HTTP/1.1 (for example conflicting Content-Length and Transfer-Encoding, or a malformed header); it was refused.');
  }
}

/**
 * What node's parser could not read (malformed HTTP, headers too large, a request too slow) is answered
 * with a problem by `refuse` instead of node's bare status line; the agent listener and the admin API's
 * both do this.
 */
export function refuseClientErrors(server: Server, refuse: (socket: Duplex, failure: AirlockError) => void, bounds: ListenerBounds = AGENT_LISTENER_BOUNDS): void {
  server.on('clientError', function refuseUnparsable(error: NodeJS.ErrnoException, socket: Duplex) {
    // A reset or an already-answered socket has no one to tell (a refused request whose body is being
    // drained was answered, though node has detached that answer from the socket).
    const inFlight = (socket as { _httpMessage?: { headersSent?: boolean } })._httpMessage;
    if (error.code === 'ECONNRESET' || !socket.writable || inFlight?.headersSent === true || drainingRefusedBody(socket)) {
      socket.destroy();
      return;
    }
    refuse(socket, parseFailure(error, bounds));
  });
}

/**
 * A duration of the config (seconds) as the whole milliseconds node's http server requires
 * (ERR_OUT_OF_RANGE otherwise: 2.01 * 1000 is 2009.9999999999998); the schema keeps it at least 1 ms.
 */
export function wholeMs(seconds: number): number {
  return Math.max(1, Math.round(seconds * 1000));
}

export function createListener(limits: DeepReadonly<LimitsSpec>, handlers: ListenerHandlers, tls: TlsIdentity | null = null): Server {
  const options = {
      maxHeaderSize: limits.max_header_bytes,
      headersTimeout: wholeMs(limits.headers_timeout),
      requestTimeout: wholeMs(limits.request_timeout),
      keepAliveTimeout: wholeMs(limits.keep_alive_timeout),
      // node checks the header and request deadlines only this often (30 s by default), which would
      // let a slowloris client hold a connection far past headers_timeout.
      connectionsCheckingInterval: Math.max(100, Math.min(1000, Math.round(wholeMs(Math.min(limits.headers_timeout, limits.request_timeout)) / 2))),
      // Checked by the pipeline instead, so a missing Host gets a problem body and an audit record.
      requireHostHeader: false,
      joinDuplicateHeaders: false,
      insecureHTTPParser: false,
  };
  const server =
    tls === null
      ? createServer(options, handlers.onRequest)
      : // A handshake gets no longer than the request headers (node's default is 120 s, which a client
        // that connects and says nothing would hold).
        serveTls(createHttpsServer({ ...options, ...tls.contextOptions(), handshakeTimeout: wholeMs(limits.headers_timeout) }, handlers.onRequest), limits, handlers);
  server.maxHeadersCount = 0;
  refuseClientErrors(server, (socket, failure) => handlers.onRefusal(socket, failure, null));
  // An Expect other than 100-continue: node would answer 417 by itself; the pipeline refuses it with a
  // problem and an audit record instead (checkRequestShape).
  server.on('checkExpectation', handlers.onRequest);
  server.on('checkContinue', function continueOnceAuthorized(req: IncomingMessage, res: ServerResponse) {
    holdContinue(res);
    handlers.onRequest(req, res);
  });
  server.on('connect', function refuseConnect(_req: IncomingMessage, socket: Duplex) {
    handlers.onRefusal(socket, new AirlockError('method_not_allowed', 'CONNECT is never accepted: Airlock is not a forward proxy. Point your SDK base URL at it instead.'), 'CONNECT');
  });
  server.on('upgrade', function refuseUpgrade(req: IncomingMessage, socket: Duplex) {
    handlers.onRefusal(socket, new AirlockError('invalid_request', 'Protocol upgrades (WebSocket, h2c) are not supported through Airlock.'), req.method ?? null);
  });
  return server;
}

/** A TLS record's first byte: a handshake (RFC 8446 5.1, ContentType handshake(22)). */
const TLS_HANDSHAKE = 0x16;

/**
 * An HTTPS listener that answers a plain-HTTP request with a problem saying to use https:// (nginx
 * answers such requests 400, "The plain HTTP request was sent to HTTPS port") instead of closing the
 * connection unanswered, which an SDK reports as "socket hang up" and retries. The connection's first
 * byte decides: a TLS handshake goes on to node's TLS, anything else is refused on the raw socket.
 * The connection stays the listening server's own (counted); its hand-over to TLS waits for that byte,
 * bounded by headers_timeout.
 *
 * node's HTTP server knows a TLS connection only once its handshake is done, so closeIdleConnections and
 * closeAllConnections (shutdown, a second SIGTERM) did not reach one still waiting for its first byte or
 * mid-handshake, and close() waited for it up to twice headers_timeout (found by review). Those are
 * tracked here (by peer address and port, which the TLS socket shares) and closed with the idle ones:
 * they have no request in progress.
 */
function serveTls(server: Server, limits: DeepReadonly<LimitsSpec>, handlers: ListenerHandlers): Server {
  const startTls = server.listeners('connection') as Array<(socket: Socket) => void>;
  server.removeAllListeners('connection');
  const unshaken = new Map<string, Socket>();
  const peerOf = (socket: { remoteAddress?: string | undefined; remotePort?: number | undefined }): string => `${socket.remoteAddress ?? ''}|${socket.remotePort ?? ''}`;
  server.on('secureConnection', function handshakeDone(socket: Socket) {
    unshaken.delete(peerOf(socket));
  });
  for (const method of ['closeIdleConnections', 'closeAllConnections'] as const) {
    const closeTracked = server[method].bind(server);
    server[method] = function closeUnshakenToo() {
      for (const socket of unshaken.values()) socket.destroy();
      unshaken.clear();
      closeTracked();
    };
  }
  server.on('connection', function readFirstByte(socket: Socket) {
    const peer = peerOf(socket);
    unshaken.set(peer, socket);
    socket.once('close', () => {
      if (unshaken.get(peer) === socket) unshaken.delete(peer);
    });
    // Until TLS takes the socket over, nothing else hears its errors (a reset would end the process).
    socket.on('error', () => socket.destroy());
    socket.setTimeout(wholeMs(limits.headers_timeout), () => socket.destroy());
    socket.once('data', function chooseProtocol(chunk: Buffer) {
      socket.pause();
      socket.setTimeout(0);
      if (chunk[0] === TLS_HANDSHAKE) {
        socket.unshift(chunk);
        for (const listener of startTls) listener.call(server, socket);
        return;
      }
      // The whole head is read before it is judged (found by review: only the first packet was, so a
      // key or token in a head that came in more than one, a client writing its request line first or a
      // head longer than a TCP segment, crossed the network in clear text with a record saying nothing
      // had been read). Bounded as a head is: max_header_bytes, and headers_timeout from here.
      readPlainHead(socket, chunk, limits, function refusePlainHttp(head: string) {
        unshaken.delete(peer);
        refusePlain(socket, head, handlers);
      });
    });
  });
  // node's https server passes a failed handshake on as a clientError, which refuseClientErrors would
  // answer and audit as a malformed HTTP request (found by review: a stalled handshake was recorded as
  // 400 invalid_request); there is no request, and no HTTP to answer in.
  server.removeAllListeners('tlsClientError');
  server.on('tlsClientError', function dropFailedHandshake(error: NodeJS.ErrnoException, socket: Duplex) {
    handlers.onTlsFailure?.(tlsFailureReason(error));
    // A failed handshake has no HTTP to answer in (an untrusted certificate, no shared cipher).
    socket.destroy();
  });
  return server;
}

/** Where a plain-HTTP head ends: an empty line (RFC 9112 2.2 lets a recipient take a bare LF for CRLF). */
const HEAD_END = /\r?\n\r?\n/;

/**
 * Gathers a plain-HTTP request's head from `first` on (its first packet) and hands it to `done` once it
 * is whole, has reached max_header_bytes, the client stopped sending, or headers_timeout passed. What
 * follows is read and dropped while the answer goes out, so that closing with unread bytes does not
 * reset the connection under the answer (RFC 9112 9.6).
 */
function readPlainHead(socket: Socket, first: Buffer, limits: DeepReadonly<LimitsSpec>, done: (head: string) => void): void {
  let head = first.toString('latin1');
  let answered = false;
  const answer = (): void => {
    if (answered) return;
    answered = true;
    socket.off('data', gather);
    socket.off('end', answer);
    socket.setTimeout(0);
    done(head);
  };
  function gather(chunk: Buffer): void {
    // Only the new bytes and the three before them can complete the empty line: a head sent a byte at a
    // time is not searched again whole each time.
    const from = Math.max(0, head.length - 3);
    head += chunk.toString('latin1');
    if (HEAD_END.test(head.slice(from)) || head.length >= limits.max_header_bytes) answer();
  }
  if (HEAD_END.test(head) || head.length >= limits.max_header_bytes) {
    socket.resume();
    answer();
    return;
  }
  socket.on('data', gather);
  socket.once('end', answer);
  socket.setTimeout(wholeMs(limits.headers_timeout), answer);
  socket.resume();
}

/** The answer to a plain-HTTP request on an HTTPS listener, and its record (what `head` carried). */
function refusePlain(socket: Socket, head: string, handlers: ListenerHandlers): void {
  const method = /^([A-Z]{1,16}) /.exec(head)?.[1] ?? null;
  // The record says what happened, and whether an agent's token crossed the network in clear text
  // on the way (found by the TLS walkthrough: the record could not be told from malformed HTTP).
  const exposed = TOKEN_IN_TEXT.test(head);
  // And the provider's real key, sent as the API key (found by review: only tokens were looked for).
  const held = handlers.heldSecret?.(head) ?? null;
  const reason =
    held !== null
      ? `A plain-HTTP request reached an HTTPS listener carrying the value of ${held} (the provider's real key, sent as the API key?): it crossed the network in clear text, and whoever sent it holds it. Rotate ${held} and find how it got out.${exposed ? ' It carried an Airlock token too: give the agent a new one (npx airlock token).' : ''} Its base URL must be https://.`
      : exposed
        ? 'A plain-HTTP request reached an HTTPS listener carrying an Airlock token: it crossed the network in clear text. Treat that token as exposed: give the agent a new one (npx airlock token) and remove the old hash. Its base URL must be https://.'
        : "A plain-HTTP request reached an HTTPS listener (an http:// base URL, or a health check not changed for tls); it was refused before any of it was read as a request.";
  handlers.onRefusal(
    socket,
    new AirlockError('invalid_request', 'This listener speaks HTTPS only, and the request came in plain HTTP. Use an https:// base URL for Airlock (the same host and port).', {
      ...(held === null ? {} : { credentialRef: held }),
      cause: new OperatorReason(reason, { alert: exposed || held !== null }),
    }),
    method,
  );
}
