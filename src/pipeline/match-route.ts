/**
 * Stage 4: which route of the service the method and canonical path select. First match wins; a path
 * that matches no route is refused (deny by default); TRACE, TRACK and CONNECT are never forwarded.
 */
import { NEVER_FORWARDED_METHODS } from '../config/schema.js';
import { AirlockError } from '../errors.js';
import { ENCODED_SLASH } from './canonicalize-target.js';
import type { ServicePolicy } from '../policy/compile-policy.js';
import { findRoute, type CompiledRoute } from '../policy/route-table.js';

export function matchRoute(service: ServicePolicy, method: string, path: string): CompiledRoute {
  if (NEVER_FORWARDED_METHODS.has(method)) {
    throw new AirlockError('method_not_allowed', `${method} is never forwarded by Airlock.`);
  }
  const match = findRoute(service.routes, method, path);
  if (match.kind === 'matched') {
    if (path.includes(ENCODED_SLASH)) checkBothReadings(service, method, path, match.route);
    return match.route;
  }
  if (match.kind === 'wrong_method') {
    throw new AirlockError('method_not_allowed', `${method} is not allowed on this path of service ${service.name}; allowed: ${match.allowed.join(', ')}.`, {
      headers: { allow: match.allowed.join(', ') },
    });
  }
  const slashes = path.includes(ENCODED_SLASH) ? ' An encoded slash (%2F) is matched only by a route ending in "*": a literal or :name segment never holds one.' : '';
  throw new AirlockError('route_not_allowed', `${method} ${path} matches no route of service ${service.name}. An operator adds it under services.${service.name}.routes with a scope if agents should call it.${slashes}`);
}

/**
 * A path holding %2F is authorized only when reading each %2F as "/" (as an upstream that decodes it
 * before routing does) selects the same route: then the scope checked is the scope of what the upstream
 * serves, whichever way it reads the path (Envoy's path_with_escaped_slashes_action, CVE-2021-22911).
 * `GET /repos/o/r/contents/docs%2FREADME.md` under `/repos/:owner/:repo/contents/*` reads as
 * `.../contents/docs/README.md` under the same route; `files/x%2Fadmin` under `/files/*` is refused when
 * `/files/:id/admin` comes first.
 */
function checkBothReadings(service: ServicePolicy, method: string, path: string, route: CompiledRoute): void {
  const decoded = findRoute(service.routes, method, path.replaceAll(ENCODED_SLASH, '/'));
  if (decoded.kind === 'matched' && decoded.route === route) return;
  const other = decoded.kind === 'matched' ? `route ${decoded.route.index} (${decoded.route.template})` : 'no route';
  throw new AirlockError(
    'invalid_request',
    `The path holds an encoded slash (%2F). Read as a separator, as some upstreams read it, it selects ${other} of service ${service.name}, not route ${route.index} (${route.template}); upstreams disagree on %2F, so the request is refused. Send the path with "/" in place of %2F if that is what is meant.`,
  );
}
