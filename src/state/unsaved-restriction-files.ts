/**
 * Restrictions (a revocation, a session's end, an approval's expiry or withdrawal) that the state store has not taken yet, kept on disk
 * under data_dir/unsaved-restrictions/, so that they outlive the processes that hold them. Without this,
 * a revocation made while Redis was unreachable lived only in memory: if every process holding it
 * stopped before Redis was back, it was lost, and the revoked agent worked again after a restart.
 *
 * One file per process that may hold such restrictions at once: `main.jsonl` for a single process,
 * `w<N>.jsonl` for worker N of a cluster (node:cluster forks a worker again only once the old one has
 * exited, so a worker id names at most one live process). Workers sharing data_dir therefore never
 * write the same file. A file is the whole list of what its owner holds unsaved, rewritten whole on
 * every change (a temporary file, fsync, rename), so a crash leaves the old list or the new one, never
 * half a record; it is removed once its owner has written everything to the store.
 *
 * At start-up every file is read (GovernanceState holds what it reads at once and writes it to the
 * store): this process's own (left by the process that had its worker id before), those of owners that
 * cannot be running now (a single process's file under a cluster, a worker id beyond `workers`), and
 * those of the other workers, which may be running. The first two are this process's to remove once
 * everything it read is in the store; the others are left to their owners.
 *
 * What is written is the governance events themselves: names, session and approval ids, reasons, who and when. No
 * token and no secret (a session's token hash is not in a session.ended event either).
 */
import { readdir, readFile, unlink } from 'node:fs/promises';
import { join } from 'node:path';
import type { Logger } from 'pino';
import type { GovernanceEvent } from './governance-records.js';
import { makePrivateDir } from './make-private-dir.js';
import { replaceFile, syncDir } from './write-durably.js';

/** The files this module writes: main.jsonl, w1.jsonl, ... (anything else in the directory is ignored). */
const FILE_NAME = /^(main|w[1-9][0-9]*)\.jsonl$/;
/** write-durably.ts's temporary files, <file>.<12 hex digits>.tmp, and <file>.tmp of earlier versions. */
const TEMPORARY_NAME = /^(main|w[1-9][0-9]*)\.jsonl(?:\.[0-9a-f]{12})?\.tmp$/;
/** How soon a write that failed is tried again (as GovernanceState retries the store). */
const RETRY_MS = 1_000;

export interface UnsavedRestrictionFilesOptions {
  /** data_dir/unsaved-restrictions: made 0700 when first needed. */
  readonly dir: string;
  /** This process's file: "main" for a single process, "w<N>" for cluster worker N. */
  readonly owner: string;
  /** The owners that may be running beside this one (the cluster's other workers). */
  readonly liveOwners: ReadonlySet<string>;
  readonly logger: Pick<Logger, 'info' | 'warn' | 'error'> | null;
}

/** The owner of a process: "w<N>" for cluster worker N, "main" otherwise (or for an id that is not a worker number). */
export function restrictionFileOwner(workerId: string | undefined): string {
  return workerId !== undefined && /^[1-9][0-9]*$/.test(workerId) ? `w${workerId}` : 'main';
}

/** The other workers of a cluster of `count`, which may be running beside `owner` (none for a single process). */
export function otherWorkerOwners(owner: string, count: number): Set<string> {
  if (owner === 'main') return new Set();
  return new Set(Array.from({ length: count }, (_, i) => `w${i + 1}`).filter((name) => name !== owner));
}

export class UnsavedRestrictionFiles {
  readonly #dir: string;
  readonly #file: string;
  readonly #liveOwners: ReadonlySet<string>;
  readonly #logger: UnsavedRestrictionFilesOptions['logger'];
  /** Files of owners that are not running, read at start-up: removed once this process has saved all it holds. */
  readonly #inherited = new Set<string>();
  /** The newest list asked for (save), its number, and the number of the last one on disk. */
  #latest: readonly GovernanceEvent[] = [];
  #asked = 0;
  #written = 0;
  /** One write at a time, in order: two at once could rename an older list over a newer one. */
  #queue: Promise<void> = Promise.resolve();
  /** A failure has been logged and nothing written since (one error line per episode, not one a second). */
  #failing = false;
  #retry: NodeJS.Timeout | null = null;
  #closed = false;

  constructor(options: UnsavedRestrictionFilesOptions) {
    if (!FILE_NAME.test(`${options.owner}.jsonl`)) throw new Error(`unsaved restrictions: "${options.owner}" is not main or w<N>`);
    this.#dir = options.dir;
    this.#file = join(options.dir, `${options.owner}.jsonl`);
    this.#liveOwners = options.liveOwners;
    this.#logger = options.logger;
  }

  /** This process's file, for log lines. */
  get file(): string {
    return this.#file;
  }

  /**
   * Every record in every file, not yet checked (GovernanceState takes only restrictions), each once.
   * A line that cannot be read (a torn last line) is skipped with a warning. A file that cannot be read
   * at all throws: it may hold a revocation, and starting without it could let a revoked agent in.
   */
  async load(): Promise<unknown[]> {
    let names: string[];
    try {
      names = await readdir(this.#dir);
    } catch (error) {
      if ((error as NodeJS.ErrnoException).code === 'ENOENT') return [];
      throw unreadable(this.#dir, error);
    }
    const records: unknown[] = [];
    const seen = new Set<string>();
    // Taken on only once every file has been read: a start-up that fails half way must not remove any.
    const inherited: string[] = [];
    for (const name of names.sort()) {
      const temporary = TEMPORARY_NAME.exec(name);
      if (temporary !== null) {
        // Left by a writer that stopped between writing and renaming: the file it was to replace is whole.
        if (!this.#liveOwners.has(temporary[1] as string)) await unlink(join(this.#dir, name)).catch(() => undefined);
        continue;
      }
      const match = FILE_NAME.exec(name);
      if (match === null) continue;
      const path = join(this.#dir, name);
      let text: string;
      try {
        text = await readFile(path, 'utf8');
      } catch (error) {
        // Removed meanwhile by its owner, a worker that has saved everything in it.
        if ((error as NodeJS.ErrnoException).code === 'ENOENT') continue;
        throw unreadable(path, error);
      }
      if (!this.#liveOwners.has(match[1] as string)) inherited.push(path);
      const lines = text.split('\n');
      for (const [index, line] of lines.entries()) {
        if (line.trim() === '') continue;
        let record: unknown;
        try {
          record = JSON.parse(line);
        } catch {
          const torn = index === lines.length - 1;
          this.#logger?.warn({ file: path, line: index + 1 }, torn ? 'the last line of an unsaved-restrictions file is torn (a crash mid-write?); it was skipped' : 'a line of an unsaved-restrictions file cannot be read; it was skipped');
          continue;
        }
        const key = JSON.stringify(record);
        if (seen.has(key)) continue;
        seen.add(key);
        records.push(record);
      }
    }
    for (const path of inherited) this.#inherited.add(path);
    return records;
  }

  /**
   * Makes this process's file hold `events` (removing it, and the inherited files, when there are none
   * left to save). Resolves true once a list at least as new is on disk, false when that write failed:
   * then an error line says what to do, and the newest list is tried again every second. Never rejects:
   * the restrictions hold in memory whatever the disk does, so nothing is let through because of it.
   */
  save(events: readonly GovernanceEvent[]): Promise<boolean> {
    this.#latest = [...events];
    const asked = ++this.#asked;
    this.#queue = this.#queue.then(() => this.#writeLatest());
    return this.#queue.then(() => this.#written >= asked);
  }

  async close(): Promise<void> {
    this.#closed = true;
    if (this.#retry !== null) clearTimeout(this.#retry);
    this.#retry = null;
    await this.#queue;
  }

  async #writeLatest(): Promise<void> {
    if (this.#written === this.#asked) return;
    const asked = this.#asked;
    const events = this.#latest;
    try {
      if (events.length === 0) await this.#remove();
      else await this.#write(events);
      this.#written = asked;
      if (this.#failing) {
        this.#failing = false;
        this.#logger?.info({ file: this.#file }, 'unsaved restrictions are kept on disk again');
      }
    } catch (error) {
      if (!this.#failing) {
        this.#failing = true;
        this.#logger?.error(
          { err: error, file: this.#file },
          `cannot write ${this.#file}: restrictions the state store has not taken yet (revocations, ended sessions) still hold in this process, but are lost if every Airlock process on this data_dir stops before the store is back. Make data_dir writable (free space, permissions); the write is retried every second. Until then keep Airlock running, and make the restriction again once the store is back if it had to stop.`,
        );
      }
      this.#retryLater();
    }
  }

  #retryLater(): void {
    if (this.#retry !== null || this.#closed) return;
    this.#retry = setTimeout(() => {
      this.#retry = null;
      if (this.#written === this.#asked || this.#closed) return;
      this.#queue = this.#queue.then(() => this.#writeLatest());
    }, RETRY_MS);
    this.#retry.unref();
  }

  /** The whole list, through a synced temporary file renamed over the file (write-durably.ts). */
  async #write(events: readonly GovernanceEvent[]): Promise<void> {
    makePrivateDir(this.#dir);
    await replaceFile(this.#file, events.map((event) => `${JSON.stringify(event)}\n`).join(''));
  }

  /** Everything is in the store: this process's file goes, and with it the files it inherited. */
  async #remove(): Promise<void> {
    for (const path of [this.#file, ...this.#inherited]) {
      try {
        await unlink(path);
      } catch (error) {
        if ((error as NodeJS.ErrnoException).code !== 'ENOENT') throw error;
      }
      this.#inherited.delete(path);
    }
    await syncDir(this.#dir);
  }
}

function unreadable(path: string, error: unknown): Error {
  const code = (error as NodeJS.ErrnoException).code ?? (error as Error).message;
  return new Error(
    `cannot read ${path} (${code}): it holds restrictions (revocations, ended sessions) made while the state store could not take them, and starting without them could let a revoked agent in. Make it readable by the user Airlock runs as; or, once every restriction in it is in the state store, remove it`,
    { cause: error },
  );
}
