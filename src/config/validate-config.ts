/**
 * Rules across fields, which the schema (single-field rules) cannot express: listeners, prefixes and
 * hosts unique, grants naming real services once each, token hashes owned by one agent, the literal
 * upstream IPs that need allow_private, scopes nobody uses, credentials shared between agents,
 * credentials or tokens sent over plain http off the machine, and signing keys fetched over plain http
 * beyond loopback.
 * Checked in one pass so every problem is listed at once.
 */
import { accessSync, constants, existsSync, readFileSync, statSync } from 'node:fs';
import { METHODS } from 'node:http';
import { isIP } from 'node:net';
import { readTlsIdentity } from '../ingress/tls-identity.js';
import { compileRouteTable, DECODED, FOLDED, type CompiledRoute, type RouteSpelling } from '../policy/route-table.js';
import type { RouteSegment } from '../policy/route-template.js';
import { classifyAddress, literalNeedsAllowPrivate } from '../upstream/egress-guard.js';
import { parseUpstream } from '../upstream/upstream-target.js';
import { caFileExpired, caFileProblem } from './ca-file-problem.js';
import type { ConfigProblem, ProblemPath } from './config-problem.js';
import { editDistance } from './edit-distance.js';
import { NEVER_FORWARDED_METHODS, parseListen, type ParsedConfig } from './schema.js';

export interface ValidateOptions {
  /** Resolves a path written in config (relative to the config file) to an absolute one. */
  resolvePath: (written: string) => string;
  /** Services left out because their own entry is malformed: references to them are not reported again. */
  brokenServices: ReadonlySet<string>;
  /** False: TLS private keys are not read or checked (the CLI's commands that call a running Airlock). */
  privateKeys?: boolean;
}

/**
 * True for a plain-http URL to a host other than this machine. What travels over such a connection (an
 * injected key, a Vault token, a client secret, the keys that verify agents' JWTs) can be read and
 * altered by anyone on the network path; over loopback it never leaves the machine (RFC 6761 keeps
 * .localhost there too).
 */
function plaintextOffMachine(url: string): string | null {
  const host = plainHttpHost(url);
  return host === null || onThisMachine(host) ? null : host;
}

/**
 * True for a plain-http URL whose host is not a loopback address (127.0.0.0/8 or ::1, however spelt) or
 * `localhost`, which /etc/hosts answers. Stricter than plaintextOffMachine: a name under .localhost is
 * looked up in DNS by glibc unless /etc/hosts or systemd-resolved answers it, so it may lead elsewhere.
 */
function plaintextBeyondLoopback(url: string): string | null {
  const host = plainHttpHost(url);
  return host === null || host === 'localhost' || (isIP(host) !== 0 && classifyAddress(host) === 'loopback') ? null : host;
}

/** The host of an http: URL, lower case and without IPv6 brackets; null for another scheme or no URL. */
function plainHttpHost(url: string): string | null {
  let parsed: URL;
  try {
    parsed = new URL(url);
  } catch {
    return null;
  }
  return parsed.protocol === 'http:' ? parsed.hostname.replace(/^\[|\]$/g, '').toLowerCase() : null;
}

/**
 * Approvals are decided through the admin API (the console, `airlock approvals`, an approver's own tool
 * called by the webhook): without one, a call that needs an approval can only wait and be refused
 * (found by a fresh-user walkthrough: check said OK, and every such request hung for its timeout).
 */
function nobodyApproves(consequence: string): string {
  return `nobody can approve: approvals are decided through the admin API (the console, \`npx airlock approvals\`), which this config does not configure, so ${consequence}; add an admin block (README, Admin API and console) (fails check --strict)`;
}

/** The host name of a URL, lower case, or null when it does not parse. */
function hostOf(url: string): string | null {
  try {
    return new URL(url).hostname.toLowerCase();
  } catch {
    return null;
  }
}

/**
 * Loopback: 127.0.0.0/8 and ::1 however spelt (0:0:0:0:0:0:0:1, ::ffff:127.0.0.1; found by review: a
 * written-out ::1 was warned about as beyond this machine), localhost and *.localhost (RFC 6761). A
 * wildcard bind is every interface.
 */
function onThisMachine(host: string): boolean {
  return host === 'localhost' || host.endsWith('.localhost') || (isIP(host) !== 0 && classifyAddress(host) === 'loopback');
}

/**
 * The methods node's HTTP parser reads (llhttp's list, http.METHODS): a request with any other method is
 * refused 400 before Airlock sees it, so a route for one never matches. Found by the ops walkthroughs:
 * `method: GETT` was accepted without a word, then warned of as "not registered; keep it if the upstream
 * defines it", which it cannot be (and CHECKIN, which IANA registers, passed though node refuses it).
 */
const PARSED_METHODS: ReadonlySet<string> = new Set(METHODS);

/** How a loose upstream reads a template (decoded and in lower case): the route table's own spelling, as match-route.ts compares. */
const LOOSE: RouteSpelling = (DECODED + FOLDED) as RouteSpelling;

/**
 * Whether route segments `a` match every path `b` matches (first match wins, so a later `b` with a
 * method `a` has never matches): literals equal, a `:name` holds any one segment, a `*` any one or more.
 */
function coversEveryPath(a: readonly RouteSegment[], b: readonly RouteSegment[]): boolean {
  for (let k = 0; ; k++) {
    const mine = a[k];
    const theirs = b[k];
    if (mine === undefined) return theirs === undefined;
    if (mine.kind === 'rest') return theirs !== undefined;
    if (theirs === undefined || theirs.kind === 'rest') return false;
    if (mine.kind === 'literal' && (theirs.kind !== 'literal' || theirs.value !== mine.value)) return false;
  }
}

/** Redis's `databases` setting by default; it can be raised, so a higher number is a warning only. */
const DEFAULT_REDIS_DATABASES = 16;

/**
 * The database state.url names: the path after the host (or ?db=, which ioredis reads too), null for
 * none. ioredis reads it with parseInt and sends SELECT only when that is truthy, so "abc" (NaN) meant
 * database 0 and "1x" database 1, without a word (found by review). Not repeated in the problem: a raw
 * "/" in the user info puts the rest of a password in the path.
 */
function redisDatabase(url: string): number | 'not a whole number' | null {
  let parsed: URL;
  try {
    parsed = new URL(url);
  } catch {
    return null;
  }
  const written = parsed.pathname.length > 1 ? parsed.pathname.slice(1) : parsed.searchParams.get('db');
  if (written === null || written === '') return null;
  return /^\d{1,9}$/.test(written) ? Number(written) : 'not a whole number';
}

/**
 * The host state.url names, '' for none, null when node's URL parser cannot read it. ioredis reads
 * the URL with that parser and fills in localhost and 6379 for what it leaves out, so `redis://`,
 * `redis:///0` or `redis://?db=1` meant the Redis beside this replica, without a word (found by review),
 * and a URL the parser refuses (`redis://:6379`) stopped serve with a bare "Invalid URL". Neither is
 * repeated in the problem: a URL may hold a password.
 */
function redisHost(url: string): string | null {
  try {
    return new URL(url).hostname;
  } catch {
    return null;
  }
}

/**
 * The addresses a listen host binds, in one spelling, for telling two listeners on a port apart. Found
 * by review: `localhost`, `127.1`, `127.000.000.001` and `[::ffff:127.0.0.1]` beside 127.0.0.1 passed
 * check, and serve stopped with "another process uses this port" about its own listener. The resolver
 * reads IPv4 shorthands as the URL parser does; `localhost` is either loopback address (resolver order);
 * an IPv4-mapped IPv6 address is the IPv4 socket on Linux.
 */
function boundAddresses(host: string): string[] {
  if (host === 'localhost') return ['127.0.0.1', '::1'];
  let address = host;
  try {
    address = new URL(`http://${isIP(host) === 6 ? `[${host}]` : host}`).hostname.replace(/^\[|\]$/g, '');
  } catch {
    // Not an address the URL parser reads: a name, compared as written.
  }
  const mapped = /^::ffff:([0-9a-f]{1,4}):([0-9a-f]{1,4})$/.exec(address);
  if (mapped === null) return [address];
  const [high, low] = [parseInt(mapped[1] as string, 16), parseInt(mapped[2] as string, 16)];
  return [`${high >> 8}.${high & 255}.${low >> 8}.${low & 255}`];
}

export function defaultPrefix(serviceName: string): string {
  return `/${serviceName}`;
}

export function validateConfig(config: ParsedConfig, options: ValidateOptions): ConfigProblem[] {
  const problems: ConfigProblem[] = [];
  const error = (path: ProblemPath, message: string): void => {
    problems.push({ severity: 'error', path, message });
  };
  const warning = (path: ProblemPath, message: string, strict = false): void => {
    problems.push(strict ? { severity: 'warning', path, message, strict } : { severity: 'warning', path, message });
  };

  // Two listeners clash on the same port when their hosts are equal or either is a wildcard address,
  // which binds every interface (the second bind would fail with EADDRINUSE at start-up).
  const listeners: Array<{ text: string; addresses: readonly string[]; port: number; owner: string }> = [];
  const wildcard = (address: string): boolean => address === '0.0.0.0' || address === '::';
  /** `encrypted`: whether a tls setting (tls, admin.tls) covers this listener. */
  const claimListener = (text: string, path: ProblemPath, owner: string, carries: string, encrypted: boolean, tlsSetting = 'the tls setting'): void => {
    const parsed = parseListen(text);
    if (parsed === null) return;
    const host = parsed.host.toLowerCase();
    // A listener without tls speaks plain HTTP, so what an agent or an operator sends it is readable on
    // the network path once it listens beyond this machine. Not strict: a TLS-terminating proxy or a
    // mesh sidecar in front is a sound setup this check cannot see.
    if (!encrypted && !onThisMachine(host)) {
      warning(path, `${owner} listens on ${text}, beyond this machine, over plain HTTP: ${carries} cross the network unencrypted; keep it on loopback, or serve TLS (${tlsSetting}, or a TLS-terminating proxy or mesh sidecar in front; README, Security model)`);
    }
    if (parsed.port === 0) return;
    const addresses = boundAddresses(host);
    const previous = listeners.find((l) => l.port === parsed.port && l.addresses.some((a) => addresses.includes(a) || wildcard(a) || addresses.some(wildcard)));
    if (previous !== undefined) return error(path, `${text} clashes with ${previous.text} of ${previous.owner}; give each listener its own port`);
    listeners.push({ text, addresses, port: parsed.port, owner });
  };
  // node's http server refuses a headers deadline past the request's (ERR_OUT_OF_RANGE at start-up):
  // check said OK and serve failed (found by review).
  if (config.limits.headers_timeout > config.limits.request_timeout) {
    error(['limits', 'request_timeout'], `request_timeout (${config.limits.request_timeout} s) is shorter than headers_timeout (${config.limits.headers_timeout} s); the whole request cannot take less time than its headers: raise request_timeout or lower headers_timeout`);
  }
  const agentTls = config.tls !== undefined;
  claimListener(config.listen, ['listen'], 'the agent listener (listen)', 'agent tokens and request bodies', agentTls);
  const checkTlsFiles = (tls: { cert_file: string; key_file: string; min_version: 'TLSv1.2' | 'TLSv1.3'; client_ca_file?: string | undefined } | undefined, path: ProblemPath): void => {
    if (tls === undefined) return;
    // Every file relative to the config, admin.tls.client_ca_file too (found by review: it was read from
    // the current directory, so check and serve run elsewhere said it did not exist, or read another).
    const spec = {
      ...tls,
      cert_file: options.resolvePath(tls.cert_file),
      key_file: options.resolvePath(tls.key_file),
      ...(tls.client_ca_file === undefined ? {} : { client_ca_file: options.resolvePath(tls.client_ca_file) }),
    };
    for (const problem of readTlsIdentity(spec, Date.now(), { key: options.privateKeys !== false, clients: path[0] === 'admin' ? 'operators (the CLI, browsers, scrapers)' : 'agents' }).problems) {
      if (problem.severity === 'error') error([...path, problem.field], problem.message);
      else warning([...path, problem.field], problem.message, problem.strict === true);
    }
  };
  checkTlsFiles(config.tls, ['tls']);
  const checkCaFile = (file: string | undefined, path: ProblemPath): void => {
    if (file === undefined) return;
    const absolute = options.resolvePath(file);
    if (!existsSync(absolute)) return error(path, `CA file ${absolute} does not exist`);
    // Read at start-up (a service's) or on the first fetch (Vault's, OAuth2's): a directory or a file
    // this user may not read passed as existing, and serve failed with node's bare "EISDIR: illegal
    // operation on a directory, read", no path (found by review).
    if (statSync(absolute).isDirectory()) return error(path, `CA file ${absolute} is a directory; name the PEM file in it`);
    let bytes: Buffer;
    try {
      accessSync(absolute, constants.R_OK);
      bytes = readFileSync(absolute);
    } catch {
      return error(path, `CA file ${absolute} exists but this user may not read it; fix its owner or mode`);
    }
    const problem = caFileProblem(absolute, bytes);
    if (problem !== null) return error(path, problem);
    const expired = caFileExpired(absolute, bytes, Date.now());
    if (expired !== null) warning(path, expired, true);
  };

  const prefixes: Array<{ prefix: string; service: string }> = [];
  const hosts = new Map<string, string>();

  for (const [name, service] of Object.entries(config.services)) {
    const at = (...rest: Array<string | number>): ProblemPath => ['services', name, ...rest];

    const upstream = parseUpstream(service.upstream);
    if (upstream.ok && upstream.target.ipFamily !== 0 && literalNeedsAllowPrivate(upstream.target.hostname) && !service.allow_private) {
      error(at('upstream'), `${upstream.target.hostname} is a link-local or cloud metadata address; set allow_private: true on this service if you really mean it`);
    }

    const prefix = service.prefix ?? defaultPrefix(name);
    for (const other of prefixes) {
      if (other.prefix === prefix || other.prefix.startsWith(`${prefix}/`) || prefix.startsWith(`${other.prefix}/`)) {
        error(at('prefix'), `prefix ${prefix} overlaps ${other.prefix} of service ${other.service}; a path must select one service`);
      }
    }
    prefixes.push({ prefix, service: name });

    if (service.listen !== undefined) claimListener(service.listen, at('listen'), `service ${name}`, 'agent tokens and request bodies', agentTls);

    service.hosts.forEach((host, index) => {
      const lower = host.toLowerCase();
      const previous = hosts.get(lower);
      if (previous !== undefined) error(at('hosts', index), `host ${lower} already selects service ${previous}`);
      else hosts.set(lower, name);
    });

    checkCaFile(service.ca, at('ca'));
    // The egress guard refuses a host name that resolves to a non-public address unless allow_private
    // says so, and `localhost` always does (RFC 6761 6.3): every request would get 502 (found by a
    // fresh-user walkthrough). An IP literal such as 127.0.0.1 is the operator's explicit choice.
    const upstreamHost = hostOf(service.upstream);
    if (upstreamHost !== null && !service.allow_private && (upstreamHost === 'localhost' || upstreamHost.endsWith('.localhost'))) {
      warning(at('upstream'), `${upstreamHost} always resolves to this machine, which the egress guard refuses for a host name unless the service sets allow_private: true, so every request would get 502; write 127.0.0.1 (an address is taken as meant) or set allow_private: true (fails check --strict)`, true);
    }
    const plainUpstream = plaintextOffMachine(service.upstream);
    if (plainUpstream !== null) {
      warning(at('upstream'), `plain http to ${plainUpstream}, off this machine: the injected credential crosses the network unencrypted, readable by anyone on the path; use https (fails check --strict)`, true);
    }

    if (service.routes.length === 0) warning(at('routes'), `service ${name} has no routes, so every request to it is refused (403 route_not_allowed)`);
    // The table the proxy will match with (the schema checked every template): its segments and
    // spellings, not a second reading of the templates here.
    const table = compileRouteTable(service.routes);
    const earlier: CompiledRoute[] = [];
    service.routes.forEach((route, index) => {
      const methods = Array.isArray(route.method) ? route.method : [route.method];
      const listed = new Set<string>();
      methods.forEach((written, methodIndex) => {
        const method = written.toUpperCase();
        const place = Array.isArray(route.method) ? at('routes', index, 'method', methodIndex) : at('routes', index, 'method');
        if (listed.has(method)) warning(place, `${method} is listed twice in this route`);
        listed.add(method);
        if (PARSED_METHODS.has(method) || NEVER_FORWARDED_METHODS.has(method)) return;
        const near = [...PARSED_METHODS].find((known) => editDistance(known, method) === 1);
        error(place, `${method} is a method node's HTTP parser does not accept: a request with it is refused (400) before any route is looked at, so this route would never match${near === undefined ? '' : `; did you mean ${near}?`} (node's http.METHODS lists those it accepts)`);
      });
      const compiled = table.routes[index] as CompiledRoute;
      // A route an earlier one covers for a method never matches with it (found by the ops walkthrough:
      // `/v1/models/gpt-4-internal` with a stricter scope, listed after `/v1/models/*`, was never used, and
      // check said nothing unless the two paths were spelt the same).
      const shadowed = [...listed].flatMap((method) => {
        const first = earlier.find((other) => other.methods.has(method) && coversEveryPath(other.segments, compiled.segments));
        return first === undefined ? [] : [{ method, first }];
      });
      const first = shadowed[0]?.first;
      if (first !== undefined) {
        const which = shadowed.length === listed.size ? 'never matches' : `never matches for ${shadowed.map((entry) => entry.method).join(', ')}`;
        warning(
          at('routes', index),
          `${[...listed].join('|')} ${route.path} ${which}: routes[${first.index}] (${[...first.methods].join('|')} ${first.template}) comes first and matches every path it does (first match wins), so its scope ${route.scope} is never checked; list the more specific route first (fails check --strict)`,
          true,
        );
      }
      // Two routes a loose reading makes one (`/v1/Reports` beside `/v1/reports`, `a:b` beside `a%3Ab`),
      // with different scopes: on an upstream that reads paths that way, the agent chooses the scope by
      // how it spells the path (found by review). Told apart on purpose only for an upstream that does.
      const twin = earlier.find((other) => other.spellings[LOOSE] === compiled.spellings[LOOSE] && other.scope !== route.scope && [...listed].some((method) => other.methods.has(method)));
      if (twin !== undefined && first === undefined) {
        warning(
          at('routes', index),
          `${route.path} differs from routes[${twin.index}] (${twin.template}) only in letter case or escapes, with another scope: on an upstream that reads paths case-insensitively (IIS, ASP.NET) or decodes escapes before routing, both reach one handler and the agent picks scope ${twin.scope} or ${route.scope} by how it spells the path; keep both only if the upstream tells them apart (fails check --strict)`,
          true,
        );
      }
      earlier.push(compiled);
      if (route.require_approval && config.admin === undefined) warning(at('routes', index, 'require_approval'), nobodyApproves('a call to this route waits its grant\'s approval_timeout and is refused'), true);
    });
  }

  // A range that wide holds agents as well as load balancers: an agent there writes its own
  // X-Forwarded-For and chooses the address its audit records and anomaly rules see (security review).
  config.trusted_proxies.forEach((entry, index) => {
    const [address, bits] = entry.split('/');
    if (bits === undefined) return;
    const wide = isIP(address ?? '') === 4 ? Number(bits) < 8 : Number(bits) < 16;
    if (wide) warning(['trusted_proxies', index], `${entry} is wider than a load balancer's range: an agent inside it can set the address its audit records, spans and new_client_address see (X-Forwarded-For); list the balancers' own addresses or subnet (fails check --strict)`, true);
  });

  const tokenOwners = new Map<string, string>();
  const credentialUsers = new Map<string, string[]>();
  for (const [agentName, agent] of Object.entries(config.agents)) {
    const at = (...rest: Array<string | number>): ProblemPath => ['agents', agentName, ...rest];
    if (agent.tokens.length === 0 && agent.jwt === undefined) {
      warning(at('tokens'), `agent ${agentName} has no tokens and cannot authenticate; run \`npx airlock token\` and add the sha256 line here`);
    }
    agent.tokens.forEach((hash, index) => {
      const owner = tokenOwners.get(hash);
      if (owner !== undefined) error(at('tokens', index), `this token hash is already listed at ${owner}; every token belongs to exactly one agent`);
      else tokenOwners.set(hash, `agents.${agentName}.tokens[${index}]`);
    });

    const grantedServices = new Set<string>();
    agent.credentials.forEach((grant, index) => {
      const service = config.services[grant.service];
      if (service === undefined) {
        if (options.brokenServices.has(grant.service)) return;
        const known = Object.keys(config.services);
        const near = known.find((name) => editDistance(name, grant.service) <= 2);
        error(at('credentials', index, 'service'), `no service named "${grant.service}"${near === undefined ? '' : `; did you mean "${near}"?`}${known.length > 0 ? `; services are: ${known.join(', ')}` : ''}`);
        return;
      }
      if (grantedServices.has(grant.service)) {
        error(at('credentials', index, 'service'), `agent ${agentName} already has a grant for ${grant.service}; merge the two entries`);
      }
      grantedServices.add(grant.service);
      const routeScopes = service.routes.map((r) => r.scope);
      grant.max_scope.forEach((pattern, scopeIndex) => {
        const matchesSome = pattern === '*' || (pattern.endsWith('*') ? routeScopes.some((s) => s.startsWith(pattern.slice(0, -1))) : routeScopes.includes(pattern));
        if (!matchesSome) warning(at('credentials', index, 'max_scope', scopeIndex), `no route of ${grant.service} has a scope matching "${pattern}" (a typo?)`);
      });
      if (grant.require_approval && config.admin === undefined) warning(at('credentials', index, 'require_approval'), nobodyApproves(`a call under this grant waits approval_timeout (${grant.approval_timeout} s) and is refused`), true);
      if (grant.credential === undefined) {
        const users = credentialUsers.get(grant.service) ?? [];
        if (!users.includes(agentName)) credentialUsers.set(grant.service, [...users, agentName]);
      }
    });
  }

  // Secret references must name a store that exists, and store logins must not depend on themselves.
  const checkRef = (ref: string, path: ProblemPath): void => {
    const kind = ref.slice(0, ref.indexOf(':'));
    if ((kind === 'vault' || kind === 'vault-lease') && config.secrets.vault === undefined) {
      error(path, `${ref} needs a Vault: add secrets.vault with its address and auth`);
    }
    if (kind === 'oauth2') {
      const name = ref.slice(ref.indexOf(':') + 1);
      if (config.secrets.oauth2[name] === undefined) {
        const known = Object.keys(config.secrets.oauth2);
        error(path, `no OAuth2 client named "${name}" under secrets.oauth2${known.length > 0 ? `; clients are: ${known.join(', ')}` : ''}`);
      }
    }
  };
  for (const [name, service] of Object.entries(config.services)) checkRef(service.credential.secret, ['services', name, 'credential', 'secret']);
  for (const [agentName, agent] of Object.entries(config.agents)) {
    agent.credentials.forEach((grant, index) => {
      if (grant.credential !== undefined) checkRef(grant.credential.secret, ['agents', agentName, 'credentials', index, 'credential', 'secret']);
    });
  }
  for (const [name, client] of Object.entries(config.secrets.oauth2)) {
    for (const field of ['client_id', 'client_secret'] as const) {
      const ref = client[field];
      if (ref.startsWith('oauth2:')) error(['secrets', 'oauth2', name, field], 'an OAuth2 client cannot take its own credentials from an OAuth2 token; use env:, file: or vault:');
      else checkRef(ref, ['secrets', 'oauth2', name, field]);
    }
  }

  // Read when the first secret or token is fetched, which may be long after start-up: a missing file is
  // reported here with the others rather than as a 503 on that request.
  checkCaFile(config.secrets.vault?.ca_file, ['secrets', 'vault', 'ca_file']);
  for (const [name, client] of Object.entries(config.secrets.oauth2)) checkCaFile(client.ca, ['secrets', 'oauth2', name, 'ca']);
  const plainVault = config.secrets.vault === undefined ? null : plaintextOffMachine(config.secrets.vault.address);
  if (plainVault !== null) {
    warning(['secrets', 'vault', 'address'], `plain http to ${plainVault}, off this machine: Airlock's Vault token and every secret it reads cross the network unencrypted; use https (fails check --strict)`, true);
  }
  for (const [name, client] of Object.entries(config.secrets.oauth2)) {
    const plain = plaintextOffMachine(client.token_url);
    if (plain !== null) warning(['secrets', 'oauth2', name, 'token_url'], `plain http to ${plain}, off this machine: the client secret and every token issued cross the network unencrypted; use https (fails check --strict)`, true);
  }

  if (config.admin !== undefined) {
    claimListener(config.admin.listen, ['admin', 'listen'], 'the admin API (admin.listen)', 'admin tokens and approval decisions', config.admin.tls !== undefined, 'admin.tls');
    checkTlsFiles(config.admin.tls, ['admin', 'tls']);
    config.admin.tokens.forEach((entry, index) => {
      const hash = typeof entry === 'string' ? entry : entry.hash;
      const owner = tokenOwners.get(hash);
      if (owner !== undefined) error(['admin', 'tokens', index], `this hash is also an agent token (${owner}); an admin token must be its own`);
    });
  }

  // Two agents trusting one issuer must be told apart by subject or claims, or a token could match both.
  const jwtSelectors = new Map<string, string>();
  for (const [agentName, agent] of Object.entries(config.agents)) {
    if (agent.jwt === undefined) continue;
    const selector = JSON.stringify([agent.jwt.issuer, agent.jwt.audience, agent.jwt.subject ?? null, Object.entries(agent.jwt.claims).sort()]);
    const previous = jwtSelectors.get(selector);
    if (previous !== undefined) error(['agents', agentName, 'jwt'], `agent ${previous} accepts exactly the same tokens; give each agent its own subject or claims`);
    else jwtSelectors.set(selector, agentName);
    // An error, not the warning the other plain-http URLs get: the key set decides who is this agent,
    // and whoever answers a plain-http fetch can serve keys of their own and sign tokens that verify
    // (RFC 7515 4.1.2: fetching a JWK Set MUST use TLS; RFC 7517 9.1: trust a key no more than the way it
    // was obtained). Only a loopback address stays on this machine.
    const plainJwks = agent.jwt.jwks_url === undefined ? null : plaintextBeyondLoopback(agent.jwt.jwks_url);
    if (plainJwks !== null) {
      error(['agents', agentName, 'jwt', 'jwks_url'], `plain http to ${plainJwks}: anyone on the network path can answer with signing keys of their own and forge tokens that authenticate as ${agentName} (RFC 7515 4.1.2 requires TLS for a JWK Set); use https, or for a JWKS served on this machine a loopback address (127.0.0.0/8, ::1 or localhost)`);
    }
    if (agent.jwt.subject === undefined && Object.keys(agent.jwt.claims).length === 0) {
      warning(['agents', agentName, 'jwt'], `every token of issuer ${agent.jwt.issuer} for audience ${agent.jwt.audience} authenticates as ${agentName}; set subject or claims to narrow it`);
    }
  }

  if (config.state.type === 'redis') {
    const host = redisHost(config.state.url);
    const database = redisDatabase(config.state.url);
    if (host === null) {
      error(['state', 'url'], 'is not a URL node can parse (no host before the port, a port above 65535, a space or an unclosed [): write redis://[USER:PASSWORD@]HOST:PORT/N, percent-encoding any other character in the password; ioredis refuses it at start-up with a bare "Invalid URL"');
    } else if (host === '') {
      error(['state', 'url'], 'names no host, and ioredis fills in localhost:6379 without a word, so every replica would share state with whatever Redis runs beside it: write redis://HOST:PORT/N, e.g. redis://redis.internal:6379/0 (rediss:// for TLS)');
    } else if (database === 'not a whole number') {
      error(['state', 'url'], 'the database (the path after the host, or ?db=) is not a whole number: write redis://HOST:PORT/N with N from 0 (the default) to 15, or higher if the Redis databases setting is raised (ioredis reads as much of it as is a number, and database 0 when none is, without a word)');
    } else if (database !== null && database > DEFAULT_REDIS_DATABASES - 1) {
      warning(['state', 'url'], `database ${database}: Redis has ${DEFAULT_REDIS_DATABASES} (0 to ${DEFAULT_REDIS_DATABASES - 1}) unless its databases setting is raised; if it is not, serve refuses to start (Redis answers ERR DB index is out of range)`);
    }
  }

  if (config.workers !== 1 && config.state.type !== 'redis') {
    error(['workers'], 'several worker processes need shared state: set state: {type: redis, url: ...} (each process would otherwise keep its own sessions, revocations and approvals)');
  }

  for (const [serviceName, users] of credentialUsers) {
    if (users.length > 1) {
      warning(
        ['services', serviceName, 'credential'],
        `the credential ${config.services[serviceName]?.credential.secret} is shared by agents ${users.join(', ')}; give each grant its own credential so one agent's key can be revoked upstream alone (fails check --strict)`,
        true,
      );
    }
  }
  return problems;
}
