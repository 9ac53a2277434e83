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
import { serveTls, type TlsFailureReason } from './serve-tls.js';
import type { TlsIdentity } from './tls-identity.js';

export interface ListenerHandlers {
  onRequest: (req: IncomingMessage, res: ServerResponse) => void;
  onRefusal: (socket: Duplex, failure: AirlockError, method: string | null) => void;
  /** A TLS handshake that failed (tls), by tlsFailureReason. */
  onTlsFailure?: (reason: TlsFailureReason) => void;
  /** The reference of a managed credential whose value the text holds, or null (a plain-HTTP request's head, tls). */
  heldSecret?: (text: string) => string | null;
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
        serveTls(createHttpsServer({ ...options, ...tls.contextOptions(), handshakeTimeout: wholeMs(limits.headers_timeout) }, handlers.onRequest), { headersTimeoutMs: wholeMs(limits.headers_timeout), maxHeaderBytes: limits.max_header_bytes }, {
          onPlainHttp: (socket, head) => refusePlain(socket, head, handlers),
          ...(handlers.onTlsFailure === undefined ? {} : { onTlsFailure: handlers.onTlsFailure }),
        });
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
