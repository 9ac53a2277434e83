/**
 * A service's routes compiled at start-up. First match wins (DESIGN.md section 5); the table only
 * answers which route a method and canonical path select, and the match-route stage turns a miss
 * into the right error.
 */
import type { RouteSpec } from '../config/schema.js';
import { parseRouteTemplate, pathMatchesSegments, type RouteSegment } from './route-template.js';

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
   * A literal segment holds a capital: the operator spelled case, as for an upstream that tells
   * `/v1/Reports` from `/v1/reports`, so the path is not also read in lower case (match-route.ts).
   */
  readonly spellsCase: boolean;
}

export type RouteMatch =
  | { readonly kind: 'matched'; readonly route: CompiledRoute }
  | { readonly kind: 'wrong_method'; readonly allowed: readonly string[] }
  | { readonly kind: 'none' };

export interface RouteTable {
  readonly routes: readonly CompiledRoute[];
}

export function compileRouteTable(specs: readonly RouteSpec[]): RouteTable {
  const routes = specs.map((spec, index): CompiledRoute => {
    const parsed = parseRouteTemplate(spec.path);
    if (!parsed.ok) throw new Error(`route ${index} (${spec.path}) is invalid: ${parsed.problem}; config validation should have caught this`);
    const methods = (Array.isArray(spec.method) ? spec.method : [spec.method]).map((m) => m.toUpperCase());
    const spellsCase = parsed.segments.some((segment) => segment.kind === 'literal' && /[A-Z]/.test(segment.value));
    return Object.freeze({ index, methods: new Set(methods), template: spec.path, scope: spec.scope, segments: parsed.segments, requireApproval: spec.require_approval, spellsCase });
  });
  return Object.freeze({ routes: Object.freeze(routes) });
}

export function findRoute(table: RouteTable, method: string, path: string): RouteMatch {
  let allowed: string[] | null = null;
  for (const route of table.routes) {
    if (!pathMatchesSegments(route.segments, path)) continue;
    if (route.methods.has(method)) return { kind: 'matched', route };
    allowed ??= [];
    for (const m of route.methods) if (!allowed.includes(m)) allowed.push(m);
  }
  return allowed === null ? { kind: 'none' } : { kind: 'wrong_method', allowed };
}
