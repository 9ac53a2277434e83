/**
 * The upstream of a service, parsed from config once. The origin comes from config alone (invariant 3):
 * nothing in a request can change where it goes.
 */
import { isIP } from 'node:net';

export interface UpstreamTarget {
  /** scheme://host[:port], as undici pools are keyed. */
  readonly origin: string;
  readonly protocol: 'http:' | 'https:';
  /** Host name or IP literal, without brackets. */
  readonly hostname: string;
  readonly port: number;
  /** "" or a canonical path without a trailing slash, e.g. "/api". */
  readonly basePath: string;
  /** 4, 6, or 0 for a host name. */
  readonly ipFamily: 0 | 4 | 6;
}

export type ParsedUpstream = { ok: true; target: UpstreamTarget } | { ok: false; problem: string };

export function parseUpstream(text: string): ParsedUpstream {
  let url: URL;
  try {
    url = new URL(text);
  } catch {
    // Not repeated when it holds "@": user:password@ may be the reason it does not parse.
    return { ok: false, problem: `${text.includes('@') ? 'the value' : `"${text}"`} is not a URL; write an origin such as https://api.openai.com` };
  }
  if (url.protocol !== 'http:' && url.protocol !== 'https:') return { ok: false, problem: `scheme ${url.protocol} is not supported; use http: or https:` };
  if (url.username !== '' || url.password !== '') return { ok: false, problem: 'credentials in the upstream URL are not allowed; put them in the service credential' };
  if (url.search !== '' || text.includes('?')) return { ok: false, problem: 'the upstream URL may not have a query' };
  if (url.hash !== '' || text.includes('#')) return { ok: false, problem: 'the upstream URL may not have a fragment' };
  const afterAuthority = text.replace(/^[a-z]+:\/\/[^/]*/i, '');
  // "%2e" is a dot to WHATWG URL (and RFC 3986 6.2.2.2), which resolves ".%2E" as ".." (found by review:
  // https://h/tenants/acme/%2e%2e/globex became the base path /tenants/globex, not what was written).
  if (/(^|\/)(\.|%2e){1,2}(\/|$)/i.test(afterAuthority) || afterAuthority.includes('//') || /%2f|%5c|\\/i.test(afterAuthority)) {
    return { ok: false, problem: 'the upstream base path must be canonical: no dot segments, "//", or encoded slashes' };
  }
  const basePath = url.pathname === '/' ? '' : url.pathname.replace(/\/$/, '');
  const hostname = url.hostname.startsWith('[') ? url.hostname.slice(1, -1) : url.hostname;
  const family = isIP(hostname);
  const port = url.port === '' ? (url.protocol === 'https:' ? 443 : 80) : Number(url.port);
  return {
    ok: true,
    target: Object.freeze({
      origin: url.origin,
      protocol: url.protocol,
      hostname,
      port,
      basePath,
      ipFamily: family === 4 ? 4 : family === 6 ? 6 : 0,
    }),
  };
}

/** The path sent upstream for an authorized service path: the base path, then the path byte for byte. */
export function upstreamPath(upstream: UpstreamTarget, servicePath: string): string {
  if (upstream.basePath === '') return servicePath;
  return servicePath === '/' ? `${upstream.basePath}/` : upstream.basePath + servicePath;
}
