/**
 * An in-process stand-in for HashiCorp Vault that speaks the slice of Vault's documented HTTP API Airlock
 * uses, so tests can drive the real `node-vault` client (or Airlock) over real sockets on 127.0.0.1.
 *
 * Implemented (all under /v1/, JSON bodies, Vault's error shape `{"errors":[...]}`):
 *
 *   GET|HEAD  sys/health                     200 active / 503 sealed (honours ?activecode= ?sealedcode=); no token
 *   POST|PUT  auth/<approle mount>/login     {role_id, secret_id} -> {auth:{client_token, accessor, policies,
 *                                            token_policies, metadata:{role_name}, lease_duration, renewable,...}}
 *                                            400 "invalid role or secret ID"; 500 "missing role_id" (as Vault/OpenBao)
 *   POST|PUT  auth/<kubernetes mount>/login  {role, jwt} -> same auth shape, metadata {role, service_account_*}
 *                                            400 "missing role" / "missing jwt" / `invalid role name "x"`;
 *                                            403 "permission denied" for a JWT the role does not accept
 *   GET       auth/token/lookup-self         {data:{id, accessor, ttl, creation_ttl, renewable, policies, ...}}
 *   POST|PUT  auth/token/renew-self          body may hold increment (seconds or "1h") ->
 *                                            {auth:{client_token, lease_duration, renewable, policies,...}};
 *                                            400 "lease is not renewable"; capped by the token's max TTL
 *   POST|PUT  auth/token/revoke-self         204
 *   GET       <kv mount>/data/<path>         ?version=N; {data:{data, metadata:{version, created_time,
 *                                            deletion_time:"", destroyed:false, custom_metadata:null}}}
 *                                            404 {"errors":[]} when absent, version past the last, or soft-deleted
 *                                            (the soft-deleted 404 still carries data:null + metadata, like Vault)
 *   POST|PUT  <kv mount>/data/<path>         {data:{...}, options?:{cas}} -> {data:{version, created_time,...}}
 *                                            400 "no data provided"; 400 check-and-set mismatch
 *   DELETE    <kv mount>/data/<path>         soft-deletes the latest version, 204
 *   GET       <kv mount>/metadata/<path>     {data:{current_version, versions:{...}, ...}}; 404 when absent
 *   GET       <lease role path>              mints a lease: {lease_id:"<path>/<random>", lease_duration,
 *                                            renewable, data:{...generator()}}
 *   PUT|POST  sys/leases/renew[/<id>]        {lease_id, increment?} -> {lease_id, renewable, lease_duration};
 *                                            capped by the role's max TTL (with Vault's warning);
 *                                            400 "lease not found" (unknown, revoked or expired),
 *                                            400 "lease is not renewable", 400 "lease_id must be specified"
 *   PUT|POST  sys/leases/revoke[/<id>]       {lease_id} -> 204 (unknown ids too: revocation is idempotent in Vault)
 *
 * An unclean path ("//", "/./", "/../") is answered 301 to the cleaned path, as Vault's Go ServeMux does.
 * (node-vault 0.12 sends POST /v1/auth//login from kubernetesLogin() unless mount_point is passed, because
 * it never interpolates its kubernetesPath; Vault, and this stand-in, redirect that and the login fails.)
 *
 * Every other path needs a live token (X-Vault-Token, or `Authorization: Bearer`), else 403
 * {"errors":["permission denied"]}; an unrouted path with a live token is 404 `no handler for route "p".
 * route entry not found.`; when sealed every path but sys/health is 503 {"errors":["Vault is sealed"]}.
 *
 * Deviations from a real Vault, chosen for tests:
 *  - No policies: any live token may do anything. The policy names are only echoed back. `denyRead(mount,
 *    path)` makes reads of one KV path answer 403 "permission denied" to every token, as a policy that
 *    no longer covers it would.
 *  - Namespaces are not separate worlds. `requireNamespace` makes every request but sys/health whose
 *    X-Vault-Namespace differs answer 403 "permission denied" (a real Vault would say 403 for a token from
 *    another namespace, but 404 "namespace not found" for a namespace that does not exist).
 *  - Expiry is evaluated lazily against the server clock (`advanceClock` moves it) instead of by a reaper;
 *    an expired lease answers "lease not found", which is what Vault says once its reaper has revoked it.
 *  - Minted tokens are `hvs.` + a canary by default, so leak checks catch them (`issuedTokens()`).
 *  - setDown(true) defaults to 'reset': the port stays bound and every connection is destroyed as soon as
 *    it is accepted (clients see ECONNRESET / "socket hang up"). 'refuse' closes the listener instead
 *    (ECONNREFUSED) and setDown(false) listens again on the SAME port; 'hang' accepts requests and never
 *    answers (client timeouts). Open connections are destroyed on every transition to down.
 *
 * Nothing stores a presented token: request records keep a flag and a short SHA-256 fingerprint.
 */
import { createHash, randomBytes, randomUUID } from 'node:crypto';
import { once } from 'node:events';
import { createServer as createHttpServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import { createServer as createHttpsServer } from 'node:https';
import type { AddressInfo, Socket } from 'node:net';
import { posix } from 'node:path';
import { canary } from '../helpers/canary.js';

export type VaultEndpoint =
  | 'health'
  | 'approle-login'
  | 'kubernetes-login'
  | 'lookup-self'
  | 'renew-self'
  | 'revoke-self'
  | 'kv-read'
  | 'kv-write'
  | 'kv-delete'
  | 'kv-metadata'
  | 'lease-create'
  | 'lease-renew'
  | 'lease-revoke'
  | 'unknown';

export interface VaultRequestRecord {
  readonly seq: number;
  /** Server-clock time of arrival, ms since the epoch. */
  readonly at: number;
  readonly method: string;
  /** The pathname as received (percent-encoding kept), e.g. /v1/secret/data/app. */
  readonly path: string;
  /** The raw query string without '?', '' when none. */
  readonly query: string;
  readonly endpoint: VaultEndpoint;
  /** X-Vault-Namespace with surrounding slashes trimmed; undefined when the header was absent. */
  readonly namespace: string | undefined;
  readonly tokenPresented: boolean;
  /** tokenFingerprint(token) of the presented token; never the token itself. */
  readonly tokenFingerprint: string | undefined;
  /** The status answered; undefined while pending, or if the connection died first. */
  readonly status: number | undefined;
}

export interface TokenOptions {
  /** Seconds; 0 (the default) never expires, like a root token. */
  ttl?: number;
  /** Default false, like a root token. */
  renewable?: boolean;
  /** Seconds from issue past which renewals are capped; 0 (default) means uncapped. */
  maxTtl?: number;
  policies?: string[];
  /** Use this exact token id (e.g. a canary); default `hvs.` + a canary. */
  id?: string;
  meta?: Record<string, string>;
}

export interface TokenInfo {
  readonly fingerprint: string;
  readonly accessor: string;
  readonly path: string;
  readonly policies: readonly string[];
  /** Remaining seconds (0 for a non-expiring token or an expired one; see `live`). */
  readonly ttl: number;
  readonly creationTtl: number;
  readonly renewable: boolean;
  readonly issuedAt: number;
  /** ms since the epoch; undefined when the token never expires. */
  readonly expiresAt: number | undefined;
  readonly revoked: boolean;
  readonly live: boolean;
  readonly renewCount: number;
}

export interface AuthRoleOptions {
  /** Seconds; default 2764800 (Vault's 768h system default). */
  tokenTtl?: number;
  /** Seconds; 0 (default) is uncapped. */
  tokenMaxTtl?: number;
  policies?: string[];
  /** Default true. */
  renewable?: boolean;
}

export interface AppRoleOptions extends AuthRoleOptions {
  /** Reported in auth.metadata.role_name; default "role-<n>". */
  roleName?: string;
  /** Auth mount path; default "approle". */
  mount?: string;
}

export interface KubernetesRoleOptions extends AuthRoleOptions {
  serviceAccountName?: string;
  serviceAccountNamespace?: string;
  /** Auth mount path; default "kubernetes". */
  mount?: string;
}

export interface LeaseRoleOptions {
  /** Default lease TTL in seconds; default 3600. */
  ttl?: number;
  /** Seconds from creation past which renewals are capped; default 86400. */
  maxTtl?: number;
  /** Default true. */
  renewable?: boolean;
}

export interface LeaseInfo {
  readonly id: string;
  readonly path: string;
  /** ms since the epoch (server clock). */
  readonly created: number;
  readonly expiresAt: number;
  readonly revoked: boolean;
  readonly expired: boolean;
  readonly renewable: boolean;
  readonly renewCount: number;
  /** The secret data minted with the lease. */
  readonly data: Readonly<Record<string, unknown>>;
}

export type DownMode = 'reset' | 'refuse' | 'hang';

export interface VaultServerOptions {
  /** PEM strings; serves HTTPS instead of HTTP. */
  tls?: { key: string; cert: string };
  /** Every request but sys/health must carry this X-Vault-Namespace, else 403. */
  requireNamespace?: string;
  /** Reported by sys/health; default "1.17.2". */
  version?: string;
  /** KV v2 mounts present at start; default ["secret"]. */
  kvMounts?: string[];
  /** Mints token ids for logins and createToken(); default `hvs.` + canary(kind). */
  tokenFactory?: (kind: 'token' | 'approle' | 'kubernetes') => string;
}

export interface VaultServer {
  /** http(s)://127.0.0.1:PORT (no trailing slash, no /v1). */
  readonly url: string;
  readonly port: number;
  readonly requests: readonly VaultRequestRecord[];
  /** Connections destroyed or refused while down ('reset' and 'hang' modes only; refused ones never arrive). */
  readonly droppedConnections: number;
  readonly sealed: boolean;
  count(endpoint: VaultEndpoint): number;
  /** Forgets request records and counters (state such as tokens and secrets is kept). */
  resetObservations(): void;

  createToken(options?: TokenOptions): string;
  expireToken(token: string): void;
  expireAllTokens(): void;
  revokeToken(token: string): void;
  setTokenTtl(token: string, ttlSeconds: number): void;
  tokenInfo(token: string): TokenInfo | undefined;
  /** Every token id this server minted (logins and createToken), for leak checks. */
  issuedTokens(): string[];

  addAppRole(roleId: string, secretId: string, options?: AppRoleOptions): void;
  removeAppRole(roleId: string, mount?: string): void;
  addKubernetesRole(role: string, expectedJwt: string, options?: KubernetesRoleOptions): void;

  addKvMount(name: string): void;
  /** Writes a new version like `vault kv put`; returns the version number. */
  putSecret(mount: string, path: string, data: Record<string, unknown>): number;
  /** Soft-deletes the latest version like `vault kv delete`. */
  deleteSecret(mount: string, path: string): void;
  /** Reads of this KV path answer 403 "permission denied" to every token (a withdrawn policy); false lifts it. */
  denyRead(mount: string, path: string, denied?: boolean): void;
  getSecret(mount: string, path: string, version?: number): Record<string, unknown> | undefined;

  addLeaseRole(path: string, generate: () => Record<string, unknown>, options?: LeaseRoleOptions): void;
  leases(): LeaseInfo[];
  expireLease(leaseId: string): void;

  seal(): void;
  unseal(): void;
  setDown(down: boolean, mode?: DownMode): Promise<void>;
  setDelay(ms: number): void;
  setRequiredNamespace(namespace: string | undefined): void;
  /** Moves the server clock forward (token and lease expiry, created_time). */
  advanceClock(seconds: number): void;
  close(): Promise<void>;
}

/** The short fingerprint request records keep instead of a token. */
export function tokenFingerprint(token: string): string {
  return createHash('sha256').update(token, 'utf8').digest('hex').slice(0, 16);
}

// ---------------------------------------------------------------------------------------------------

const DEFAULT_TOKEN_TTL = 2_764_800;
const MAX_BODY_BYTES = 1 << 20;
const PERMISSION_DENIED = 'permission denied';

interface TokenEntry {
  readonly id: string;
  readonly accessor: string;
  readonly path: string;
  readonly policies: string[];
  readonly meta: Record<string, string> | null;
  creationTtl: number;
  readonly maxTtl: number;
  readonly renewable: boolean;
  readonly issuedAt: number;
  expiresAt: number | undefined;
  revoked: boolean;
  renewCount: number;
}

interface AuthRole {
  readonly kind: 'approle' | 'kubernetes';
  readonly name: string;
  readonly credential: string;
  readonly tokenTtl: number;
  readonly tokenMaxTtl: number;
  readonly policies: string[];
  readonly renewable: boolean;
  readonly metadata: Record<string, string>;
}

interface KvVersion {
  readonly data: Record<string, unknown>;
  readonly created: number;
  deleted: number | undefined;
}

interface KvSecret {
  readonly created: number;
  readonly versions: KvVersion[];
}

interface LeaseRole {
  readonly generate: () => Record<string, unknown>;
  readonly ttl: number;
  readonly maxTtl: number;
  readonly renewable: boolean;
}

interface LeaseEntry {
  readonly id: string;
  readonly path: string;
  readonly created: number;
  expiresAt: number;
  readonly ttl: number;
  readonly maxTtl: number;
  readonly renewable: boolean;
  revoked: boolean;
  renewCount: number;
  readonly data: Record<string, unknown>;
}

interface MutableRecord {
  seq: number;
  at: number;
  method: string;
  path: string;
  query: string;
  endpoint: VaultEndpoint;
  namespace: string | undefined;
  tokenPresented: boolean;
  tokenFingerprint: string | undefined;
  status: number | undefined;
}

interface Reply {
  status: number;
  body?: unknown;
}

interface RequestContext {
  readonly method: string;
  readonly rest: string;
  readonly query: URLSearchParams;
  readonly token: string | undefined;
  readonly rawBody: Buffer;
}

type Route =
  | { endpoint: 'health' }
  | { endpoint: 'approle-login' | 'kubernetes-login'; mount: string }
  | { endpoint: 'lookup-self' | 'renew-self' | 'revoke-self' }
  | { endpoint: 'kv-read' | 'kv-write' | 'kv-delete' | 'kv-metadata'; mount: string; path: string }
  | { endpoint: 'lease-create'; path: string }
  | { endpoint: 'lease-renew' | 'lease-revoke'; leaseIdInPath: string | undefined }
  | { endpoint: 'unknown' };

class HttpError extends Error {
  constructor(
    readonly status: number,
    readonly errors: string[],
  ) {
    super(errors[0] ?? `status ${status}`);
  }
}

function trimSlashes(value: string): string {
  return value.replace(/^\/+|\/+$/g, '');
}

function randomId(bytes = 18): string {
  return randomBytes(bytes).toString('base64url').replace(/[-_]/g, 'x');
}

function errorsBody(errors: string[]): { errors: string[] } {
  return { errors };
}

/** Vault accepts integer seconds or a Go-style duration ("90s", "1h30m", "2d"). */
function parseVaultDuration(value: unknown): number | undefined {
  if (value === undefined || value === null || value === '') return undefined;
  if (typeof value === 'number') {
    if (!Number.isFinite(value) || value < 0) throw new HttpError(400, [`invalid duration ${JSON.stringify(value)}`]);
    return Math.floor(value);
  }
  if (typeof value !== 'string') throw new HttpError(400, [`invalid duration ${JSON.stringify(value)}`]);
  if (/^\d+$/.test(value)) return Number(value);
  const units: Record<string, number> = { ms: 0.001, s: 1, m: 60, h: 3600, d: 86400 };
  const pattern = /(\d+(?:\.\d+)?)(ms|s|m|h|d)/gy;
  let total = 0;
  let consumed = 0;
  for (let match = pattern.exec(value); match !== null; match = pattern.exec(value)) {
    total += Number(match[1]) * (units[match[2] as string] as number);
    consumed = pattern.lastIndex;
  }
  if (consumed !== value.length || consumed === 0) throw new HttpError(400, [`invalid duration ${JSON.stringify(value)}`]);
  return Math.floor(total);
}

function formatSeconds(seconds: number): string {
  const h = Math.floor(seconds / 3600);
  const m = Math.floor((seconds % 3600) / 60);
  const s = seconds % 60;
  return `${h > 0 ? `${h}h` : ''}${m > 0 || h > 0 ? `${m}m` : ''}${s}s`;
}

function isPlainObject(value: unknown): value is Record<string, unknown> {
  return typeof value === 'object' && value !== null && !Array.isArray(value);
}

export async function startVaultServer(options: VaultServerOptions = {}): Promise<VaultServer> {
  const version = options.version ?? '1.17.2';
  const clusterId = randomUUID();
  const mintToken = options.tokenFactory ?? ((kind: string) => `hvs.${canary(`vault${kind}`)}`);

  let clockOffsetMs = 0;
  const now = (): number => Date.now() + clockOffsetMs;

  // State.
  const tokens = new Map<string, TokenEntry>();
  const minted: string[] = [];
  const authMounts = new Map<string, 'approle' | 'kubernetes'>([
    ['approle', 'approle'],
    ['kubernetes', 'kubernetes'],
  ]);
  const authRoles = new Map<string, AuthRole>(); // key: mount \0 role_id|role
  const kvMounts = new Set<string>((options.kvMounts ?? ['secret']).map(trimSlashes));
  const deniedReads = new Set<string>();
  const kv = new Map<string, KvSecret>(); // key: mount \0 path
  const leaseRoles = new Map<string, LeaseRole>();
  const leaseTable = new Map<string, LeaseEntry>();
  let requiredNamespace = options.requireNamespace === undefined ? undefined : trimSlashes(options.requireNamespace);
  let sealed = false;
  let delayMs = 0;
  let down: DownMode | undefined;
  let closed = false;
  let dropped = 0;
  let approleCounter = 0;

  // Observations.
  const records: MutableRecord[] = [];
  const counters = new Map<VaultEndpoint, number>();
  let seq = 0;

  // Connections, pending delays and held responses, so nothing outlives close().
  const sockets = new Set<Socket>();
  const sleepers = new Set<{ timer: NodeJS.Timeout; resolve: () => void }>();
  const held = new Set<ServerResponse>();

  function sleep(ms: number): Promise<void> {
    return new Promise((resolve) => {
      const entry = {
        timer: setTimeout(() => {
          sleepers.delete(entry);
          resolve();
        }, ms),
        resolve,
      };
      sleepers.add(entry);
    });
  }

  // --- tokens ---------------------------------------------------------------------------------------

  function issueToken(path: string, kind: 'token' | 'approle' | 'kubernetes', opts: TokenOptions): TokenEntry {
    const id = opts.id ?? mintToken(kind);
    const ttl = opts.ttl ?? 0;
    const issuedAt = now();
    const entry: TokenEntry = {
      id,
      accessor: randomId(18),
      path,
      policies: opts.policies ?? ['root'],
      meta: opts.meta ?? null,
      creationTtl: ttl,
      maxTtl: opts.maxTtl ?? 0,
      renewable: opts.renewable ?? false,
      issuedAt,
      expiresAt: ttl > 0 ? issuedAt + ttl * 1000 : undefined,
      revoked: false,
      renewCount: 0,
    };
    tokens.set(id, entry);
    minted.push(id);
    return entry;
  }

  function isLive(entry: TokenEntry): boolean {
    return !entry.revoked && (entry.expiresAt === undefined || now() < entry.expiresAt);
  }

  function remainingSeconds(expiresAt: number | undefined): number {
    if (expiresAt === undefined) return 0;
    return Math.max(0, Math.floor((expiresAt - now()) / 1000));
  }

  function liveToken(token: string | undefined): TokenEntry {
    const entry = token === undefined ? undefined : tokens.get(token);
    if (entry === undefined || !isLive(entry)) throw new HttpError(403, [PERMISSION_DENIED]);
    return entry;
  }

  /** The auth block of a login or renewal; leaseDuration is the TTL just granted (exact, as Vault reports it). */
  function authBlock(entry: TokenEntry, leaseDuration: number): Record<string, unknown> {
    return {
      client_token: entry.id,
      accessor: entry.accessor,
      policies: entry.policies,
      token_policies: entry.policies,
      metadata: entry.meta,
      lease_duration: leaseDuration,
      renewable: entry.renewable,
      entity_id: '',
      token_type: 'service',
      orphan: true,
      mfa_requirement: null,
      num_uses: 0,
    };
  }

  function envelope(fields: Record<string, unknown>): Record<string, unknown> {
    return {
      request_id: randomUUID(),
      lease_id: '',
      renewable: false,
      lease_duration: 0,
      data: null,
      wrap_info: null,
      warnings: null,
      auth: null,
      ...fields,
    };
  }

  // --- routing --------------------------------------------------------------------------------------

  function classify(method: string, rest: string): Route {
    if (rest === 'sys/health') return { endpoint: 'health' };
    if (rest === 'auth/token/lookup-self') return { endpoint: 'lookup-self' };
    if (rest === 'auth/token/renew-self') return { endpoint: 'renew-self' };
    if (rest === 'auth/token/revoke-self') return { endpoint: 'revoke-self' };
    for (const [prefix, endpoint] of [
      ['sys/leases/renew', 'lease-renew'],
      ['sys/renew', 'lease-renew'],
      ['sys/leases/revoke', 'lease-revoke'],
      ['sys/revoke', 'lease-revoke'],
    ] as const) {
      if (rest === prefix) return { endpoint, leaseIdInPath: undefined };
      if (rest.startsWith(`${prefix}/`)) return { endpoint, leaseIdInPath: rest.slice(prefix.length + 1) };
    }
    const login = /^auth\/(.+)\/login$/.exec(rest);
    if (login !== null) {
      const mount = login[1] as string;
      const kind = authMounts.get(mount);
      if (kind !== undefined) return { endpoint: kind === 'approle' ? 'approle-login' : 'kubernetes-login', mount };
    }
    if (leaseRoles.has(rest)) return { endpoint: 'lease-create', path: rest };
    const slash = rest.indexOf('/');
    if (slash > 0) {
      const mount = rest.slice(0, slash);
      if (kvMounts.has(mount)) {
        const sub = rest.slice(slash + 1);
        const [api, ...pathParts] = sub.split('/');
        const path = trimSlashes(pathParts.join('/'));
        if (api === 'data' && path !== '') {
          if (method === 'GET' || method === 'HEAD') return { endpoint: 'kv-read', mount, path };
          if (method === 'POST' || method === 'PUT') return { endpoint: 'kv-write', mount, path };
          if (method === 'DELETE') return { endpoint: 'kv-delete', mount, path };
        }
        if (api === 'metadata' && path !== '' && method === 'GET') return { endpoint: 'kv-metadata', mount, path };
      }
    }
    return { endpoint: 'unknown' };
  }

  function parseJson(raw: Buffer): Record<string, unknown> {
    if (raw.length === 0) return {};
    let parsed: unknown;
    try {
      parsed = JSON.parse(raw.toString('utf8'));
    } catch (error: unknown) {
      throw new HttpError(400, [`failed to parse JSON input: ${(error as Error).message}`]);
    }
    if (parsed === null) return {};
    if (!isPlainObject(parsed)) throw new HttpError(400, ['failed to parse JSON input: not a JSON object']);
    return parsed;
  }

  function requireMethod(ctx: RequestContext, allowed: readonly string[]): void {
    if (!allowed.includes(ctx.method)) throw new HttpError(405, ['unsupported operation']);
  }

  function handle(route: Route, ctx: RequestContext): Reply {
    if (route.endpoint === 'health') return health(ctx);
    if (sealed) throw new HttpError(503, ['Vault is sealed']);
    switch (route.endpoint) {
      case 'approle-login':
        requireMethod(ctx, ['POST', 'PUT']);
        return approleLogin(route.mount, parseJson(ctx.rawBody));
      case 'kubernetes-login':
        requireMethod(ctx, ['POST', 'PUT']);
        return kubernetesLogin(route.mount, parseJson(ctx.rawBody));
      default:
        break;
    }
    const self = liveToken(ctx.token);
    switch (route.endpoint) {
      case 'lookup-self':
        requireMethod(ctx, ['GET']);
        return lookupSelf(self);
      case 'renew-self':
        requireMethod(ctx, ['POST', 'PUT']);
        return renewSelf(self, parseJson(ctx.rawBody));
      case 'revoke-self':
        requireMethod(ctx, ['POST', 'PUT']);
        self.revoked = true;
        return { status: 204 };
      case 'kv-read':
        if (deniedReads.has(`${route.mount}\0${trimSlashes(route.path)}`)) throw new HttpError(403, [PERMISSION_DENIED]);
        return kvRead(route.mount, route.path, ctx.query);
      case 'kv-write':
        return kvWrite(route.mount, route.path, parseJson(ctx.rawBody));
      case 'kv-delete':
        deleteLatest(route.mount, route.path);
        return { status: 204 };
      case 'kv-metadata':
        return kvMetadata(route.mount, route.path);
      case 'lease-create':
        requireMethod(ctx, ['GET']);
        return createLease(route.path);
      case 'lease-renew':
        requireMethod(ctx, ['POST', 'PUT']);
        return renewLease(route.leaseIdInPath, parseJson(ctx.rawBody));
      case 'lease-revoke':
        requireMethod(ctx, ['POST', 'PUT']);
        return revokeLease(route.leaseIdInPath, parseJson(ctx.rawBody));
      case 'unknown':
        if (kvMounts.has(ctx.rest.split('/')[0] ?? '')) {
          return {
            status: 404,
            body: {
              errors: [],
              warnings: [
                "Invalid path for a versioned K/V secrets engine. See the API docs for the appropriate API endpoints to use. If using the Vault CLI, use 'vault kv get' for this operation.",
              ],
            },
          };
        }
        throw new HttpError(404, [`no handler for route ${JSON.stringify(ctx.rest)}. route entry not found.`]);
    }
  }

  function health(ctx: RequestContext): Reply {
    requireMethod(ctx, ['GET', 'HEAD']);
    const code = (name: string, fallback: number): number => {
      const raw = ctx.query.get(name);
      const parsed = raw === null ? NaN : Number(raw);
      return Number.isInteger(parsed) && parsed >= 100 && parsed <= 999 ? parsed : fallback;
    };
    const body: Record<string, unknown> = {
      initialized: true,
      sealed,
      standby: false,
      performance_standby: false,
      replication_performance_mode: 'disabled',
      replication_dr_mode: 'disabled',
      server_time_utc: Math.floor(now() / 1000),
      version,
      enterprise: false,
    };
    if (!sealed) {
      body['cluster_name'] = 'vault-cluster-airlock-test';
      body['cluster_id'] = clusterId;
    }
    return { status: sealed ? code('sealedcode', 503) : code('activecode', 200), body };
  }

  function loginReply(role: AuthRole, kind: 'approle' | 'kubernetes'): Reply {
    const entry = issueToken(`auth/${kind}/login`, kind, {
      ttl: role.tokenTtl,
      maxTtl: role.tokenMaxTtl,
      renewable: role.renewable,
      policies: role.policies,
      meta: role.metadata,
    });
    return { status: 200, body: envelope({ auth: authBlock(entry, entry.creationTtl) }) };
  }

  function approleLogin(mount: string, body: Record<string, unknown>): Reply {
    const roleId = body['role_id'];
    if (typeof roleId !== 'string' || roleId === '') throw new HttpError(500, ['missing role_id']);
    const secretId = body['secret_id'];
    if (typeof secretId !== 'string' || secretId === '') throw new HttpError(400, ['missing secret_id']);
    const role = authRoles.get(`${mount}\0${roleId}`);
    if (role === undefined || role.kind !== 'approle' || role.credential !== secretId) {
      throw new HttpError(400, ['invalid role or secret ID']);
    }
    return loginReply(role, 'approle');
  }

  function kubernetesLogin(mount: string, body: Record<string, unknown>): Reply {
    const roleName = body['role'];
    if (typeof roleName !== 'string' || roleName === '') throw new HttpError(400, ['missing role']);
    const jwt = body['jwt'];
    if (typeof jwt !== 'string' || jwt === '') throw new HttpError(400, ['missing jwt']);
    const role = authRoles.get(`${mount}\0${roleName}`);
    if (role === undefined || role.kind !== 'kubernetes') throw new HttpError(400, [`invalid role name ${JSON.stringify(roleName)}`]);
    if (role.credential !== jwt) throw new HttpError(403, [PERMISSION_DENIED]);
    return loginReply(role, 'kubernetes');
  }

  function lookupSelf(entry: TokenEntry): Reply {
    return {
      status: 200,
      body: envelope({
        data: {
          accessor: entry.accessor,
          creation_time: Math.floor(entry.issuedAt / 1000),
          creation_ttl: entry.creationTtl,
          display_name: entry.path === 'auth/token/create' ? 'token' : entry.path.split('/')[1] ?? 'token',
          entity_id: '',
          expire_time: entry.expiresAt === undefined ? null : new Date(entry.expiresAt).toISOString(),
          explicit_max_ttl: entry.maxTtl,
          id: entry.id,
          issue_time: new Date(entry.issuedAt).toISOString(),
          meta: entry.meta,
          num_uses: 0,
          orphan: true,
          path: entry.path,
          policies: entry.policies,
          renewable: entry.renewable,
          ttl: remainingSeconds(entry.expiresAt),
          type: 'service',
        },
      }),
    };
  }

  /** Caps a requested TTL at what is left of a max TTL counted from `issuedAt`; returns the TTL and a warning. */
  function capTtl(requested: number, maxTtl: number, issuedAt: number): { ttl: number; warning: string | undefined } {
    if (maxTtl <= 0) return { ttl: requested, warning: undefined };
    const left = Math.max(0, Math.floor((issuedAt + maxTtl * 1000 - now()) / 1000));
    if (requested <= left) return { ttl: requested, warning: undefined };
    return {
      ttl: left,
      warning: `TTL of "${formatSeconds(requested)}" exceeded the effective max_ttl of "${formatSeconds(left)}"; TTL value is capped accordingly`,
    };
  }

  function renewSelf(entry: TokenEntry, body: Record<string, unknown>): Reply {
    if (!entry.renewable) throw new HttpError(400, ['lease is not renewable']);
    const increment = parseVaultDuration(body['increment']) ?? entry.creationTtl;
    const { ttl, warning } = capTtl(increment, entry.maxTtl, entry.issuedAt);
    entry.expiresAt = ttl > 0 ? now() + ttl * 1000 : entry.expiresAt;
    entry.renewCount += 1;
    return { status: 200, body: envelope({ auth: authBlock(entry, ttl > 0 ? ttl : remainingSeconds(entry.expiresAt)), warnings: warning === undefined ? null : [warning] }) };
  }

  function versionMeta(v: KvVersion, n: number): Record<string, unknown> {
    return {
      created_time: new Date(v.created).toISOString(),
      custom_metadata: null,
      deletion_time: v.deleted === undefined ? '' : new Date(v.deleted).toISOString(),
      destroyed: false,
      version: n,
    };
  }

  function kvRead(mount: string, path: string, query: URLSearchParams): Reply {
    const secret = kv.get(`${mount}\0${path}`);
    if (secret === undefined || secret.versions.length === 0) throw new HttpError(404, []);
    let n = secret.versions.length;
    const requested = query.get('version');
    if (requested !== null && requested !== '' && requested !== '0') {
      const parsed = Number(requested);
      if (!Number.isInteger(parsed) || parsed < 1 || parsed > secret.versions.length) throw new HttpError(404, []);
      n = parsed;
    }
    const v = secret.versions[n - 1] as KvVersion;
    if (v.deleted !== undefined) {
      return { status: 404, body: envelope({ data: { data: null, metadata: versionMeta(v, n) } }) };
    }
    return { status: 200, body: envelope({ data: { data: v.data, metadata: versionMeta(v, n) } }) };
  }

  function put(mount: string, path: string, data: Record<string, unknown>): { version: KvVersion; n: number } {
    const key = `${mount}\0${trimSlashes(path)}`;
    let secret = kv.get(key);
    if (secret === undefined) {
      secret = { created: now(), versions: [] };
      kv.set(key, secret);
    }
    const version: KvVersion = { data: structuredClone(data), created: now(), deleted: undefined };
    secret.versions.push(version);
    return { version, n: secret.versions.length };
  }

  function kvWrite(mount: string, path: string, body: Record<string, unknown>): Reply {
    const data = body['data'];
    if (!isPlainObject(data)) throw new HttpError(400, ['no data provided']);
    const opts = body['options'];
    if (isPlainObject(opts) && opts['cas'] !== undefined) {
      const current = kv.get(`${mount}\0${path}`)?.versions.length ?? 0;
      if (Number(opts['cas']) !== current) throw new HttpError(400, ['check-and-set parameter did not match the current version']);
    }
    const { version, n } = put(mount, path, data);
    return { status: 200, body: envelope({ data: versionMeta(version, n) }) };
  }

  function deleteLatest(mount: string, path: string): void {
    const secret = kv.get(`${mount}\0${trimSlashes(path)}`);
    const latest = secret?.versions[secret.versions.length - 1];
    if (latest !== undefined && latest.deleted === undefined) latest.deleted = now();
  }

  function kvMetadata(mount: string, path: string): Reply {
    const secret = kv.get(`${mount}\0${path}`);
    if (secret === undefined || secret.versions.length === 0) throw new HttpError(404, []);
    const versions: Record<string, unknown> = {};
    secret.versions.forEach((v, i) => {
      const meta = versionMeta(v, i + 1);
      delete meta['version'];
      delete meta['custom_metadata'];
      versions[String(i + 1)] = meta;
    });
    const last = secret.versions[secret.versions.length - 1] as KvVersion;
    return {
      status: 200,
      body: envelope({
        data: {
          cas_required: false,
          created_time: new Date(secret.created).toISOString(),
          current_version: secret.versions.length,
          custom_metadata: null,
          delete_version_after: '0s',
          max_versions: 0,
          oldest_version: 0,
          updated_time: new Date(last.created).toISOString(),
          versions,
        },
      }),
    };
  }

  function leaseIsActive(lease: LeaseEntry): boolean {
    return !lease.revoked && now() < lease.expiresAt;
  }

  function createLease(path: string): Reply {
    const role = leaseRoles.get(path) as LeaseRole;
    const created = now();
    const lease: LeaseEntry = {
      id: `${path}/${randomId(18)}`,
      path,
      created,
      expiresAt: created + role.ttl * 1000,
      ttl: role.ttl,
      maxTtl: role.maxTtl,
      renewable: role.renewable,
      revoked: false,
      renewCount: 0,
      data: structuredClone(role.generate()),
    };
    leaseTable.set(lease.id, lease);
    return {
      status: 200,
      body: envelope({ lease_id: lease.id, renewable: lease.renewable, lease_duration: lease.ttl, data: lease.data }),
    };
  }

  function leaseIdFrom(inPath: string | undefined, body: Record<string, unknown>): string {
    const fromBody = body['lease_id'] ?? body['url_lease_id'];
    const id = typeof fromBody === 'string' && fromBody !== '' ? fromBody : inPath;
    if (id === undefined || id === '') throw new HttpError(400, ['lease_id must be specified']);
    return id;
  }

  function renewLease(inPath: string | undefined, body: Record<string, unknown>): Reply {
    const id = leaseIdFrom(inPath, body);
    const lease = leaseTable.get(id);
    if (lease === undefined || !leaseIsActive(lease)) throw new HttpError(400, ['lease not found']);
    if (!lease.renewable) throw new HttpError(400, ['lease is not renewable']);
    const increment = parseVaultDuration(body['increment']) ?? lease.ttl;
    const { ttl, warning } = capTtl(increment, lease.maxTtl, lease.created);
    lease.expiresAt = now() + ttl * 1000;
    lease.renewCount += 1;
    return {
      status: 200,
      body: envelope({ lease_id: lease.id, renewable: lease.renewable, lease_duration: ttl, warnings: warning === undefined ? null : [warning] }),
    };
  }

  function revokeLease(inPath: string | undefined, body: Record<string, unknown>): Reply {
    const id = leaseIdFrom(inPath, body);
    const lease = leaseTable.get(id);
    if (lease !== undefined) lease.revoked = true;
    return { status: 204 };
  }

  // --- HTTP -----------------------------------------------------------------------------------------

  function send(res: ServerResponse, reply: Reply, record: MutableRecord | undefined, head: boolean): void {
    if (record !== undefined) record.status = reply.status;
    if (res.destroyed || res.writableEnded) return;
    if (reply.body === undefined || reply.status === 204) {
      res.writeHead(reply.status, { 'cache-control': 'no-store' });
      res.end();
      return;
    }
    const text = JSON.stringify(reply.body);
    res.writeHead(reply.status, {
      'content-type': 'application/json',
      'cache-control': 'no-store',
      'content-length': Buffer.byteLength(text),
    });
    res.end(head ? undefined : text);
  }

  /** X-Vault-Token, or the `Authorization: Bearer` form Vault also accepts. */
  function presentedToken(req: IncomingMessage): string | undefined {
    const tokenHeader = req.headers['x-vault-token'];
    if (typeof tokenHeader === 'string' && tokenHeader !== '') return tokenHeader;
    const authorization = req.headers['authorization'];
    if (typeof authorization === 'string' && /^Bearer /i.test(authorization)) return authorization.slice(7).trim() || undefined;
    return undefined;
  }

  function recordRequest(method: string, target: URL, endpoint: VaultEndpoint, req: IncomingMessage): MutableRecord {
    const token = presentedToken(req);
    const nsHeader = req.headers['x-vault-namespace'];
    const record: MutableRecord = {
      seq: ++seq,
      at: now(),
      method,
      path: target.pathname,
      query: target.search.replace(/^\?/, ''),
      endpoint,
      namespace: typeof nsHeader === 'string' ? trimSlashes(nsHeader) : undefined,
      tokenPresented: token !== undefined,
      tokenFingerprint: token === undefined ? undefined : tokenFingerprint(token),
      status: undefined,
    };
    records.push(record);
    counters.set(endpoint, (counters.get(endpoint) ?? 0) + 1);
    return record;
  }

  async function onRequest(req: IncomingMessage, res: ServerResponse): Promise<void> {
    const chunks: Buffer[] = [];
    let size = 0;
    let tooLarge = false;
    for await (const chunk of req as AsyncIterable<Buffer>) {
      size += chunk.length;
      if (size > MAX_BODY_BYTES) tooLarge = true;
      else chunks.push(chunk);
    }
    const rawBody = Buffer.concat(chunks);
    const method = (req.method ?? 'GET').toUpperCase();
    const rawTarget = req.url ?? '/';
    const rawPath = rawTarget.split('?')[0] ?? '/';
    const cleaned = posix.normalize(rawPath);
    if (cleaned !== rawPath && rawPath.startsWith('/')) {
      // Vault's Go ServeMux answers an unclean path ("//", "/./", "/../") with a 301 to the cleaned one.
      const location = cleaned + rawTarget.slice(rawPath.length);
      const record = recordRequest(method, new URL(rawTarget, 'http://vault.invalid'), 'unknown', req);
      record.status = 301;
      if (!res.destroyed) {
        const html = `<a href="${location}">Moved Permanently</a>.\n\n`;
        res.writeHead(301, { location, 'content-type': 'text/html; charset=utf-8', 'content-length': Buffer.byteLength(html) });
        res.end(method === 'HEAD' ? undefined : html);
      }
      return;
    }
    const target = new URL(rawTarget, 'http://vault.invalid');
    const pathname = target.pathname;
    let rest = pathname.startsWith('/v1/') ? trimSlashes(pathname.slice(4)) : '';
    try {
      rest = decodeURIComponent(rest);
    } catch {
      rest = '';
    }
    const route: Route = rest === '' ? { endpoint: 'unknown' } : classify(method, rest);

    const record = recordRequest(method, target, route.endpoint, req);
    const token = presentedToken(req);
    const namespace = record.namespace;

    if (down === 'hang') {
      held.add(res);
      res.on('close', () => held.delete(res));
      return;
    }
    if (delayMs > 0) await sleep(delayMs);
    if (closed) return;

    let reply: Reply;
    try {
      if (tooLarge) throw new HttpError(413, ['http: request body too large']);
      if (rest === '') throw new HttpError(404, []);
      if (route.endpoint !== 'health' && requiredNamespace !== undefined && namespace !== requiredNamespace) {
        throw new HttpError(403, [PERMISSION_DENIED]);
      }
      reply = handle(route, { method, rest, query: target.searchParams, token, rawBody });
    } catch (error: unknown) {
      if (error instanceof HttpError) reply = { status: error.status, body: errorsBody(error.errors) };
      else reply = { status: 500, body: errorsBody([`internal error: ${(error as Error).message}`]) };
    }
    send(res, reply, record, method === 'HEAD');
  }

  const handler = (req: IncomingMessage, res: ServerResponse): void => {
    onRequest(req, res).catch((error: unknown) => {
      res.destroy(error as Error);
    });
  };
  const server: Server =
    options.tls === undefined ? createHttpServer(handler) : createHttpsServer({ key: options.tls.key, cert: options.tls.cert }, handler);
  server.on('connection', (socket: Socket) => {
    if (down === 'reset' || closed) {
      dropped += 1;
      socket.destroy();
      return;
    }
    sockets.add(socket);
    socket.on('close', () => sockets.delete(socket));
  });
  // A destroyed-on-accept TLS socket surfaces as a tlsClientError; nothing to do about it.
  server.on('tlsClientError', () => undefined);
  server.on('clientError', (_error, socket) => socket.destroy());

  server.listen(0, '127.0.0.1');
  await once(server, 'listening');
  const port = (server.address() as AddressInfo).port;
  const scheme = options.tls === undefined ? 'http' : 'https';

  function destroyConnections(): void {
    for (const res of held) res.destroy();
    held.clear();
    for (const socket of sockets) socket.destroy();
    sockets.clear();
  }

  function closeListener(): Promise<void> {
    return new Promise((resolve) => {
      if (!server.listening) {
        resolve();
        return;
      }
      server.close(() => resolve());
      destroyConnections();
    });
  }

  async function listenAgain(): Promise<void> {
    if (server.listening) return;
    server.listen(port, '127.0.0.1');
    await Promise.race([
      once(server, 'listening'),
      once(server, 'error').then(([error]) => {
        throw error as Error;
      }),
    ]);
  }

  const api: VaultServer = {
    url: `${scheme}://127.0.0.1:${port}`,
    port,
    get requests(): readonly VaultRequestRecord[] {
      return records;
    },
    get droppedConnections(): number {
      return dropped;
    },
    get sealed(): boolean {
      return sealed;
    },
    count(endpoint) {
      return counters.get(endpoint) ?? 0;
    },
    resetObservations() {
      records.length = 0;
      counters.clear();
      dropped = 0;
    },

    createToken(opts = {}) {
      return issueToken('auth/token/create', 'token', opts).id;
    },
    expireToken(token) {
      const entry = tokens.get(token);
      if (entry === undefined) throw new Error('expireToken: unknown token');
      entry.expiresAt = now() - 1;
    },
    expireAllTokens() {
      for (const entry of tokens.values()) entry.expiresAt = now() - 1;
    },
    revokeToken(token) {
      const entry = tokens.get(token);
      if (entry !== undefined) entry.revoked = true;
    },
    setTokenTtl(token, ttlSeconds) {
      const entry = tokens.get(token);
      if (entry === undefined) throw new Error('setTokenTtl: unknown token');
      entry.expiresAt = now() + ttlSeconds * 1000;
    },
    tokenInfo(token) {
      const entry = tokens.get(token);
      if (entry === undefined) return undefined;
      return {
        fingerprint: tokenFingerprint(entry.id),
        accessor: entry.accessor,
        path: entry.path,
        policies: [...entry.policies],
        ttl: isLive(entry) ? remainingSeconds(entry.expiresAt) : 0,
        creationTtl: entry.creationTtl,
        renewable: entry.renewable,
        issuedAt: entry.issuedAt,
        expiresAt: entry.expiresAt,
        revoked: entry.revoked,
        live: isLive(entry),
        renewCount: entry.renewCount,
      };
    },
    issuedTokens() {
      return [...minted];
    },

    addAppRole(roleId, secretId, opts = {}) {
      const mount = trimSlashes(opts.mount ?? 'approle');
      if (authMounts.get(mount) === 'kubernetes') throw new Error(`auth mount ${mount} is a kubernetes mount`);
      authMounts.set(mount, 'approle');
      approleCounter += 1;
      authRoles.set(`${mount}\0${roleId}`, {
        kind: 'approle',
        name: opts.roleName ?? `role-${approleCounter}`,
        credential: secretId,
        tokenTtl: opts.tokenTtl ?? DEFAULT_TOKEN_TTL,
        tokenMaxTtl: opts.tokenMaxTtl ?? 0,
        policies: opts.policies ?? ['default'],
        renewable: opts.renewable ?? true,
        metadata: { role_name: opts.roleName ?? `role-${approleCounter}` },
      });
    },
    removeAppRole(roleId, mount = 'approle') {
      authRoles.delete(`${trimSlashes(mount)}\0${roleId}`);
    },
    addKubernetesRole(role, expectedJwt, opts = {}) {
      const mount = trimSlashes(opts.mount ?? 'kubernetes');
      if (authMounts.get(mount) === 'approle') throw new Error(`auth mount ${mount} is an approle mount`);
      authMounts.set(mount, 'kubernetes');
      authRoles.set(`${mount}\0${role}`, {
        kind: 'kubernetes',
        name: role,
        credential: expectedJwt,
        tokenTtl: opts.tokenTtl ?? DEFAULT_TOKEN_TTL,
        tokenMaxTtl: opts.tokenMaxTtl ?? 0,
        policies: opts.policies ?? ['default'],
        renewable: opts.renewable ?? true,
        metadata: {
          role,
          service_account_name: opts.serviceAccountName ?? 'airlock',
          service_account_namespace: opts.serviceAccountNamespace ?? 'default',
          service_account_secret_name: '',
          service_account_uid: randomUUID(),
        },
      });
    },

    addKvMount(name) {
      kvMounts.add(trimSlashes(name));
    },
    putSecret(mount, path, data) {
      const name = trimSlashes(mount);
      if (!kvMounts.has(name)) throw new Error(`putSecret: ${name} is not a KV v2 mount (addKvMount first)`);
      return put(name, path, data).n;
    },
    deleteSecret(mount, path) {
      deleteLatest(trimSlashes(mount), path);
    },
    denyRead(mount, path, denied = true) {
      const key = `${trimSlashes(mount)}\0${trimSlashes(path)}`;
      if (denied) deniedReads.add(key);
      else deniedReads.delete(key);
    },
    getSecret(mount, path, wanted) {
      const secret = kv.get(`${trimSlashes(mount)}\0${trimSlashes(path)}`);
      if (secret === undefined) return undefined;
      const v = secret.versions[(wanted ?? secret.versions.length) - 1];
      return v === undefined || v.deleted !== undefined ? undefined : structuredClone(v.data);
    },

    addLeaseRole(path, generate, opts = {}) {
      leaseRoles.set(trimSlashes(path.replace(/^\/?v1\//, '')), {
        generate,
        ttl: opts.ttl ?? 3600,
        maxTtl: opts.maxTtl ?? 86_400,
        renewable: opts.renewable ?? true,
      });
    },
    leases() {
      return [...leaseTable.values()].map((lease) => ({
        id: lease.id,
        path: lease.path,
        created: lease.created,
        expiresAt: lease.expiresAt,
        revoked: lease.revoked,
        expired: !lease.revoked && now() >= lease.expiresAt,
        renewable: lease.renewable,
        renewCount: lease.renewCount,
        data: structuredClone(lease.data),
      }));
    },
    expireLease(leaseId) {
      const lease = leaseTable.get(leaseId);
      if (lease === undefined) throw new Error('expireLease: unknown lease');
      lease.expiresAt = now() - 1;
    },

    seal() {
      sealed = true;
    },
    unseal() {
      sealed = false;
    },
    async setDown(isDown, mode = 'reset') {
      if (closed) throw new Error('setDown: server closed');
      if (!isDown) {
        const wasRefusing = down === 'refuse';
        down = undefined;
        for (const res of held) res.destroy();
        held.clear();
        if (wasRefusing) await listenAgain();
        return;
      }
      if (down === 'refuse' && mode !== 'refuse') await listenAgain();
      down = mode;
      if (mode === 'refuse') await closeListener();
      else destroyConnections();
    },
    setDelay(ms) {
      delayMs = Math.max(0, ms);
    },
    setRequiredNamespace(ns) {
      requiredNamespace = ns === undefined ? undefined : trimSlashes(ns);
    },
    advanceClock(seconds) {
      clockOffsetMs += seconds * 1000;
    },
    async close() {
      if (closed) return;
      closed = true;
      for (const sleeper of sleepers) {
        clearTimeout(sleeper.timer);
        sleeper.resolve();
      }
      sleepers.clear();
      await closeListener();
      destroyConnections();
    },
  };
  return api;
}
