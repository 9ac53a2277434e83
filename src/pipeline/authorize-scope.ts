/**
 * Stage 5: does the agent hold the route's scope for this service. No grant, no scope: deny.
 */
import { AirlockError } from '../errors.js';
import type { AgentPolicy, GrantPolicy, ServicePolicy } from '../policy/compile-policy.js';
import type { CompiledRoute } from '../policy/route-table.js';
import { holdsScope } from '../policy/scope-grant.js';

export function authorizeScope(agent: AgentPolicy, service: ServicePolicy, route: CompiledRoute): GrantPolicy {
  const grant = agent.grants.get(service.name);
  if (grant === undefined) {
    throw new AirlockError('scope_denied', `Agent ${agent.name} has no grant for service ${service.name}. An operator adds {service: ${service.name}, max_scope: [${route.scope}]} to agents.${agent.name}.credentials.`);
  }
  if (!holdsScope(grant.scopes, route.scope)) {
    throw new AirlockError('scope_denied', `Agent ${agent.name} lacks scope ${route.scope} on service ${service.name}. An operator grants it by adding ${route.scope} to agents.${agent.name}.credentials[${grant.index}].max_scope.`);
  }
  return grant;
}
