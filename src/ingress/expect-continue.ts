/**
 * `Expect: 100-continue` (RFC 9110 10.1.1) answered once a request is authorized, not on arrival. A
 * client that sends it waits for the 100 before its body; node sends the 100 at once unless the server
 * listens for 'checkContinue', so an unauthenticated or unauthorized client would upload its whole body
 * only to be refused. The listener marks such a request's response, and the pipeline sends the 100 just
 * before it first reads the body. A request refused without it gets `Connection: close` from node
 * (the body it never sent cannot be told from the next request), which RFC 9110 10.1.1 allows.
 */
import type { ServerResponse } from 'node:http';

const AWAITS_CONTINUE = Symbol('airlock.awaitsContinue');
type Marked = ServerResponse & { [AWAITS_CONTINUE]?: boolean };

/** The listener received this request through 'checkContinue': no 100 has been sent yet. */
export function holdContinue(res: ServerResponse): void {
  (res as Marked)[AWAITS_CONTINUE] = true;
}

/** Lets the client send its body, if it is waiting for leave to (at most once per request). */
export function sendContinue(res: ServerResponse): void {
  const marked = res as Marked;
  if (marked[AWAITS_CONTINUE] !== true) return;
  marked[AWAITS_CONTINUE] = false;
  if (!res.headersSent && !res.destroyed) res.writeContinue();
}
