/**
 * The admin listener's bound on sockets, which a flood cannot use to shut operators out.
 *
 * node's `server.maxConnections` closes every connection past the bound, so a local process holding
 * that many idle sockets locks the operator out of the admin API, the kill switch included, for as long
 * as it holds them. A per-address bound does not help: a local attacker shares 127.0.0.1 with the
 * operator. Here a connection past the bound is admitted and the oldest connection with no request
 * in progress is closed instead: an idle keep-alive socket, or one still sending its headers (a
 * slow-loris socket is no better than an idle one). A socket whose request is being answered (an
 * operator's call, a console's audit stream) is never closed to make room; only when every socket
 * is answering a request is the newcomer closed, as node would. So the descriptors stay bounded, and
 * holding a slot takes a request the admin API is answering, which takes an admin token: an
 * unauthenticated request is answered (401) at once.
 */
import type { Server } from 'node:http';
import type { Socket } from 'node:net';

export function boundAdminConnections(server: Server, bound: number): void {
  // Requests being answered per socket; a Map iterates in insertion order, so the first idle entry
  // is the oldest idle socket.
  const answering = new Map<Socket, number>();
  server.on('connection', function admitAdminConnection(socket: Socket) {
    if (answering.size >= bound && !closeOldestIdle(answering)) {
      socket.destroy();
      return;
    }
    answering.set(socket, 0);
    socket.once('close', function forgetAdminConnection() {
      answering.delete(socket);
    });
  });
  server.on('request', function countAdminRequest(req, res) {
    const socket = req.socket;
    const count = answering.get(socket);
    if (count === undefined) return;
    answering.set(socket, count + 1);
    res.once('close', function uncountAdminRequest() {
      const now = answering.get(socket);
      if (now !== undefined) answering.set(socket, now - 1);
    });
  });
}

function closeOldestIdle(answering: Map<Socket, number>): boolean {
  for (const [socket, count] of answering) {
    if (count > 0) continue;
    answering.delete(socket);
    socket.destroy();
    return true;
  }
  return false;
}
