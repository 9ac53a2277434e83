/**
 * Governance state in Redis, shared by every replica (state: {type: redis, url}).
 *
 * Records are kept as keys, each with the life it needs (a session until it expires, an approval a
 * day past its deadline), revocations in one hash; every change is also published on a channel, so
 * each replica's in-memory view follows within a round trip (a revocation on one replica refuses the
 * next request on all of them). Approval transitions are compare-and-set in Lua: an approval is decided
 * once and consumed once across all replicas. After a disconnection the replica reloads everything
 * (pub/sub drops messages while it is away) and reports the gap so requests that need shared state can
 * fail closed past `stale_after`.
 */
import { randomUUID } from 'node:crypto';
import { Redis } from 'ioredis';
import type { Logger } from 'pino';
import { REVOCATION_KINDS, type ApprovalRecord, type GovernanceEvent, type Revocation, type RevocationKind, type SessionRecord } from './governance-records.js';
import { StateConflictError, type StateBackend } from './state-backend.js';

export { StateConflictError };

const APPROVAL_KEPT_MS = 24 * 3600 * 1000;
/** How often a replica checks that Redis still keeps writes (#checkWritable) and still delivers events (#checkSubscribed). */
const PROBE_MS = 1_000;
/** How long a connection may take to open. */
const CONNECT_TIMEOUT_MS = 2_000;
/** How long a command (a probe's PING or write included) may go unanswered before it counts as failed. */
const COMMAND_TIMEOUT_MS = 2_000;
/**
 * TCP keepalive on both connections: a flow dropped without a RST (a NAT or firewall forgetting it) is
 * also noticed by the kernel, not only by the probes (review finding: subscriber black hole).
 */
const KEEPALIVE_MS = 5_000;

/** Compare-and-set on an approval's status: returns 1 on success, 0 when absent, -1 when the status is not one of ARGV[1]. */
const UPDATE_APPROVAL = `
local raw = redis.call('GET', KEYS[1])
if not raw then return 0 end
local approval = cjson.decode(raw)
local allowed = false
for status in string.gmatch(ARGV[1], '[^,]+') do
  if approval.status == status then allowed = true end
end
if not allowed then return -1 end
local changes = cjson.decode(ARGV[2])
for key, value in pairs(changes) do approval[key] = value end
redis.call('SET', KEYS[1], cjson.encode(approval), 'KEEPTTL')
return 1
`;

/**
 * A revocation written back after an outage, unless the lifts hash holds a lift of it made more than
 * ARGV[4] ms after it (ARGV[3]): 0 then, nothing written. KEYS: revocations, lifted, the session's key
 * (deleted when ARGV[5] is "1"); ARGV[1] the field, ARGV[2] the record, ARGV[6..7] channel and message.
 * A lift or a revocation time that cannot be read does not stop the write (fail closed), nor does a
 * lift time that is not finite: Redis's cjson reads 1e400 and Infinity, which JSON.parse refuses and
 * GovernanceState skips (found by review: such a tombstone kept every revocation of its target out).
 */
const REVOKE_UNLESS_LIFTED = `
local lifted = redis.call('HGET', KEYS[2], ARGV[1])
local at = tonumber(ARGV[3])
if lifted and at then
  local ok, record = pcall(cjson.decode, lifted)
  if ok and type(record) == 'table' and type(record.at) == 'number' and record.at < math.huge and record.at > at + tonumber(ARGV[4]) then return 0 end
end
redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
redis.call('HDEL', KEYS[2], ARGV[1])
if ARGV[5] == '1' then redis.call('DEL', KEYS[3]) end
redis.call('PUBLISH', ARGV[6], ARGV[7])
return 1
`;

export interface RedisBackendOptions {
  readonly url: string;
  readonly prefix: string;
  readonly logger: Logger;
  readonly now?: () => number;
}

interface Envelope {
  readonly origin: string;
  readonly event: GovernanceEvent;
}

export class RedisStateBackend implements StateBackend {
  readonly #client: Redis;
  readonly #subscriber: Redis;
  readonly #prefix: string;
  readonly #origin = randomUUID();
  readonly #logger: Logger;
  readonly #now: () => number;
  readonly #listeners: Array<(event: GovernanceEvent) => void> = [];
  readonly #reconnectListeners: Array<() => Promise<void>> = [];
  #downSince: number | null = null;
  #subscriberDownSince: number | null = null;
  #everReady = false;
  /** A reload is running; `#reloadAgain`: a connection came back meanwhile, so it runs once more. */
  #reloading = false;
  #reloadAgain = false;
  /** Connections lost so far (either one): a reload only counts if none was lost while it ran. */
  #losses = 0;
  #probe: NodeJS.Timeout | null = null;
  #probing = false;
  #pinging = false;
  /** When the last PING the subscription answered was sent: every event published before it was heard. */
  #subscriberHeardAt = 0;
  /** The last error either connection reported: why connect() failed (it rejects with "Connection is closed."). */
  #lastError: Error | null = null;
  /** The database of state.url (0 without one). */
  readonly #database: number;
  /** Where state.url points, without its credentials (redisEndpoint), for the log. */
  readonly #endpoint: string;
  /** The database was refused since the state was last reloaded, and the log said so: said once per spell. */
  #databaseRefusalSaid = false;
  /** The connection opening now was refused its database: its 'ready' (if the reply came in the same read) is not one. */
  #databaseRefusedNow = false;

  constructor(options: RedisBackendOptions) {
    this.#prefix = options.prefix;
    this.#logger = options.logger;
    this.#now = options.now ?? Date.now;
    const common = {
      lazyConnect: true,
      maxRetriesPerRequest: 1,
      enableOfflineQueue: false,
      connectTimeout: CONNECT_TIMEOUT_MS,
      // A Redis that accepts connections but stops answering must fail commands, not hold every request
      // that needs a rate token or a shared token (the outage then counts toward state.stale_after).
      commandTimeout: COMMAND_TIMEOUT_MS,
      keepAlive: KEEPALIVE_MS,
      retryStrategy: (attempt: number) => Math.min(2_000, 100 * attempt),
    };
    this.#client = new Redis(options.url, common);
    this.#subscriber = new Redis(options.url, { ...common, maxRetriesPerRequest: null });
    this.#database = Number(this.#client.options.db ?? 0);
    this.#endpoint = redisEndpoint(options.url);
    this.#client.defineCommand('airlockUpdateApproval', { numberOfKeys: 1, lua: UPDATE_APPROVAL });
    this.#client.defineCommand('airlockRevokeUnlessLifted', { numberOfKeys: 3, lua: REVOKE_UNLESS_LIFTED });
    this.#client.on('error', (error: Error) => {
      this.#lastError = error;
      if ((error as { command?: { name?: unknown } }).command?.name === 'select') this.#databaseRefused(error);
      else this.#logger.debug({ err: error }, 'redis state client error');
    });
    this.#subscriber.on('error', (error: Error) => {
      this.#lastError = error;
      this.#logger.debug({ err: error }, 'redis subscriber error');
    });
    this.#client.on('close', () => {
      this.#losses++;
      if (this.#downSince === null && this.#everReady) {
        this.#downSince = this.#now();
        this.#logger.warn('lost the connection to redis; serving from what this replica knows');
      }
    });
    // 'connect' comes as each connection opens, before ioredis sends its SELECT.
    this.#client.on('connect', () => {
      this.#databaseRefusedNow = false;
    });
    this.#client.on('ready', () => {
      if (this.#databaseRefusedNow) return;
      this.#everReady = true;
      if (this.#downSince === null) return;
      this.#logger.info('redis is back; reloading the shared state');
      this.#reload();
    });
    // The subscription has its own connection: while it is away, events other replicas publish are
    // missed, so it counts as cut off too, and its return (ioredis subscribes again) reloads the state.
    this.#subscriber.on('close', () => {
      this.#losses++;
      if (this.#subscriberDownSince === null && this.#everReady) this.#subscriberDownSince = this.#now();
    });
    this.#subscriber.on('ready', () => {
      if (this.#subscriberDownSince === null) return;
      this.#logger.info('redis subscription is back; reloading the shared state');
      this.#reload();
    });
    this.#subscriber.on('message', (_channel: string, message: string) => {
      // Anyone who can PUBLISH on the channel can send anything (a stray command, an older or newer
      // Airlock sharing the prefix): what is not one of our events, or cannot be applied, is dropped
      // and logged. Thrown here, it reached ioredis's socket handler uncaught and ended every replica.
      let envelope: Envelope | null;
      try {
        envelope = JSON.parse(message) as Envelope | null;
      } catch {
        envelope = null;
      }
      if (envelope !== null && typeof envelope === 'object' && envelope.origin === this.#origin) return;
      try {
        // The event's own shape is checked where it is applied (GovernanceState), which throws here.
        if (envelope === null || typeof envelope !== 'object') throw new Error('not an Airlock message');
        for (const listener of this.#listeners) listener(envelope.event);
      } catch (error) {
        // It may have been a real event this replica could not read (a revocation from another
        // version): reload the state from what Redis keeps rather than go on without it.
        this.#logger.warn({ err: (error as Error).message, bytes: message.length }, 'a message on the shared-state channel could not be applied; it was dropped and the state is reloaded');
        this.#reload();
      }
    });
  }

  /**
   * Since when the replica has been cut off from Redis (either connection), or null when it is
   * connected and its state reloaded. The time is that of the first loss: a reload that fails, or a
   * connection that drops again before the reload is done, does not restart the stale_after clock.
   */
  get downSince(): number | null {
    const client = this.#downSince;
    const subscriber = this.#subscriberDownSince;
    if (client === null) return subscriber;
    return subscriber === null ? client : Math.min(client, subscriber);
  }

  /**
   * Reloads the shared state (the reconnect listeners) until it succeeds while both connections are
   * up; only then is the replica counted as connected again. Without this, a reload that failed (Redis
   * answering errors just after a restart) left the replica serving on state it never caught up with,
   * counted as fresh.
   */
  #reload(): void {
    if (this.#reloading) {
      this.#reloadAgain = true;
      return;
    }
    this.#reloading = true;
    void (async () => {
      for (let attempt = 1; this.#client.status === 'ready' && this.#subscriber.status === 'ready'; attempt++) {
        this.#reloadAgain = false;
        const losses = this.#losses;
        try {
          // ioredis says 'ready' before it subscribes again; a PING on the subscription connection
          // answers after that SUBSCRIBE, so the snapshot below cannot miss an event published between.
          const pingedAt = this.#now();
          await this.#subscriber.ping();
          this.#subscriberHeardAt = pingedAt;
          // And Redis keeps writes again (see #checkWritable).
          await this.#writeProbe();
          for (const listener of this.#reconnectListeners) await listener();
          // A connection lost meanwhile (events missed after the snapshot), or back again: reload again.
          if (this.#reloadAgain || this.#losses !== losses) continue;
          this.#downSince = null;
          this.#subscriberDownSince = null;
          this.#databaseRefusalSaid = false;
          this.#logger.info('shared state reloaded from redis');
          break;
        } catch (error) {
          this.#logger.warn({ err: error, attempt }, 'reloading the shared state from redis failed; requests still count as cut off from redis (state.stale_after), trying again');
          await new Promise((resolve) => setTimeout(resolve, Math.min(2_000, 250 * attempt)).unref());
        }
      }
      this.#reloading = false;
    })();
  }

  get client(): Redis {
    return this.#client;
  }

  /**
   * ioredis sends SELECT as each connection opens, reports Redis's refusal only as an 'error' event (this
   * one, before the connection is ready: replies come in order), and then stays connected to database 0.
   * Found by review: after Redis restarted with fewer databases (`databases 1` for state.url's /5) the
   * replica reloaded its state from database 0, counted itself fresh and wrote its records there, saying
   * nothing, while the revocations kept in its database went unenforced. The connection is dropped
   * instead, before anything uses it; ioredis connects again (retryStrategy, up to every 2 s) and tries
   * SELECT each time. Until one succeeds the replica counts as cut off from Redis (its 'close' set
   * downSince), so requests are refused 503 state_unavailable past stale_after (fail closed). At start-up
   * connect() sends SELECT itself and says why it failed (whyNotConnected), and serve stops: dropped here
   * then, the connection's own close error would be what it reported.
   */
  #databaseRefused(error: Error): void {
    if (!this.#everReady) return;
    this.#databaseRefusedNow = true;
    this.#client.disconnect(true);
    if (this.#databaseRefusalSaid) return;
    this.#databaseRefusalSaid = true;
    const why = error.message.startsWith('ERR DB index')
      ? 'ERR DB index is out of range: it restarted with fewer databases than state.url names, its databases setting (16 by default)'
      : `it answered ${error.message.split(' ')[0] ?? 'an error'} to SELECT: check its config and the ACL of state.url's user`;
    this.#logger.error(
      { redis: this.#endpoint, database: this.#database },
      `Redis refused database ${this.#database} when the connection to it was made again (${why}). Airlock does not use database 0 in its place: this replica counts as cut off from Redis, and once state.stale_after has passed refuses requests with 503 state_unavailable. Raise databases in the Redis config (or name a database it has in state.url and restart Airlock); Airlock connects again by itself, every 2 s`,
    );
  }

  /**
   * Connects both connections; rejects with what went wrong, said for an operator. ioredis rejects
   * connect() with "Connection is closed." whatever the cause, and reports the cause (refused, a host
   * that does not resolve, a password Redis refused) in an 'error' event just before: a fresh start with
   * Redis not there said only that (found by an ops walkthrough). app.ts names the URL around it.
   */
  async connect(): Promise<void> {
    this.#lastError = null;
    // The database of state.url: ioredis sends SELECT as each connection opens, but reports Redis's
    // refusal (ERR DB index is out of range) only as an 'error' event and stays connected to database 0
    // (found by review: `redis://host/99` served on database 0, shared with whatever else is there). Sent
    // again here, its refusal stops the start (the event is left alone until the first 'ready': see
    // #databaseRefused, which handles it on every later connection). Pub/sub ignores databases, so the
    // subscriber needs none.
    const database = this.#database;
    try {
      await this.#client.connect();
      if (database !== 0) await this.#client.select(database);
      await this.#subscriber.connect();
      await this.#subscriber.subscribe(this.#channel);
    } catch (error) {
      throw new Error(whyNotConnected(this.#lastError ?? (error as Error), database), { cause: error });
    }
    this.#subscriberHeardAt = this.#now();
    this.#probe = setInterval(() => {
      void this.#checkWritable();
      void this.#checkSubscribed();
    }, PROBE_MS);
    this.#probe.unref();
  }

  /**
   * The subscription can be lost while its connection stays open: a NAT or firewall that drops the flow
   * without a RST leaves ioredis 'ready' and no event arriving, and the replica missed every revocation
   * while counting itself fresh, never refusing after stale_after (review finding: subscriber black
   * hole). So the subscription is checked on the write probe's cadence: Redis answers a PING on it after
   * every message published before, and one not answered within the command timeout counts as losing the
   * connection, from the last PING answered (events since may be missing). The connection is then
   * dropped, so that ioredis connects and subscribes again; its 'ready' reloads the state. A replica thus
   * misses events for at most PROBE_MS + COMMAND_TIMEOUT_MS before it counts as cut off.
   */
  async #checkSubscribed(): Promise<void> {
    if (this.#pinging || this.#subscriber.status !== 'ready') return;
    this.#pinging = true;
    const sentAt = this.#now();
    try {
      await this.#subscriber.ping();
      this.#subscriberHeardAt = sentAt;
    } catch (error) {
      // Closed meanwhile: the 'close' handler counted that.
      if (this.#subscriber.status !== 'ready') return;
      this.#losses++;
      if (this.#subscriberDownSince === null && this.#everReady) {
        this.#subscriberDownSince = this.#subscriberHeardAt;
        this.#logger.warn({ err: error }, 'the redis subscription does not answer; events from other replicas may be missed, reconnecting it');
      }
      this.#subscriber.disconnect(true);
    } finally {
      this.#pinging = false;
    }
  }

  /**
   * A connection can stay open to a Redis that no longer keeps anything: one that stopped answering
   * (commands time out) or refuses writes (out of memory, read-only after a failover). Neither closes
   * the connection, so neither would count toward stale_after, and a revocation written on another
   * replica meanwhile would be missed here while this replica counted itself fresh. A small write every
   * second finds both; a failed one counts as losing Redis until a reload (which writes again) succeeds.
   */
  async #checkWritable(): Promise<void> {
    if (this.#probing || this.#client.status !== 'ready' || this.#downSince !== null) return;
    this.#probing = true;
    try {
      await this.#writeProbe();
    } catch (error) {
      this.#markLost(error);
    } finally {
      this.#probing = false;
    }
  }

  #writeProbe(): Promise<unknown> {
    return this.#client.set(`${this.#prefix}alive:${this.#origin}`, String(this.#now()), 'PX', 10 * PROBE_MS);
  }

  /** Redis answers, but cannot keep state: counted as cut off until a reload succeeds. */
  #markLost(error: unknown): void {
    if (!this.#everReady) return;
    if (this.#downSince === null) {
      this.#downSince = this.#now();
      this.#logger.warn({ err: error }, 'redis does not keep writes (out of memory, read-only or not answering); serving from what this replica knows');
    }
    this.#reload();
  }

  get #channel(): string {
    return `${this.#prefix}events`;
  }

  /**
   * Every kept record as an event. Each is read on its own: one that cannot be read (corrupted, or
   * written by another version) must not stop the others loading, or the replica would not start, or
   * would count itself cut off at every reload. What cannot be read is skipped and logged, except a
   * revocation: its hash field names what was revoked, so it is enforced from the field (fail closed).
   */
  async load(): Promise<GovernanceEvent[]> {
    const events: GovernanceEvent[] = [];
    const revocations = await this.#client.hgetall(`${this.#prefix}revocations`);
    for (const [field, raw] of Object.entries(revocations)) events.push({ type: 'revocation.added', revocation: this.#revocationOf(field, raw) });
    const lifted = await this.#client.hgetall(`${this.#prefix}lifted`);
    // A lift that cannot be read is skipped: the revocation it lifted stays lifted only if its own record is gone.
    for (const raw of Object.values(lifted)) {
      const event = this.#readRecord(raw, 'lift') as GovernanceEvent | null;
      if (event !== null) events.push(event);
    }
    for (const [pattern, build] of [
      [`${this.#prefix}session:*`, (record: object): GovernanceEvent => ({ type: 'session.created', session: record as SessionRecord })],
      [`${this.#prefix}approval:*`, (record: object): GovernanceEvent => ({ type: 'approval.created', approval: record as ApprovalRecord })],
    ] as const) {
      const records: GovernanceEvent[] = [];
      let cursor = '0';
      do {
        const [next, keys] = await this.#client.scan(cursor, 'MATCH', pattern, 'COUNT', 500);
        cursor = next;
        if (keys.length > 0) {
          for (const raw of await this.#client.mget(keys)) {
            // Skipped: that session or approval is unknown here, so it is refused (fail closed).
            const record = raw === null ? null : this.#readRecord(raw, pattern, (r) => typeof (r as { createdAt?: unknown }).createdAt === 'number');
            if (record !== null) records.push(build(record));
          }
        }
      } while (cursor !== '0');
      // Parents before children, older before newer: the order events are applied in matters.
      records.sort((a, b) => createdAt(a) - createdAt(b));
      events.push(...records);
    }
    return events;
  }

  /** A stored JSON object (that passes `check`), or null (logged, without its content) when it is not one. */
  #readRecord(raw: string, what: string, check: (record: object) => boolean = () => true): object | null {
    try {
      const parsed: unknown = JSON.parse(raw);
      if (typeof parsed === 'object' && parsed !== null && check(parsed)) return parsed;
    } catch {
      // Not JSON: reported below, without the parser's message (it quotes the text).
    }
    this.#logger.warn({ record: what.replace(this.#prefix, ''), bytes: raw.length }, 'a shared-state record in redis cannot be read; it was skipped');
    return null;
  }

  /** The revocation kept under `field` ("kind\0target"); from the field alone when the value cannot be read. */
  #revocationOf(field: string, raw: string): Revocation {
    const stored = this.#readRecord(raw, 'revocation') as Partial<Revocation> | null;
    if (stored !== null && typeof stored.kind === 'string' && REVOCATION_KINDS.has(stored.kind) && typeof stored.target === 'string' && field === `${stored.kind}\u0000${stored.target}`) return stored as Revocation;
    if (stored !== null) this.#logger.warn({ bytes: raw.length }, 'a revocation record in redis does not match its key; it is enforced from the key');
    const split = field.indexOf('\u0000');
    const kind = field.slice(0, Math.max(0, split));
    if (split < 0 || !REVOCATION_KINDS.has(kind)) {
      // Nothing says what it revoked: the state cannot be trusted (cut off, then refused after stale_after).
      throw new Error('a revocation kept in redis names no kind and target; an operator removes the field from the revocations hash');
    }
    return { kind: kind as RevocationKind, target: field.slice(split + 1), reason: 'its record in shared state could not be read; revoked from its key', by: 'unknown', at: 0 };
  }

  async append(event: GovernanceEvent): Promise<void> {
    try {
      await this.#appendOnce(event);
    } catch (error) {
      // A write refused by a Redis that is up: the same as a failed probe (a lost race on an approval is not).
      if (!(error instanceof StateConflictError) && this.#client.status === 'ready') this.#markLost(error);
      throw error;
    }
  }

  async appendUnlessLifted(event: Extract<GovernanceEvent, { type: 'revocation.added' }>, liftMarginMs: number): Promise<boolean> {
    const p = this.#prefix;
    const { kind, target, at } = event.revocation;
    const field = `${kind}\u0000${target}`;
    const session = kind === 'session';
    try {
      const written = await (this.#client as unknown as { airlockRevokeUnlessLifted(...args: string[]): Promise<number> }).airlockRevokeUnlessLifted(
        `${p}revocations`,
        `${p}lifted`,
        // An unused key when no session is named: a script declares every key it may touch.
        session ? `${p}session:${target}` : `${p}lifted`,
        field,
        JSON.stringify(event.revocation),
        String(at),
        String(liftMarginMs),
        session ? '1' : '0',
        this.#channel,
        JSON.stringify({ origin: this.#origin, event } satisfies Envelope),
      );
      return written === 1;
    } catch (error) {
      if (this.#client.status === 'ready') this.#markLost(error);
      throw error;
    }
  }

  async #appendOnce(event: GovernanceEvent): Promise<void> {
    const now = this.#now();
    const p = this.#prefix;
    const multi = this.#client.multi();
    switch (event.type) {
      case 'session.created':
        multi.set(`${p}session:${event.session.id}`, JSON.stringify(event.session), 'PX', Math.max(1, event.session.expiresAt - now));
        break;
      case 'session.ended':
        multi.del(`${p}session:${event.id}`);
        break;
      case 'revocation.added':
        multi.hset(`${p}revocations`, `${event.revocation.kind}\u0000${event.revocation.target}`, JSON.stringify(event.revocation));
        multi.hdel(`${p}lifted`, `${event.revocation.kind}\u0000${event.revocation.target}`);
        if (event.revocation.kind === 'session') multi.del(`${p}session:${event.revocation.target}`);
        break;
      case 'revocation.lifted':
        multi.hdel(`${p}revocations`, `${event.kind}\u0000${event.target}`);
        // A tombstone: a replica that was away learns this was lifted, not lost (see load()).
        multi.hset(`${p}lifted`, `${event.kind}\u0000${event.target}`, JSON.stringify(event));
        break;
      case 'approval.created':
        multi.set(`${p}approval:${event.approval.id}`, JSON.stringify(event.approval), 'PX', Math.max(1, event.approval.expiresAt - now + APPROVAL_KEPT_MS));
        break;
      default: {
        // Transitions of an approval: compare-and-set, so only one replica wins.
        const [expected, changes] =
          event.type === 'approval.decided'
            ? ['pending', { status: event.decision, decidedBy: event.by, reason: event.reason, decidedAt: event.at }]
            : event.type === 'approval.consumed'
              ? ['approved', { status: 'consumed' }]
              : ['pending,approved', { status: 'expired', ...(event.reason === undefined ? {} : { decidedBy: event.by ?? null, reason: event.reason, decidedAt: event.at }) }];
        const result = (await (this.#client as unknown as { airlockUpdateApproval(key: string, statuses: string, changes: string): Promise<number> }).airlockUpdateApproval(
          `${p}approval:${event.id}`,
          expected,
          JSON.stringify(changes),
        )) as number;
        if (result !== 1) throw new StateConflictError(`approval ${event.id} is no longer ${expected.replace(',', ' or ')}`);
        await this.#client.publish(this.#channel, JSON.stringify({ origin: this.#origin, event } satisfies Envelope));
        return;
      }
    }
    multi.publish(this.#channel, JSON.stringify({ origin: this.#origin, event } satisfies Envelope));
    await multi.exec();
  }

  subscribe(listener: (event: GovernanceEvent) => void): void {
    this.#listeners.push(listener);
  }

  onReconnect(listener: () => Promise<void>): void {
    this.#reconnectListeners.push(listener);
  }

  async compact(): Promise<void> {
    // Keys expire on their own and revocations are a hash: nothing to compact.
  }

  async close(): Promise<void> {
    if (this.#probe !== null) clearInterval(this.#probe);
    this.#listeners.length = 0;
    this.#reconnectListeners.length = 0;
    await Promise.allSettled([this.#subscriber.quit(), this.#client.quit()]);
    this.#subscriber.disconnect();
    this.#client.disconnect();
  }
}

/**
 * Why a connection could not be made, and what to do, from its error. By code and reply prefix only:
 * the texts of a few are the parts of state.url that failed (a host name), and state.url may carry a
 * password in a place the operator did not mean (a raw '@' or '/' in it moves it into the host). Redis's
 * own replies (NOAUTH, WRONGPASS) never repeat the password.
 */
function whyNotConnected(error: Error, database: number): string {
  const code = (error as NodeJS.ErrnoException).code;
  const message = error.message;
  if (code === 'ECONNREFUSED') return 'nothing accepts connections at that address (ECONNREFUSED), so redis-server is not running there or listens on another port';
  if (code === 'ENOTFOUND' || code === 'EAI_AGAIN') return `its host name does not resolve (${code}): check the host in state.url`;
  if (code === 'ETIMEDOUT') return `no answer within ${CONNECT_TIMEOUT_MS / 1000} s (ETIMEDOUT): a firewall or a wrong address, or rediss:// (TLS) to a Redis that serves plain redis://`;
  if (code === 'ECONNRESET' || code === 'EPIPE') return `the connection was cut (${code}): a firewall, or redis:// to a Redis that serves only TLS (rediss://)`;
  if (message.startsWith('NOAUTH')) return 'Redis answered, and wants a password state.url does not give (NOAUTH): write it in the URL, redis://:PASSWORD@HOST:PORT (redis://USER:PASSWORD@… for an ACL user), percent-encoding any @ / : # ? in it';
  if (message.startsWith('WRONGPASS')) return 'Redis answered, and refused the user name or password in state.url (WRONGPASS): check them against the Redis requirepass or ACL (percent-encode any @ / : # ? in the password)';
  if (message.startsWith('ERR DB index')) return `Redis refused database ${database} (ERR DB index is out of range): it has as many as its databases setting says (16 by default), numbered from 0; name one of those in state.url, or raise databases in the Redis config`;
  if (error.name === 'ParserError') return 'what answers there does not speak the Redis protocol: check the port in state.url';
  if (typeof code === 'string') return `the connection failed (${code})`;
  // A reply from Redis (ERR ..., a read-only replica...): its first word says which; the rest is Redis's.
  return /^[A-Z]{2,}\b/.test(message) ? `Redis answered ${message.split(' ')[0] as string} to the connection's set-up` : 'the connection closed before Redis answered';
}

/**
 * Where state.url points, for messages: scheme, host, port and database, never its user name, password
 * or query. ioredis takes a password from the user info and from a `?password=` parameter, and a raw
 * "@" in a password is still read as part of it (the last "@" ends the user info, as WHATWG URL parses
 * it): found by review, a pattern that cut at the first "@" printed the rest of such a password, and
 * the whole of one given as a parameter. A URL that does not parse is not printed at all.
 */
export function redisEndpoint(url: string): string {
  let parsed: URL;
  try {
    parsed = new URL(url);
  } catch {
    return 'state.url (not shown: it does not parse as a URL)';
  }
  return `${parsed.protocol}//${parsed.host}${parsed.pathname.length > 1 ? parsed.pathname : ''}`;
}

function createdAt(event: GovernanceEvent): number {
  if (event.type === 'session.created') return event.session.createdAt;
  if (event.type === 'approval.created') return event.approval.createdAt;
  return 0;
}
