/**
 * The scopes a grant holds: exact names, "*" (every scope of the service) and "prefix:*" (every scope
 * that starts with "prefix:"). Compiled once; `holds` is a set lookup plus a short prefix scan.
 */

export interface ScopeGrant {
  readonly all: boolean;
  readonly exact: ReadonlySet<string>;
  readonly prefixes: readonly string[];
  /** As written in config, for messages. */
  readonly written: readonly string[];
}

export function compileScopeGrant(maxScope: readonly string[]): ScopeGrant {
  const exact = new Set<string>();
  const prefixes: string[] = [];
  let all = false;
  for (const scope of maxScope) {
    if (scope === '*') all = true;
    else if (scope.endsWith('*')) prefixes.push(scope.slice(0, -1));
    else exact.add(scope);
  }
  return Object.freeze({ all, exact, prefixes: Object.freeze(prefixes), written: Object.freeze([...maxScope]) });
}

/** How a grant holds a scope, for `explain`; null when it does not. */
export function grantingEntry(grant: ScopeGrant, scope: string): string | null {
  if (grant.exact.has(scope)) return scope;
  for (const prefix of grant.prefixes) if (scope.startsWith(prefix)) return `${prefix}*`;
  if (grant.all) return '*';
  return null;
}

export function holdsScope(grant: ScopeGrant, scope: string): boolean {
  return grantingEntry(grant, scope) !== null;
}

/** A grant entry is well formed when "*" appears only alone or as the final character after ":". */
export function scopePatternProblem(pattern: string): string | null {
  const star = pattern.indexOf('*');
  if (star === -1 || pattern === '*') return null;
  if (star !== pattern.length - 1) return `"*" may only end a scope pattern, as in "files:*"`;
  if (!pattern.endsWith(':*')) return `a scope prefix ends with ":*", as in "files:*"`;
  return null;
}
