/**
 * Web links (RFC 8288) in an upstream's `Link` header that point back into the service's upstream are
 * rewritten to Airlock's view of the service, as a Location is (rewrite-location.ts), so that following
 * them goes through Airlock again and is authorized again. Found by an SDK walkthrough: octokit's
 * `paginate` followed GitHub's `rel="next"` to api.github.com directly, with the agent's Airlock token
 * (GitHub refused it, and the token had left for a third party).
 *
 * The rewritten link is absolute (`http://HOST/github/repositories/1/issues?page=2`): octokit puts its
 * base URL before a link that is not, which a path-absolute one would then repeat the prefix of, and
 * other clients resolve a relative one against the URL they asked, which does not hold the prefix when a
 * service is reached by its own listener or host name. HOST is the Host the agent sent, and the scheme is
 * https when the agent's connection is TLS (the tls setting), or when a front that terminates TLS says
 * so (`Forwarded: proto=https`, RFC 7239, or `X-Forwarded-Proto: https`), else http. Both come from the
 * agent's request, and only shape a link handed back to that same agent: nothing is sent anywhere on
 * their word.
 *
 * Links to anywhere else are passed on untouched (an agent's request there carries no injected
 * credential). Without a Host that makes an origin (HTTP/1.0, or one that is not a plain host[:port]),
 * a link into the upstream becomes path-absolute (`/github/repositories/1/issues?page=2`): octokit then
 * asks Airlock for the wrong path, which is refused, rather than the upstream with the agent's token
 * (found by review: such links were passed on as the upstream wrote them).
 */
import type { IncomingHttpHeaders } from 'node:http';
import { rewriteLocation } from './rewrite-location.js';
import type { UpstreamTarget } from './upstream-target.js';

/**
 * A Host header's host[:port]: a name (letters, digits, ".", "-", and "_", which Docker service names
 * hold and WHATWG URLs accept; a trailing dot too), an IPv4 address, or a bracketed IPv6 literal
 * (RFC 9110 7.2). Nothing that could end the link or add to it: no quote, ">", ",", space, "@" or "/".
 */
const HOST = /^(?:[A-Za-z0-9._-]+|\[[0-9A-Fa-f:.]+\])(?::[0-9]{1,5})?$/;

/**
 * The origin the agent reached Airlock at, from its request; "" when its Host cannot make one (links
 * become path-absolute). `encrypted`: the request came over Airlock's own TLS.
 */
export function agentOrigin(headers: IncomingHttpHeaders, encrypted: boolean): string {
  const host = headers.host;
  if (host === undefined || !HOST.test(host)) return '';
  return `${encrypted || forwardedHttps(headers) ? 'https' : 'http'}://${host}`;
}

function forwardedHttps(headers: IncomingHttpHeaders): boolean {
  // The first hop's word: the front nearest the agent writes the first element (RFC 7239 4).
  const forwarded = headers.forwarded?.split(',')[0];
  if (forwarded !== undefined && /(?:^|;)\s*proto="?https"?\s*(?:;|$)/i.test(forwarded)) return true;
  const proto = headers['x-forwarded-proto'];
  return typeof proto === 'string' && proto.split(',')[0]?.trim().toLowerCase() === 'https';
}

/**
 * `value` (one Link field line) with each link target inside the service's upstream rewritten to
 * `origin` + the service's agent prefix. Targets are the `<...>` outside quoted parameters; everything
 * else (parameters, separators, spacing) stays as it came. `base`: the upstream URL the request went to,
 * which a relative target is resolved against (RFC 8288 3.2).
 */
export function rewriteLinks(value: string, upstream: UpstreamTarget, origin: string, agentPrefix: string, base = `${upstream.origin}/`): string {
  let out = '';
  let quoted = false;
  let last = 0;
  for (let i = 0; i < value.length; i++) {
    const char = value[i];
    if (quoted) {
      if (char === '\\') i++;
      else if (char === '"') quoted = false;
    } else if (char === '"') {
      quoted = true;
    } else if (char === '<') {
      const close = value.indexOf('>', i + 1);
      if (close === -1) break;
      const target = value.slice(i + 1, close);
      if (isInsideUpstream(target, upstream, base)) {
        // rewriteLocation gives the agent's path of a target inside the upstream (prefix, path, query, fragment).
        out += `${value.slice(last, i + 1)}${origin}${rewriteLocation(target, upstream, agentPrefix, base)}>`;
        last = close + 1;
      }
      i = close;
    }
  }
  return last === 0 ? value : out + value.slice(last);
}

/** Whether `target`, read against the upstream's origin, is the upstream's: its origin, under its base path. */
function isInsideUpstream(target: string, upstream: UpstreamTarget, base: string): boolean {
  try {
    const url = new URL(target, base);
    return url.origin === upstream.origin && (upstream.basePath === '' || url.pathname === upstream.basePath || url.pathname.startsWith(`${upstream.basePath}/`));
  } catch {
    return false;
  }
}
