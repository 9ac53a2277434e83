/**
 * Log lines to a stream, one write per event-loop turn instead of one per line.
 *
 * process.stdout is synchronous on Linux for pipes and files (Node docs, "A note on process I/O"), so a
 * line per request was a blocking write syscall per request. Lines written during one turn are joined
 * and written once, on setImmediate; `flush()` writes what is pending at once (shutdown). At most one
 * turn's lines are at stake if the process dies abruptly; the audit log, not this log, is the record.
 */
import type { LogDestination } from './logger.js';

export class BatchedLineSink implements LogDestination {
  readonly #stream: { write(text: string): unknown };
  #pending: string[] = [];
  #scheduled: NodeJS.Immediate | null = null;

  constructor(stream: { write(text: string): unknown }) {
    this.#stream = stream;
  }

  write(line: string): void {
    this.#pending.push(line);
    this.#scheduled ??= setImmediate(this.#flushScheduled);
  }

  readonly #flushScheduled = (): void => {
    this.#scheduled = null;
    this.flush();
  };

  flush(): void {
    if (this.#scheduled !== null) {
      clearImmediate(this.#scheduled);
      this.#scheduled = null;
    }
    if (this.#pending.length === 0) return;
    const text = this.#pending.length === 1 ? (this.#pending[0] as string) : this.#pending.join('');
    this.#pending = [];
    this.#stream.write(text);
  }
}
