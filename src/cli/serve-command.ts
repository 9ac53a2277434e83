/**
 * `airlock serve [--config F]`: runs the proxy until SIGINT/SIGTERM. JSON logs go to stdout; the
 * human summary (where it listens, what is missing, what to do next) goes to stderr.
 *
 * Operations: SIGHUP (and, with reload.watch, a change of the config file or of its TLS certificate
 * and key) reloads the config: it is
 * validated, and on success replaces the running one while requests in flight finish on the old; on
 * failure the old stays, with the problems logged; a SIGHUP received while starting is applied once
 * started (main.ts holds it). SIGTERM stops accepting, lets requests in flight
 * (streams included) finish up to shutdown_timeout, flushes the audit log and revokes dynamic leases.
 * With `workers` above 1 the process becomes a cluster primary (run-cluster.ts).
 */
import { createHash } from 'node:crypto';
import { lstatSync, readFileSync, realpathSync, watch, type FSWatcher } from 'node:fs';
import cluster from 'node:cluster';
import { dirname, resolve } from 'node:path';
import { parseArgs } from 'node:util';
import type { Registry } from 'prom-client';
import { startAirlock, type RunningAirlock } from '../app.js';
import { environmentProblems } from '../config/assess-environment.js';
import { formatProblem } from '../config/config-problem.js';
import { parserReadsMalformedNames } from '../ingress/parser-leniency.js';
import { loadConfigFile, parseConfigText } from '../config/load-config.js';
import { localSecretReferences, type LocalSecretReference } from '../config/secret-references.js';
import type { AirlockConfig } from '../config/types.js';
import { EncryptedSecretFile, SecretFileError, shownSecretName } from '../credentials/encrypted-secret-file.js';
import { loadMasterKeyring, MasterKeyError } from '../credentials/master-key.js';
import { BatchedLineSink } from '../observability/batched-line-sink.js';
import { clusterMetricsText } from '../observability/cluster-metrics.js';
import type { CliIo } from './cli-io.js';
import { configFlagFor, configPath, loadConfigOrReport } from './locate-config.js';
import { suspensionWithoutAdminNote } from './suspension-note.js';
import { listeningMessage, restrictionChannel, runClusterPrimary, workerAuditFile } from './run-cluster.js';
import { workerCount } from '../config/worker-count.js';

export async function serveCommand(io: CliIo): Promise<number> {
  const { values } = parseArgs({ args: [...io.args], options: { config: { type: 'string' } }, allowPositionals: false });
  const file = configPath(io, values.config);
  // Read before the load: a change between the two is then seen once the watch starts (a reload of the
  // same content at worst), never missed.
  const startedText = readConfigText(file);
  const loaded = loadConfigOrReport(io, values.config);
  if (loaded === null) return 1;
  let { config } = loaded;
  // The TLS files are read after the config, and before Airlock serves them: the same rule.
  const startedFrom = watchedDigest(startedText, tlsFiles(config));
  // Checked here too so that a cluster primary refuses once, rather than restarting workers that do.
  const unsafe = environmentProblems({ env: io.env, ...(io.nodeFlags === undefined ? {} : { nodeFlags: io.nodeFlags }), usesRedis: config.state.type === 'redis' });
  if (unsafe.length > 0) {
    io.stderr.write(`The environment would expose credentials or skip checks, so Airlock does not start:\n${unsafe.map((p) => `  - ${p}\n`).join('')}`);
    return 1;
  }
  const workers = workerCount(config.workers);
  if (workers > 1 && cluster.isPrimary) return runClusterPrimary(io, config, workers);
  const workerId = io.env['AIRLOCK_WORKER_ID'];
  if (workerId !== undefined) config = workerAuditFile(config, workerId);
  for (const problem of loaded.loaded.problems) {
    // Where, as check says it (found by a README walkthrough: "add the sha256 line here" named no place).
    if (problem.severity === 'warning') io.stderr.write(`${formatProblem(problem, loaded.file)}\n`);
  }
  if (io.httpParser !== undefined && parserReadsMalformedNames(io.httpParser) && workerId === undefined) {
    io.stderr.write(
      `note: this node's HTTP parser (llhttp ${io.httpParser}, Node 20 before 20.19.2) accepts a few malformed requests that later ones refuse; Airlock refuses malformed header names itself and sends upstreams only re-framed requests, but behind another proxy prefer Node 20.19.2 or later (README, Development).\n`,
    );
  }
  const logSink = new BatchedLineSink(io.stdout);
  // The process log's reader may go away (a log shipper restarting, `airlock serve | head`). Its lines
  // are dropped from then on rather than the proxy stopped: no request depends on them, and the audit
  // log, the record, is a file of its own. Unhandled, the EPIPE was an 'error' event that ended the process.
  io.onStdoutError?.((error) => {
    if (logSink.dropping) return;
    logSink.drop();
    io.stderr.write(`airlock: the process log on stdout cannot be written (${error.code ?? error.message}); its lines are dropped from now on. Requests and the audit log are not affected; restart Airlock with a reader on stdout to get them back.\n`);
  });
  // Whatever happens (a failed start included), the lines logged so far are written before exit.
  try {
    const primary = workerId === undefined ? undefined : io.primary;
    const airlock = await startAirlock(config, {
      env: io.env,
      ...(io.nodeFlags === undefined ? {} : { nodeFlags: io.nodeFlags }),
      ...(io.processStats === undefined ? {} : { processStats: io.processStats }),
      ...(io.httpParser === undefined ? {} : { httpParser: io.httpParser }),
      logDestination: logSink,
      ...(primary === undefined ? {} : { clusterMetrics: (registry: Registry) => clusterMetricsText(registry, primary), clusterRestrictions: restrictionChannel(primary) }),
    });
    // The commands the summary suggests find this config by themselves only when it is the one they
    // would find (found by a fresh-user walkthrough: started with --config, `secrets set` stored the
    // secret in another config's data_dir); otherwise they name it.
    const configFlag = configFlagFor(io, file);
    if (workerId === undefined) io.stderr.write(summary(config, airlock, io, configFlag));
    else primary?.send(listeningMessage(airlock.url, airlock.adminUrl));
    const stopWatching = watchForReloads(io, file, config, airlock, workerId, startedFrom);
    const signal = await io.stopRequested;
    stopWatching();
    // The timeout in force, a reload's included (found by an ops walkthrough: the start-up one was said).
    io.stderr.write(`\n${signal} received: finishing in-flight requests (up to ${airlock.shutdownTimeout()} s) and stopping; ${signal} again cuts them now, their audit records still written.\n`);
    const closing = airlock.close();
    void io.stopNow?.().then((again) => {
      io.stderr.write(`${again} received again: cutting the requests still in flight now; their audit records are written, then airlock:stop.\n`);
      return airlock.close(0);
    });
    await closing;
    return 0;
  } finally {
    logSink.flush();
  }
}

/** Events closer together than this are one change (an editor's write, rename and chmod). */
const SETTLE_MS = 300;
/** ...but a directory that never goes quiet (the audit log beside the config) is still looked at this often. */
const SETTLE_AT_MOST_MS = 1_000;

function readConfigText(file: string): string | null {
  try {
    return readFileSync(file, 'utf8');
  } catch {
    return null;
  }
}

/**
 * What a reload is for: the config file's content, and the TLS certificate and key it names (a renewal
 * written over them, by certbot or cert-manager, is served without a restart or a SIGHUP). Null when the
 * config file cannot be read.
 */
function watchedDigest(text: string | null, files: readonly string[]): string | null {
  if (text === null) return null;
  const hash = createHash('sha256').update(text);
  for (const path of files) hash.update('\0').update(readConfigText(path) ?? '(unreadable)');
  return hash.digest('hex');
}

function tlsFiles(config: AirlockConfig): string[] {
  const admin = config.admin?.tls;
  return [...(config.tls === null ? [] : [config.tls.cert_file, config.tls.key_file]), ...(admin === undefined ? [] : [admin.cert_file, admin.key_file, ...(admin.client_ca_file === undefined ? [] : [admin.client_ca_file])])];
}

/**
 * SIGHUP, and (reload.watch) changes of the config file's content or of the TLS files it names.
 *
 * Any event in the file's directory leads to a look at the file, and a reload only when what it reads
 * has changed (a digest of the content). Events naming the file are not enough: a Kubernetes ConfigMap
 * volume mounts the file as airlock.yaml -> ..data/airlock.yaml and updates it by renaming a new
 * `..data` symlink over the old one (atomic, one event naming `..data` only), so the file's own name is
 * never in an event (found by review). The directory of the file's resolved target is watched too, and
 * followed when a swap moves it, so a config symlinked to a file elsewhere and edited there is seen.
 * Comparing content also keeps a `touch`, or the audit log written beside the config, from reloading.
 */
function watchForReloads(io: CliIo, file: string, initial: AirlockConfig, airlock: RunningAirlock, workerId: string | undefined, startedFrom: string | null): () => void {
  let pending: NodeJS.Timeout | null = null;
  let firstEventAt = 0;
  let stopped = false;
  let lastSeen = startedFrom;
  let running = Promise.resolve();
  const watchers = new Map<string, FSWatcher>();
  let certificates = tlsFiles(initial);
  // The setting of the config in force, not the start-up one's (found by review: a save turning it off
  // was reported applied and the saves after it were still applied on their own; one turning it on by
  // SIGHUP was not watched until a restart).
  let watching = initial.reload.watch;

  const reload = (why: string, onlyIfChanged: boolean): void => {
    running = running.then(async () => {
      const text = readConfigText(file);
      const digest = watchedDigest(text, certificates);
      if (watching) followTarget();
      // Unreadable mid-swap (an editor's delete then write): the next event looks again.
      if (onlyIfChanged && (digest === null || digest === lastSeen)) return;
      if (digest !== null) lastSeen = digest;
      const next = text === null ? loadConfigFile(file) : parseConfigText(text, file);
      if (next.config === null) {
        // TLS files the new file names, though it is refused (they do not exist yet, say): watched from
        // now on, so that writing them is a change (found by the TLS walkthrough: only SIGHUP saw them).
        const named = next.fallback === undefined || next.fallback === null ? null : tlsFiles(next.fallback);
        if (named !== null && named.join('\0') !== certificates.join('\0')) {
          certificates = named;
          lastSeen = watchedDigest(text, certificates);
          if (watching) followTarget();
        }
        airlock.metrics.reloads.inc({ result: 'invalid' });
        airlock.logger.error({ reason: why, problems: next.problems.filter((p) => p.severity === 'error').map((p) => formatProblem(p, file)) }, 'config reload failed: the new file has problems; the running config stays');
        return;
      }
      airlock.logger.info({ reason: why }, 'config reload requested');
      const result = await airlock.reload(workerId === undefined ? next.config : workerAuditFile(next.config, workerId));
      if (result.ok && certificates.join('\0') !== tlsFiles(next.config).join('\0')) {
        // Other files now: their content from here on is what a change is measured against.
        certificates = tlsFiles(next.config);
        lastSeen = watchedDigest(text, certificates);
        if (watching) followTarget();
      }
      if (result.ok && next.config.reload.watch !== watching) {
        watching = next.config.reload.watch;
        if (watching) followTarget();
        else unwatch();
      }
    }).catch((error: unknown) => {
      // Unhandled, a rejection here (the reload's own audit record failing) would end the process.
      airlock.logger.error({ err: error, reason: why }, "config reload ended in an error; if a 'config reloaded' line came before it, the new config is in force");
    });
  };

  /** Debounced, with a bound: events that never stop still lead to a look every SETTLE_AT_MOST_MS. */
  const changed = (): void => {
    if (stopped) return;
    const now = Date.now();
    if (pending === null) firstEventAt = now;
    else clearTimeout(pending);
    pending = setTimeout(
      () => {
        pending = null;
        reload('the config file or its TLS files changed', true);
      },
      Math.max(0, Math.min(SETTLE_MS, firstEventAt + SETTLE_AT_MOST_MS - now)),
    );
  };

  const unwatch = (): void => {
    for (const watcher of watchers.values()) watcher.close();
    watchers.clear();
    if (pending !== null) clearTimeout(pending);
    pending = null;
  };

  const watchDirectory = (path: string): void => {
    if (stopped || watchers.has(path)) return;
    try {
      const watcher = watch(path, changed);
      // A directory removed (a ConfigMap's old ..<timestamp> directory) ends its watch, nothing more.
      watcher.on('error', () => {
        watcher.close();
        if (watchers.get(path) === watcher) watchers.delete(path);
      });
      watchers.set(path, watcher);
    } catch {
      // Not watchable (gone already, or no inotify watches left): SIGHUP still reloads.
    }
  };

  /**
   * Watches the directories the config file and the TLS files are in and resolve into, and stops
   * watching those they resolved into before. A certificate in a Kubernetes Secret volume is swapped as
   * a ConfigMap is (its directory sees the event); certbot renews by pointing live/ at new files.
   */
  function followTarget(): void {
    const wanted = new Set<string>();
    for (const path of [file, ...certificates]) {
      wanted.add(dirname(path));
      try {
        wanted.add(dirname(realpathSync(path)));
      } catch {
        // Gone mid-swap: the next event looks again.
      }
      for (const holder of symlinkHolders(dirname(path))) wanted.add(holder);
    }
    for (const [path, watcher] of watchers) {
      if (!wanted.has(path)) {
        watcher.close();
        watchers.delete(path);
      }
    }
    for (const path of wanted) watchDirectory(path);
  }

  const stopSignal = io.onReloadRequested?.(() => reload('SIGHUP', false)) ?? (() => undefined);
  if (initial.reload.watch) {
    followTarget();
    // A change made while Airlock was starting (after the file was read, before the watch) is seen now.
    reload('the config file or its TLS files changed while Airlock was starting', true);
  }
  return () => {
    stopped = true;
    stopSignal();
    unwatch();
  };
}

/**
 * The directories holding a symbolic link among `dir` and its ancestors: a deploy that swaps one
 * (`ln -sfn releases/2 current`, the config at current/airlock.yaml) changes neither the file's
 * directory nor its target's, only the one the link is in (found by review: never reloaded).
 */
function symlinkHolders(dir: string): string[] {
  const holders: string[] = [];
  for (let at = resolve(dir); dirname(at) !== at; at = dirname(at)) {
    try {
      if (lstatSync(at).isSymbolicLink()) holders.push(dirname(at));
    } catch {
      // Gone mid-swap: the next event looks again.
    }
  }
  return holders;
}

/** The env: and file: references (credentials, a Vault login, OAuth2 clients) with no value yet. */
function missingSecrets(config: AirlockConfig, env: CliIo['env']): { missing: LocalSecretReference[]; unreadable: string | null } {
  let stored: Set<string>;
  let unreadable: string | null = null;
  try {
    const key = loadMasterKeyring({ dataDir: config.data_dir, env, create: false });
    stored = new Set(key === null ? [] : new EncryptedSecretFile(config.data_dir, key).names());
  } catch (error) {
    // The key or the file cannot be read: its file: secrets are not missing, and "not set yet" sent the
    // operator to set them again (found by review). What stops it is said instead.
    stored = new Set();
    if (error instanceof MasterKeyError || error instanceof SecretFileError) unreadable = error.message;
  }
  const refs = localSecretReferences(config);
  return {
    missing: refs.filter((ref) => (ref.kind === 'file' ? unreadable === null && !stored.has(ref.name) : (env[ref.name] ?? '') === '')),
    unreadable: refs.some((ref) => ref.kind === 'file') ? unreadable : null,
  };
}

/**
 * Entries of the secrets file that do not decrypt (edited, or moved), named as `secrets list` names
 * them, with where the config uses them: a running Airlock refuses requests that need them (file-source.ts).
 */
function damagedSecrets(config: AirlockConfig, env: CliIo['env']): { shown: string[]; firstPlain: string | null } {
  let inventory: ReturnType<EncryptedSecretFile['inventory']>;
  try {
    const key = loadMasterKeyring({ dataDir: config.data_dir, env, create: false });
    inventory = key === null ? [] : new EncryptedSecretFile(config.data_dir, key).inventory();
  } catch {
    // A file that cannot be read at all is the proxy's to log (its credentials are not available yet).
    return { shown: [], firstPlain: null };
  }
  const used = new Map(localSecretReferences(config).filter((r) => r.kind === 'file').map((r) => [r.name, r.usedBy]));
  const damaged = inventory.filter((entry) => entry.damaged).map((entry) => entry.name);
  return {
    shown: damaged.map((name) => `${shownSecretName(name)} (${used.get(name)?.join(', ') ?? 'unused'})`),
    firstPlain: damaged.find((name) => shownSecretName(name) === name) ?? null,
  };
}

/** "openai (services.openai.credential), VAULT_ROLE_ID (secrets.vault.auth.role_id)" */
function namedWithUse(refs: readonly LocalSecretReference[]): string {
  return refs.map((ref) => `${ref.name} (${ref.usedBy.join(', ')})`).join(', ');
}

/**
 * V8's memory reducer shrinks the heap of a process that has been idle for a while; when traffic with
 * large bodies comes back, the heap then stays small under load and is collected in full several
 * times a second: twice the CPU per 64 KiB or 1 MiB response in npm run bench, where each proxy waits
 * ~40 s between its runs (README, Performance). npm start and the Docker image turn it off.
 */
export const NO_MEMORY_REDUCER = '--no-memory-reducer';

/** V8 takes its flags with - or _ between words, and a boolean one also as --flag=false. */
function memoryReducerOn(nodeFlags: readonly string[]): boolean {
  const off = new Set([NO_MEMORY_REDUCER, '--memory-reducer=false']);
  return !nodeFlags.some((flag) => off.has(flag.replaceAll('_', '-')));
}

/**
 * A request the first service's first route matches, for the explain tip (found by review: it named
 * `GET <prefix>/v1/models` whatever the routes were); `:name` and `*` segments filled with `example`.
 */
function exampleRequest(service: AirlockConfig['services'][string] | undefined): string {
  const route = service?.routes[0];
  if (service === undefined || route === undefined) return `GET ${service?.prefix ?? '/service'}/path`;
  const method = Array.isArray(route.method) ? (route.method[0] as string) : route.method;
  const path = route.path.replace(/:[^/]+/g, 'example').replace(/\*$/, 'example');
  return `${method} ${service.prefix}${path}`;
}

function summary(config: AirlockConfig, airlock: RunningAirlock, io: CliIo, configFlag: string): string {
  const { url, serviceUrls, adminUrl } = airlock;
  const { env, nodeFlags, pid } = io;
  const services = Object.values(config.services);
  // node's own pid: under `npm start`, SIGHUP sent to npm's shell ends it rather than reloading.
  const lines = ['', `Airlock is listening on ${url}${pid === undefined ? '' : `  (pid ${pid}; \`kill -HUP ${pid}\` reloads the config)`}`];
  // Found by an ops walkthrough: with its first record unwritten, the summary read as a healthy start,
  // while every request was refused; only the JSON log and /_airlock/ready said so.
  if (!airlock.auditWritable()) {
    lines.push(
      config.audit.on_failure === 'log'
        ? `  WARNING: the audit log ${config.audit.file} cannot be written: requests are forwarded UNAUDITED (audit.on_failure: log) until it can.`
        : `  WARNING: the audit log ${config.audit.file} cannot be written: every request is refused (503 audit_unavailable) until it can. Check the disk and the file (\`npx airlock check\`).`,
    );
  }
  for (const service of services) {
    const own = serviceUrls[service.name];
    lines.push(`  ${service.name.padEnd(12)} ${url}${service.prefix}/...${own === undefined ? '' : `   and ${own}/... (own listener)`}  ->  ${service.upstream}`);
  }
  lines.push(`  health       ${url}/_airlock/health`);
  if (adminUrl !== null) lines.push(`  admin API    ${adminUrl}/v1/health (Authorization: Bearer <admin token>)`);
  lines.push(`  config       ${config.source ?? '(built in)'}`);
  lines.push(`  audit log    ${config.audit.file}`);
  const next: string[] = [];
  const tokenless = Object.values(config.agents).filter((a) => a.tokens.length === 0).map((a) => a.name);
  if (tokenless.length > 0) {
    const applied = config.reload.watch ? 'this Airlock applies the saved file within about a second' : `then \`kill -HUP ${pid ?? '<pid>'}\` reloads it`;
    next.push(`Give agent ${tokenless.join(', ')} a token: \`npx airlock token\`, paste the sha256 line into its tokens list; ${applied}.`);
  }
  const { missing, unreadable } = missingSecrets(config, env);
  const fileMissing = missing.filter((r) => r.kind === 'file');
  const envMissing = missing.filter((r) => r.kind === 'env');
  if (unreadable !== null) next.push(`The file: secrets cannot be served (503 credential_unavailable) until Airlock can read them: ${unreadable}.`);
  if (fileMissing.length > 0) next.push(`Store the secrets: \`npx airlock secrets set ${fileMissing[0]?.name}${configFlag}\` (value on stdin); not set yet: ${namedWithUse(fileMissing)}.`);
  if (envMissing.length > 0) next.push(`Set these environment variables and restart: ${namedWithUse(envMissing)}.`);
  const damaged = damagedSecrets(config, env);
  if (damaged.shown.length > 0) {
    const command = damaged.firstPlain === null ? '' : ` \`npx airlock secrets set ${damaged.firstPlain}${configFlag}\` (value on stdin);`;
    next.push(`Set again the secrets whose entries do not decrypt (the file was edited, or an entry moved): ${damaged.shown.join(', ')}. Requests that need them get 503 until then; the other secrets are served.${command} \`npx airlock secrets list${configFlag}\` marks them DAMAGED.`);
  }
  const first = services[0];
  if (first !== undefined) next.push(`Point an SDK at ${url}${first.prefix} (plus the API's version path, e.g. /v1) with the alk_ token as its API key.`);
  next.push(`Check a decision without calling upstream: \`npx airlock explain --agent NAME ${exampleRequest(first)}${configFlag}\`.`);
  lines.push('', 'Next:', ...next.map((n, i) => `  ${i + 1}. ${n}`), '');
  const lockdown = airlock.lockdown();
  if (lockdown !== null) {
    // Kept from before this start (revocations survive restarts): every request is refused.
    lines.push(
      `LOCKDOWN in force since ${new Date(lockdown.at).toISOString()} (by ${lockdown.by}): every request is refused (503 locked_down)`,
      // Only the admin API lifts it (found by review: the tip named a command that cannot work here).
      config.admin === null
        ? 'until an admin lifts it, which needs the admin API: add an `admin:` block (listen, tokens) to the config, restart, then `npx airlock restore all` with AIRLOCK_ADMIN_TOKEN set.'
        : `until an admin lifts it: \`npx airlock restore all${configFlag}\` (AIRLOCK_ADMIN_TOKEN set).`,
      '',
    );
  }
  const suspension = suspensionWithoutAdminNote(config);
  if (suspension.length > 0) lines.push(...suspension, '');
  if (nodeFlags !== undefined && memoryReducerOn(nodeFlags)) {
    lines.push(
      `Note: node was started without ${NO_MEMORY_REDUCER}. After an idle spell, large responses can cost up to twice the CPU`,
      `until the heap grows back. \`npm start\` and the Docker image pass it; otherwise run \`node ${NO_MEMORY_REDUCER} <path to dist/main.js> serve\`.`,
      '',
    );
  }
  lines.push('Stop with Ctrl-C.', '');
  return lines.join('\n');
}
