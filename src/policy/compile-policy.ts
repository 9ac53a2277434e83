/**
 * The policy compiled from a config at start-up: services with their route tables, prefixes, hosts and
 * credential plans; agents indexed by token hash with their grants. Pure (no I/O), so `explain` and the
 * proxy decide with the very same objects. The request path only looks things up.
 */
import type { AirlockConfig, ServiceConfig } from '../config/types.js';
import type { CredentialSpec, GrantSpec } from '../config/schema.js';
import { buildInjector } from '../injection/build-injector.js';
import type { Injector } from '../injection/injector.js';
import { parseUpstream, type UpstreamTarget } from '../upstream/upstream-target.js';
import { compileRouteTable, type RouteTable } from './route-table.js';
import { compileScopeGrant, type ScopeGrant } from './scope-grant.js';

export interface CredentialPlan {
  /** The secret reference, e.g. "file:openai"; what audit records name. */
  readonly ref: string;
  readonly injector: Injector;
}

export interface ServicePolicy {
  readonly name: string;
  readonly config: ServiceConfig;
  readonly upstream: UpstreamTarget;
  readonly prefix: string;
  readonly routes: RouteTable;
  readonly credential: CredentialPlan;
}

export interface GrantPolicy {
  readonly service: string;
  /** Position in the agent's `credentials` list, for messages. */
  readonly index: number;
  readonly scopes: ScopeGrant;
  /** The grant's own credential, or null to use the service's. */
  readonly credential: CredentialPlan | null;
  readonly config: Readonly<GrantSpec>;
}

export interface AgentPolicy {
  readonly name: string;
  readonly grants: ReadonlyMap<string, GrantPolicy>;
}

export interface Policy {
  readonly services: readonly ServicePolicy[];
  readonly serviceByName: ReadonlyMap<string, ServicePolicy>;
  readonly serviceByHost: ReadonlyMap<string, ServicePolicy>;
  readonly agentByTokenHash: ReadonlyMap<string, AgentPolicy>;
  readonly agentByName: ReadonlyMap<string, AgentPolicy>;
}

function compileCredential(spec: Readonly<CredentialSpec>): CredentialPlan {
  return Object.freeze({ ref: spec.secret, injector: buildInjector(spec.inject as CredentialSpec['inject']) });
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
        }),
      );
    });
    const compiled: AgentPolicy = Object.freeze({ name: agent.name, grants });
    agentByName.set(agent.name, compiled);
    for (const hash of agent.tokens) agentByTokenHash.set(hash, compiled);
  }

  return Object.freeze({ services: Object.freeze(services), serviceByName, serviceByHost, agentByTokenHash, agentByName });
}

type RouteSpecList = Parameters<typeof compileRouteTable>[0];
