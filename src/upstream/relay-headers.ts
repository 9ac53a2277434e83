/**
 * Upstream response headers as the agent gets them: hop-by-hop fields and those named in Connection
 * removed (RFC 9110 7.6.1), Location rewritten (rewrite-location.ts), any upstream copy of Airlock's
 * own header dropped, and x-airlock-request-id added. Returned flat, as res.writeHead takes repeats.
 */
import { connectionListedInObject, HOP_BY_HOP_HEADERS } from './hop-by-hop.js';
import { rewriteLocation } from './rewrite-location.js';
import type { UpstreamTarget } from './upstream-target.js';

export const REQUEST_ID_HEADER = 'x-airlock-request-id';

export type UpstreamHeaders = Readonly<Record<string, string | string[] | undefined>>;

export function relayHeaders(headers: UpstreamHeaders, requestId: string, upstream: UpstreamTarget, agentPrefix: string): string[] {
  const listed = connectionListedInObject(headers);
  const out: string[] = [];
  for (const name in headers) {
    const value = headers[name];
    if (value === undefined || HOP_BY_HOP_HEADERS.has(name) || listed.has(name) || name === REQUEST_ID_HEADER) continue;
    if (name === 'location') {
      const first = Array.isArray(value) ? value[0] : value;
      if (first !== undefined) out.push(name, rewriteLocation(first, upstream, agentPrefix));
      continue;
    }
    if (Array.isArray(value)) for (const v of value) out.push(name, v);
    else out.push(name, value);
  }
  out.push(REQUEST_ID_HEADER, requestId);
  return out;
}
