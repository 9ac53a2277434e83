/**
 * canonicalizeTarget, the pure first stage (invariant 3): one canonical spelling of the path, or
 * invalid_request. The query is split off and kept exactly as sent.
 */
import { describe, expect, it } from 'vitest';
import { AirlockError } from '../../src/errors.js';
import { canonicalizeTarget } from '../../src/pipeline/canonicalize-target.js';

function refusal(target: string): AirlockError {
  try {
    canonicalizeTarget(target);
  } catch (error) {
    if (error instanceof AirlockError) return error;
    throw error;
  }
  throw new Error(`${JSON.stringify(target)} was accepted`);
}

describe('canonicalizeTarget accepts and normalizes', () => {
  it.each<{ target: string; path: string; query: string | null }>([
    { target: '/', path: '/', query: null },
    { target: '/v1/models', path: '/v1/models', query: null },
    { target: '/v1/models/', path: '/v1/models/', query: null },
    { target: '/V1/Models', path: '/V1/Models', query: null },
    // Unreserved characters are decoded (RFC 3986 6.2.2.2).
    { target: '/v1/%41', path: '/v1/A', query: null },
    { target: '/v1/%61%62%63', path: '/v1/abc', query: null },
    { target: '/%30%39', path: '/09', query: null },
    { target: '/a%2db%2Dc', path: '/a-b-c', query: null },
    { target: '/a%5fb%5Fc', path: '/a_b_c', query: null },
    { target: '/%7e%7E', path: '/~~', query: null },
    { target: '/a%2eb', path: '/a.b', query: null },
    { target: '/file%2Ejson', path: '/file.json', query: null },
    { target: '/%41b%42c%43', path: '/AbBcC', query: null },
    // Other escapes are kept, hex upper-cased (RFC 3986 6.2.2.1).
    { target: '/caf%c3%a9', path: '/caf%C3%A9', query: null },
    { target: '/caf%C3%A9', path: '/caf%C3%A9', query: null },
    { target: '/caf%C3%a9', path: '/caf%C3%A9', query: null },
    { target: '/a%20b', path: '/a%20b', query: null },
    { target: '/a%3ab', path: '/a%3Ab', query: null },
    { target: '/a%2bb', path: '/a%2Bb', query: null },
    { target: '/a%3f%23', path: '/a%3F%23', query: null },
    { target: '/a%40b', path: '/a%40b', query: null },
    { target: '/%e2%82%ac', path: '/%E2%82%AC', query: null },
    { target: '/%f0%9f%94%91', path: '/%F0%9F%94%91', query: null },
    // Characters whose NFKC form is an ordinary letter are not refused: only separators and dots are.
    { target: '/%ef%bc%a1', path: '/%EF%BC%A1', query: null },
    { target: '/%e2%80%a5a', path: '/%E2%80%A5a', query: null },
    // Dots that do not make a whole "." or ".." segment.
    { target: '/a..b', path: '/a..b', query: null },
    { target: '/...', path: '/...', query: null },
    { target: '/%2e%2e%2e', path: '/...', query: null },
    { target: '/.well-known/x', path: '/.well-known/x', query: null },
    { target: '/a.', path: '/a.', query: null },
    { target: '/..a', path: '/..a', query: null },
    // Raw sub-delims, ":" and "@" are kept as sent.
    { target: "/a:b@c!$&'()*+,=", path: "/a:b@c!$&'()*+,=", query: null },
    // The query: split at the first "?", kept byte for byte.
    { target: '/a?', path: '/a', query: '' },
    { target: '/?', path: '/', query: '' },
    { target: '/a?b=1', path: '/a', query: 'b=1' },
    { target: '/a?b?c', path: '/a', query: 'b?c' },
    { target: '/a?x=%2e%2e/%2f', path: '/a', query: 'x=%2e%2e/%2f' },
    { target: '/a?x=%zz%4&y=%', path: '/a', query: 'x=%zz%4&y=%' },
    { target: '/a?u=%c3%a9', path: '/a', query: 'u=%c3%a9' },
    { target: '/a?p=/../..//x;y', path: '/a', query: 'p=/../..//x;y' },
    { target: '/a?A=%41', path: '/a', query: 'A=%41' },
    { target: '/a?x=\\', path: '/a', query: 'x=\\' },
    { target: '/%41?%41', path: '/A', query: '%41' },
    // An encoded slash is data in its segment, upper-cased like other escapes, when the path reads
    // safely both ways (no empty or dot piece between %2F); the route stage checks the rest.
    { target: '/a%2fb', path: '/a%2Fb', query: null },
    { target: '/repos/o/r/contents/docs%2FREADME.md', path: '/repos/o/r/contents/docs%2FREADME.md', query: null },
    { target: '/a%2Fb%2Fc/', path: '/a%2Fb%2Fc/', query: null },
    { target: '/a%2F.x%2Fx.', path: '/a%2F.x%2Fx.', query: null },
  ])('$target -> $path ? $query', ({ target, path, query }) => {
    expect(canonicalizeTarget(target)).toEqual({ path, query });
  });

  it('is idempotent: a canonical path canonicalizes to itself', () => {
    for (const target of ['/v1/%41', '/caf%c3%a9', '/a%3ab', '/%7e', '/%ef%bc%a1', '/a%2eb']) {
      const once = canonicalizeTarget(target).path;
      expect(canonicalizeTarget(once).path).toBe(once);
    }
  });
});

describe('canonicalizeTarget refuses', () => {
  it.each<{ target: string; reason: RegExp }>([
    // Not origin-form.
    { target: '*', reason: /asterisk/ },
    { target: '', reason: /origin-form/ },
    { target: 'v1/models', reason: /origin-form/ },
    { target: 'http://evil/v1/x', reason: /origin-form/ },
    { target: 'HTTPS://api.openai.com/v1/x', reason: /origin-form/ },
    { target: 'evil.example:443', reason: /origin-form/ },
    { target: '?a=1', reason: /origin-form/ },
    // Raw bytes that do not belong in a target.
    { target: '/a b', reason: /control character or space/ },
    { target: '/a\tb', reason: /control character or space/ },
    { target: '/a\x00b', reason: /control character or space/ },
    { target: '/a\x7fb', reason: /control character or space/ },
    { target: '/a?x=\r\n', reason: /control character or space/ },
    { target: '/a?x=1 2', reason: /control character or space/ },
    { target: '/caf\u00e9', reason: /non-ASCII/ },
    { target: '/\uff0e\uff0e/x', reason: /non-ASCII/ },
    { target: '/a?q=\u00e9', reason: /non-ASCII/ },
    { target: '/a#frag', reason: /"#"/ },
    { target: '/a?b#c', reason: /"#"/ },
    // Empty segments, backslashes, matrix parameters.
    { target: '//a', reason: /empty segment/ },
    { target: '/a//b', reason: /empty segment/ },
    { target: '/a//', reason: /empty segment/ },
    { target: '/a\\b', reason: /backslash/ },
    { target: '/..\\x', reason: /backslash/ },
    { target: '/..;/x', reason: /";"/ },
    { target: '/a;b=c', reason: /";"/ },
    { target: '/..%3b/x', reason: /%3B/ },
    { target: '/..%3B/x', reason: /%3B/ },
    { target: '/a%3Bjsessionid=1', reason: /%3B/ },
    // Escapes of separators, of "%" itself, of control characters; malformed escapes.
    { target: '/a%2F%2Fb', reason: /encoded slash \(%2F\) at the start or end of a segment, or two together/ },
    { target: '/%2Fetc', reason: /encoded slash \(%2F\) at the start or end/ },
    { target: '/a%2F', reason: /encoded slash \(%2F\) at the start or end/ },
    { target: '/a%2F/b', reason: /encoded slash \(%2F\) at the start or end/ },
    { target: '/a/..%2Fadmin', reason: /dot segment between encoded slashes/ },
    { target: '/a%2F.%2Fb', reason: /dot segment between encoded slashes/ },
    { target: '/a%2F%2e%2e', reason: /dot segment between encoded slashes/ },
    { target: '/a%5cb', reason: /encoded backslash/ },
    { target: '/a%5Cb', reason: /encoded backslash/ },
    { target: '/%252e%252e', reason: /%25/ },
    { target: '/100%25', reason: /%25/ },
    { target: '/a%00', reason: /control character/ },
    { target: '/a%0d%0a', reason: /control character/ },
    { target: '/a%09', reason: /control character/ },
    { target: '/a%1F', reason: /control character/ },
    { target: '/a%7f', reason: /control character/ },
    { target: '/%zz', reason: /valid %XX/ },
    { target: '/%4', reason: /valid %XX/ },
    { target: '/a%', reason: /valid %XX/ },
    { target: '/%g0', reason: /valid %XX/ },
    { target: '/%0g', reason: /valid %XX/ },
    { target: '/%%41', reason: /valid %XX/ },
    // Dot segments, raw or encoded, anywhere.
    { target: '/.', reason: /dot segment/ },
    { target: '/..', reason: /dot segment/ },
    { target: '/./a', reason: /dot segment/ },
    { target: '/../a', reason: /dot segment/ },
    { target: '/a/.', reason: /dot segment/ },
    { target: '/a/..', reason: /dot segment/ },
    { target: '/a/../b', reason: /dot segment/ },
    { target: '/a/./b', reason: /dot segment/ },
    { target: '/%2e', reason: /dot segment/ },
    { target: '/%2e%2e', reason: /dot segment/ },
    { target: '/%2E%2E/a', reason: /dot segment/ },
    { target: '/.%2e/a', reason: /dot segment/ },
    { target: '/%2e./a', reason: /dot segment/ },
    { target: '/a/..?x=1', reason: /dot segment/ },
    // Invalid and overlong UTF-8.
    { target: '/%c0%ae', reason: /UTF-8/ },
    { target: '/%c0%af', reason: /UTF-8/ },
    { target: '/%e0%80%ae', reason: /UTF-8/ },
    { target: '/%f0%80%80%ae', reason: /UTF-8/ },
    { target: '/%ff', reason: /UTF-8/ },
    { target: '/%fe%ff', reason: /UTF-8/ },
    { target: '/%80', reason: /UTF-8/ },
    { target: '/a%bf%bfb', reason: /UTF-8/ },
    { target: '/caf%c3', reason: /UTF-8/ },
    { target: '/%e2%82', reason: /UTF-8/ },
    { target: '/%ed%a0%80', reason: /UTF-8/ },
    { target: '/%f4%90%80%80', reason: /UTF-8/ },
    // Characters that NFKC-normalize to separators or dot segments.
    { target: '/%ef%bc%8e%ef%bc%8e/x', reason: /NFKC/ },
    { target: '/%ef%bc%8e', reason: /NFKC/ },
    { target: '/.%ef%bc%8e', reason: /NFKC/ },
    { target: '/%ef%bc%8e%2e', reason: /NFKC/ },
    { target: '/a%ef%bc%8fb', reason: /NFKC/ },
    { target: '/a%ef%bc%bcb', reason: /NFKC/ },
    { target: '/a%ef%bc%85', reason: /NFKC/ },
    { target: '/a%ef%bc%9bb', reason: /NFKC/ },
    { target: '/a%ef%bc%9fb', reason: /NFKC/ },
    { target: '/a%ef%bc%83b', reason: /NFKC/ },
    { target: '/%e2%80%a4', reason: /NFKC/ },
    { target: '/%e2%80%a5', reason: /NFKC/ },
    { target: '/%ef%b9%92%ef%b9%92', reason: /NFKC/ },
  ])('$target ($reason)', ({ target, reason }) => {
    const error = refusal(target);
    expect(error.code).toBe('invalid_request');
    expect(error.status).toBe(400);
    expect(error.detail).toMatch(reason);
  });
});
