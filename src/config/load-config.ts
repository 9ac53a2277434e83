/**
 * Loading a config: YAML text -> schema -> cross-field rules -> defaults and absolute paths -> frozen.
 * Every problem of every stage is collected and returned together, each with its YAML path and, when
 * loaded from a file, its line and column; nothing is half-loaded.
 */
import { readdirSync, readFileSync } from 'node:fs';
import { dirname, isAbsolute, join, resolve } from 'node:path';
import { isAlias, isMap, isScalar, isSeq, LineCounter, parseDocument, visit, type Document, type Node as YamlNode } from 'yaml';
import type { z } from 'zod';
import { formatPath, sayableProblem, type ConfigProblem, type ProblemPath } from './config-problem.js';
import { fileAccessProblem } from './file-access-problem.js';
import { shellWord } from './shell-word.js';
import { configSchema, type ParsedConfig } from './schema.js';
import { looksLikeKey } from '../redaction/key-patterns.js';
import type { AgentConfig, AirlockConfig, ServiceConfig } from './types.js';
import { defaultPrefix, validateConfig } from './validate-config.js';
import { editDistance } from './edit-distance.js';

export interface LoadedConfig {
  /** Null when any problem is an error. */
  readonly config: AirlockConfig | null;
  readonly problems: readonly ConfigProblem[];
  /** Where a YAML path is in the file, for problems found later (check's file-system probe). */
  readonly locate?: Locate;
  /**
   * When `config` is null: the config with its malformed parts left out, if the settings the operator
   * commands read (data_dir, audit, admin, state, workers) are all well formed; else null. For
   * `revoke`, `status`, `secrets` and the like, which must work while the file on disk has a typo that
   * the running Airlock refused to reload (found by an ops walkthrough: the kill switch was refused).
   */
  readonly fallback?: AirlockConfig | null;
}

/** The settings operator commands read; a fallback is made only when none of them is malformed. */
const OPERATOR_SETTINGS = ['data_dir', 'audit', 'admin', 'state', 'workers'];

export type Locate = (path: ProblemPath) => { line: number; column: number } | undefined;

/**
 * `reading.privateKeys` false: the TLS private keys (tls.key_file, admin.tls.key_file) are not read or
 * checked. For the commands that call a running Airlock, which need admin.tls's certificate and never
 * its key: the key is Airlock's user's, mode 600, and an operator's user (or copy of the config) without
 * it made every such command stop at a problem with admin.tls.key_file (found by review).
 */
export interface ReadingOptions {
  readonly privateKeys?: boolean;
}

export function loadConfigFile(file: string, reading: ReadingOptions = {}): LoadedConfig {
  const absolute = resolve(file);
  let text: string;
  try {
    text = readFileSync(absolute, 'utf8');
  } catch (error) {
    const code = (error as NodeJS.ErrnoException).code;
    // A directory (a checkout's config/, a mounted ConfigMap) said node's raw "EISDIR: illegal operation
    // on a directory, read" (found by review): say so, and name the YAML files it holds.
    if (code === 'EISDIR') return { config: null, problems: [{ severity: 'error', path: [], message: `cannot read ${absolute}: ${directoryHint(absolute)}` }] };
    // Only a file that is not there is one to create; one this user may not read is there, and the fix is
    // its permissions (found by review: node's raw "EACCES: permission denied, open ..." and "create it").
    const message = code === 'ENOENT' ? `cannot read ${absolute}: the file does not exist; pass --config FILE or create it (see config/airlock.example.yaml)` : fileAccessProblem(absolute, error);
    return { config: null, problems: [{ severity: 'error', path: [], message }] };
  }
  return parseConfigText(text, absolute, reading);
}

/** Files of a directory shown as configs to name: a mounted ConfigMap holds a few keys, not hundreds. */
const DIRECTORY_FILES_SHOWN = 5;

function directoryHint(directory: string): string {
  let names: string[];
  try {
    names = readdirSync(directory).filter((name) => /\.ya?ml$/i.test(name)).sort();
  } catch {
    names = [];
  }
  if (names.length === 0) return 'it is a directory, and holds no .yaml or .yml file; name the config file with --config FILE (see config/airlock.example.yaml)';
  const shown = names.slice(0, DIRECTORY_FILES_SHOWN).map((name) => `--config ${shellWord(join(directory, name))}`);
  const more = names.length > DIRECTORY_FILES_SHOWN ? ` (and ${names.length - DIRECTORY_FILES_SHOWN} more)` : '';
  return `it is a directory; name the YAML config file in it: ${shown.join(' or ')}${more}`;
}

export function parseConfigText(text: string, file: string, reading: ReadingOptions = {}): LoadedConfig {
  const lineCounter = new LineCounter();
  // Merge keys (`<<: *defaults`, YAML 1.1) on: the usual way to share a service's settings, which the
  // 1.2 core schema lacks, so check called "<<" an unknown key and every merged key missing (found by review).
  // logLevel error: the library's own warnings went to node's process warnings, unmasked, on stderr (a
  // map or list used as a key was printed whole, a credential in it too); check reports such a key itself.
  const document = parseDocument(text, { lineCounter, prettyErrors: false, uniqueKeys: true, merge: true, logLevel: 'error' });
  if (document.errors.length > 0) {
    return {
      config: null,
      problems: document.errors.map((e) => {
        // linePos is only filled when the library prettifies errors; compute it from the offset instead.
        const pos = e.linePos?.[0] ?? lineCounter.linePos(e.pos[0]);
        const duplicate = e.code === 'DUPLICATE_KEY' ? keyAt(document, e.pos[0]) : null;
        const message =
          duplicate !== null
            ? `YAML: ${sayableKey(duplicate) ? `the key ${JSON.stringify(duplicate)}` : 'a key (not repeated here: it looks like a credential)'} is given twice in the same mapping (once earlier in it); keep one of the two`
            : e.code === 'MULTIPLE_DOCS'
              ? // The library's own text advises a function of its API; the operator needs to know what to change.
                'YAML: the file holds more than one document (a "---" line after the first content); Airlock reads one: remove the "---" and merge the parts into one mapping'
              : `YAML: ${e.message.split('\n')[0]}`;
        return sayableProblem(pos === undefined ? { severity: 'error' as const, path: [], message } : { severity: 'error' as const, path: [], message, line: pos.line, column: pos.col });
      }),
    };
  }
  const locate: Locate = (path) => {
    const range = rangeAt(document.contents, path);
    if (range === undefined) return undefined;
    const pos = lineCounter.linePos(range);
    return { line: pos.line, column: pos.col };
  };
  let input: unknown;
  try {
    // Some problems only show in conversion: an alias with no anchor, or more alias expansions than
    // the library allows (its guard against "billion laughs" documents).
    input = document.toJS() ?? {};
  } catch (error) {
    const message = `YAML: ${(error as Error).message.split('\n')[0]}`;
    const offset = conversionFaultAt(document);
    const pos = offset === undefined ? undefined : lineCounter.linePos(offset);
    return { config: null, problems: [sayableProblem(pos === undefined ? { severity: 'error', path: [], message } : { severity: 'error', path: [], message, line: pos.line, column: pos.col })] };
  }
  return { ...buildConfig(input, { baseDir: dirname(file), source: file, locate, ...reading }), locate };
}

/**
 * Where conversion fails, which the library's error does not say (found by review: "(top level)", no
 * line): an alias whose anchor is not set before it, or a merge key whose value is not a mapping.
 */
function conversionFaultAt(document: Document): number | undefined {
  let offset: number | undefined;
  visit(document, {
    Alias(_key, alias) {
      if (alias.resolve(document) !== undefined) return undefined;
      offset = alias.range?.[0];
      return visit.BREAK;
    },
    Pair(_key, pair) {
      // With merge on, the library reads the key `<<` as a symbol; its source text stays "<<".
      if (!isScalar(pair.key) || pair.key.source !== '<<') return undefined;
      const value = isAlias(pair.value) ? pair.value.resolve(document) : pair.value;
      const sources = isSeq(value) ? value.items.map((item) => (isAlias(item) ? item.resolve(document) : item)) : [value];
      if (sources.every((source) => isMap(source))) return undefined;
      offset = pair.key.range?.[0];
      return visit.BREAK;
    },
  });
  return offset;
}

/** The name of the mapping key that starts at `offset` (the library's duplicate-key error points there, unnamed). */
function keyAt(document: Document, offset: number): string | null {
  let name: string | null = null;
  visit(document, {
    Pair(_key, pair) {
      if (isScalar(pair.key) && pair.key.range?.[0] === offset) {
        name = String(pair.key.value);
        return visit.BREAK;
      }
      return undefined;
    },
  });
  return name;
}

/**
 * Whether a key may be repeated in a problem: a config name (a service, an agent, a header name), not
 * something that may be a pasted key (config problems reach the terminal and, on a reload, the log), the
 * rule the secret references and upstreams follow. Plain names only, and none that looks like a key.
 */
function sayableKey(key: string): boolean {
  return /^[A-Za-z_][A-Za-z0-9_.-]{0,63}$/.test(key) && !looksLikeKey(key);
}


export interface BuildOptions {
  /** Directory that relative paths in the config are resolved against. */
  baseDir: string;
  source?: string | null;
  locate?: Locate;
  /** False: TLS private keys are not read (ReadingOptions). */
  privateKeys?: boolean;
}

/** Validates a plain object as if it had been read from YAML: tests and the demo use this. */
export function buildConfig(input: unknown, options: BuildOptions): LoadedConfig {
  const locate = options.locate ?? (() => undefined);
  const withPlace = (problem: ConfigProblem): ConfigProblem => {
    const place = locate(problem.path);
    return place === undefined ? problem : { ...problem, line: place.line, column: place.column };
  };
  // Placed by their paths as written, then masked (sayableProblem).
  const inFileOrder = (problems: ConfigProblem[]): ConfigProblem[] =>
    problems
      .map(withPlace)
      .sort((a, b) => (a.line ?? Infinity) - (b.line ?? Infinity) || (a.column ?? 0) - (b.column ?? 0))
      .map(sayableProblem);
  const resolvePath = (written: string): string => (isAbsolute(written) ? written : resolve(options.baseDir, written));
  const parsed = configSchema.safeParse(input);
  if (parsed.success) {
    const problems = inFileOrder(validateConfig(parsed.data, { resolvePath, brokenServices: new Set(), privateKeys: options.privateKeys !== false }));
    if (problems.some((p) => p.severity === 'error')) return { config: null, problems, fallback: operatorSettingsSound(problems, []) ? normalize(parsed.data, resolvePath, options.source ?? null) : null };
    return { config: normalize(parsed.data, resolvePath, options.source ?? null), problems };
  }
  const shapeProblems = parsed.error.issues.flatMap((issue) => problemsFromIssue(issue, []));
  // List the cross-field problems of the well-formed parts too, so one run shows everything: drop the
  // entries that failed the schema (their own problems are above) and check the rest.
  const salvage = salvageWellFormed(input, parsed.error.issues);
  const salvaged = salvage === null ? null : configSchema.safeParse(salvage.input);
  const ruleProblems = salvaged?.success === true && salvage !== null ? validateConfig(salvaged.data, { resolvePath, brokenServices: salvage.brokenServices, privateKeys: options.privateKeys !== false }).map(salvage.placeAsWritten) : [];
  const problems = [...shapeProblems, ...ruleProblems];
  const operatorSettingsWhole = salvage !== null && !OPERATOR_SETTINGS.some((key) => salvage.droppedTop.has(key)) && operatorSettingsSound(problems, [...salvage.unknownTop]);
  const fallback = salvaged?.success === true && operatorSettingsWhole ? normalize(salvaged.data, resolvePath, options.source ?? null) : null;
  return { config: null, problems: inFileOrder(problems), fallback };
}

/**
 * Whether the operator settings can be trusted as written: no error among them, and no unknown key
 * that is one of them misspelt (found by review: `datadir:` left data_dir at its default, and
 * `secrets rekey` re-keyed a new, empty store there while reporting success).
 */
function operatorSettingsSound(problems: readonly ConfigProblem[], unknownTop: readonly string[]): boolean {
  // admin.tls's files (one missing, unreadable or expired) leave the admin block's settings as written:
  // the CLI pins admin.tls.cert_file whatever its dates, and says so itself when it cannot read it, and
  // serve watches the files a refused config names (found by review: such a problem voided the fallback,
  // so files named before they were written were not watched, and an expired admin certificate stopped
  // every operator command, the kill switch included).
  const adminTlsFile = (p: ConfigProblem): boolean => p.path[0] === 'admin' && p.path[1] === 'tls' && p.path.length === 3 && ['cert_file', 'key_file', 'client_ca_file'].includes(String(p.path[2]));
  if (problems.some((p) => p.severity === 'error' && OPERATOR_SETTINGS.includes(String(p.path[0])) && !adminTlsFile(p))) return false;
  return !unknownTop.some((key) => OPERATOR_SETTINGS.some((setting) => editDistance(key.toLowerCase().replace(/[-\s]/g, '_'), setting) <= 2));
}

interface Salvage {
  readonly input: Record<string, unknown>;
  readonly brokenServices: Set<string>;
  /** Top-level settings left out whole (malformed). */
  readonly droppedTop: Set<string>;
  /** Top-level keys that are no setting (a typo of one, perhaps). */
  readonly unknownTop: Set<string>;
  /** A problem of the salvaged config, its grant index put back to where the grant is in the file. */
  readonly placeAsWritten: (problem: ConfigProblem) => ConfigProblem;
}

/**
 * The config without its malformed parts: a service or agent whose own keys fail the schema is left
 * out whole, and a malformed grant alone, so the rest of its agent's grants are still checked (found by
 * the ops walkthrough: one bad max_ttl hid a grant to an unknown service and a scope typo beside it).
 */
function salvageWellFormed(input: unknown, issues: readonly z.core.$ZodIssue[]): Salvage | null {
  if (input === null || typeof input !== 'object' || Array.isArray(input)) return null;
  const copy: Record<string, unknown> = { ...(input as Record<string, unknown>) };
  const broken: Record<'services' | 'agents', Set<string>> = { services: new Set(), agents: new Set() };
  const brokenGrants = new Map<string, Set<number>>();
  const droppedTop = new Set<string>();
  const unknownTop = new Set<string>();
  for (const issue of issues) {
    const [top, entry, field, index] = issue.path as Array<string | number | undefined>;
    if (issue.path.length === 0) {
      if (issue.code === 'unrecognized_keys') {
        for (const key of issue.keys) {
          delete copy[key];
          unknownTop.add(key);
        }
      }
      else return null;
    } else if (top === 'agents' && typeof entry === 'string' && field === 'credentials' && typeof index === 'number') {
      brokenGrants.set(entry, (brokenGrants.get(entry) ?? new Set()).add(index));
    } else if ((top === 'services' || top === 'agents') && typeof entry === 'string') {
      broken[top].add(entry);
    } else if (typeof top === 'string') {
      delete copy[top];
      droppedTop.add(top);
    }
  }
  for (const section of ['services', 'agents'] as const) {
    const value = copy[section];
    if (value === null || typeof value !== 'object' || Array.isArray(value)) continue;
    copy[section] = Object.fromEntries(Object.entries(value as Record<string, unknown>).filter(([name]) => !broken[section].has(name)));
  }
  // Each salvaged grant's index in the file, per agent whose malformed grants were left out.
  const writtenIndex = new Map<string, number[]>();
  const agents = copy['agents'] as Record<string, unknown> | undefined;
  for (const [name, skipped] of brokenGrants) {
    const agent = agents?.[name] as Record<string, unknown> | undefined;
    if (agent === undefined || !Array.isArray(agent['credentials'])) continue;
    const kept = (agent['credentials'] as unknown[]).map((_, index) => index).filter((index) => !skipped.has(index));
    writtenIndex.set(name, kept);
    agents![name] = { ...agent, credentials: kept.map((index) => (agent['credentials'] as unknown[])[index]) };
  }
  const placeAsWritten = (problem: ConfigProblem): ConfigProblem => {
    const [top, name, field, index, ...rest] = problem.path;
    const kept = typeof name === 'string' ? writtenIndex.get(name) : undefined;
    if (top !== 'agents' || field !== 'credentials' || typeof index !== 'number' || kept === undefined) return problem;
    return { ...problem, path: [top, name as string, field, kept[index] ?? index, ...rest] };
  };
  return { input: copy, brokenServices: broken.services, droppedTop, unknownTop, placeAsWritten };
}

function normalize(data: ParsedConfig, resolvePath: (p: string) => string, source: string | null): AirlockConfig {
  const dataDir = resolvePath(data.data_dir);
  const services: Record<string, ServiceConfig> = {};
  for (const [name, service] of Object.entries(data.services)) {
    services[name] = {
      ...service,
      name,
      prefix: service.prefix ?? defaultPrefix(name),
      ...(service.ca === undefined ? {} : { ca: resolvePath(service.ca) }),
    };
  }
  const agents: Record<string, AgentConfig> = {};
  for (const [name, agent] of Object.entries(data.agents)) agents[name] = { ...agent, name };
  return deepFreeze({
    source,
    listen: data.listen,
    tls: data.tls === undefined ? null : resolveTls(data.tls, resolvePath),
    trusted_proxies: data.trusted_proxies,
    data_dir: dataDir,
    audit: { ...data.audit, file: isAbsolute(data.audit.file) ? data.audit.file : resolve(dataDir, data.audit.file) },
    telemetry: data.telemetry,
    log: data.log,
    limits: data.limits,
    secrets: {
      ...data.secrets,
      ...(data.secrets.vault === undefined
        ? {}
        : { vault: { ...data.secrets.vault, ...(data.secrets.vault.ca_file === undefined ? {} : { ca_file: resolvePath(data.secrets.vault.ca_file) }) } }),
      oauth2: Object.fromEntries(Object.entries(data.secrets.oauth2).map(([name, client]) => [name, client.ca === undefined ? client : { ...client, ca: resolvePath(client.ca) }])),
    },
    admin: data.admin === undefined ? null : { ...data.admin, ...(data.admin.tls === undefined ? {} : { tls: resolveAdminTls(data.admin.tls, resolvePath) }) },
    approvals: data.approvals,
    state: data.state,
    anomalies: data.anomalies,
    workers: data.workers,
    shutdown_timeout: data.shutdown_timeout,
    reload: data.reload,
    services,
    agents,
  });
}

/** A listener's TLS files, absolute (relative ones are the config file's). */
function resolveTls<T extends { cert_file: string; key_file: string }>(spec: T, resolvePath: (p: string) => string): T {
  return { ...spec, cert_file: resolvePath(spec.cert_file), key_file: resolvePath(spec.key_file) };
}

/** admin.tls's files, absolute, its client CA among them. */
function resolveAdminTls<T extends { cert_file: string; key_file: string; client_ca_file?: string | undefined }>(spec: T, resolvePath: (p: string) => string): T {
  const resolved = resolveTls(spec, resolvePath);
  return spec.client_ca_file === undefined ? resolved : { ...resolved, client_ca_file: resolvePath(spec.client_ca_file) };
}

function deepFreeze<T>(value: T): T {
  if (value !== null && typeof value === 'object' && !Object.isFrozen(value)) {
    Object.freeze(value);
    for (const child of Object.values(value as Record<string, unknown>)) deepFreeze(child);
  }
  return value;
}

function problemsFromIssue(issue: z.core.$ZodIssue, prefix: ProblemPath): ConfigProblem[] {
  const path: ProblemPath = [...prefix, ...(issue.path as Array<string | number>)];
  if (issue.code === 'unrecognized_keys') {
    return issue.keys.map((key) => ({
      severity: 'error' as const,
      path: [...path, key],
      message: `unknown key "${key}"${suggestKey(path, key)}`,
    }));
  }
  if (issue.code === 'invalid_key') {
    // A record key (service or agent name) that fails its pattern: report the pattern's own message.
    const inner = issue.issues.map((i) => i.message.replace(/^Invalid input: /, ''));
    return [{ severity: 'error', path, message: `"${String(issue.path.at(-1) ?? '')}" is not a valid name: ${inner.join('; ')}` }];
  }
  if (issue.code === 'invalid_union') {
    // Show the branch the user evidently meant (the one that got past the type check), if exactly one did.
    // A branch whose own `type:` or `method:` literal did not match is not meant either (found by review:
    // `state: {type: redis}` without url matched no branch clearly, and only the forms were listed).
    const meant = issue.errors.filter((branch) => !branch.some((e) => (e.path.length === 0 && (e.code === 'invalid_type' || e.code === 'invalid_value')) || (e.path.length === 1 && e.code === 'invalid_value')));
    const details = meant.length === 1 ? (meant[0] as z.core.$ZodIssue[]).flatMap((e) => problemsFromIssue(e, path)) : [];
    // A union with a message of its own (inject) keeps it.
    const message = issue.message === 'Invalid input' ? (unionExpectation(issue.errors) ?? issue.message) : issue.message;
    return details.length > 0 ? details : [{ severity: 'error', path, message }];
  }
  const message = issue.message.replace(/^Invalid input: /, '');
  return [{ severity: 'error', path, message: issue.code === 'invalid_type' && /received undefined$/.test(message) ? `required: ${message.replace(/, received undefined$/, '')}` : message }];
}

/**
 * What a union takes, when every branch refused the value at its own level: `expected number or "auto"`
 * (zod's own message for that is "Invalid input", which says nothing of what would do).
 */
function unionExpectation(branches: ReadonlyArray<ReadonlyArray<z.core.$ZodIssue>>): string | null {
  const accepted: string[] = [];
  for (const branch of branches) {
    const top = branch.find((e) => e.path.length === 0);
    if (top?.code === 'invalid_type') accepted.push(top.expected);
    else if (top?.code === 'invalid_value') accepted.push(...top.values.map((value) => JSON.stringify(value)));
    else return null;
  }
  return accepted.length === 0 ? null : `expected ${[...new Set(accepted)].join(' or ')}`;
}

/** "did you mean" for a mistyped key, from the keys the schema allows at that place. */
function suggestKey(path: ProblemPath, key: string): string {
  const allowed = keysAt(configSchema, path);
  if (allowed.length === 0) return '';
  // Allowed in another form of a setting with several (found by review: `state: {type: memory, url: ...}`
  // said `did you mean "url"?`).
  if (allowed.includes(key)) return ' for this form of the setting: another form takes it (check its type or method)';
  const close = allowed.filter((candidate) => editDistance(candidate, key) <= Math.max(1, Math.floor(candidate.length / 4)));
  if (close.length > 0) return `; did you mean "${close[0]}"?`;
  return `; allowed here: ${allowed.join(', ')}`;
}

interface SchemaDef {
  type: string;
  shape?: Record<string, { def: SchemaDef }>;
  innerType?: { def: SchemaDef };
  valueType?: { def: SchemaDef };
  element?: { def: SchemaDef };
  options?: Array<{ def: SchemaDef }>;
}

function keysAt(schema: { def: unknown }, path: ProblemPath): string[] {
  let defs: SchemaDef[] = [schema.def as SchemaDef];
  for (const part of path) {
    defs = defs.flatMap(unwrap).flatMap((def): SchemaDef[] => {
      if (def.type === 'object' && typeof part === 'string' && def.shape?.[part] !== undefined) return [def.shape[part].def];
      if (def.type === 'record' && def.valueType !== undefined) return [def.valueType.def];
      if (def.type === 'array' && typeof part === 'number' && def.element !== undefined) return [def.element.def];
      return [];
    });
  }
  return [...new Set(defs.flatMap(unwrap).flatMap((def) => (def.type === 'object' && def.shape ? Object.keys(def.shape) : [])))];
}

function unwrap(def: SchemaDef): SchemaDef[] {
  if ((def.type === 'default' || def.type === 'optional' || def.type === 'prefault') && def.innerType) return unwrap(def.innerType.def);
  if (def.type === 'union' && def.options) return def.options.flatMap((o) => unwrap(o.def));
  return [def];
}

/** The source range of the node at a path: the key for the last step when it names a map entry. */
function rangeAt(root: unknown, path: ProblemPath): number | undefined {
  let node = root as YamlNode | null | undefined;
  let best = (node as { range?: [number, number, number] } | null | undefined)?.range?.[0];
  for (let i = 0; i < path.length; i++) {
    const part = path[i];
    if (isMap(node)) {
      const pair = node.items.find((item) => (item.key as { value?: unknown } | null)?.value === part);
      if (pair === undefined) return best;
      const keyRange = (pair.key as { range?: [number, number, number] } | null)?.range;
      if (i === path.length - 1 && keyRange !== undefined) return keyRange[0];
      node = pair.value as YamlNode | null;
    } else if (isSeq(node) && typeof part === 'number') {
      node = node.items[part] as YamlNode | null;
    } else {
      return best;
    }
    const range = (node as { range?: [number, number, number] } | null | undefined)?.range;
    if (range !== undefined) best = range[0];
  }
  return best;
}

export { formatPath };
