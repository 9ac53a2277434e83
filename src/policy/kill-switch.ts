/**
 * Ends responses in flight when what they run under is revoked: an agent, a session (or one it was
 * narrowed from), a credential reference, a service, or everything (lockdown). Requests register while
 * they are being answered; a revocation event from any replica destroys the matching responses at once.
 */
import type { ServerResponse } from 'node:http';
import type { GovernanceEvent } from '../state/governance-records.js';
import type { GovernanceState } from '../state/governance-state.js';

export interface LiveExchange {
  readonly agent: string;
  /** The session and its ancestors, nearest first. */
  readonly sessions: readonly string[];
  readonly service: string;
  readonly credential: string;
  readonly res: ServerResponse;
}

export class KillSwitch {
  readonly #live = new Set<LiveExchange>();

  constructor(state: GovernanceState) {
    state.onEvent((event) => this.#onEvent(event));
  }

  track(exchange: LiveExchange): () => void {
    this.#live.add(exchange);
    return () => this.#live.delete(exchange);
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
      exchange.res.destroy();
    }
  }
}
