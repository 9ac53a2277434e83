/**
 * The admin listener's bound on sockets, which a flood cannot use to shut operators out.
 *
 * node's `server.maxConnections` closes every connection past the bound, so a local process holding
 * that many idle sockets locks the operator out of the admin API, the kill switch included, for as long
 * as it holds them. A per-address bound does not help: a local attacker shares 127.0.0.1 with the
 * operator. Here a connection past the bound is admitted and the oldest connection with no admin call
 * in progress is closed instead: an idle keep-alive socket, one still sending its headers (a
 * slow-loris socket is no better than an idle one), or one answered without a token. A socket whose
 * admin call is being answered (an operator's change, a console's audit stream) is never closed to
 * make room; only when every socket is answering one is the newcomer closed, as node would. So the
 * descriptors stay bounded, and holding a slot takes an admin token.
 */
import type { IncomingMessage, Server, ServerResponse } from 'node:http';
import type { Socket } from 'node:net';

export class AdminConnections {
  /** Admin calls being answered per socket; a Map iterates in insertion order: the first idle entry is the oldest. */
  readonly #answering = new Map<Socket, number>();
  readonly #bound: number;

  /** Over TLS: the TCP socket of each connection by its peer (address and port, which its TLS socket shares). */
  readonly #byPeer = new Map<string, Socket>();
  /** Over TLS: the TCP socket a request's TLS socket runs on. */
  readonly #tcpOf = new WeakMap<Socket, Socket>();

  /**
   * Every TCP connection is counted from its 'connection' on. `overTls` (admin.tls): a request's socket
   * is then the TLS one, made at 'secureConnection', which is taken back to its TCP socket. Counted only
   * from 'secureConnection', a connection still before or in its handshake (serve-tls.ts) was outside
   * the bound (found by review: a local process could open them by the thousand, each held for up to
   * twice the headers deadline).
   */
  constructor(server: Server, bound: number, overTls = false) {
    this.#bound = bound;
    server.on('connection', (socket: Socket) => this.#admit(socket, overTls));
    if (overTls) {
      server.on('secureConnection', (socket: Socket) => {
        const tcp = this.#byPeer.get(peerOf(socket));
        if (tcp !== undefined) this.#tcpOf.set(socket, tcp);
      });
    }
  }

  /**
   * Called once a request has shown an admin token: its socket keeps its place until the answer is
   * done. Only then: an answer to anyone (a 401, /metrics, the console's files) protects nothing, or a
   * client that asks for /metrics again and again and never reads, its answers stuck unfinished, would
   * hold its socket as an operator's call does (found by review).
   */
  hold(req: IncomingMessage, res: ServerResponse): void {
    // The request's socket: a response waiting behind a pipelined one has none yet (found by review:
    // an operator's second call on a socket was never counted).
    const socket = this.#tcpOf.get(req.socket) ?? req.socket;
    const count = this.#answering.get(socket);
    if (count === undefined) return;
    this.#answering.set(socket, count + 1);
    res.once('close', () => {
      const now = this.#answering.get(socket);
      if (now !== undefined) this.#answering.set(socket, now - 1);
    });
  }

  #admit(socket: Socket, overTls: boolean): void {
    if (this.#answering.size >= this.#bound && !this.#closeOldestIdle()) {
      socket.destroy();
      return;
    }
    this.#answering.set(socket, 0);
    const peer = overTls ? peerOf(socket) : null;
    if (peer !== null) this.#byPeer.set(peer, socket);
    socket.once('close', () => {
      this.#answering.delete(socket);
      if (peer !== null && this.#byPeer.get(peer) === socket) this.#byPeer.delete(peer);
    });
  }

  #closeOldestIdle(): boolean {
    for (const [socket, count] of this.#answering) {
      if (count > 0) continue;
      this.#answering.delete(socket);
      socket.destroy();
      return true;
    }
    return false;
  }
}

function peerOf(socket: Socket): string {
  return `${socket.remoteAddress ?? ''}|${socket.remotePort ?? ''}`;
}
