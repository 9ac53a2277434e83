#!/usr/bin/env node
/**
 * The only file that touches `process`: arguments, environment, standard streams, signals, exit code.
 */
import cluster from 'node:cluster';
import type { ProcessStats } from './observability/metrics.js';

// stderr's reader gone too (2>&1 into a log shipper that exited): there is nowhere left to say so, and
// an unhandled 'error' event would end the process (serve reports a failed stdout on stderr).
process.stderr.on('error', () => undefined);

// SIGHUP asks `serve` to reload its config, but node's default for it ends the process, and serve could
// only listen for it once the proxy was up: a SIGHUP during start-up (a slow credential store at warm-up;
// the cluster primary passing a reload on to a worker still starting) killed it (found by review). So
// the handler is installed first, before the CLI's modules load (hence the dynamic import below), and a
// request that comes before serve listens is kept and applied once it does: the operator who sent it
// changed the file, and the proxy may have read the file before that change. Applying it is a reload of
// a validated file, which at worst re-applies the config already running. Other commands keep the
// default (a terminal hanging up ends `secrets set` at its prompt, rather than leaving it to store half
// a value).
const reloadListeners = new Set<() => void>();
let reloadQueued = false;
/** A listener was registered once: with none now, serve is stopping, and a reload has nothing to do. */
let reloadsHeard = false;
if (process.argv[2] === 'serve') {
  process.on('SIGHUP', () => {
    if (reloadListeners.size === 0) {
      if (reloadsHeard) return;
      if (!reloadQueued) process.stderr.write('SIGHUP received while Airlock is starting: the config is reloaded as soon as it has started.\n');
      reloadQueued = true;
      return;
    }
    for (const listener of reloadListeners) listener();
  });
}

// Before the CLI's modules load too, for the same reason: a stop asked for while they load is kept. A
// second stop signal cuts what `serve` is still draining (stopNow), its records still written (found by
// an ops walkthrough: node's default action killed the process, and requests already sent upstream had
// no audit record); a command that does not listen for it is ended as node would have.
let stopsHeard = 0;
let stopNowHeard = false;
let resolveStop: (signal: string) => void = () => undefined;
let resolveStopNow: (signal: string) => void = () => undefined;
const stopRequested = new Promise<string>((resolve) => (resolveStop = resolve));
const stopNowPromise = new Promise<string>((resolve) => (resolveStopNow = resolve));
const onStopSignal = (signal: NodeJS.Signals): void => {
  stopsHeard++;
  if (stopsHeard === 1) return resolveStop(signal);
  if (stopNowHeard && stopsHeard === 2) return resolveStopNow(signal);
  process.off('SIGINT', onStopSignal);
  process.off('SIGTERM', onStopSignal);
  process.kill(process.pid, signal);
};
process.on('SIGINT', onStopSignal);
process.on('SIGTERM', onStopSignal);
const stopNow = (): Promise<string> => {
  stopNowHeard = true;
  return stopNowPromise;
};

const { runCli } = await import('./cli/run-cli.js');

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

const startTimeSeconds = Date.now() / 1000 - process.uptime();
let loopBefore = performance.eventLoopUtilization();
/** This process's figures for /metrics, read at each scrape (the event loop's since the last one). */
function readProcessStats(): ProcessStats {
  const cpu = process.cpuUsage();
  const memory = process.memoryUsage();
  const loopNow = performance.eventLoopUtilization();
  const utilization = performance.eventLoopUtilization(loopNow, loopBefore).utilization;
  loopBefore = loopNow;
  return { cpuSeconds: (cpu.user + cpu.system) / 1e6, residentBytes: memory.rss, heapUsedBytes: memory.heapUsed, startTimeSeconds, eventLoopUtilization: utilization };
}

const code = await runCli({
  args: process.argv.slice(2),
  env: process.env,
  cwd: process.cwd(),
  stdout: process.stdout,
  stderr: process.stderr,
  stdin: process.stdin,
  nodeFlags: process.execArgv,
  httpParser: process.versions.llhttp,
  pid: process.pid,
  processStats: readProcessStats,
  stopRequested,
  stopNow,
  onStdoutError(listener) {
    stdoutListeners.push(listener);
  },
  async stdoutSettled() {
    await new Promise((resolve) => setImmediate(resolve));
    return stdoutFailure;
  },
  onReloadRequested(listener) {
    reloadListeners.add(listener);
    reloadsHeard = true;
    if (reloadQueued) {
      reloadQueued = false;
      listener();
    }
    return () => void reloadListeners.delete(listener);
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
