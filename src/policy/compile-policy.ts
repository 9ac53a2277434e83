/**
 * The policy compiled from a config at start-up: services with their route tables, prefixes, hosts and
 * credential plans; agents indexed by token hash with their grants. Pure (no I/O), so `explain` and the
 * proxy decide with the very same objects. The request path only looks things up.
 */
import { createHash, createPublicKey } from 'node:crypto';
import type { AgentConfig, AirlockConfig, DeepReadonly, ServiceConfig } from '../config/types.js';
import { keyThumbprint } from '../identity/jwt-verifier.js';
import { isDefaultTyp, typKey } from '../identity/jwt-typ.js';
import type { CredentialSpec, GrantSpec } from '../config/schema.js';
import { buildInjector } from '../injection/build-injector.js';
import type { Injector } from '../injection/injector.js';
import { queryKeyNameSet } from '../upstream/outbound-request.js';
import { parseUpstream, type UpstreamTarget } from '../upstream/upstream-target.js';
import { compileRateLimitFields, type RateLimitFields } from './rate-limit-fields.js';
import type { BucketShape } from './rate-limiter.js';
import { compileRouteTable, type RouteTable } from './route-table.js';
import { compileScopeGrant, type ScopeGrant } from './scope-grant.js';
import { BUILTIN_RULES, BUILTIN_RULE_NAMES, customRule, type KeyRule } from '../redaction/key-patterns.js';

export interface CredentialPlan {
  /** The secret reference, e.g. "file:openai"; what audit records name. */
  readonly ref: string;
  readonly injector: Injector;
  /** Upstream statuses after which the credential is fetched again and the request replayed once. */
  readonly retryOn: ReadonlySet<number>;
  /** Cache overrides in seconds (absent: the source's default). */
  readonly ttl: number | undefined;
  readonly maxStaleness: number | undefined;
}

export interface ServiceRedaction {
  readonly scope: 'request' | 'service' | 'all';
  /** Built-in shapes that are switched on, then the service's own rules. */
  readonly rules: readonly KeyRule[];
  /** Every credential reference this service injects: its own and its grants' overrides. */
  readonly refs: readonly string[];
  readonly limits: { readonly maxDecodedBytes: number; readonly maxRatio: number };
}

export interface ServicePolicy {
  readonly name: string;
  readonly config: ServiceConfig;
  readonly upstream: UpstreamTarget;
  readonly prefix: string;
  readonly routes: RouteTable;
  readonly credential: CredentialPlan;
  readonly redaction: ServiceRedaction;
  /**
   * Header names and query keys removed from the agent's request before injection: where any credential
   * of this service goes (its own and its grants' overrides), whichever credential this request injects
   * (found by review: a grant that injects as bearer let the agent's own ?api_key= through to a service
   * whose own credential is that query key), and the service's `strip_headers` and `strip_query`.
   */
  /** queryKeyNames: every name the query keys are read as, for OutboundRequest.removeQueryKeys (one pass). */
  readonly strippedFromAgent: { readonly headers: readonly string[]; readonly queryKeys: readonly string[]; readonly queryKeyNames: ReadonlySet<string> };
}

export interface GrantPolicy {
  readonly service: string;
  /** Position in the agent's `credentials` list, for messages. */
  readonly index: number;
  readonly scopes: ScopeGrant;
  /** The grant's own credential, or null to use the service's. */
  readonly credential: CredentialPlan | null;
  readonly config: Readonly<GrantSpec>;
  /** The grant's token bucket (from `rate`), or null without one: compiled once, not per request. */
  readonly bucket: BucketShape | null;
  /** The bucket's and the concurrency gate's key: agent and service. */
  readonly rateKey: string;
  /** What a 429 for `rate` says of it (RateLimit-Policy, RateLimit), or null without one: compiled once. */
  readonly rateFields: RateLimitFields | null;
}

export interface AgentPolicy {
  readonly name: string;
  readonly grants: ReadonlyMap<string, GrantPolicy>;
  /**
   * A digest of the agent's workload-JWT rules but its listed keys (issuer, audience, subject, claims,
   * JWKS URL, algorithms, max_token_age), null without them. A session minted with a JWT records it,
   * and ends once the rules differ: a narrowed claim or audience (found by review: such sessions went
   * on while the JWT itself was refused).
   */
  readonly jwtRules: string | null;
  /**
   * The SPKI thumbprints of the listed keys (keyThumbprint). A session minted with a JWT one of them
   * verified records which, and ends once that key is no longer listed (a key rotated out after a
   * compromise); adding a key, or writing one in another PEM wrapping, leaves it. Keys were part of the
   * digest before, so every key rotation ended every JWT-minted session of the agent.
   */
  readonly jwtKeys: ReadonlySet<string>;
  /** The digest as versions before jwtKeys wrote it (keys included), for sessions they minted. */
  readonly jwtRulesWithKeys: string | null;
}

export interface Policy {
  readonly services: readonly ServicePolicy[];
  readonly serviceByName: ReadonlyMap<string, ServicePolicy>;
  readonly serviceByHost: ReadonlyMap<string, ServicePolicy>;
  readonly agentByTokenHash: ReadonlyMap<string, AgentPolicy>;
  readonly agentByName: ReadonlyMap<string, AgentPolicy>;
  /** The agents as configured (token count, JWT settings), for the admin API. */
  readonly agentSpecs: ReadonlyMap<string, AgentConfig>;
}

function compileCredential(spec: DeepReadonly<CredentialSpec>): CredentialPlan {
  return Object.freeze({
    ref: spec.secret,
    injector: buildInjector(spec.inject as CredentialSpec['inject']),
    retryOn: new Set(spec.retry_on),
    ttl: spec.ttl,
    maxStaleness: spec.max_staleness,
  });
}

function compileStrippedFromAgent(service: ServiceConfig, config: AirlockConfig): ServicePolicy['strippedFromAgent'] {
  const specs = [service.credential.inject];
  for (const agent of Object.values(config.agents)) {
    for (const grant of agent.credentials) if (grant.service === service.name && grant.credential !== undefined) specs.push(grant.credential.inject);
  }
  const headers = new Set<string>(service.strip_headers.map((name) => name.toLowerCase()));
  const queryKeys = new Set<string>(service.strip_query);
  for (const spec of specs as ReadonlyArray<CredentialSpec['inject']>) {
    // bearer and basic go in Authorization, a token carrier every request has removed already.
    if (typeof spec === 'object' && 'header' in spec) headers.add(spec.header.toLowerCase());
    if (typeof spec === 'object' && 'query' in spec) queryKeys.add(spec.query);
  }
  return Object.freeze({ headers: Object.freeze([...headers]), queryKeys: Object.freeze([...queryKeys]), queryKeyNames: queryKeyNameSet(queryKeys) });
}

function compileRedaction(service: ServiceConfig, config: AirlockConfig): ServiceRedaction {
  const redact = service.redact;
  const rules: KeyRule[] = BUILTIN_RULE_NAMES.filter((name) => redact.builtin_patterns[name]).map((name) => BUILTIN_RULES[name]);
  for (const rule of redact.rules) rules.push(customRule(rule.name, rule.prefix, rule.charset, rule.min_length, rule.max_length));
  const refs = new Set<string>([service.credential.secret]);
  for (const agent of Object.values(config.agents)) {
    for (const grant of agent.credentials) if (grant.service === service.name && grant.credential !== undefined) refs.add(grant.credential.secret);
  }
  return Object.freeze({
    scope: redact.scope,
    rules: Object.freeze(rules),
    refs: Object.freeze([...refs]),
    limits: Object.freeze({ maxDecodedBytes: redact.max_decoded_bytes, maxRatio: redact.max_ratio }),
  });
}

/** Every credential plan of the config: each service's and each grant's own. */
export function allCredentialPlans(policy: Policy): CredentialPlan[] {
  const plans: CredentialPlan[] = policy.services.map((s) => s.credential);
  for (const agent of policy.agentByName.values()) for (const grant of agent.grants.values()) if (grant.credential !== null) plans.push(grant.credential);
  return plans;
}

/** Every secret reference the config injects, for warming the secret catalogue at start-up. */
export function allSecretRefs(policy: Policy): string[] {
  return [...new Set(allCredentialPlans(policy).map((p) => p.ref))];
}

/**
 * References that name an identity rather than hold a secret (an OAuth2 client_id, a Vault AppRole
 * role_id), unless they are used as a secret too. Their values are scrubbed from outputs like any
 * other, but a request or a justification that mentions one ("the airlock-crm integration") is not
 * refused for carrying a credential.
 */
export function identifierRefs(config: DeepReadonly<AirlockConfig>, policy: Policy): ReadonlySet<string> {
  const auth = config.secrets.vault?.auth;
  const identifiers = [...Object.values(config.secrets.oauth2).map((client) => client.client_id), ...(auth?.method === 'approle' ? [auth.role_id] : [])];
  const secrets = new Set([...allSecretRefs(policy), ...(auth?.method === 'approle' ? [auth.secret_id] : auth?.method === 'token' ? [auth.token] : []), ...Object.values(config.secrets.oauth2).map((client) => client.client_secret)]);
  return new Set(identifiers.filter((ref) => !secrets.has(ref)));
}

/** The references a secret store's login and the OAuth2 clients read (secrets.vault.auth, secrets.oauth2.*). */
export function storeLoginRefs(config: DeepReadonly<AirlockConfig>): string[] {
  const auth = config.secrets.vault?.auth;
  const vault = auth === undefined ? [] : auth.method === 'token' ? [auth.token] : auth.method === 'approle' ? [auth.role_id, auth.secret_id] : [];
  const clients = Object.values(config.secrets.oauth2).flatMap((client) => [client.client_id, client.client_secret]);
  return [...new Set([...vault, ...clients])];
}

export function compilePolicy(config: AirlockConfig): Policy {
  const services: ServicePolicy[] = [];
  const serviceByName = new Map<string, ServicePolicy>();
  const serviceByHost = new Map<string, ServicePolicy>();
  for (const service of Object.values(config.services)) {
    const upstream = parseUpstream(service.upstream);
    if (!upstream.ok) throw new Error(`service ${service.name}: ${upstream.problem}; config validation should have caught this`);
    const compiled: ServicePolicy = Object.freeze({
      name: service.name,
      config: service,
      upstream: upstream.target,
      prefix: service.prefix,
      routes: compileRouteTable(service.routes as RouteSpecList),
      credential: compileCredential(service.credential),
      redaction: compileRedaction(service, config),
      strippedFromAgent: compileStrippedFromAgent(service, config),
    });
    services.push(compiled);
    serviceByName.set(service.name, compiled);
    for (const host of service.hosts) serviceByHost.set(host.toLowerCase(), compiled);
  }

  const agentByTokenHash = new Map<string, AgentPolicy>();
  const agentByName = new Map<string, AgentPolicy>();
  for (const agent of Object.values(config.agents)) {
    const grants = new Map<string, GrantPolicy>();
    agent.credentials.forEach((grant, index) => {
      grants.set(
        grant.service,
        Object.freeze({
          service: grant.service,
          index,
          scopes: compileScopeGrant(grant.max_scope),
          credential: grant.credential === undefined ? null : compileCredential(grant.credential),
          config: grant as Readonly<GrantSpec>,
          bucket: grant.rate === undefined ? null : Object.freeze({ capacity: grant.rate.burst ?? grant.rate.requests, refillPerMs: grant.rate.requests / (grant.rate.per * 1000) }),
          rateKey: `${agent.name}\u0000${grant.service}`,
          rateFields: grant.rate === undefined ? null : compileRateLimitFields(grant.service, grant.rate),
        }),
      );
    });
    const compiled: AgentPolicy = Object.freeze({
      name: agent.name,
      grants,
      jwtRules: agent.jwt === undefined ? null : jwtRulesDigest(agent.jwt),
      jwtKeys: new Set(agent.jwt?.keys.map((pem) => keyThumbprint(createPublicKey(pem))) ?? []),
      jwtRulesWithKeys: agent.jwt === undefined ? null : legacyJwtRulesDigest(agent.jwt),
    });
    agentByName.set(agent.name, compiled);
    for (const hash of agent.tokens) agentByTokenHash.set(hash, compiled);
  }

  const agentSpecs = new Map(Object.values(config.agents).map((agent) => [agent.name, agent]));
  return Object.freeze({ services: Object.freeze(services), serviceByName, serviceByHost, agentByTokenHash, agentByName, agentSpecs });
}

type RouteSpecList = Parameters<typeof compileRouteTable>[0];

/**
 * Order-free: the same rules written in another order are the same rules. Hex of a SHA-256. Marked
 * "v2" (keys left to jwtKeys), so that it never equals a digest of the earlier form.
 */
function jwtRulesDigest(jwt: NonNullable<AgentConfig['jwt']>): string {
  const claims = Object.entries(jwt.claims).sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0));
  const rules = ['v2', jwt.issuer, jwt.audience, jwt.subject ?? null, claims, jwt.jwks_url ?? null, [...jwt.algorithms].sort(), jwt.max_token_age ?? null, ...typRule(jwt)];
  return createHash('sha256').update(JSON.stringify(rules), 'utf8').digest('hex');
}

/**
 * The typ list, when it is not the default: the rules of an agent that leaves it out (or writes the
 * default) digest as before the setting existed, so its sessions go on across the upgrade; one that
 * narrows or widens it ends them, as any other change of the rules does.
 */
function typRule(jwt: NonNullable<AgentConfig['jwt']>): unknown[] {
  return isDefaultTyp(jwt.typ) ? [] : [['typ', typKey(jwt.typ)]];
}

/** The digest sessions minted by earlier versions recorded: the keys' PEM text included. */
function legacyJwtRulesDigest(jwt: NonNullable<AgentConfig['jwt']>): string {
  const claims = Object.entries(jwt.claims).sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0));
  const rules = [jwt.issuer, jwt.audience, jwt.subject ?? null, claims, jwt.jwks_url ?? null, [...jwt.keys].sort(), [...jwt.algorithms].sort(), jwt.max_token_age ?? null, ...typRule(jwt)];
  return createHash('sha256').update(JSON.stringify(rules), 'utf8').digest('hex');
}
