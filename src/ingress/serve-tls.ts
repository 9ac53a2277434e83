/**
 * HTTPS on a listener (the agent-facing ones with `tls`, the admin API's with `admin.tls`): the
 * connection's first byte tells a TLS handshake from a plain-HTTP request, which is answered by the
 * listener (a problem saying to use https://) instead of dropped; handshakes that fail are counted by
 * reason; connections still in their handshake are closed with the idle ones.
 */
import type { Server } from 'node:http';
import type { Socket } from 'node:net';
import type { Duplex } from 'node:stream';

/** How long a connection may take to show its first bytes and a plain-HTTP head, and how long that head may be. */
export interface TlsListenerBounds {
  readonly headersTimeoutMs: number;
  readonly maxHeaderBytes: number;
}

export interface TlsHandlers {
  /** A plain-HTTP request's head (latin1), read whole within the bounds; the socket is the listener's to answer on. */
  onPlainHttp: (socket: Socket, head: string) => void;
  /** A TLS handshake that failed, by tlsFailureReason. */
  onTlsFailure?: (reason: TlsFailureReason) => void;
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

/** A TLS record's first byte: a handshake (RFC 8446 5.1, ContentType handshake(22)). */
const TLS_HANDSHAKE = 0x16;

/**
 * An HTTPS listener that answers a plain-HTTP request with a problem saying to use https:// (nginx
 * answers such requests 400, "The plain HTTP request was sent to HTTPS port") instead of closing the
 * connection unanswered, which an SDK reports as "socket hang up" and retries. The connection's first
 * byte decides: a TLS handshake goes on to node's TLS, anything else is refused on the raw socket.
 * The connection stays the listening server's own (counted); its hand-over to TLS waits for that byte,
 * bounded by the listener's headers deadline.
 *
 * node's HTTP server knows a TLS connection only once its handshake is done, so closeIdleConnections and
 * closeAllConnections (shutdown, a second SIGTERM) did not reach one still waiting for its first byte or
 * mid-handshake, and close() waited for it up to twice headers_timeout (found by review). Those are
 * tracked here (by peer address and port, which the TLS socket shares) and closed with the idle ones:
 * they have no request in progress.
 */
export function serveTls(server: Server, bounds: TlsListenerBounds, handlers: TlsHandlers): Server {
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
    socket.setTimeout(bounds.headersTimeoutMs, () => socket.destroy());
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
      // had been read). Bounded as a head is: the listener's header bytes, and its headers deadline from here.
      readPlainHead(socket, chunk, bounds, function refusePlainHttp(head: string) {
        unshaken.delete(peer);
        handlers.onPlainHttp(socket, head);
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
 * is whole, has reached the listener's header bytes, the client stopped sending, or its headers deadline passed. What
 * follows is read and dropped while the answer goes out, so that closing with unread bytes does not
 * reset the connection under the answer (RFC 9112 9.6).
 */
function readPlainHead(socket: Socket, first: Buffer, bounds: TlsListenerBounds, done: (head: string) => void): void {
  let head = first.toString('latin1');
  let answered = false;
  // A deadline, not socket.setTimeout's idle timeout, which each byte starts again (found by review: a
  // head sent a byte at a time, each within the timeout, held the connection for as long as its header
  // bytes lasted, on the admin listener 16 KiB at one byte per 10 s).
  let deadline: NodeJS.Timeout | null = null;
  const answer = (): void => {
    if (answered) return;
    answered = true;
    if (deadline !== null) clearTimeout(deadline);
    socket.off('data', gather);
    socket.off('end', answer);
    done(head);
  };
  function gather(chunk: Buffer): void {
    // Only the new bytes and the three before them can complete the empty line: a head sent a byte at a
    // time is not searched again whole each time.
    const from = Math.max(0, head.length - 3);
    head += chunk.toString('latin1');
    if (HEAD_END.test(head.slice(from)) || head.length >= bounds.maxHeaderBytes) answer();
  }
  if (HEAD_END.test(head) || head.length >= bounds.maxHeaderBytes) {
    socket.resume();
    answer();
    return;
  }
  socket.on('data', gather);
  socket.once('end', answer);
  deadline = setTimeout(answer, bounds.headersTimeoutMs);
  // A client gone before its head was whole has no one to answer; the timer goes with it.
  socket.once('close', () => {
    if (deadline !== null) clearTimeout(deadline);
  });
  socket.resume();
}
