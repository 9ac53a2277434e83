/**
 * A service's routes compiled at start-up. First match wins (DESIGN.md section 5); the table only
 * answers which route a method and canonical path select, and the match-route stage turns a miss
 * into the right error.
 */
import type { RouteSpec } from '../config/schema.js';
import { decodeRawLiteralEscapes, foldCase } from './path-readings.js';
import { parseRouteTemplate, pathMatchesSegments, type RouteSegment } from './route-template.js';

/**
 * How a route is also read (match-route.ts): as written, with the escapes of characters a literal may
 * spell raw decoded, in lower case, and both. Index = (decoded ? 1 : 0) + (folded ? 2 : 0).
 */
export type RouteSpelling = 0 | 1 | 2 | 3;
export const DECODED: RouteSpelling = 1;
export const FOLDED: RouteSpelling = 2;

export interface CompiledRoute {
  /** Position in the service's `routes` list, for messages that point at the config. */
  readonly index: number;
  readonly methods: ReadonlySet<string>;
  readonly template: string;
  readonly scope: string;
  readonly segments: readonly RouteSegment[];
  /** A human approves every call to this route. */
  readonly requireApproval: boolean;
  /**
   * The template's shape (what it matches, parameter names aside) and segments in each RouteSpelling;
   * [0] as written. Two routes of one shape in a spelling are told apart only by what it erases.
   */
  readonly spellings: readonly string[];
  readonly spelledSegments: ReadonlyArray<readonly RouteSegment[]>;
}

export type RouteMatch =
  | { readonly kind: 'matched'; readonly route: CompiledRoute }
  | { readonly kind: 'wrong_method'; readonly allowed: readonly string[] }
  | { readonly kind: 'none' };

export interface RouteTable {
  readonly routes: readonly CompiledRoute[];
  /** A route literal holds a capital: every path is also read in lower case, capitals or not. */
  readonly spellsCase: boolean;
  /** A route literal holds an escape of a character it could spell raw: every path is also read decoded. */
  readonly escapesRawLiterals: boolean;
}

export function compileRouteTable(specs: readonly RouteSpec[]): RouteTable {
  const routes = specs.map((spec, index): CompiledRoute => {
    const parsed = parseRouteTemplate(spec.path);
    if (!parsed.ok) throw new Error(`route ${index} (${spec.path}) is invalid: ${parsed.problem}; config validation should have caught this`);
    // Literals are respelled segment by segment: a template respelled as text could turn a decoded
    // ":" at a segment's start into a parameter.
    const respell = (read: (literal: string) => string): readonly RouteSegment[] =>
      Object.freeze(parsed.segments.map((segment) => (segment.kind === 'literal' ? { kind: 'literal' as const, value: read(segment.value) } : segment)));
    const spelledSegments = [parsed.segments, respell(decodeRawLiteralEscapes), respell(foldCase), respell((literal) => foldCase(decodeRawLiteralEscapes(literal)))];
    const methods = (Array.isArray(spec.method) ? spec.method : [spec.method]).map((m) => m.toUpperCase());
    return Object.freeze({
      index,
      methods: new Set(methods),
      template: spec.path,
      scope: spec.scope,
      segments: parsed.segments,
      requireApproval: spec.require_approval,
      spellings: Object.freeze(spelledSegments.map(shapeOf)),
      spelledSegments: Object.freeze(spelledSegments),
    });
  });
  return Object.freeze({
    routes: Object.freeze(routes),
    spellsCase: routes.some((route) => route.spellings[FOLDED] !== route.spellings[0]),
    escapesRawLiterals: routes.some((route) => route.spellings[DECODED] !== route.spellings[0]),
  });
}

/** What paths a template's segments match, parameter names aside: equal shapes match the same paths. */
export function shapeOf(segments: readonly RouteSegment[]): string {
  return segments.map((segment) => (segment.kind === 'literal' ? `=${segment.value}` : segment.kind === 'param' ? ':' : '*')).join('/');
}

/** The first route whose template, spelled as `spelling` says, matches `path` (read the same way). */
export function findRoute(table: RouteTable, method: string, path: string, spelling: RouteSpelling = 0): RouteMatch {
  let allowed: string[] | null = null;
  for (const route of table.routes) {
    if (!pathMatchesSegments(spelling === 0 ? route.segments : (route.spelledSegments[spelling] as readonly RouteSegment[]), path)) continue;
    if (route.methods.has(method)) return { kind: 'matched', route };
    allowed ??= [];
    for (const m of route.methods) if (!allowed.includes(m)) allowed.push(m);
  }
  return allowed === null ? { kind: 'none' } : { kind: 'wrong_method', allowed };
}
