#!/usr/bin/env node
/**
 * The only file that touches `process`: arguments, environment, standard streams, signals, exit code.
 */
import cluster from 'node:cluster';
import { runCli } from './cli/run-cli.js';

const stopRequested = new Promise<string>((resolve) => {
  process.once('SIGINT', () => resolve('SIGINT'));
  process.once('SIGTERM', () => resolve('SIGTERM'));
});

// stderr's reader gone too (2>&1 into a log shipper that exited): there is nowhere left to say so, and
// an unhandled 'error' event would end the process (serve reports a failed stdout on stderr).
process.stderr.on('error', () => undefined);

// stdout's failures. A reader gone away (`airlock demo | head`, EPIPE) no longer wants the output: the
// command finishes its work (the demo removes its temporary data_dir) with its lines dropped, where the
// unhandled 'error' event ended it with a stack trace. Any other failure (`airlock token > file` on a
// full disk) loses output the operator counts on, such as a token shown only once: it is said on stderr
// and the exit code is 1, where it was 0. `serve` registers its own listener and reports it its way.
let stdoutFailure: NodeJS.ErrnoException | null = null;
const stdoutListeners: Array<(error: NodeJS.ErrnoException) => void> = [];
process.stdout.on('error', (error: NodeJS.ErrnoException) => {
  stdoutFailure ??= error;
  for (const listener of stdoutListeners) listener(error);
});

const code = await runCli({
  args: process.argv.slice(2),
  env: process.env,
  cwd: process.cwd(),
  stdout: process.stdout,
  stderr: process.stderr,
  stdin: process.stdin,
  nodeFlags: process.execArgv,
  stopRequested,
  onStdoutError(listener) {
    stdoutListeners.push(listener);
  },
  onReloadRequested(listener) {
    process.on('SIGHUP', listener);
    return () => process.off('SIGHUP', listener);
  },
  ...(cluster.isWorker
    ? {
        primary: {
          send: (message: unknown) => void process.send?.(message),
          onMessage(listener: (message: unknown) => void) {
            process.on('message', listener);
            return () => process.off('message', listener);
          },
        },
      }
    : {}),
});
// A failed write to stdout is reported in an 'error' event a tick after it: let it arrive before exiting.
await new Promise((resolve) => setImmediate(resolve));
const failure = stdoutFailure as NodeJS.ErrnoException | null;
const lostOutput = failure !== null && failure.code !== 'EPIPE' && stdoutListeners.length === 0;
if (lostOutput) process.stderr.write(`airlock: the output to stdout could not be written (${failure.code ?? failure.message}); what it printed is incomplete. Run the command again with stdout on a writable file or terminal.\n`);
const exitCode = lostOutput && code === 0 ? 1 : code;
process.exitCode = exitCode;
// Commands other than serve are done; serve returns only after closing its listeners and pools.
process.exit(exitCode);
