/**
 * The embedded state backend: governance events as JSON lines in data_dir/state.jsonl (mode 0600),
 * appended in order, replayed at start-up and compacted to the live state (temporary file + rename).
 */
import { open, readFile, rename, writeFile, type FileHandle } from 'node:fs/promises';
import { randomBytes } from 'node:crypto';
import { dirname } from 'node:path';
import type { GovernanceEvent } from './governance-records.js';
import type { StateBackend } from './state-backend.js';
import { makePrivateDir } from './make-private-dir.js';

export class FileStateBackend implements StateBackend {
  readonly #file: string;
  #handle: FileHandle | null = null;
  #queue: Promise<void> = Promise.resolve();

  constructor(file: string) {
    this.#file = file;
  }

  async load(): Promise<GovernanceEvent[]> {
    let text: string;
    try {
      text = await readFile(this.#file, 'utf8');
    } catch (error) {
      if ((error as NodeJS.ErrnoException).code === 'ENOENT') return [];
      throw error;
    }
    const events: GovernanceEvent[] = [];
    for (const line of text.split('\n')) {
      if (line.trim() === '') continue;
      try {
        events.push(JSON.parse(line) as GovernanceEvent);
      } catch {
        // A torn last line (a crash mid-write) is dropped; every earlier line is whole.
      }
    }
    return events;
  }

  append(event: GovernanceEvent): Promise<void> {
    const line = `${JSON.stringify(event)}\n`;
    const write = this.#queue.then(async () => {
      if (this.#handle === null) {
        makePrivateDir(dirname(this.#file));
        this.#handle = await open(this.#file, 'a', 0o600);
      }
      await this.#handle.write(line);
    });
    this.#queue = write.catch(() => undefined);
    return write;
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
      const temporary = `${this.#file}.${randomBytes(6).toString('hex')}.tmp`;
      await writeFile(temporary, events.map((e) => `${JSON.stringify(e)}\n`).join(''), { mode: 0o600 });
      await rename(temporary, this.#file);
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
