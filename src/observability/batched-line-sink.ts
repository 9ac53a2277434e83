/**
 * Log lines to a stream, one write per WINDOW_MS instead of one per line.
 *
 * process.stdout is synchronous on Linux for pipes and files (Node docs, "A note on process I/O"), so a
 * line per request was a blocking write syscall per request. Lines written within WINDOW_MS of the
 * first pending one are joined and written once, from a timer; `flush()` writes what is pending at once
 * (shutdown). Waiting for the end of the event-loop turn alone was not enough: at one connection every
 * turn holds one request, so that was still a write per request, on the path of the next one. At most
 * WINDOW_MS of lines are at stake if the process dies abruptly; the audit log, not this log, is the record.
 */
import type { LogDestination } from './logger.js';

/** How long a line may wait for others to share its write. */
export const WINDOW_MS = 2;

export class BatchedLineSink implements LogDestination {
  readonly #stream: { write(text: string): unknown };
  #pending: string[] = [];
  #scheduled: NodeJS.Timeout | null = null;
  #dropping = false;

  readonly #windowMs: number;

  constructor(stream: { write(text: string): unknown }, windowMs = WINDOW_MS) {
    this.#stream = stream;
    this.#windowMs = windowMs;
  }

  /** True once the stream failed: lines are dropped, not queued. */
  get dropping(): boolean {
    return this.#dropping;
  }

  /** Drops what is pending and every later line (the stream has failed for good). */
  drop(): void {
    this.#dropping = true;
    this.#pending = [];
  }

  write(line: string): void {
    if (this.#dropping) return;
    this.#pending.push(line);
    this.#scheduled ??= setTimeout(this.#flushScheduled, this.#windowMs);
  }

  readonly #flushScheduled = (): void => {
    this.#scheduled = null;
    this.flush();
  };

  flush(): void {
    if (this.#scheduled !== null) {
      clearTimeout(this.#scheduled);
      this.#scheduled = null;
    }
    if (this.#pending.length === 0) return;
    const text = this.#pending.length === 1 ? (this.#pending[0] as string) : this.#pending.join('');
    this.#pending = [];
    this.#stream.write(text);
  }
}
