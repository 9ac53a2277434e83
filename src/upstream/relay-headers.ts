/**
 * Upstream response headers as the agent gets them: hop-by-hop fields and those named in Connection
 * removed (RFC 9110 7.6.1), any upstream copy of Airlock's own header dropped, and x-airlock-request-id
 * added. Returned flat, as res.writeHead takes repeats.
 */
import { connectionListedInObject, HOP_BY_HOP_HEADERS } from './hop-by-hop.js';

export const REQUEST_ID_HEADER = 'x-airlock-request-id';

export type UpstreamHeaders = Readonly<Record<string, string | string[] | undefined>>;

/**
 * Only the first Location is relayed (a redirect names one target); it goes on as the upstream wrote it,
 * and the response writer masks it, then points a same-origin one back at the proxy (redact-response.ts).
 */
export function relayHeaders(headers: UpstreamHeaders, requestId: string): string[] {
  const listed = connectionListedInObject(headers);
  const out: string[] = [];
  for (const name in headers) {
    const value = headers[name];
    if (value === undefined || HOP_BY_HOP_HEADERS.has(name) || listed.has(name) || name === REQUEST_ID_HEADER) continue;
    if (name === 'location' && Array.isArray(value)) {
      if (value[0] !== undefined) out.push(name, value[0]);
      continue;
    }
    if (Array.isArray(value)) for (const v of value) out.push(name, v);
    else out.push(name, value);
  }
  out.push(REQUEST_ID_HEADER, requestId);
  return out;
}
