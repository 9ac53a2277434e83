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
    process.stdout.on('error', listener);
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
process.exitCode = code;
// Commands other than serve are done; serve returns only after closing its listeners and pools.
process.exit(code);
