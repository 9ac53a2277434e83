/**
 * The embedded state backend: governance events as JSON lines in data_dir/state.jsonl (mode 0600),
 * appended in order, replayed at start-up and compacted to the live state (write-durably.ts: a synced temporary file renamed into place).
 */
import { open, type FileHandle } from 'node:fs/promises';
import { dirname } from 'node:path';
import { fileAccessProblem } from '../config/file-access-problem.js';
import type { GovernanceEvent } from './governance-records.js';
import type { StateBackend } from './state-backend.js';
import { makePrivateDir } from './make-private-dir.js';
import { replaceFile } from './write-durably.js';

export class FileStateBackend implements StateBackend {
  readonly #file: string;
  #handle: FileHandle | null = null;
  #queue: Promise<void> = Promise.resolve();

  constructor(file: string) {
    this.#file = file;
  }

  /**
   * Read line by line, not as one string (found by review: a file past V8's longest string, ~512 MiB,
   * could not be read at all, and Airlock could not start on its data_dir).
   */
  async load(): Promise<GovernanceEvent[]> {
    let handle: FileHandle;
    try {
      handle = await open(this.#file, 'r');
    } catch (error) {
      if ((error as NodeJS.ErrnoException).code === 'ENOENT') return [];
      // serve stopped with node's bare "EACCES: permission denied, open ..." (found by review).
      throw new Error(`${fileAccessProblem(this.#file, error)} (the embedded state: sessions, revocations and approvals; Airlock does not start without them)`, { cause: error });
    }
    const events: GovernanceEvent[] = [];
    try {
      for await (const line of handle.readLines({ encoding: 'utf8' })) {
        if (line.trim() === '') continue;
        try {
          events.push(JSON.parse(line) as GovernanceEvent);
        } catch {
          // A torn last line (a crash mid-write) is dropped; every earlier line is whole.
        }
      }
    } finally {
      await handle.close().catch(() => undefined);
    }
    return events;
  }

  /**
   * One whole line or nothing. A write can be short (a disk that fills up takes what fits and says so
   * only through the count): found by review, the torn line then had the next event appended to it, and
   * a restart dropped both. So the rest is written until done, and on a failure the file is cut back to
   * where the line began, so that the event can be written again whole (GovernanceState retries).
   */
  append(event: GovernanceEvent): Promise<void> {
    const line = Buffer.from(`${JSON.stringify(event)}\n`, 'utf8');
    const write = this.#queue.then(async () => {
      if (this.#handle === null) {
        makePrivateDir(dirname(this.#file));
        this.#handle = await open(this.#file, 'a', 0o600);
      }
      const handle = this.#handle;
      const start = (await handle.stat()).size;
      try {
        for (let done = 0; done < line.length; ) {
          const { bytesWritten } = await handle.write(line, done, line.length - done);
          if (bytesWritten === 0) throw new Error(`${this.#file}: the disk took none of a write (full?)`);
          done += bytesWritten;
        }
      } catch (error) {
        await handle.truncate(start).catch(() => undefined);
        throw error;
      }
    });
    this.#queue = write.catch(() => undefined);
    return write;
  }

  /** One process, one file: no other replica lifts meanwhile, and GovernanceState checked its own lifts. */
  async appendUnlessLifted(event: GovernanceEvent): Promise<boolean> {
    await this.append(event);
    return true;
  }

  subscribe(): void {
    // One process, one file: nobody else appends.
  }

  onReconnect(): void {
    // A file does not disconnect.
  }

  get downSince(): number | null {
    return null;
  }

  async compact(events: readonly GovernanceEvent[]): Promise<void> {
    const rewrite = this.#queue.then(async () => {
      await this.#handle?.close();
      this.#handle = null;
      makePrivateDir(dirname(this.#file));
      await replaceFile(this.#file, events.map((e) => `${JSON.stringify(e)}\n`).join(''));
    });
    this.#queue = rewrite.catch(() => undefined);
    return rewrite;
  }

  async close(): Promise<void> {
    await this.#queue;
    await this.#handle?.close();
    this.#handle = null;
  }
}
