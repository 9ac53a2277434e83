/**
 * Stage 4: which route of the service the method and canonical path select. First match wins; a path
 * that matches no route is refused (deny by default); TRACE, TRACK and CONNECT are never forwarded.
 */
import { NEVER_FORWARDED_METHODS } from '../config/schema.js';
import { AirlockError } from '../errors.js';
import { ENCODED_SLASH } from './canonicalize-target.js';
import type { ServicePolicy } from '../policy/compile-policy.js';
import { decodeRawLiteralEscapes, escapesRawLiteral, foldCase, hasCapital } from '../policy/path-readings.js';
import { DECODED, findRoute, FOLDED, shapeOf, type CompiledRoute, type RouteSpelling } from '../policy/route-table.js';
import { pathMatchesSegments, type RouteSegment } from '../policy/route-template.js';

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
 * Envoy's path_with_escaped_slashes_action, CVE-2021-22911), with the escapes of ":", "@" and the
 * sub-delims decoded (path-readings.ts), without a trailing "/" (Express, Spring before 6, redirecting
 * Flask), and in lower case (IIS, ASP.NET, case-insensitive file systems), and in every combination of
 * these (ASP.NET Core both ignores case and tolerates a trailing "/"). Each reading must select the same
 * route, compared with the routes read the same way (a lower-case path with the templates in lower case,
 * a decoded one with their escapes decoded), so the scope checked is the scope of what the upstream
 * serves whichever way it reads the path; the path is forwarded as authorized.
 *
 * Found by reviews: `/files/x%2Fraw` under `/files/*` reached `/files/:id/raw`'s handler on a decoding
 * upstream, `/v1/admin/` under `/v1/*` reached `/v1/admin`'s on a lenient one, and `/v1/things/EXPORT`,
 * held by `/v1/things/:id`, the export handler of a case-insensitive one, each with the weaker route's
 * scope. Then (2026-11-29): the readings were checked one at a time, so `/files/ab/RAW/` (lower case and
 * no trailing "/" together) still reached `:id/raw`; `gemini-ultra%3AgenerateContent` under
 * `/v1beta/models/*` reached the route spelled `gemini-ultra:generateContent`; and a lower-case path was
 * compared with templates as written, so `/api/admin/users` under `/api/:area/*` reached
 * `/api/Admin/*`, and a route spelling capitals exempted its paths from the lower-case reading altogether.
 *
 * Two routes that a reading makes the same (`/v1/Reports` beside `/v1/reports`) are taken to mean an
 * upstream that tells them apart: a path matching either is not refused for matching the other. A path
 * is read again only when it has a feature a reading changes (a %2F, an escape, a trailing "/", a
 * capital) or the service's templates do (capitals, escapes): most requests take no second lookup.
 */
function checkOtherReadings(service: ServicePolicy, method: string, path: string, route: CompiledRoute): void {
  const table = service.routes;
  const slash = path.includes(ENCODED_SLASH);
  const decode = table.escapesRawLiterals || escapesRawLiteral(path);
  const trailing = path.length > 1 && (path.endsWith('/') || path.endsWith(ENCODED_SLASH));
  const fold = table.spellsCase || hasCapital(path);
  // A format suffix on the last segment (`admin.json`): Rails routes every path with an optional
  // `(.:format)`, and Spring MVC before 5.3 matched suffix patterns (found by review: `/v1/admin.json`
  // under `/v1/*` reached `/v1/admin`'s handler on such an upstream). A route that spells the dot
  // itself (`/v1/openapi.json`) names a file the upstream tells apart, as twin routes are taken to.
  // Such a route is not exempt outright (found by review: `/v1/projects/:project/settings.json` let
  // `/v1/projects/internal/settings.json` through to `/v1/projects/internal/settings`'s handler): read
  // without the suffix, the path may select its twin, a broader route that holds the dotted path too,
  // or none (sameRoute).
  const suffix = suffixDot(path) !== -1;
  const dotted = suffix && spellsDotLast(route);
  if (!slash && !decode && !trailing && !fold && !suffix) return;
  // Every combination of the readings that apply, one lookup each (at most 31).
  for (let mask = 1; mask < 32; mask++) {
    if ((mask & SLASH && !slash) || (mask & DECODE && !decode) || (mask & TRAILING && !trailing) || (mask & FOLD && !fold) || (mask & SUFFIX && !suffix)) continue;
    let reading = path;
    if (mask & SLASH) reading = reading.replaceAll(ENCODED_SLASH, '/');
    if (mask & DECODE) reading = decodeRawLiteralEscapes(reading);
    if (mask & TRAILING && reading.length > 1 && reading.endsWith('/')) reading = reading.slice(0, -1);
    const uncut = mask & FOLD ? foldCase(reading) : reading;
    if (mask & SUFFIX) reading = withoutSuffix(reading);
    if (mask & FOLD) reading = foldCase(reading);
    const spelling = (((mask & DECODE) !== 0 ? DECODED : 0) + ((mask & FOLD) !== 0 ? FOLDED : 0)) as RouteSpelling;
    if (reading === path && spelling === 0) continue;
    sameRoute(service, method, reading, spelling, route, mask, dotted && (mask & SUFFIX) !== 0 ? uncut : null);
  }
}

const SLASH = 1;
const DECODE = 2;
const TRAILING = 4;
const FOLD = 8;
const SUFFIX = 16;
const HOW: ReadonlyArray<[number, string]> = [
  [SLASH, 'with each encoded slash (%2F) taken as "/"'],
  [DECODE, 'with escapes such as %3A decoded'],
  [TRAILING, 'without its trailing "/"'],
  [SUFFIX, 'without a format suffix such as ".json" on its last segment'],
  [FOLD, 'in lower case'],
];

/**
 * Where the last segment's format suffix starts (a trailing "/" aside): its first "." after its first
 * character (Rails' `:id` stops at the first dot; `.gitignore` has no suffix), or -1.
 */
function suffixDot(path: string): number {
  const end = path.length > 1 && path.endsWith('/') ? path.length - 1 : path.length;
  const start = path.lastIndexOf('/', end - 1) + 1;
  const dot = path.indexOf('.', start + 1);
  return dot < end ? dot : -1;
}

/** `path` without its last segment's format suffix, a trailing "/" kept. */
function withoutSuffix(path: string): string {
  const dot = suffixDot(path);
  if (dot === -1) return path;
  return path.endsWith('/') && path.length > 1 ? `${path.slice(0, dot)}/` : path.slice(0, dot);
}

function spellsDotLast(route: CompiledRoute): boolean {
  const last = route.segments[route.segments.length - 1];
  return last !== undefined && last.kind === 'literal' && last.value.includes('.');
}

/**
 * A route spelling a dot last, read without the suffix (`uncut`: the path read the same way, suffix
 * kept): its twin (`/v1/openapi` beside `/v1/openapi.json`), a broader route that also holds the dotted
 * path (`/v1/*`, which the operator carved the file out of), or none is the file the route names; a
 * route its parameters swallowed (`/v1/projects/internal/settings` under `:project/settings.json`) is not.
 * Broader means it holds every path of the route, not only this one (found by review: before it,
 * `/v1/projects/internal/:thing` (admin) holds `internal/settings.json` through its parameter, so
 * `:project/settings.json` (read) let it through, though it was never carved out of that route and a
 * Rails upstream serves it as `internal/settings`, the admin route's).
 */
function dottedRouteStands(other: ReturnType<typeof findRoute>, route: CompiledRoute, spelling: RouteSpelling, uncut: string): boolean {
  if (other.kind === 'none') return true;
  if (other.kind !== 'matched') return false;
  const segments = route.spelledSegments[spelling] as readonly RouteSegment[];
  const last = segments[segments.length - 1];
  if (last?.kind === 'literal') {
    const dot = last.value.indexOf('.', 1);
    const cut = dot === -1 ? segments : [...segments.slice(0, -1), { kind: 'literal' as const, value: last.value.slice(0, dot) }];
    if (other.route.spellings[spelling] === shapeOf(cut)) return true;
  }
  const broader = other.route.spelledSegments[spelling] as readonly RouteSegment[];
  return pathMatchesSegments(broader, uncut) && covers(broader, segments);
}

/** Whether `outer` matches every path `inner` does: a `*` takes one or more segments, a `:name` one, a literal itself. */
function covers(outer: readonly RouteSegment[], inner: readonly RouteSegment[]): boolean {
  for (let i = 0; i < outer.length; i++) {
    const segment = outer[i] as RouteSegment;
    if (segment.kind === 'rest') return i < inner.length;
    const held = inner[i];
    if (held === undefined || held.kind === 'rest') return false;
    if (segment.kind === 'literal' && (held.kind !== 'literal' || held.value !== segment.value)) return false;
  }
  return outer.length === inner.length;
}

function sameRoute(service: ServicePolicy, method: string, reading: string, spelling: RouteSpelling, route: CompiledRoute, mask: number, dottedUncut: string | null = null): void {
  const other = findRoute(service.routes, method, reading, spelling);
  if (other.kind === 'matched' && (other.route === route || other.route.spellings[spelling] === route.spellings[spelling])) return;
  if (dottedUncut !== null && dottedRouteStands(other, route, spelling, dottedUncut)) return;
  const selected = other.kind === 'matched' ? `route ${other.route.index} (${other.route.template})` : 'no route';
  const how = HOW.filter(([bit]) => (mask & bit) !== 0).map(([, text]) => text).join(' and ');
  // An id holding a "/" (a model such as meta-llama/Llama-3-8b) under a `:name` route: the fix is the
  // operator's (found by the SDK walkthrough: the detail told the agent to respell a path it cannot).
  const slashInParam = mask === SLASH && other.kind !== 'matched' && route.segments.at(-1)?.kind !== 'rest';
  throw new AirlockError(
    'invalid_request',
    `Read ${how}, as some upstreams read it, this path selects ${selected} of service ${service.name}, not route ${route.index} (${route.template}) as sent; upstreams disagree, so the request is refused. ${
      slashInParam
        ? `If a "/" inside one segment is meant (an id that holds one), an operator ends the route with "*" instead (services.${service.name}.routes[${route.index}]), where both readings select it.`
        : 'Send the path as the route you mean spells it.'
    }`,
    // Two readings of one path selecting two routes is path confusion: probing (errors.ts AirlockError.probing).
    { probing: true },
  );
}
