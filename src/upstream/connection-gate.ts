/**
 * The requests of one service that may be with its upstream at once: `max_connections`, the size of its
 * undici pool (pipelining 1, so one request per connection). A request past that waits here, not in
 * undici's queue, with a deadline (timeouts.queue), and one that is not let in by then was never
 * dispatched: nothing is left behind.
 *
 * Found by review: waiting in undici's queue, a request answered 503 at its deadline stayed queued (undici
 * cannot take a request back before it starts), and when a connection freed up it was started only to be
 * aborted there, which destroys the connection: each one cost a TCP and TLS handshake, and they piled up
 * while the pool stayed full. Envoy's pending-request queue in front of its connection pool is the model.
 */
export interface GateWaiter {
  /** Called with a slot taken for it; it must leave() once undici is done with its request. */
  admit(): void;
}

export class ConnectionGate {
  #free: number;
  /** In arrival order (a Set keeps insertion order), so the first to wait is the first let in. */
  readonly #waiting = new Set<GateWaiter>();

  constructor(slots: number) {
    this.#free = slots;
  }

  /** Takes a slot at once if one is free. */
  tryEnter(): boolean {
    if (this.#free === 0 || this.#waiting.size > 0) return false;
    this.#free--;
    return true;
  }

  /** Waits for a slot; `admit` is called with it taken. */
  wait(waiter: GateWaiter): void {
    this.#waiting.add(waiter);
  }

  /** Gives up waiting; false when it was not waiting (already admitted). */
  cancel(waiter: GateWaiter): boolean {
    return this.#waiting.delete(waiter);
  }

  /**
   * A request's slot back: the first waiter gets it. Admitted in a microtask: leave() is called from
   * within undici's callbacks for the request ending, when its connection is not yet free for the next.
   */
  leave(): void {
    for (const next of this.#waiting) {
      this.#waiting.delete(next);
      queueMicrotask(() => next.admit());
      return;
    }
    this.#free++;
  }

  get waiting(): number {
    return this.#waiting.size;
  }
}
