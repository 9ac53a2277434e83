/**
 * The audit log: JSON lines appended to a file opened O_APPEND with mode 0600, hash-chained
 * (audit-chain.ts), rotated by size with the chain carried over, and optionally copied to a webhook.
 *
 * Fail closed by default, as Vault does with its audit devices: when a write fails, the log is marked
 * broken and every request is refused (503 audit_unavailable) until a write succeeds again. Refused
 * requests still try to write their own record, so the log heals itself with the first successful
 * write. `audit.on_failure: log` is the explicit opt-out: requests go on, the failure is logged and
 * counted. Records are written in batches (one syscall for many requests): a record whose answer waits
 * for it (a denial, written before it is sent) at the end of the event-loop turn, and one whose request
 * is already answered within AFTER_ANSWER_WINDOW_MS, with whatever else arrives meanwhile. Each batch is
 * chained at write time, so a failed batch leaves no gap in the chain. Every line passes the secret
 * catalogue's scrubber as a backstop before it is hashed and written.
 *
 * The write is synchronous, as pino's file destination is by default and as Vault's file audit device
 * writes within the request. The threadpool round trip of an asynchronous write cost more than the
 * write itself (a wake-up on each side per batch; `npm run profile` at one connection showed the audit
 * path as a fifth of the CPU per request). And a disk that stalls now stalls the proxy instead of
 * letting answered requests pile up unwritten records in memory: the audit file belongs on a local disk.
 */
import { closeSync, fstatSync, ftruncateSync, openSync, readSync, renameSync, statSync, unlinkSync, writeSync } from 'node:fs';
import { open } from 'node:fs/promises';
import { dirname } from 'node:path';
import type { Logger } from 'pino';
import { request } from 'undici';
import { AirlockError } from '../errors.js';
import type { SecretCatalog } from '../redaction/secret-catalog.js';
import { AuditBatch } from './audit-batch.js';
import { GENESIS } from './audit-chain.js';
import { auditRecordFault, serializeAuditRecord, type AuditRecord } from './audit-record.js';
import { makePrivateDir } from '../state/make-private-dir.js';

/**
 * Hears how a record's write ended: written, or not (`error` set under `on_failure: refuse`, null under
 * `log`). Called from the write, once; it must not throw.
 */
export type AuditWritten = (written: boolean, error: Error | null) => void;

interface Pending {
  record: AuditRecord;
  done: AuditWritten;
}

export interface AuditLogOptions {
  readonly file: string;
  readonly secrets: SecretCatalog;
  readonly onFailure: 'refuse' | 'log';
  /** Rotate when the file would grow past this many bytes; 0 = never. */
  readonly maxBytes: number;
  /** Rotated files kept (audit.jsonl.1 ... .N). */
  readonly keep: number;
  readonly webhook: string | null;
  readonly logger: Logger | null;
  /** Called once per failed write, and once per record that could not be serialized (metrics). */
  readonly onWriteFailure?: () => void;
  /** Called with the number of records missing from the webhook's copy: dropped from its full queue, or in a batch it refused or never got (metrics). */
  readonly onWebhookDrop?: (count: number) => void;
  /** How long an answered request's record may wait for company; AFTER_ANSWER_WINDOW_MS by default. */
  readonly windowMs?: number;
  /**
   * Builds the airlock:audit-gap record that ends the first batch written after records were lost (or
   * after a run that ended without airlock:stop), so the chain itself says what it is missing; none
   * without it (unit tests).
   */
  readonly gapRecord?: (reason: string) => AuditRecord;
  /** The clock of `since` in the gap record (the proxy's, which tests move on); Date.now by default. */
  readonly now?: () => number;
}

/**
 * Records lost since the last write that succeeded: how many, from when, and the first error; and
 * whether the previous run ended without its airlock:stop record (killed, crashed, or its last writes
 * failed), whose last records may then be missing, how many unknown (`previousLast`: its last record's time).
 */
interface Loss {
  count: number;
  since: string | null;
  error: string | null;
  previousUnclean: boolean;
  previousLast: string | null;
}

const WEBHOOK_BATCH = 100;
/** Records waiting for the webhook; beyond this the oldest are dropped (they are in the file). */
const WEBHOOK_QUEUE = 10 * WEBHOOK_BATCH;
/**
 * How long the record of an answered request may wait for others to share its write. Batching by
 * event-loop turn alone still meant a write per request at one connection (one request per turn), on
 * the path of the agent's next request; `npm run bench` measured the added p50 at one connection
 * 0.09 ms lower with this window. A crash loses at most this window of answered requests' records, and
 * a failing disk is noticed (and requests refused) at most this much later than at the end of the turn.
 */
export const AFTER_ANSWER_WINDOW_MS = 2;
/** The batch buffer's first size, and the largest kept between writes (one grown past it is let go). */
const BATCH_BYTES = 64 * 1024;
const BATCH_BYTES_KEPT = 1024 * 1024;
/** The first tail read at start-up; most records are under 2 KiB. */
const TAIL_BYTES = 256 * 1024;
/** A last line longer than this is treated as torn (the chain restarts at genesis, and verify shows it). */
const MAX_TAIL_BYTES = 64 * 1024 * 1024;

export class AuditLog {
  readonly file: string;
  readonly #options: AuditLogOptions;
  /** The open file descriptor (O_APPEND), or null until the next write reopens it. */
  #fd: number | null = null;
  #size = 0;
  /**
   * False for what is not a regular file (audit.file: /dev/null, a FIFO to a collector): rotating it
   * would rename it, and /dev/null renamed by a root process breaks the whole machine.
   */
  #rotatable = true;
  /** The device and inode #fd is open on: the path must still name them (#reopenIfMoved). */
  #dev = 0;
  #ino = 0;
  #lastHash = GENESIS;
  #queue: Pending[] = [];
  /** The end-of-turn write, when a pending record's answer waits for it. */
  #flushNow: NodeJS.Immediate | null = null;
  /** The window's write, when every pending record's request is already answered. */
  #flushSoon: NodeJS.Timeout | null = null;
  #broken: Error | null = null;
  #lost: Loss | null = null;
  #closed = false;
  readonly #listeners = new Set<(record: AuditRecord) => void>();
  #outbox: string[] = [];
  /** Records dropped from the outbox since it last emptied (one drop episode); 0 when none. */
  #webhookDropped = 0;
  /**
   * Every write's lines, encoded and sealed in a buffer kept between writes. #flush builds, writes and
   * empties it in one synchronous pass, and nothing it calls meanwhile (the write-failure hook, the
   * logger) flushes.
   */
  readonly #batch = new AuditBatch(BATCH_BYTES, BATCH_BYTES_KEPT);
  #shipping: Promise<void> | null = null;

  constructor(options: AuditLogOptions) {
    this.file = options.file;
    this.#options = options;
  }

  /** Opens (creating) the file and picks up the chain where the last line left it. */
  async open(): Promise<void> {
    makePrivateDir(dirname(this.file));
    this.#openFile();
    this.#endTornLine();
    const last = await this.#lastRecordOnDisk();
    this.#lastHash = last?.hash ?? GENESIS;
    // A log whose last record is not airlock:stop (or is torn) was left by a run that did not stop: its
    // last moments' records, and any loss it could not report, may be missing; the next batch says so
    // (found by review: a restart after an outage, or a crash, left no trace of what was lost).
    if (last !== null && last.route !== 'airlock:stop') this.#lost = { count: 0, since: null, error: null, previousUnclean: true, previousLast: last.time };
  }

  /**
   * A file that does not end with a newline was cut mid-write by the run before (power lost before the
   * page cache reached the disk, a partial write whose cut-off failed). It is ended with one, the torn
   * bytes kept as they are for `audit verify` to show: this run's first batch appended to it was merged
   * into that unparseable line, its airlock:start and the airlock:audit-gap record saying the previous
   * run did not stop among them, and a last record missing only its newline broke an intact chain (found
   * by review). Not a regular file (/dev/null, a FIFO): nothing to read back.
   */
  #endTornLine(): void {
    if (!this.#rotatable || this.#size === 0 || this.#fd === null) return;
    const last = Buffer.alloc(1);
    const reader = openSync(this.file, 'r');
    try {
      readSync(reader, last, 0, 1, this.#size - 1);
    } finally {
      closeSync(reader);
    }
    if (last[0] === 0x0a) return;
    this.#size += writeSync(this.#fd, '\n');
  }

  /** Opens the file for appending; its size and kind are read from what was opened, every time. */
  #openFile(): number {
    const fd = openSync(this.file, 'a', 0o600);
    const info = fstatSync(fd);
    this.#fd = fd;
    this.#size = info.size;
    this.#rotatable = info.isFile();
    this.#dev = info.dev;
    this.#ino = info.ino;
    return fd;
  }

  /**
   * Before each batch: the open file must still be the one at the path. One removed (rm, or a log
   * shipper that moves files away without telling Airlock) or replaced while open would otherwise take
   * every later record into an unlinked inode or a file nobody reads, with health saying "writable", and
   * a restart would begin a fresh chain at genesis. So the path is opened again (created afresh when it is
   * gone) and the chain continues from the last hash written, as after a rotation, never from the new
   * file's tail, which may be anyone's: `audit verify` then shows the first record following a hash that
   * is in no file given (the removed records), and verifies a renamed-away file followed by the new one
   * as one chain. Requests are not refused for it: every record from here on is written and chained, and
   * the removal is visible (verify, and this error log line), so a refusal would protect nothing. When the
   * path cannot be opened (its directory is gone too), the write fails and audit.on_failure applies (503
   * audit_unavailable) until it can.
   *
   * One stat of the path per batch, not per request: ~1.7 us on a local disk (a 400-byte write is ~1.5
   * us), measured in a loop of 200,000. The path naming the same device and inode proves the open file
   * still has a link there, so no fstat is needed. Only regular files: /dev/null and a FIFO are not
   * rotated or replaced by Airlock, and reopening a FIFO blocks until a reader comes.
   */
  #reopenIfMoved(): void {
    if (!this.#rotatable) return;
    const info = statSync(this.file, { throwIfNoEntry: false });
    if (info !== undefined && info.dev === this.#dev && info.ino === this.#ino) return;
    this.#closeFile();
    this.#openFile();
    this.#say(
      'error',
      { file: this.file, head: this.#lastHash },
      `the audit file was ${info === undefined ? 'removed' : 'replaced'} while Airlock had it open; writing on at the path, the hash chain continuing from the last record written (head). The records written before are only where the old file went, if anywhere; \`airlock audit verify\` shows the break.`,
    );
  }

  /**
   * The last record on disk, read from the file's tail (never the whole file): its hash (GENESIS when the
   * line is torn), route and time; null when there is none (a new log, or not a regular file).
   */
  async #lastRecordOnDisk(): Promise<{ hash: string; route: string | null; time: string | null } | null> {
    for (const candidate of [this.file, `${this.file}.1`]) {
      let text: string;
      try {
        const handle = await open(candidate, 'r');
        try {
          const info = await handle.stat();
          // Not a regular file (a device such as /dev/null): nothing was chained there.
          if (!info.isFile()) return null;
          // The tail read grows until it holds the whole last line: a record can outgrow TAIL_BYTES
          // (a long path under a large limits.max_header_bytes), and a cut line would restart the chain.
          for (let length = Math.min(info.size, TAIL_BYTES); ; length = Math.min(info.size, length * 4)) {
            const buffer = Buffer.alloc(length);
            await handle.read(buffer, 0, length, info.size - length);
            text = buffer.toString('utf8');
            const lastBreak = text.lastIndexOf('\n', text.length - 2);
            if (lastBreak !== -1 || length === info.size || length >= MAX_TAIL_BYTES) break;
          }
        } finally {
          await handle.close();
        }
      } catch {
        continue;
      }
      const lines = text.split('\n').filter((l) => l !== '');
      const last = lines[lines.length - 1];
      if (last === undefined) continue;
      try {
        const record = JSON.parse(last) as { hash?: unknown; route?: unknown; time?: unknown };
        if (typeof record.hash === 'string') {
          return { hash: record.hash, route: typeof record.route === 'string' ? record.route : null, time: typeof record.time === 'string' ? record.time : null };
        }
      } catch {
        // A torn last line: the verifier will show the break there; chain on from genesis.
      }
      return { hash: GENESIS, route: null, time: null };
    }
    return null;
  }

  /** The hash of the last record written: kept elsewhere, it lets `audit verify --head` see a cut tail. */
  get head(): string {
    return this.#lastHash;
  }

  /** True under `on_failure: refuse`: a record that cannot be written refuses its request. */
  get failsClosed(): boolean {
    return this.#options.onFailure === 'refuse';
  }

  get healthy(): boolean {
    return this.#broken === null;
  }

  /** Throws 503 audit_unavailable while the last write failed: nothing is forwarded unaudited. */
  assertWritable(): void {
    if (this.#broken !== null && this.#options.onFailure === 'refuse') {
      throw new AirlockError('audit_unavailable', 'The audit log cannot be written, so Airlock refuses to forward requests until it can. An operator checks the disk and the audit file.');
    }
  }

  /** Hears every record once it is written (the admin API's live audit feed). */
  subscribe(listener: (record: AuditRecord) => void): () => void {
    this.#listeners.add(listener);
    return () => this.#listeners.delete(listener);
  }

  /**
   * Resolves with true once the record is on disk (in the kernel's page cache). When the write failed
   * it rejects under the refuse policy, and resolves with false under `on_failure: log`. `answered`:
   * the agent already has its answer, so the record may wait up to AFTER_ANSWER_WINDOW_MS for company;
   * otherwise it is written at the end of this event-loop turn, with every record pending before it.
   */
  append(record: AuditRecord, answered = false): Promise<boolean> {
    if (this.#closed) return Promise.reject(new Error('audit log is closed'));
    return new Promise<boolean>((resolve, reject) => {
      this.#enqueue({ record, done: (written, error) => (error === null ? resolve(written) : reject(error)) }, answered);
    });
  }

  /**
   * The record of a request already answered (it may wait AFTER_ANSWER_WINDOW_MS for company); `done`
   * hears how the write ended. The request path's form of `append`: no promise and no suspended caller
   * per request, only the caller's callback.
   */
  appendAnswered(record: AuditRecord, done: AuditWritten): void {
    if (this.#closed) return done(false, new Error('audit log is closed'));
    this.#enqueue({ record, done }, true);
  }

  #enqueue(pending: Pending, answered: boolean): void {
    this.#queue.push(pending);
    if (this.#flushNow !== null) return;
    if (answered) {
      this.#flushSoon ??= setTimeout(this.#flush, this.#options.windowMs ?? AFTER_ANSWER_WINDOW_MS);
      return;
    }
    this.#cancelFlushSoon();
    this.#flushNow = setImmediate(this.#flush);
  }

  #cancelFlushSoon(): void {
    if (this.#flushSoon === null) return;
    clearTimeout(this.#flushSoon);
    this.#flushSoon = null;
  }

  readonly #flush = (): void => {
    this.#flushNow = null;
    this.#cancelFlushSoon();
    const queued = this.#queue;
    if (queued.length === 0) return;
    this.#queue = [];
    // Chain the batch now, from the last hash actually written. A record that cannot be serialized,
    // scrubbed or sealed fails alone (settled, counted, and the log unhealthy until a write succeeds),
    // so the other requests of its batch keep their records.
    let prev = this.#lastHash;
    const lines = this.#batch;
    const batch: Pending[] = [];
    try {
      for (const pending of queued) {
        try {
          prev = lines.append(this.#options.secrets.scrub(serializeAuditRecord(pending.record, prev)), prev);
          batch.push(pending);
        } catch (error) {
          const fault = auditRecordFault(pending.record);
          this.#fail(fault === null ? (error as Error) : new TypeError(`audit record field ${fault}`, { cause: error }), [pending]);
        }
      }
      if (batch.length === 0) return;
      // Found by the ops walkthrough: an outage left no trace in the log, and `audit verify` called the
      // chain intact. The chain stays unbroken (nothing is forged), and the first batch written after
      // the outage ends with a record of how many records are missing, since when, and why: after the
      // batch's own records, so that one of them that could not be serialized is counted too (found by
      // review).
      const lost = this.#lost;
      let gapWritten = false;
      if (lost !== null && this.#options.gapRecord !== undefined) {
        try {
          prev = lines.append(this.#options.secrets.scrub(serializeAuditRecord(this.#options.gapRecord(this.#gapReason(lost)), prev)), prev);
          gapWritten = true;
        } catch (error) {
          this.#say('error', { err: error }, 'the airlock:audit-gap record could not be built; the warn line that follows says what is missing');
        }
      }
      let written = 0;
      try {
        const data = lines.bytes;
        // Reopened after a failed write before the size check: the file at that path may be another now.
        if (this.#fd === null) this.#openFile();
        else this.#reopenIfMoved();
        this.#rotateIfNeeded(data.length);
        const fd = this.#fd ?? this.#openFile();
        while (written < data.length) written += writeSync(fd, data, written, data.length - written);
      } catch (error) {
        // Part of the batch reached the file before the error (a disk filling up): cut it off, or the
        // next batch would be appended to a torn line.
        if (written > 0 && this.#fd !== null) this.#truncateTail(this.#fd, written);
        // Reopen on the next attempt: the file may have been replaced or the descriptor invalidated.
        this.#closeFile();
        this.#fail(error as Error, batch);
        return;
      }
      this.#size += written;
      this.#lastHash = prev;
      this.#broken = null;
      if (lost !== null) {
        this.#lost = null;
        const said = gapWritten ? '; an airlock:audit-gap record in the log says so' : '';
        if (lost.count > 0) this.#say('warn', { lost: lost.count, since: lost.since, error: lost.error }, `the audit log is writable again; ${lost.count} record${lost.count === 1 ? ' was' : 's were'} not written since ${lost.since ?? 'start-up'}${said}`);
        if (lost.previousUnclean) this.#say('warn', { last_record: lost.previousLast }, `the previous run ended without an airlock:stop record in the audit log (killed, crashed, or its last writes failed): its last records may be missing${said}`);
      }
      for (const pending of batch) this.#settle(pending, true, null);
      // Written: a live-feed listener or the webhook copy failing says nothing about the file.
      if (this.#listeners.size === 0 && this.#options.webhook === null) return;
      try {
        this.#publish(lines.lines());
      } catch (error) {
        this.#say('error', { err: error }, 'an audit feed listener failed; the records are written');
      }
    } finally {
      lines.clear();
    }
  };

  /** One callback failing must not leave the rest of its batch unsettled. */
  #settle(pending: Pending, written: boolean, error: Error | null): void {
    try {
      pending.done(written, error);
    } catch (failure) {
      this.#say('error', { err: failure }, 'a request failed on hearing how its audit record was written');
    }
  }

  /** Records that did not reach the file: the log is unhealthy until a write succeeds; each request learns it. */
  #fail(error: Error, failed: readonly Pending[]): void {
    this.#broken = error;
    this.#lost ??= { count: 0, since: null, error: null, previousUnclean: false, previousLast: null };
    if (this.#lost.count === 0) {
      this.#lost.since = new Date((this.#options.now ?? Date.now)()).toISOString();
      this.#lost.error = (error as NodeJS.ErrnoException).code ?? error.message;
    }
    this.#lost.count += failed.length;
    for (const pending of failed) {
      this.#settle(pending, false, this.#options.onFailure === 'log' ? null : error);
    }
    this.#options.onWriteFailure?.();
    this.#say('error', { err: error, records: failed.length }, 'audit records could not be written');
  }

  #gapReason(lost: Loss): string {
    const parts: string[] = [];
    if (lost.previousUnclean) {
      parts.push(`The previous run of Airlock ended without an airlock:stop record${lost.previousLast === null ? '' : ` (its last record is of ${lost.previousLast})`}: it was killed or crashed, or its last records could not be written, so records of its last moments may be missing (how many is not known).`);
    }
    if (lost.count > 0) {
      const requests = this.#options.onFailure === 'log' ? 'their requests went on unaudited (audit.on_failure: log)' : 'requests were refused 503 audit_unavailable meanwhile (audit.on_failure: refuse), but for any already answered when its record failed';
      parts.push(`${lost.count} audit record${lost.count === 1 ? ' was' : 's were'} not written from ${lost.since ?? 'start-up'} until this record (${lost.error ?? 'unknown error'}); ${requests}. The log's metrics and error lines cover that time.`);
    }
    return parts.join(' ');
  }

  /**
   * Logs, and never throws: a log that fails too (the scrubber fault that failed a record, a broken
   * stdout) must not leave the requests of a batch waiting, fail a write that succeeded, or end the
   * flush before the rest of its batch is written. The requests and the write-failure counter still say it.
   */
  #say(level: 'error' | 'warn' | 'info', fields: Record<string, unknown>, message: string): void {
    try {
      this.#options.logger?.[level](fields, message);
    } catch {
      // Nowhere left to say it.
    }
  }

  #truncateTail(fd: number, bytes: number): void {
    try {
      ftruncateSync(fd, Math.max(0, fstatSync(fd).size - bytes));
    } catch {
      // The file is unusable anyway; `audit verify` shows a torn last line.
    }
  }

  #closeFile(): void {
    const fd = this.#fd;
    this.#fd = null;
    if (fd === null) return;
    try {
      closeSync(fd);
    } catch {
      // Already unusable; the next write opens the file afresh.
    }
  }

  /** audit.jsonl -> .1 -> .2 ... -> .keep, when the next write would pass max_bytes. */
  #rotateIfNeeded(incoming: number): void {
    if (!this.#rotatable || this.#options.maxBytes <= 0 || this.#size === 0 || this.#size + incoming <= this.#options.maxBytes) return;
    this.#closeFile();
    for (let n = this.#options.keep - 1; n >= 1; n--) {
      try {
        renameSync(`${this.file}.${n}`, `${this.file}.${n + 1}`);
      } catch {
        // That generation does not exist (yet).
      }
    }
    // keep: 0 keeps no rotated copy: the full file is removed and a new one begun (the chain goes on).
    try {
      if (this.#options.keep >= 1) renameSync(this.file, `${this.file}.1`);
      else unlinkSync(this.file);
    } catch (error) {
      // Moved or removed by someone else meanwhile: a new file is begun all the same. Any other error
      // fails the write (and the log heals at the first write that succeeds).
      if ((error as NodeJS.ErrnoException).code !== 'ENOENT') throw error;
    }
    try {
      this.#size = statSync(this.file).size;
    } catch {
      this.#size = 0;
    }
    this.#say('info', { file: this.file, keep: this.#options.keep }, 'rotated the audit log; the hash chain continues in the new file');
  }

  #publish(lines: readonly string[]): void {
    if (this.#listeners.size > 0) {
      for (const line of lines) {
        const record = JSON.parse(line) as AuditRecord;
        for (const listener of this.#listeners) listener(record);
      }
    }
    if (this.#options.webhook !== null) {
      this.#outbox.push(...lines);
      // Bounded: a webhook that is down must not grow memory without end (the file is the record).
      if (this.#outbox.length > WEBHOOK_QUEUE) this.#dropOldest(this.#outbox.length - WEBHOOK_QUEUE);
      this.#shipping ??= this.#ship().finally(() => {
        this.#shipping = null;
      });
    }
  }

  /**
   * Drops the oldest queued webhook records, counted each time, and said once per episode (from the first
   * drop until the queue next empties) rather than per batch: a webhook down under load would otherwise
   * log a line per audit write. Said at all because the webhook's copy is the one kept out of the writer's
   * reach (`audit verify --head` takes its last hash), and it had gaps nobody was told of.
   */
  #dropOldest(count: number): void {
    this.#outbox.splice(0, count);
    if (this.#webhookDropped === 0) {
      this.#say('warn', { records: count, queue: WEBHOOK_QUEUE }, `the audit webhook is ${WEBHOOK_QUEUE} records behind; the oldest are dropped from its copy (they are in the audit file), counted in airlock_audit_webhook_dropped_total, and totalled here when it catches up`);
    }
    this.#webhookDropped += count;
    this.#options.onWebhookDrop?.(count);
  }

  /** Copies records to audit.webhook in batches (a JSON array of records), best effort. */
  async #ship(): Promise<void> {
    const webhook = this.#options.webhook as string;
    while (this.#outbox.length > 0) {
      const batch = this.#outbox.splice(0, WEBHOOK_BATCH);
      try {
        const response = await request(webhook, { method: 'POST', headers: { 'content-type': 'application/json' }, body: `[${batch.join(',')}]`, headersTimeout: 5_000, bodyTimeout: 5_000 });
        await response.body.dump();
        if (response.statusCode >= 300) {
          this.#say('warn', { status: response.statusCode, records: batch.length }, 'audit webhook refused a batch');
          this.#options.onWebhookDrop?.(batch.length);
        }
      } catch (error) {
        this.#say('warn', { err: error, records: batch.length }, 'audit webhook unreachable; the batch is only in the file');
        // Not sent again: counted as missing from the webhook's copy, like records dropped from the queue.
        this.#options.onWebhookDrop?.(batch.length);
      }
    }
    if (this.#webhookDropped > 0) {
      this.#say('warn', { records: this.#webhookDropped }, 'the audit webhook caught up; records were dropped from its copy while it was behind (they are in the audit file)');
      this.#webhookDropped = 0;
    }
  }

  async close(): Promise<void> {
    // Records still waiting for their batch are written now.
    if (this.#flushNow !== null) clearImmediate(this.#flushNow);
    this.#flush();
    this.#closed = true;
    await this.#shipping;
    this.#closeFile();
  }
}
