/**
 * Ends responses in flight when what they run under is revoked: an agent, a session (or one it was
 * narrowed from), a credential reference, a service, or everything (lockdown). Requests register while
 * they are being answered; a revocation event from any replica ends the matching exchanges at once,
 * and one under a task session is ended when the session expires. How an exchange ends is its own
 * (LiveExchange.interrupt): refused with a problem while nothing of its answer was sent, cut after.
 */
import type { ServerResponse } from 'node:http';
import type { AirlockError } from '../errors.js';
import { LONGEST_TIMER_MS } from '../config/schema.js';
import type { GovernanceEvent } from '../state/governance-records.js';
import type { GovernanceState } from '../state/governance-state.js';

export interface LiveExchange {
  readonly agent: string;
  /** The session and its ancestors, nearest first. */
  readonly sessions: readonly string[];
  readonly service: string;
  readonly credential: string;
  readonly res: ServerResponse;
  /**
   * How long the exchange may go on, in ms from now: its session's time left (a session narrowed from
   * another never outlives it) or its workload JWT's, whichever is less, or null with neither. A session's expiry is no event, so a
   * stream begun under it was not cut when it ended (found by review: a task session's stream went on
   * after the session expired, while new requests got 401).
   */
  readonly endsInMs: number | null;
  /**
   * Ends the exchange now. Found by review: destroying the response while the request still waited
   * for its upstream gave the agent a bare connection reset (which SDKs take for a network error, and
   * retry) and the audit record no reason.
   */
  interrupt(failure?: AirlockError): void;
  /**
   * Ends the exchange at endsInMs (its session or workload JWT ended). Apart from interrupt: a timer may
   * fire a millisecond before the clock reads that end, so the exchange, not a clock reading, says which.
   */
  expire(): void;
}

export class KillSwitch {
  readonly #live = new Set<LiveExchange>();

  constructor(state: GovernanceState) {
    state.onEvent((event) => this.#onEvent(event));
  }

  track(exchange: LiveExchange): () => void {
    this.#live.add(exchange);
    // Past node's longest timer (~24.8 days) a timeout fires at once (TimeoutOverflowWarning): a session
    // that long is not cut at its end by a timer; revoking or ending it still cuts it.
    if (exchange.endsInMs === null || exchange.endsInMs > LONGEST_TIMER_MS) return () => this.#live.delete(exchange);
    const expiry = setTimeout(() => {
      this.#live.delete(exchange);
      exchange.expire();
    }, Math.max(0, exchange.endsInMs));
    expiry.unref();
    return () => {
      clearTimeout(expiry);
      this.#live.delete(exchange);
    };
  }

  /**
   * Shutdown's cut: each exchange whose answer has not begun is answered `failure` (a problem, audited),
   * rather than left to have its connection closed with nothing said (found by an ops walkthrough). Those
   * under way are left to the connection's close.
   */
  refuseWaiting(failure: AirlockError): void {
    for (const exchange of this.#live) {
      if (exchange.res.headersSent) continue;
      this.#live.delete(exchange);
      exchange.interrupt(failure);
    }
  }

  get size(): number {
    return this.#live.size;
  }

  #onEvent(event: GovernanceEvent): void {
    let matches: (exchange: LiveExchange) => boolean;
    if (event.type === 'session.ended') matches = (x) => x.sessions.includes(event.id);
    else if (event.type === 'revocation.added') {
      const { kind, target } = event.revocation;
      matches = (x) =>
        kind === 'all' ||
        (kind === 'agent' && x.agent === target) ||
        (kind === 'session' && x.sessions.includes(target)) ||
        (kind === 'service' && x.service === target) ||
        (kind === 'credential' && x.credential === target);
    } else return;
    for (const exchange of this.#live) {
      if (!matches(exchange)) continue;
      this.#live.delete(exchange);
      exchange.interrupt();
    }
  }
}
