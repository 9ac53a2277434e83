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
    checkOtherReadings(service, method, path, match.route);
    return match.route;
  }
  if (match.kind === 'wrong_method') {
    throw new AirlockError('method_not_allowed', `${method} is not allowed on this path of service ${service.name}; allowed: ${match.allowed.join(', ')}.`, {
      headers: { allow: match.allowed.join(', ') },
    });
  }
  throw new AirlockError('route_not_allowed', `${method} ${path} matches no route of service ${service.name}. An operator adds it under services.${service.name}.routes with a scope if agents should call it.`);
}

/**
 * The path as upstreams may also read it: with each %2F as "/" (servers that decode it before routing;
 * Envoy's path_with_escaped_slashes_action, CVE-2021-22911), under a route ending in "*" without a
 * trailing "/" (Express, Spring before 6, redirecting Flask), and in lower case (IIS, ASP.NET, case-
 * insensitive file systems behind a static server). Each reading must select the same route, so the scope
 * checked is the scope of what the upstream serves whichever way it reads the path; the path is forwarded
 * as authorized. Found by review: `/files/x%2Fraw` under `/files/*` reached `/files/:id/raw`'s handler on
 * a decoding upstream, and `/v1/admin/` under `/v1/*` reached `/v1/admin`'s on a lenient one, each with
 * the catch-all's weaker scope; and `/v1/things/EXPORT`, held by `/v1/things/:id`, reached the export
 * handler of a case-insensitive upstream with `:id`'s scope (the lower-case reading was made only under
 * "*" until then). GitHub's `contents/docs%2FREADME.md` under `/repos/:owner/:repo/contents/*` reads as
 * the same route every way. A route whose literals spell capitals (`/v1/Reports` beside `/v1/reports`)
 * is not read in lower case: its operator has said the upstream tells case apart. Only a path with %2F,
 * a trailing "/" under "*", or a capital is read again (one more lookup each).
 */
function checkOtherReadings(service: ServicePolicy, method: string, path: string, route: CompiledRoute): void {
  if (path.includes(ENCODED_SLASH)) sameRoute(service, method, path.replaceAll(ENCODED_SLASH, '/'), route, 'with each encoded slash (%2F) taken as "/"');
  if (route.segments.at(-1)?.kind === 'rest' && path.length > 1 && path.endsWith('/')) sameRoute(service, method, path.slice(0, -1), route, 'without its trailing "/"');
  if (!route.spellsCase && UPPER_CASE.test(path)) {
    // Escapes keep their upper-case hex; without one, toLowerCase is the same and a third of the cost.
    const lower = path.includes('%') ? path.replace(ESCAPE_OR_UPPER, lowerOutsideEscapes) : path.toLowerCase();
    if (lower !== path) sameRoute(service, method, lower, route, 'in lower case');
  }
}

const UPPER_CASE = /[A-Z]/;
/** Runs of capitals, and escapes, which keep their upper-case hex (a canonical path's spelling). */
const ESCAPE_OR_UPPER = /%[0-9A-F]{2}|[A-Z]+/g;

function lowerOutsideEscapes(run: string): string {
  return run.startsWith('%') ? run : run.toLowerCase();
}

function sameRoute(service: ServicePolicy, method: string, reading: string, route: CompiledRoute, how: string): void {
  const other = findRoute(service.routes, method, reading);
  if (other.kind === 'matched' && other.route === route) return;
  const selected = other.kind === 'matched' ? `route ${other.route.index} (${other.route.template})` : 'no route';
  throw new AirlockError(
    'invalid_request',
    `Read ${how}, as some upstreams read it, this path selects ${selected} of service ${service.name}, not route ${route.index} (${route.template}) as sent; upstreams disagree, so the request is refused. Send the path as the route you mean spells it.`,
  );
}
