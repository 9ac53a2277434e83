/**
 * Where governance events are kept and how they travel: the embedded backend appends them to a file in
 * data_dir (a restart replays it, so sessions and revocations survive); the Redis backend (scale-out)
 * stores them and publishes them to every replica.
 */
import type { GovernanceEvent } from './governance-records.js';

/** A change another replica already made (an approval decided or consumed). */
export class StateConflictError extends Error {
  override name = 'StateConflictError';
}

export interface StateBackend {
  /**
   * Every event kept, oldest first, to rebuild state at start-up. A shared backend also returns a
   * `revocation.lifted` for each revocation lifted (a tombstone), so a replica coming back can tell a
   * lift it missed from a revocation the store lost (a Redis restarted without persistence).
   */
  load(): Promise<GovernanceEvent[]>;
  /** Keeps an event (and tells other replicas). Rejects when it could not be kept: the change is refused. */
  append(event: GovernanceEvent): Promise<void>;
  /**
   * Keeps a revocation made while the store could not take it, unless the store holds a lift of it
   * made more than `liftMarginMs` after it: then nothing is written and it resolves false. One step in
   * the store, so that a lift another replica makes between this replica's read of the lifts and its
   * write is not overwritten (governance-state.ts #flushUnsaved).
   */
  appendUnlessLifted(event: Extract<GovernanceEvent, { type: 'revocation.added' }>, liftMarginMs: number): Promise<boolean>;
  /** Events other replicas appended; the embedded backend has none. */
  subscribe(listener: (event: GovernanceEvent) => void): void;
  /** Rewrites what is kept as the given, smaller set of events (drops ended history). */
  compact(events: readonly GovernanceEvent[]): Promise<void>;
  /**
   * Called when a lost connection to shared state comes back (events may have been missed). The
   * backend counts itself cut off (downSince) until every listener has resolved, and calls them again
   * while one rejects.
   */
  onReconnect(listener: () => Promise<void>): void;
  /**
   * Since when shared state has been unreachable or not yet reloaded after coming back, or null
   * (always null for the embedded backend).
   */
  readonly downSince: number | null;
  close(): Promise<void>;
}
