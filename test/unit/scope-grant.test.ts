/**
 * Scope grants (DESIGN.md section 5): exact names, "*" for every scope of the service, "prefix:*" for every
 * scope that starts with "prefix:". Deny by default: a grant holds nothing it does not list.
 */
import { describe, expect, it } from 'vitest';
import { compileScopeGrant, grantingEntry, holdsScope, scopePatternProblem } from '../../src/policy/scope-grant.js';

describe('holdsScope and grantingEntry', () => {
  it.each([
    // exact names, case-sensitive
    [['chat:write'], 'chat:write', 'chat:write'],
    [['chat:write'], 'chat:read', null],
    [['chat:write'], 'Chat:write', null],
    [['chat:write'], 'chat:write:extra', null],
    [['chat:write'], 'chat', null],
    // prefixes end at the colon: files:* is not filesystem:*
    [['files:*'], 'files:read', 'files:*'],
    [['files:*'], 'files:read:all', 'files:*'],
    [['files:*'], 'filesystem:read', null],
    [['files:*'], 'files', null],
    [['files:*'], 'Files:read', null],
    [['files:*', 'batches:*'], 'batches:write', 'batches:*'],
    // "*" holds every scope
    [['*'], 'anything:at-all', '*'],
    // the most specific entry is reported
    [['*', 'files:*', 'files:read'], 'files:read', 'files:read'],
    [['*', 'files:*'], 'files:read', 'files:*'],
    [['*', 'files:read'], 'chat:write', '*'],
    // an empty grant holds nothing
    [[], 'chat:write', null],
    [[], '', null],
  ] as Array<[string[], string, string | null]>)('%j holds %s -> %s', (maxScope, scope, entry) => {
    const grant = compileScopeGrant(maxScope);
    expect(grantingEntry(grant, scope)).toBe(entry);
    expect(holdsScope(grant, scope)).toBe(entry !== null);
  });

  it('compiles into exact names, prefixes and the all flag, keeping what was written', () => {
    const written = ['chat:write', 'files:*', '*'];
    const grant = compileScopeGrant(written);
    expect(grant.all).toBe(true);
    expect([...grant.exact]).toEqual(['chat:write']);
    expect(grant.prefixes).toEqual(['files:']);
    expect(grant.written).toEqual(written);
    written.push('extra:write');
    expect(grant.written).toEqual(['chat:write', 'files:*', '*']);
    expect(Object.isFrozen(grant)).toBe(true);
    expect(Object.isFrozen(grant.prefixes)).toBe(true);
  });
});

describe('scopePatternProblem', () => {
  it.each(['chat:write', 'files:*', '*', 'a.b-c_d:e', 'x:y:*'])('%s is well formed', (pattern) => {
    expect(scopePatternProblem(pattern)).toBeNull();
  });

  it.each([
    ['files*', /a scope prefix ends with ":\*"/],
    ['fi*les', /"\*" may only end a scope pattern/],
    ['*:read', /"\*" may only end a scope pattern/],
    ['files:**', /"\*" may only end a scope pattern/],
    ['**', /"\*" may only end a scope pattern/],
  ])('%s is refused', (pattern, reason) => {
    expect(scopePatternProblem(pattern)).toMatch(reason);
  });
});
