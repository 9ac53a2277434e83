/**
 * Route templates and the compiled route table (DESIGN.md section 5): literal segments match byte for byte
 * and case-sensitively, `:name` matches one non-empty segment, a trailing `*` one or more segments, first
 * match wins, and a path that matches only with other methods is `wrong_method` with the allowed list.
 */
import { describe, expect, it } from 'vitest';
import type { RouteSpec } from '../../src/config/schema.js';
import { compileRouteTable, findRoute, type RouteMatch } from '../../src/policy/route-table.js';
import { parseRouteTemplate, pathMatchesSegments } from '../../src/policy/route-template.js';

function matches(template: string, path: string): boolean {
  const parsed = parseRouteTemplate(template);
  if (!parsed.ok) throw new Error(`template ${template} is invalid: ${parsed.problem}`);
  return pathMatchesSegments(parsed.segments, path);
}

function table(...routes: Array<[string | string[], string, string]>): ReturnType<typeof compileRouteTable> {
  return compileRouteTable(routes.map(([method, path, scope]): RouteSpec => ({ method, path, scope, require_approval: false })));
}

function summary(match: RouteMatch): string {
  if (match.kind === 'matched') return `routes[${match.route.index}] ${match.route.scope}`;
  if (match.kind === 'wrong_method') return `wrong_method ${match.allowed.join(',')}`;
  return 'none';
}

describe('parseRouteTemplate: valid templates', () => {
  it.each([
    ['/', []],
    ['/v1/models', [{ kind: 'literal', value: 'v1' }, { kind: 'literal', value: 'models' }]],
    ['/v1/models/:model', [{ kind: 'literal', value: 'v1' }, { kind: 'literal', value: 'models' }, { kind: 'param', name: 'model' }]],
    ['/repos/:owner/:repo/contents/*', [{ kind: 'literal', value: 'repos' }, { kind: 'param', name: 'owner' }, { kind: 'param', name: 'repo' }, { kind: 'literal', value: 'contents' }, { kind: 'rest' }]],
    ['/*', [{ kind: 'rest' }]],
    ['/v1/a%20b', [{ kind: 'literal', value: 'v1' }, { kind: 'literal', value: 'a%20b' }]],
    ["/v1/x:y@z!$&'()+,=", [{ kind: 'literal', value: 'v1' }, { kind: 'literal', value: "x:y@z!$&'()+,=" }]],
  ])('%s', (template, segments) => {
    expect(parseRouteTemplate(template)).toEqual({ ok: true, segments });
  });
});

describe('parseRouteTemplate: invalid templates are rejected with a reason', () => {
  it.each([
    ['v1/models', /starts with "\/"/],
    ['', /starts with "\/"/],
    ['/v1//models', /empty segment/],
    ['/v1/models/', /empty segment .*trailing "\/"/],
    ['/*/models', /"\*" is only allowed as the last segment/],
    ['/v1/*/*', /"\*" is only allowed as the last segment/],
    ['/v1/models*', /"\*" must be a whole segment/],
    ['/v1/:', /is not a valid parameter name/],
    ['/v1/:1st', /":1st" is not a valid parameter name/],
    ['/v1/:a-b', /is not a valid parameter name/],
    ['/v1/../admin', /dot segments never match/],
    ['/v1/./models', /dot segments never match/],
    ['/v1/a;b', /characters a canonical path cannot hold/],
    ['/v1/a b', /characters a canonical path cannot hold/],
    ['/v1/a?b', /characters a canonical path cannot hold/],
    ['/v1/a#b', /characters a canonical path cannot hold/],
    ['/v1/a%2fb', /characters a canonical path cannot hold .*upper-case hex/],
    ['/v1/a%2Fb', /holds an encoded slash \(%2F\): write it as two segments, or end the route with "\*"/],
    ['/v1/a%zz', /characters a canonical path cannot hold/],
    ['/v1/%41bc', /escapes an unreserved character; write it literally/],
    ['/v1/%7E', /escapes an unreserved character/],
    ['/v1/caf\u00e9', /characters a canonical path cannot hold/],
  ])('%j', (template, reason) => {
    const parsed = parseRouteTemplate(template);
    expect(parsed.ok).toBe(false);
    if (!parsed.ok) expect(parsed.problem).toMatch(reason);
  });

  it('compileRouteTable refuses an invalid template instead of compiling a route that never matches', () => {
    expect(() => table(['GET', '/v1//x', 's'])).toThrow(/route 0 \(\/v1\/\/x\) is invalid: empty segment/);
  });
});

describe('matching a canonical path against one template', () => {
  it.each([
    // literals: exact and case-sensitive
    ['/v1/models', '/v1/models', true],
    ['/v1/models', '/v1/Models', false],
    ['/v1/models', '/V1/models', false],
    ['/v1/models', '/v1/model', false],
    ['/v1/models', '/v1/modelsx', false],
    ['/v1/models', '/v1/models/x', false],
    ['/v1/models', '/v1', false],
    ['/v1/models', '/v1/models/', false],
    ['/v1/models', '/x1/models', false],
    ['/v1/a%20b', '/v1/a%20b', true],
    ['/v1/a%20b', '/v1/a b', false],
    // :param: exactly one non-empty segment
    ['/v1/models/:model', '/v1/models/gpt-4o', true],
    ['/v1/models/:model', '/v1/models/a:b@c', true],
    ['/v1/models/:model', '/v1/models/', false],
    ['/v1/models/:model', '/v1/models', false],
    ['/v1/models/:model', '/v1/models/a/b', false],
    ['/v1/models/:model', '/v1/models/a/', false],
    ['/repos/:owner/:repo', '/repos/octo/hello', true],
    ['/repos/:owner/:repo', '/repos/octo', false],
    ['/:a/x', '/anything/x', true],
    ['/:a/x', '/anything/y', false],
    // an encoded slash is data in its segment here (match-route.ts reads the path with it as "/" too)
    ['/v1/models/:model', '/v1/models/meta%2Fllama', true],
    ['/repos/:owner/:repo', '/repos/octo%2Fx/hello', true],
    ['/v1/files/*', '/v1/files/docs%2FREADME.md', true],
    ['/v1/files/*', '/v1/files/a/b%2Fc', true],
    // trailing *: one or more segments
    ['/v1/files/*', '/v1/files/a', true],
    ['/v1/files/*', '/v1/files/a/b/c', true],
    ['/v1/files/*', '/v1/files', false],
    ['/v1/files/*', '/v1/files/', false],
    ['/v1/files/*', '/v1/filesx/a', false],
    ['/*', '/a', true],
    ['/*', '/a/b', true],
    ['/*', '/', false],
    // root
    ['/', '/', true],
    ['/', '/x', false],
    ['/', '', false],
    // a trailing slash does not match a template without one
    ['/v1/models/:model', '/v1/models/x/', false],
    ['/repos/:owner/:repo/issues', '/repos/o/r/issues/', false],
  ])('%s vs %s -> %s', (template, path, expected) => {
    expect(matches(template, path)).toBe(expected);
  });
});

describe('findRoute over a compiled table', () => {
  const routes = table(
    ['GET', '/v1/models', 'models:read'],
    ['GET', '/v1/models/:model', 'models:read'],
    ['DELETE', '/v1/models/:model', 'models:delete'],
    ['POST', '/v1/models/:model', 'models:write'],
    [['get', 'Head'], '/v1/files/*', 'files:read'],
    ['GET', '/v1/files/special', 'files:special'],
    ['PUT', '/v1/files/*', 'files:write'],
    ['GET', '/', 'root:read'],
  );

  it.each([
    ['GET', '/v1/models', 'routes[0] models:read'],
    ['GET', '/v1/models/gpt', 'routes[1] models:read'],
    ['DELETE', '/v1/models/gpt', 'routes[2] models:delete'],
    ['POST', '/v1/models/gpt', 'routes[3] models:write'],
    // methods in config are upper-cased at compile time
    ['GET', '/v1/files/a/b', 'routes[4] files:read'],
    ['HEAD', '/v1/files/a', 'routes[4] files:read'],
    // first match wins: the earlier wildcard shadows the later literal
    ['GET', '/v1/files/special', 'routes[4] files:read'],
    // a path matched by an earlier route with other methods still reaches a later route with this method
    ['PUT', '/v1/files/a', 'routes[6] files:write'],
    ['GET', '/', 'routes[7] root:read'],
    // wrong method: every method of every route whose path matches, once, in table order
    ['PATCH', '/v1/models/gpt', 'wrong_method GET,DELETE,POST'],
    ['POST', '/v1/models', 'wrong_method GET'],
    ['DELETE', '/v1/files/special', 'wrong_method GET,HEAD,PUT'],
    // request methods are matched as sent (upper case), not folded
    ['get', '/v1/models', 'wrong_method GET'],
    // no route at all
    ['GET', '/v1/models/', 'none'],
    ['GET', '/v1/Models', 'none'],
    ['GET', '/v2/models', 'none'],
    ['GET', '/v1/files', 'none'],
    ['GET', '/v1/models/a/b', 'none'],
  ])('%s %s -> %s', (method, path, expected) => {
    expect(summary(findRoute(routes, method, path))).toBe(expected);
  });

  it('a match returns the compiled route with its template and methods', () => {
    const match = findRoute(routes, 'HEAD', '/v1/files/x');
    expect(match.kind).toBe('matched');
    if (match.kind !== 'matched') return;
    expect(match.route.template).toBe('/v1/files/*');
    expect([...match.route.methods]).toEqual(['GET', 'HEAD']);
  });

  it('the compiled table is frozen', () => {
    expect(Object.isFrozen(routes)).toBe(true);
    expect(Object.isFrozen(routes.routes)).toBe(true);
    expect(Object.isFrozen(routes.routes[0])).toBe(true);
  });

  it('an empty table matches nothing', () => {
    expect(findRoute(table(), 'GET', '/')).toEqual({ kind: 'none' });
  });
});
