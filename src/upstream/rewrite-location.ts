/**
 * Redirects are never followed (invariant 5); they are handed to the agent. A Location that points back
 * into the service's upstream (same origin, under its base path) is rewritten to the agent's view of
 * the service, so following it goes through Airlock again and is authorized again. Any other Location is
 * passed on untouched: the agent's next request to it carries no injected credential.
 */
import type { UpstreamTarget } from './upstream-target.js';

/** `base`: the upstream URL the request went to, which a relative reference is resolved against (RFC 3986 5.2). */
export function rewriteLocation(location: string, upstream: UpstreamTarget, agentPrefix: string, base = `${upstream.origin}/`): string {
  let url: URL;
  try {
    url = new URL(location, base);
  } catch {
    return location;
  }
  if (url.origin !== upstream.origin) return location;
  const basePath = upstream.basePath;
  if (basePath !== '' && url.pathname !== basePath && !url.pathname.startsWith(`${basePath}/`)) return location;
  const rest = url.pathname.slice(basePath.length);
  const path = rest === '' ? '/' : rest;
  return `${agentPrefix === '' ? path : path === '/' ? agentPrefix : agentPrefix + path}${url.search}${url.hash}`;
}
