/**
 * Stage 4: which route of the service the method and canonical path select. First match wins; a path
 * that matches no route is refused (deny by default); TRACE, TRACK and CONNECT are never forwarded.
 */
import { NEVER_FORWARDED_METHODS } from '../config/schema.js';
import { AirlockError } from '../errors.js';
import type { ServicePolicy } from '../policy/compile-policy.js';
import { findRoute, type CompiledRoute } from '../policy/route-table.js';

export function matchRoute(service: ServicePolicy, method: string, path: string): CompiledRoute {
  if (NEVER_FORWARDED_METHODS.has(method)) {
    throw new AirlockError('method_not_allowed', `${method} is never forwarded by Airlock.`);
  }
  const match = findRoute(service.routes, method, path);
  if (match.kind === 'matched') return match.route;
  if (match.kind === 'wrong_method') {
    throw new AirlockError('method_not_allowed', `${method} is not allowed on this path of service ${service.name}; allowed: ${match.allowed.join(', ')}.`, {
      headers: { allow: match.allowed.join(', ') },
    });
  }
  throw new AirlockError('route_not_allowed', `${method} ${path} matches no route of service ${service.name}. An operator adds it under services.${service.name}.routes with a scope if agents should call it.`);
}
