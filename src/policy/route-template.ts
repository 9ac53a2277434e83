/**
 * Route path templates, parsed once at start-up.
 *
 * `/v1/models/:model` - a literal segment matches itself byte for byte (case-sensitive), `:name` matches
 * exactly one non-empty segment, and a trailing `*` matches one or more remaining segments. Templates are
 * held to the same canonical form the request path is canonicalized to, so a template that could never
 * match (a dot segment, a lower-case escape, an empty segment) is a config error, not a silent deny.
 */
import { escapesUnreserved } from '../ingress/percent-escapes.js';

export type RouteSegment =
  | { readonly kind: 'literal'; readonly value: string }
  | { readonly kind: 'param'; readonly name: string }
  | { readonly kind: 'rest' };

export type ParsedTemplate = { ok: true; segments: readonly RouteSegment[] } | { ok: false; problem: string };

/** RFC 3986 pchar minus ";" (refused in request paths) and "%" (checked separately). */
const LITERAL_SEGMENT = /^(?:[A-Za-z0-9\-._~!$&'()*+,=:@]|%[0-9A-F]{2})+$/;
const PARAM_NAME = /^[A-Za-z_][A-Za-z0-9_]*$/;

export function parseRouteTemplate(template: string): ParsedTemplate {
  if (!template.startsWith('/')) return { ok: false, problem: 'a route path starts with "/"' };
  if (template === '/') return { ok: true, segments: [] };
  const parts = template.slice(1).split('/');
  const segments: RouteSegment[] = [];
  for (let i = 0; i < parts.length; i++) {
    const part = parts[i] as string;
    if (part === '') return { ok: false, problem: 'empty segment (a "//" or a trailing "/"); paths with one never match' };
    if (part === '*') {
      if (i !== parts.length - 1) return { ok: false, problem: '"*" is only allowed as the last segment' };
      segments.push({ kind: 'rest' });
      continue;
    }
    if (part.startsWith(':')) {
      const name = part.slice(1);
      if (!PARAM_NAME.test(name)) return { ok: false, problem: `":${name}" is not a valid parameter name (letters, digits, _)` };
      segments.push({ kind: 'param', name });
      continue;
    }
    if (part === '.' || part === '..') return { ok: false, problem: 'dot segments never match: Airlock refuses them in request paths' };
    if (!LITERAL_SEGMENT.test(part)) {
      return { ok: false, problem: `segment "${part}" has characters a canonical path cannot hold (write escapes as %XX with upper-case hex; ";" is refused)` };
    }
    if (part.includes('*')) return { ok: false, problem: `"*" must be a whole segment, not part of "${part}"` };
    // Request paths may hold %2F only where both readings select the same route (match-route.ts); a
    // literal holding one would be matched by one reading alone.
    if (part.includes('%2F')) return { ok: false, problem: `segment "${part}" holds an encoded slash (%2F): write it as two segments, or end the route with "*" (a "*" matches paths with %2F)` };
    if (escapesUnreserved(part)) {
      return { ok: false, problem: `segment "${part}" escapes an unreserved character; write it literally (RFC 3986 6.2.2.2)` };
    }
    segments.push({ kind: 'literal', value: part });
  }
  return { ok: true, segments };
}

/**
 * Matches a canonical path (starts with "/", no empty segment except a trailing one) against segments,
 * by index scanning: no regular expression, no allocation, linear in the path length.
 */
export function pathMatchesSegments(segments: readonly RouteSegment[], path: string): boolean {
  if (segments.length === 0) return path === '/';
  let pos = 1;
  for (let i = 0; i < segments.length; i++) {
    const segment = segments[i] as RouteSegment;
    if (pos > path.length) return false;
    if (segment.kind === 'rest') return pos < path.length;
    const slash = path.indexOf('/', pos);
    const end = slash === -1 ? path.length : slash;
    if (segment.kind === 'literal') {
      if (end - pos !== segment.value.length || !path.startsWith(segment.value, pos)) return false;
    } else if (end === pos) {
      // A `:name` holds any non-empty segment, %2F and all, as an upstream that keeps %2F as data reads
      // it (found by review: refused here, a request fell through to a later "*" with a weaker scope
      // while the upstream served the `:name` route); match-route.ts checks the other reading.
      return false;
    }
    pos = end + 1;
  }
  return pos === path.length + 1;
}
