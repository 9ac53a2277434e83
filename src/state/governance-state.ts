/**
 * The live governance state of one Airlock: sessions, revocations, approvals. Reads are synchronous
 * map lookups (the request path never waits on a store); changes are events, kept by the backend
 * first and applied second, so a change that cannot be kept is refused rather than half made.
 * Events other replicas publish are applied the same way. Listeners hear every applied event (the kill
 * switch ends streams, held requests learn their approval's fate).
 */
import { REVOCATION_KINDS, type ApprovalRecord, type GovernanceEvent, type Revocation, type RevocationKind, type SessionRecord } from './governance-records.js';
import type { Logger } from 'pino';
import { AirlockError } from '../errors.js';
import { StateConflictError, type StateBackend } from './state-backend.js';
import type { UnsavedRestrictionFiles } from './unsaved-restriction-files.js';

/** What became of a change: kept in the backend, or (a restriction while it is unreachable) only here for now. */
export type RecordOutcome = 'kept' | 'pending';

/** Decided (or expired) approvals kept for the console's history. */
const DECIDED_APPROVALS_KEPT = 500;
/** Expired sessions are swept out of memory once the map holds this many, then at twice what is left. */
const SWEEP_FLOOR = 1_000;
/** How often restrictions the backend could not keep are written again (#flushUnsaved). */
const FLUSH_RETRY_MS = 1_000;
/**
 * The backend is compacted to the live state again once this many events (and at least twice the live
 * state's) were kept since the last time (found by review: state.jsonl was compacted only at start-up,
 * so an agent minting and ending sessions in a loop grew it ~15 MB/s until the disk filled, and past
 * 512 MiB the next start-up could not read it).
 */
const COMPACT_AFTER_EVENTS = 1_000;
/**
 * How much later than a revocation a lift must be to win over it when the revocation was made where
 * the lift was not heard (an outage, a file replayed, another worker's relay): the two times come from
 * two replicas' clocks. NTP keeps them within milliseconds; one drifted by seconds must not let an
 * earlier lift undo an incident's revocation made after it. Within the margin the revocation stands
 * (fail closed) and has to be lifted again.
 */
export const LIFT_MARGIN_MS = 5_000;

function revocationKey(kind: RevocationKind, target: string): string {
  return `${kind}\u0000${target}`;
}

export class GovernanceState {
  readonly #backend: StateBackend;
  readonly #now: () => number;
  readonly #sessions = new Map<string, SessionRecord>();
  readonly #sessionByToken = new Map<string, string>();
  readonly #children = new Map<string, Set<string>>();
  readonly #revocations = new Map<string, Revocation>();
  readonly #approvals = new Map<string, ApprovalRecord>();
  readonly #listeners = new Set<(event: GovernanceEvent) => void>();
  /**
   * Agent -> when it was last restored: its sessions created at or before are void. Revoking an agent
   * ended only the sessions the revoking replica knew; one minted on another replica within a round trip
   * (or during a partition) survived and was usable once the agent was restored (review finding:
   * revocation cascade). Kept in the lift's tombstone, so a reload or a new replica applies it too; not
   * cleared by a resync, since it only ever grows.
   */
  readonly #restoredAt = new Map<string, number>();
  /**
   * When each revocation was last lifted (kind and target), from lifts applied or loaded (Redis keeps
   * them as tombstones). A revocation replayed from disk, relayed by another worker or queued during an
   * outage that is older than a lift is not revived: found by review, a host that stopped during an
   * outage with a revocation on disk re-revoked, on its next start, an agent an operator had restored
   * since, on every replica.
   */
  readonly #liftedAt = new Map<string, number>();
  /**
   * Events applied while a snapshot is being read (start, resync), or null: applied again on top of the
   * snapshot. A resync cleared the maps and replayed the snapshot, so an event heard meanwhile was lost
   * and a session ended elsewhere during a reload came back (review finding: resync race).
   */
  #heard: GovernanceEvent[] | null = null;
  /** Restrictions applied here that the backend could not keep yet: written first when it is back (and meanwhile kept on disk, #kept). */
  readonly #unsaved: GovernanceEvent[] = [];
  /** Hear each restriction made here that the backend could not keep (onUnsaved). */
  readonly #unsavedListeners = new Set<(event: GovernanceEvent) => void>();
  /** The write of #unsaved under way, if any (one at a time: two would each write, then drop, an event). */
  #flushing: Promise<void> | null = null;
  #flushRetry: NodeJS.Timeout | null = null;
  /** Approvals with a decision or a use being kept right now (#claimTransition). */
  readonly #transitioning = new Map<string, symbol>();
  /** Sessions in the map past which expired ones are swept out (#sweepExpired). */
  #sweepAt = SWEEP_FLOOR;
  /** #record calls not yet finished: a compaction waits for none, so no event is kept but not yet applied. */
  #recording = 0;
  #keptSinceCompaction = 0;
  #liveAtCompaction = 0;
  #compacting = false;
  #resyncs: Promise<void> = Promise.resolve();
  readonly #logger: Pick<Logger, 'warn'> | null;
  /**
   * Where #unsaved is also kept on disk, or null (tests of the state alone). In memory only, a
   * restriction made while the store was unreachable was lost when every process holding it stopped
   * before the store was back, and the revoked agent worked again after a restart (fail open).
   */
  readonly #kept: UnsavedRestrictionFiles | null;

  constructor(backend: StateBackend, now: () => number = Date.now, logger: Pick<Logger, 'warn'> | null = null, kept: UnsavedRestrictionFiles | null = null) {
    this.#backend = backend;
    this.#now = now;
    this.#logger = logger;
    this.#kept = kept;
  }

  /** Replays what the backend kept, compacts it to the live state, and starts hearing other replicas. */
  async start(): Promise<void> {
    // Heard before the snapshot is read, so that nothing published while it is read is missed (#heard).
    this.#backend.subscribe((event) => {
      // Thrown, so that the backend reloads the state rather than go on without what it may have meant.
      if (!this.#wellFormed(event)) throw new Error('a governance event without the fields it needs');
      this.#applyNow(event);
      this.#notify(event);
    });
    this.#heard = [];
    try {
      for (const event of (await this.#backend.load()).filter((e) => this.#usable(e))) this.#apply(event);
      for (const event of this.#heard) this.#apply(event);
    } finally {
      this.#heard = null;
    }
    const live = this.#liveEvents();
    await this.#backend.compact(live);
    this.#liveAtCompaction = live.length;
    await this.#replayKept();
    // One resync at a time: two at once could each write, then drop, the same queued event. A failed
    // one rejects: the backend keeps counting itself cut off (toward stale_after) and tries again.
    this.#backend.onReconnect(() => {
      const run = this.#resyncs.then(() => this.#resync());
      this.#resyncs = run.catch(() => undefined);
      return run;
    });
  }

  /** Since when shared state has been unreachable (null: it is reachable, or not shared). */
  get unreachableSince(): number | null {
    return this.#backend.downSince;
  }

  /**
   * Keeps the event and applies it. Ending a session (or revoking it) ends the sessions narrowed from
   * it, each as its own kept event, so a backend that stores sessions as records forgets them all;
   * revoking an agent ends its sessions.
   *
   * Order matters for fail-closed: an event that takes access away (a revocation, a session ending)
   * applies here first, synchronously, so the very next request is refused even while the backend write
   * is still under way (a slow disk, a Redis round trip). When the backend cannot keep it, it still holds
   * on this replica, is queued, and is written first when the backend is back ('pending'); an emergency
   * revocation must not wait for Redis. An event that grants or lifts something applies only once kept,
   * and fails with state_unavailable when it cannot be.
   */
  async record(event: GovernanceEvent): Promise<RecordOutcome> {
    const claim = this.#claimTransition(event);
    try {
      const outcome = await this.#record(event);
      // On disk (with the sessions it ended) before the caller hears 'pending': from then on it
      // outlives this process. Once, here, not per session ended: one write holds them all.
      if (outcome === 'pending') await this.#keepUnsaved();
      return outcome;
    } finally {
      if (claim !== null) this.#release(claim.id, claim.owner);
    }
  }

  /**
   * Released by its owner only: a decision releases its claim once applied, and the held request it
   * wakes claims the same approval to use it; the decision's late release must not drop that claim
   * (found by review: a concurrent redeem then used the approval a second time).
   */
  #release(id: string, owner: symbol): void {
    if (this.#transitioning.get(id) === owner) this.#transitioning.delete(id);
  }

  /**
   * An approval is decided once and used once, whatever the backend: the change must find the approval
   * in the status it leaves (pending to decide, approved to use) with no other change of it under way,
   * else StateConflictError. Redis also checks in Lua, across replicas; here it covers the file backend,
   * and every config generation of this process (found by review: the guard lived in each generation's
   * approval broker, so two requests on either side of a reload both used one approval, and two approvers
   * deciding at once were both told they had).
   */
  #claimTransition(event: GovernanceEvent): { readonly id: string; readonly owner: symbol } | null {
    if (event.type !== 'approval.decided' && event.type !== 'approval.consumed') return null;
    const approval = this.#approvals.get(event.id);
    const from = event.type === 'approval.decided' ? 'pending' : 'approved';
    if (approval === undefined || approval.status !== from || this.#transitioning.has(event.id)) {
      throw new StateConflictError(`approval ${event.id} is not ${from}, or is being changed`);
    }
    const owner = Symbol(event.id);
    this.#transitioning.set(event.id, owner);
    return { id: event.id, owner };
  }

  async #record(event: GovernanceEvent): Promise<RecordOutcome> {
    this.#recording++;
    try {
      return await this.#recordNow(event);
    } finally {
      this.#recording--;
      this.#compactIfDue();
    }
  }

  /**
   * Rewrites the backend as the live state (what start-up does) once enough was kept since the last
   * time (COMPACT_AFTER_EVENTS), when no record is half done: every event kept is applied by then, so
   * the snapshot holds all it meant. A failure is logged; the events stay appended, and the next
   * record tries again.
   */
  #compactIfDue(): void {
    if (this.#recording > 0 || this.#compacting || this.#keptSinceCompaction < Math.max(COMPACT_AFTER_EVENTS, 2 * this.#liveAtCompaction)) return;
    const live = this.#liveEvents();
    this.#compacting = true;
    this.#backend
      .compact(live)
      .then(
        () => {
          this.#keptSinceCompaction = 0;
          this.#liveAtCompaction = live.length;
        },
        (error: unknown) => this.#logger?.warn({ err: error }, 'could not compact the state store; its events stay as they were appended, and compaction is tried again'),
      )
      .finally(() => {
        this.#compacting = false;
      });
  }

  async #recordNow(event: GovernanceEvent): Promise<RecordOutcome> {
    const ended = event.type === 'session.ended' ? event.id : event.type === 'revocation.added' && event.revocation.kind === 'session' ? event.revocation.target : null;
    const at = event.type === 'session.ended' ? event.at : event.type === 'revocation.added' ? event.revocation.at : 0;
    // What takes access away holds here at once and is kept until the store has it. An approval's
    // expiry is among them (found by review: a revocation's withdrawals whose writes failed during an
    // outage were lost, and after a restore a replica loading the store took the approval back approved).
    const restricts = event.type === 'revocation.added' || event.type === 'session.ended' || event.type === 'approval.expired';
    const cascade: GovernanceEvent[] = (ended === null ? [] : this.#descendants(ended)).map((id) => ({ type: 'session.ended', id, reason: 'a session it was narrowed from ended', at }));
    // Found before the revocation applies (which withdraws them here at once: #withdrawApprovals).
    const withdrawn = event.type === 'revocation.added' ? this.#approvalsCovered(event.revocation) : [];
    if (restricts) {
      this.#applyNow(event);
      this.#notify(event);
    }
    let outcome: RecordOutcome = 'kept';
    try {
      // What could not be kept before goes first, in order: a later event must not be kept without it
      // (found by review: with the file backend nothing wrote it again, and a restart lost it).
      await this.#flushUnsaved();
      await this.#backend.append(event);
      for (const next of cascade) await this.#backend.append(next);
      this.#keptSinceCompaction += 1 + cascade.length;
    } catch (error) {
      if (!restricts || error instanceof StateConflictError) throw unavailable(error);
      this.#unsaved.push(event, ...cascade);
      for (const listener of this.#unsavedListeners) {
        for (const unsaved of [event, ...cascade]) {
          try {
            listener(unsaved);
          } catch {
            // Passing it on is best effort; it holds here and is written when the backend is back.
          }
        }
      }
      this.#logger?.warn({ err: error, event: event.type }, 'shared state is unreachable: the restriction holds on this replica now and is written to shared state when it is back');
      this.#retryFlush();
      outcome = 'pending';
    }
    if (!restricts) {
      this.#applyNow(event);
      // Applied: the approval is in its new status, which guards it from here on. Released before the
      // listeners hear it, since a held request uses its approval as soon as it hears of the decision.
      if (event.type === 'approval.decided' || event.type === 'approval.consumed') this.#transitioning.delete(event.id);
      this.#notify(event);
    }
    // Revoking an agent ends its sessions for good: restoring the agent must not revive sessions that
    // were minted before (a compromised agent may have minted long ones).
    if (event.type === 'revocation.added' && event.revocation.kind === 'agent') {
      for (const session of this.sessions().filter((s) => s.agent === event.revocation.target && s.parent === null)) {
        if ((await this.#record({ type: 'session.ended', id: session.id, reason: 'its agent was revoked', at })) === 'pending') outcome = 'pending';
      }
    }
    // Kept as their own events, so the backend has them withdrawn too (a replica that starts later loads
    // the approvals as kept). Each replica withdraws them on hearing the revocation; a write that fails
    // here is queued with the revocation and written after it when the store is back.
    for (const id of withdrawn) {
      const { decidedBy, reason } = this.#approvals.get(id) ?? { decidedBy: null, reason: null };
      const withdrawal: GovernanceEvent = { type: 'approval.expired', id, at, ...(reason === null ? {} : { by: decidedBy ?? '', reason }) };
      const kept = await this.#record(withdrawal).catch((error: unknown) => {
        // A conflict: used or ended in the store meanwhile, which is what a withdrawal wants anyway.
        if (!(error instanceof StateConflictError)) throw error;
        return 'kept' as const;
      });
      if (kept === 'pending') outcome = 'pending';
    }
    return outcome;
  }

  #descendants(id: string): string[] {
    const out: string[] = [];
    for (const child of this.#children.get(id) ?? []) out.push(child, ...this.#descendants(child));
    return out;
  }

  /**
   * Writes the restrictions the backend could not keep, in order; one flush at a time. A revocation
   * lifted since is dropped instead: writing it would revive it on every replica.
   */
  #flushUnsaved(): Promise<void> {
    if (this.#unsaved.length === 0) return Promise.resolve();
    this.#flushing ??= (async () => {
      let written = 0;
      try {
        // Cut off, this replica heard no lift made elsewhere meanwhile, so it learns the store's lifts
        // before it writes (found by review: a revocation queued here was written back over an operator's
        // later lift on another replica, and the agent stayed revoked everywhere until lifted again). The
        // retry timer can get here before the reconnection's resync does, so it is done here, not there.
        // A backend that never lost touch (or the file backend, one process) delivered every lift already.
        if (this.#backend.downSince !== null && this.#unsaved.some((event) => event.type === 'revocation.added')) this.#learnLifts(await this.#backend.load());
        while (this.#unsaved.length > 0) {
          const event = this.#unsaved[0] as GovernanceEvent;
          if (this.#liftedSince(event)) {
            this.#logger?.warn({ restriction: restrictionLabel(event) }, 'a revocation made while the state store could not take it was lifted since (a later lift in the state store); it is dropped, not written back');
          } else if (event.type === 'approval.expired') {
            // Used, decided or expired in the store meanwhile (Redis compares and sets): nothing left to withdraw.
            await this.#backend.append(event).catch((error: unknown) => {
              if (!(error instanceof StateConflictError)) throw error;
            });
          } else if (event.type !== 'revocation.added') {
            await this.#backend.append(event);
          } else if (!(await this.#backend.appendUnlessLifted(event, LIFT_MARGIN_MS))) {
            // Lifted on another replica after the read above (found by review: written with a plain
            // write, the revocation went back over that lift). The lift is taken in as the others were.
            this.#learnLifts(await this.#backend.load());
            this.#logger?.warn({ restriction: restrictionLabel(event) }, 'a revocation made while the state store could not take it was lifted meanwhile on another replica; it is dropped, not written back');
          }
          this.#unsaved.shift();
          written++;
        }
      } finally {
        this.#flushing = null;
        // Only after the store has them: the file goes (or shrinks) once nothing in it would be lost.
        if (written > 0) void this.#keepUnsaved();
      }
    })();
    return this.#flushing;
  }

  /**
   * The lifts (tombstones) among what the store returned, taken in as far as they are newer than what
   * this replica knows: each lift's time (#liftedAt), a revocation held here that is older than the lift
   * no longer held (the lift wins here too, as it does on the replicas that heard it), and an agent's
   * sessions minted before its restore void (#restoredAt). A revocation less than LIFT_MARGIN_MS before
   * the lift, or later, stands (fail closed). The maps are changed directly, not through #applyNow: a snapshot read meanwhile
   * (#heard) already holds these tombstones, and re-applying a lift after it would drop a newer revocation.
   */
  #learnLifts(stored: readonly GovernanceEvent[]): void {
    for (const event of stored) {
      if (event.type !== 'revocation.lifted' || !REVOCATION_KINDS.has(event.kind) || typeof event.target !== 'string' || typeof event.at !== 'number' || !Number.isFinite(event.at)) continue;
      const key = revocationKey(event.kind, event.target);
      this.#liftedAt.set(key, Math.max(event.at, this.#liftedAt.get(key) ?? -Infinity));
      const held = this.#revocations.get(key);
      if (held !== undefined && held.at + LIFT_MARGIN_MS < event.at) this.#revocations.delete(key);
      if (event.kind === 'agent') this.#voidSessionsBefore(event.target, event.at);
    }
  }

  /** Makes the file on disk hold #unsaved (removed when empty); whether it does. Never rejects. */
  #keepUnsaved(): Promise<boolean> {
    return this.#kept === null ? Promise.resolve(false) : this.#kept.save(this.#unsaved);
  }

  /**
   * Restrictions kept on disk by processes that stopped before the store took them (or by workers of
   * this node that still hold them): held here at once, before any request is served, and written to
   * the store now (or, when it cannot take them, as soon as it can: #retryFlush, a reconnection).
   */
  async #replayKept(): Promise<void> {
    if (this.#kept === null) return;
    const replayed: GovernanceEvent[] = [];
    for (const candidate of await this.#kept.load()) {
      const event = this.#restriction(candidate);
      if (event === null) {
        this.#logger?.warn({ file: this.#kept.file }, 'a record kept among the unsaved restrictions is not a revocation or a session end; it was skipped');
        continue;
      }
      if (this.#liftedSince(event)) {
        this.#logger?.warn({ restriction: restrictionLabel(event) }, 'a revocation kept on disk was lifted since (a later restore in the state store); it is not revived');
        continue;
      }
      this.#applyNow(event);
      this.#notify(event);
      replayed.push(event);
    }
    this.#unsaved.push(...replayed);
    if (replayed.length > 0) {
      this.#logger?.warn({ restrictions: replayed.map(restrictionLabel) }, 'restrictions kept on disk while the state store could not take them (by a process that stopped, or another worker): they hold now and are written to the state store');
    }
    // Rewrites this process's file with them, or, with nothing to keep, removes the files it inherited.
    await this.#keepUnsaved();
    if (this.#unsaved.length > 0) await this.#flushUnsaved().catch(() => this.#retryFlush());
  }

  /**
   * Tries #flushUnsaved again every second until it succeeds. A Redis backend also flushes on
   * reconnecting; the file backend has no such moment (a full disk that frees up says nothing).
   */
  #retryFlush(): void {
    if (this.#flushRetry !== null) return;
    this.#flushRetry = setTimeout(() => {
      this.#flushRetry = null;
      this.#flushUnsaved().catch(() => this.#retryFlush());
    }, FLUSH_RETRY_MS);
    this.#flushRetry.unref();
  }

  /**
   * After a reconnection: write what could not be kept meanwhile (less what was lifted elsewhere
   * meanwhile: #flushUnsaved reads the store's lifts first), rebuild from the backend, put back
   * the revocations the backend lost (absent, and not lifted: a Redis that restarted without its data
   * must not un-revoke anyone), and tell listeners what was revoked meanwhile.
   */
  async #resync(): Promise<void> {
    await this.#flushUnsaved();
    const held = [...this.#revocations.entries()];
    this.#heard = [];
    let events: GovernanceEvent[];
    let heard: GovernanceEvent[];
    try {
      events = (await this.#backend.load()).filter((event) => this.#usable(event));
      const kept = new Set<string>();
      for (const event of [...events, ...this.#heard]) {
        if (event.type === 'revocation.added') kept.add(revocationKey(event.revocation.kind, event.revocation.target));
        if (event.type === 'revocation.lifted') kept.add(revocationKey(event.kind, event.target));
      }
      // Only what was held before the snapshot was read: one heard (or lifted) meanwhile is not lost.
      const lost = held.filter(([key]) => !kept.has(key)).map(([, revocation]) => revocation);
      if (lost.length > 0) {
        this.#logger?.warn({ revocations: lost.map((r) => `${r.kind} ${r.target}`) }, 'shared state came back without revocations this replica holds (a Redis restart without persistence?); writing them back');
        for (const revocation of lost) await this.#backend.append({ type: 'revocation.added', revocation });
        events.push(...lost.map((revocation): GovernanceEvent => ({ type: 'revocation.added', revocation })));
      }
      heard = this.#heard;
    } finally {
      this.#heard = null;
    }
    const known = new Set(this.#revocations.keys());
    this.#sessions.clear();
    this.#sessionByToken.clear();
    this.#children.clear();
    this.#revocations.clear();
    this.#approvals.clear();
    for (const event of events) this.#apply(event);
    // Newer than the snapshot, or as new: applied again, in the order they were (#heard).
    for (const event of heard) this.#apply(event);
    for (const event of events) {
      if (event.type === 'revocation.added' && !known.has(revocationKey(event.revocation.kind, event.revocation.target))) this.#notify(event);
      if (event.type === 'approval.created' && event.approval.status !== 'pending') {
        this.#notify({ type: 'approval.decided', id: event.approval.id, decision: event.approval.status === 'denied' ? 'denied' : 'approved', by: event.approval.decidedBy ?? '', reason: event.approval.reason ?? '', at: event.approval.decidedAt ?? 0 });
      }
    }
  }

  /**
   * Hears each restriction made here that the backend could not keep (a cluster worker passes it to the
   * other workers while Redis is unreachable: run-cluster.ts). Not those adopted from elsewhere.
   */
  onUnsaved(listener: (event: GovernanceEvent) => void): () => void {
    this.#unsavedListeners.add(listener);
    return () => this.#unsavedListeners.delete(listener);
  }

  /**
   * A restriction another worker of this cluster made but could not keep (found by review: during a
   * Redis outage only the worker that took the admin call enforced a revocation, and its death lost it):
   * held here at once, as if made here, and queued to be written when the backend is back. Only what
   * takes access away is adopted; anything else, or anything malformed, is ignored.
   */
  adopt(candidate: unknown): void {
    const event = this.#restriction(candidate);
    if (event === null || this.#liftedSince(event)) return;
    this.#applyNow(event);
    this.#notify(event);
    this.#unsaved.push(event);
    // Kept on this worker's file too: the one that sent it may be the next to die.
    void this.#keepUnsaved();
    this.#retryFlush();
  }

  /**
   * A revocation an operator lifted after it was made: more than LIFT_MARGIN_MS later, as the two times
   * may come from two replicas' clocks (closer, the revocation stands, failing closed).
   */
  #liftedSince(event: GovernanceEvent): boolean {
    if (event.type !== 'revocation.added') return false;
    return (this.#liftedAt.get(revocationKey(event.revocation.kind, event.revocation.target)) ?? -Infinity) > event.revocation.at + LIFT_MARGIN_MS;
  }

  /** The candidate if it is a well-formed event that takes access away (a revocation, a session end, an approval's expiry), else null. */
  #restriction(candidate: unknown): GovernanceEvent | null {
    const event = candidate as GovernanceEvent;
    if (typeof candidate !== 'object' || candidate === null || (event.type !== 'revocation.added' && event.type !== 'session.ended' && event.type !== 'approval.expired')) return null;
    if (!this.#wellFormed(event) || (event.type !== 'revocation.added' && (typeof event.id !== 'string' || typeof event.at !== 'number'))) return null;
    return event;
  }

  onEvent(listener: (event: GovernanceEvent) => void): () => void {
    this.#listeners.add(listener);
    return () => this.#listeners.delete(listener);
  }

  // Sessions.

  /** A live session by the hash of its token; expired or ended sessions are not returned. */
  sessionByTokenHash(tokenHash: string): SessionRecord | null {
    const id = this.#sessionByToken.get(tokenHash);
    return id === undefined ? null : this.session(id);
  }

  session(id: string): SessionRecord | null {
    const session = this.#sessions.get(id);
    if (session === undefined || session.expiresAt <= this.#now()) return null;
    return session;
  }

  sessions(): SessionRecord[] {
    const now = this.#now();
    return [...this.#sessions.values()].filter((s) => s.expiresAt > now).sort((a, b) => a.createdAt - b.createdAt);
  }

  // Revocations.

  revocation(kind: RevocationKind, target: string): Revocation | null {
    return this.#revocations.get(revocationKey(kind, target)) ?? null;
  }

  /** Whether the revocation in force for kind and target is one the store could not take yet (held here, written when it is back). */
  revocationUnsaved(kind: RevocationKind, target: string): boolean {
    return this.#unsaved.some((event) => event.type === 'revocation.added' && event.revocation.kind === kind && event.revocation.target === target);
  }

  revocations(): Revocation[] {
    return [...this.#revocations.values()].sort((a, b) => a.at - b.at);
  }

  // Approvals.

  approval(id: string): ApprovalRecord | null {
    return this.#approvals.get(id) ?? null;
  }

  approvals(): ApprovalRecord[] {
    return [...this.#approvals.values()].sort((a, b) => a.createdAt - b.createdAt);
  }

  async close(): Promise<void> {
    if (this.#flushRetry !== null) clearTimeout(this.#flushRetry);
    this.#flushRetry = null;
    // One last try; what is still unwritten stays in the file on disk for the next process, if it could
    // be written there, and is otherwise lost with this process (found by review), so say which.
    await this.#flushUnsaved().catch(() => undefined);
    const kept = await this.#keepUnsaved();
    await this.#kept?.close();
    if (this.#unsaved.length > 0) {
      const events = this.#unsaved.map(restrictionLabel);
      if (kept) this.#logger?.warn({ events, kept_in: this.#kept?.file }, 'stopping with restrictions the state store never took: they are kept on disk, and the next Airlock started on this data_dir enforces them and writes them to the store');
      else this.#logger?.warn({ events }, 'stopping with restrictions the state store never took: they held here until now, and are lost; make them again');
    }
    this.#listeners.clear();
    await this.#backend.close();
  }

  #notify(event: GovernanceEvent): void {
    for (const listener of this.#listeners) {
      try {
        listener(event);
      } catch {
        // A listener's failure must not stop the others (or the change itself).
      }
    }
  }

  /**
   * Whether a stored or published event has the fields #apply reads. Shared state is written by every
   * replica (and anyone with access to Redis): one malformed record must not stop the replay of the
   * others, nor fail every resync (the replica would then count as cut off and refuse everything).
   */
  #wellFormed(event: GovernanceEvent): boolean {
    const e = event as unknown as Record<string, unknown> | null;
    const field = (name: string): boolean => typeof e?.[name] === 'object' && e[name] !== null;
    const revocation = e?.['revocation'] as Record<string, unknown> | undefined;
    return (
      e !== null &&
      typeof e === 'object' &&
      (e['type'] === 'session.created'
        ? field('session')
        : e['type'] === 'revocation.added'
          ? field('revocation') && typeof revocation?.['kind'] === 'string' && REVOCATION_KINDS.has(revocation['kind']) && typeof revocation['target'] === 'string'
          : e['type'] === 'approval.created'
            ? field('approval')
            : typeof e['type'] === 'string')
    );
  }

  /** A kept record is replayed when well-formed, and skipped with a warning otherwise. */
  #usable(event: GovernanceEvent): boolean {
    if (this.#wellFormed(event)) return true;
    const type = (event as { type?: unknown } | null)?.type;
    this.#logger?.warn({ type: typeof type === 'string' ? type : null }, 'a shared-state record is malformed; it was skipped');
    return false;
  }

  /** Applies an event as it happens (heard, or made here); remembered while a snapshot is read (#heard). */
  #applyNow(event: GovernanceEvent): void {
    this.#apply(event);
    this.#heard?.push(event);
  }

  #apply(event: GovernanceEvent): void {
    switch (event.type) {
      case 'session.created': {
        const session = event.session;
        // Minted before its agent was last restored: on a replica that had not heard of the revocation.
        if (session.createdAt <= (this.#restoredAt.get(session.agent) ?? -Infinity)) return;
        this.#sessions.set(session.id, session);
        this.#sessionByToken.set(session.tokenHash, session.id);
        if (this.#sessions.size >= this.#sweepAt) this.#sweepExpired();
        if (session.parent !== null) {
          const siblings = this.#children.get(session.parent) ?? new Set<string>();
          siblings.add(session.id);
          this.#children.set(session.parent, siblings);
        }
        return;
      }
      case 'session.ended':
        this.#endSession(event.id);
        return;
      case 'revocation.added':
        this.#revocations.set(revocationKey(event.revocation.kind, event.revocation.target), event.revocation);
        if (event.revocation.kind === 'session') this.#endSession(event.revocation.target);
        this.#withdrawApprovals(event.revocation);
        return;
      case 'revocation.lifted': {
        const key = revocationKey(event.kind, event.target);
        this.#revocations.delete(key);
        if (Number.isFinite(event.at)) this.#liftedAt.set(key, Math.max(event.at, this.#liftedAt.get(key) ?? -Infinity));
        if (event.kind === 'agent') this.#voidSessionsBefore(event.target, Number.isFinite(event.at) ? event.at : this.#now());
        return;
      }
      case 'approval.created': {
        // Loaded while a revocation covering it is in force (revocations load first: a Redis reload
        // after an outage, a replica starting): withdrawn as it was when the revocation came, even when
        // the store never took its `approval.expired` (found by review: it came back approved).
        const covering = this.#coveringRevocation(event.approval);
        this.#approvals.set(event.approval.id, covering === null ? event.approval : withdrawnBy(event.approval, covering));
        this.#trimApprovals();
        return;
      }
      case 'approval.decided': {
        const approval = this.#approvals.get(event.id);
        if (approval === undefined || approval.status !== 'pending') return;
        this.#approvals.set(event.id, { ...approval, status: event.decision, decidedBy: event.by, reason: event.reason, decidedAt: event.at });
        return;
      }
      case 'approval.consumed':
      case 'approval.expired': {
        const approval = this.#approvals.get(event.id);
        if (approval === undefined) return;
        if (event.type === 'approval.expired' && approval.status !== 'pending' && approval.status !== 'approved') return;
        const why = event.type === 'approval.expired' && typeof event.reason === 'string' ? { decidedBy: typeof event.by === 'string' ? event.by : null, reason: event.reason, decidedAt: event.at } : {};
        this.#approvals.set(event.id, { ...approval, status: event.type === 'approval.consumed' ? 'consumed' : 'expired', ...why });
        return;
      }
    }
  }

  /**
   * A revocation withdraws the approvals asked under what it revokes that are not used yet, pending or
   * approved, on every replica: a restore later does not bring them back (found by review: a request
   * held when its agent was revoked went upstream once the agent was restored and an approver said yes,
   * and an approval could be given to an agent while it was revoked). Sessions revoked end for good in
   * the same way. A credential's revocation is not among them: an approval does not record the
   * reference (its binding hashes it), and a retry redeeming one is refused while it is revoked.
   */
  #withdrawApprovals(revocation: Revocation): void {
    for (const id of this.#approvalsCovered(revocation)) this.#approvals.set(id, withdrawnBy(this.#approvals.get(id) as ApprovalRecord, revocation));
  }

  /** The ids of the approvals not used yet (pending or approved) that a revocation covers. */
  #approvalsCovered(revocation: Revocation): string[] {
    const covered: string[] = [];
    for (const approval of this.#approvals.values()) if (coversApproval(revocation, approval)) covered.push(approval.id);
    return covered;
  }

  /** A revocation in force that covers an approval not used yet, or null. */
  #coveringRevocation(approval: ApprovalRecord): Revocation | null {
    for (const [kind, target] of [['all', '*'], ['agent', approval.agent], ['service', approval.service], ['session', approval.session]] as const) {
      if (target === null) continue;
      const revocation = this.#revocations.get(revocationKey(kind, target));
      if (revocation !== undefined && coversApproval(revocation, approval)) return revocation;
    }
    return null;
  }

  /** Restoring an agent: what it minted until then is void (#restoredAt), on every replica. */
  #voidSessionsBefore(agent: string, at: number): void {
    this.#restoredAt.set(agent, Math.max(at, this.#restoredAt.get(agent) ?? -Infinity));
    for (const session of [...this.#sessions.values()]) {
      if (session.agent === agent && session.createdAt <= at) this.#endSession(session.id);
    }
  }

  /** Ending a session ends the sessions narrowed from it, recursively. */
  #endSession(id: string): void {
    const session = this.#sessions.get(id);
    if (session !== undefined) {
      this.#sessions.delete(id);
      this.#sessionByToken.delete(session.tokenHash);
    }
    const children = this.#children.get(id);
    this.#children.delete(id);
    for (const child of children ?? []) this.#endSession(child);
  }

  /**
   * Forgets expired sessions (found by review: they stayed in memory until a restart, and an agent could
   * mint short ones without end). Amortized: a sweep only when the map has doubled since the last.
   */
  #sweepExpired(): void {
    const now = this.#now();
    for (const session of [...this.#sessions.values()]) {
      if (session.expiresAt > now) continue;
      this.#sessions.delete(session.id);
      this.#sessionByToken.delete(session.tokenHash);
      this.#children.delete(session.id);
    }
    this.#sweepAt = Math.max(SWEEP_FLOOR, 2 * this.#sessions.size);
  }

  /**
   * Keeps the newest DECIDED_APPROVALS_KEPT of the approvals that are over: decided, consumed, or past
   * their expiry undecided (found by review: an async approval nobody decided was never marked expired,
   * so those were kept for ever, and across restarts).
   */
  #trimApprovals(): void {
    const now = this.#now();
    const decided = [...this.#approvals.values()].filter((a) => (a.status !== 'pending' && a.status !== 'approved') || a.expiresAt <= now);
    if (decided.length <= DECIDED_APPROVALS_KEPT) return;
    decided.sort((a, b) => a.createdAt - b.createdAt);
    for (const old of decided.slice(0, decided.length - DECIDED_APPROVALS_KEPT)) this.#approvals.delete(old.id);
  }

  /** The smallest event list that rebuilds the current state. */
  #liveEvents(): GovernanceEvent[] {
    const events: GovernanceEvent[] = [];
    for (const session of this.sessions()) events.push({ type: 'session.created', session });
    for (const revocation of this.revocations()) events.push({ type: 'revocation.added', revocation });
    for (const approval of this.approvals()) events.push({ type: 'approval.created', approval });
    return events;
  }
}

/** A restriction for a log line: what it revokes, or which session ended (ids and names only). */
function restrictionLabel(event: GovernanceEvent): string {
  if (event.type === 'revocation.added') return `revocation ${event.revocation.kind} ${event.revocation.target}`;
  if (event.type === 'session.ended') return `session ${event.id} ended`;
  if (event.type === 'approval.expired') return `approval ${event.id} expired`;
  return event.type;
}

/** A backend write that failed for want of the backend (not a conflict): the change is refused, 503. */
/** Whether a revocation covers an approval not used yet (credentials are not recorded on approvals). */
function coversApproval({ kind, target }: Revocation, approval: ApprovalRecord): boolean {
  if (approval.status !== 'pending' && approval.status !== 'approved') return false;
  return kind === 'all' || (kind === 'agent' && approval.agent === target) || (kind === 'session' && approval.session === target) || (kind === 'service' && approval.service === target);
}

/** An approval as a revocation leaves it: withdrawn, saying by whom and why. */
function withdrawnBy(approval: ApprovalRecord, revocation: Revocation): ApprovalRecord {
  const what = revocation.kind === 'all' ? 'everything' : `${revocation.kind} ${revocation.target}`;
  return { ...approval, status: 'expired', decidedBy: revocation.by, reason: `withdrawn: ${what} was revoked`, decidedAt: revocation.at };
}

function unavailable(error: unknown): unknown {
  if (error instanceof StateConflictError || error instanceof AirlockError) return error;
  return new AirlockError('state_unavailable', 'Shared state (Redis) could not be written, so the change was not made. Check that Redis is reachable, then retry.', { cause: error });
}
