/**
 * Link header targets (RFC 8288) inside a service's upstream point back at Airlock, absolute, at the
 * origin the agent reached it by; the rest of the field stays as the upstream wrote it.
 */
import { describe, expect, it } from 'vitest';
import { agentOrigin, rewriteLinks } from '../../src/upstream/rewrite-link.js';
import { parseUpstream, type UpstreamTarget } from '../../src/upstream/upstream-target.js';

function upstream(url: string): UpstreamTarget {
  const parsed = parseUpstream(url);
  if (!parsed.ok) throw new Error(parsed.problem);
  return parsed.target;
}

const github = upstream('https://api.github.com');
const based = upstream('https://api.example.com/v2');
const here = 'http://127.0.0.1:7700';

describe('rewriteLinks', () => {
  it.each([
    ['a next and a last link, prefixed', github, '/github', '<https://api.github.com/repositories/1/issues?page=2>; rel="next", <https://api.github.com/repositories/1/issues?page=5>; rel="last"', `<${here}/github/repositories/1/issues?page=2>; rel="next", <${here}/github/repositories/1/issues?page=5>; rel="last"`],
    ['a service on its own listener (no prefix)', github, '', '<https://api.github.com/user/repos?page=2>; rel="next"', `<${here}/user/repos?page=2>; rel="next"`],
    ['under the upstream base path: the base path is taken off', based, '/ex', '<https://api.example.com/v2/items?cursor=abc>; rel="next"', `<${here}/ex/items?cursor=abc>; rel="next"`],
    ['outside the base path: untouched', based, '/ex', '<https://api.example.com/v1/items>; rel="alternate"', '<https://api.example.com/v1/items>; rel="alternate"'],
    ['another origin: untouched', github, '/github', '<https://docs.github.com/rest>; rel="help"', '<https://docs.github.com/rest>; rel="help"'],
    ['a lookalike host: untouched', github, '/github', '<https://api.github.com.evil.example/x>; rel="next"', '<https://api.github.com.evil.example/x>; rel="next"'],
    ['another scheme or port: untouched', github, '/github', '<http://api.github.com/x>; rel="next", <https://api.github.com:8443/x>; rel="prev"', '<http://api.github.com/x>; rel="next", <https://api.github.com:8443/x>; rel="prev"'],
    ['a path-absolute target is the upstream\'s', github, '/github', '</repositories/1/issues?page=2>; rel="next"', `<${here}/github/repositories/1/issues?page=2>; rel="next"`],
    ['a "<" inside a quoted parameter is not a target', github, '/github', '<https://api.github.com/a>; title="x <https://api.github.com/b> \\" <y>"; rel="next"', `<${here}/github/a>; title="x <https://api.github.com/b> \\" <y>"; rel="next"`],
    ['a target never closed: the rest as it came', github, '/github', '<https://api.github.com/a>; rel="next", <https://api.github.com/b', `<${here}/github/a>; rel="next", <https://api.github.com/b`],
    ['no target at all', github, '/github', 'rel="next"', 'rel="next"'],
  ])('%s', (_name, target, prefix, value, expected) => {
    expect(rewriteLinks(value, target, here, prefix)).toBe(expected);
  });

  it('resolves a relative target against the URL the request went to (RFC 8288 3.2)', () => {
    const base = 'https://api.example.com/v2/items/list';
    expect(rewriteLinks('<?page=3>; rel="last", <next>; rel="next"', based, here, '/ex', base)).toBe(`<${here}/ex/items/list?page=3>; rel="last", <${here}/ex/items/next>; rel="next"`);
  });

  // Found by review: with no origin to build (HTTP/1.0, a Host that is no plain host[:port]) links into the
  // upstream were passed on, and octokit sent the agent's token to the upstream.
  it('with no agent origin, makes links into the upstream path-absolute, never leaves them pointing upstream', () => {
    expect(rewriteLinks('<https://api.github.com/repositories/1/issues?page=2>; rel="next", <https://docs.github.com/x>; rel="help"', github, '', '/github')).toBe(
      '</github/repositories/1/issues?page=2>; rel="next", <https://docs.github.com/x>; rel="help"',
    );
  });
});

describe('agentOrigin', () => {
  it.each([
    ['the Host, over http', { host: '127.0.0.1:7700' }, 'http://127.0.0.1:7700'],
    ['a name', { host: 'airlock.internal' }, 'http://airlock.internal'],
    ['an IPv6 literal', { host: '[::1]:7700' }, 'http://[::1]:7700'],
    ['https behind a front that says so (RFC 7239)', { host: 'airlock.internal', forwarded: 'for=10.0.0.1;proto=https;host=airlock.internal' }, 'https://airlock.internal'],
    ['the first hop of Forwarded only', { host: 'a.internal', forwarded: 'proto=http, proto=https' }, 'http://a.internal'],
    ['X-Forwarded-Proto', { host: 'a.internal', 'x-forwarded-proto': 'https' }, 'https://a.internal'],
    ['X-Forwarded-Proto, first value', { host: 'a.internal', 'x-forwarded-proto': 'HTTPS, http' }, 'https://a.internal'],
    ['a Docker service name (underscore) and a trailing dot', { host: 'airlock_proxy.:8080' }, 'http://airlock_proxy.:8080'],
    ['no Host', {}, ''],
    ['a Host with a path', { host: 'a.internal/evil' }, ''],
    ['a Host with user info', { host: 'user@a.internal' }, ''],
    ['a Host with spaces or quotes', { host: 'a.internal">' }, ''],
    ['a Host with a comma', { host: 'a.internal,b' }, ''],
  ])('%s', (_name, headers, expected) => {
    expect(agentOrigin(headers, false)).toBe(expected);
  });

  it("is https over Airlock's own TLS, whatever a forwarded header says", () => {
    expect(agentOrigin({ host: 'airlock.internal:7700' }, true)).toBe('https://airlock.internal:7700');
    expect(agentOrigin({ host: 'airlock.internal', 'x-forwarded-proto': 'http' }, true)).toBe('https://airlock.internal');
    expect(agentOrigin({}, true)).toBe('');
  });
});
