/**
 * Stage 5: does the agent hold the route's scope for this service. No grant, no scope: deny.
 */
import { AirlockError } from '../errors.js';
import { sessionScopes } from '../identity/mint-session.js';
import type { GrantPolicy, ServicePolicy } from '../policy/compile-policy.js';
import type { CompiledRoute } from '../policy/route-table.js';
import { holdsScope } from '../policy/scope-grant.js';
import type { Principal } from './authenticate-agent.js';

/**
 * The grant must hold the route's scope; a call made under a task session must also be within the
 * session's scopes; a grant with require_session accepts calls only under a session.
 */
export function authorizeScope(principal: Principal, service: ServicePolicy, route: CompiledRoute): GrantPolicy {
  const agent = principal.agent;
  const grant = agent.grants.get(service.name);
  if (grant === undefined) {
    throw new AirlockError('scope_denied', `Agent ${agent.name} has no grant for service ${service.name}. An operator adds {service: ${service.name}, max_scope: [${route.scope}]} to agents.${agent.name}.credentials.`);
  }
  if (!holdsScope(grant.scopes, route.scope)) {
    throw new AirlockError('scope_denied', `Agent ${agent.name} lacks scope ${route.scope} on service ${service.name}. An operator grants it by adding ${route.scope} to agents.${agent.name}.credentials[${grant.index}].max_scope.`);
  }
  if (principal.session === null) {
    if (grant.config.require_session) {
      throw new AirlockError('session_required', `Agent ${agent.name} has no standing access to ${service.name}: mint a task session (POST /_airlock/sessions with {"scopes": {"${service.name}": ["${route.scope}"]}, "justification": "..."}) and call with its als_ token.`);
    }
    return grant;
  }
  const scopes = sessionScopes(principal.session, service.name);
  if (scopes === null || !holdsScope(scopes, route.scope)) {
    throw new AirlockError('scope_denied', `Session ${principal.session.id} does not include scope ${route.scope} on service ${service.name}; mint a session that does.`);
  }
  return grant;
}
