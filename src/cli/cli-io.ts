/**
 * What a CLI command may touch: its arguments, environment, working directory, standard streams, and
 * a promise that settles when the operator asks the process to stop. main.ts builds it from `process`;
 * tests build it from strings.
 */
import type { PrimaryChannel } from '../observability/cluster-metrics.js';
import type { ProcessStats } from '../observability/metrics.js';

export interface TextSink {
  write(text: string): unknown;
}

export interface CliIo {
  readonly args: readonly string[];
  readonly env: Readonly<Record<string, string | undefined>>;
  readonly cwd: string;
  readonly stdout: TextSink;
  readonly stderr: TextSink;
  readonly stdin: AsyncIterable<Buffer | string> & { readonly isTTY?: boolean; setRawMode?(mode: boolean): unknown };
  /** Settles with the signal name when the process is asked to stop (SIGINT, SIGTERM). */
  readonly stopRequested: Promise<string>;
  /**
   * Settles with the signal name when a second stop signal comes after the first (SIGTERM twice);
   * asking for it is what keeps that signal from ending the process at once. Absent in tests.
   */
  readonly stopNow?: () => Promise<string>;
  /** Registers a listener for reload requests (SIGHUP); returns how to unregister it. */
  readonly onReloadRequested?: (listener: () => void) => () => void;
  /** Registers a listener for errors of stdout (EPIPE once its reader is gone); absent in tests. */
  readonly onStdoutError?: (listener: (error: NodeJS.ErrnoException) => void) => void;
  /**
   * Settles once what was written to stdout so far has been tried (a failed write is reported a tick
   * later), with the first failure or null; absent in tests. main.ts still reports the failure itself.
   */
  readonly stdoutSettled?: () => Promise<NodeJS.ErrnoException | null>;
  /** This process's id, for `kill -HUP` (npm start's pid is a shell's, which SIGHUP ends); absent in tests. */
  readonly pid?: number;
  /** The flags node itself was started with (process.execArgv); absent where unknown (tests). */
  readonly nodeFlags?: readonly string[];
  /** In a cluster worker: the IPC channel to the primary (cluster-wide /metrics). */
  readonly primary?: PrimaryChannel;
  /** This process's CPU, memory and event-loop figures, for /metrics; absent in tests. */
  readonly processStats?: () => ProcessStats;
  /** The version of node's HTTP parser (process.versions.llhttp); absent in tests. */
  readonly httpParser?: string;
}

export class UsageError extends Error {
  override name = 'UsageError';
}
