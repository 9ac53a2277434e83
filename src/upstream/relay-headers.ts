/**
 * Upstream response headers as the agent gets them: hop-by-hop fields and those named in Connection
 * removed (RFC 9110 7.6.1), Location rewritten (rewrite-location.ts), any upstream copy of Airlock's
 * own header dropped, and x-airlock-request-id added. Returned flat, as res.writeHead takes repeats.
 */
import { connectionListedInObject, HOP_BY_HOP_HEADERS } from './hop-by-hop.js';
import type { RedactionMatcher } from '../redaction/redaction-matcher.js';
import { rewriteLocation } from './rewrite-location.js';
import type { UpstreamTarget } from './upstream-target.js';

export const REQUEST_ID_HEADER = 'x-airlock-request-id';

export type UpstreamHeaders = Readonly<Record<string, string | string[] | undefined>>;

/**
 * `matcher`: what the response's redaction masks. A same-origin Location is rewritten to the proxy
 * prefix, which parses and re-serializes the URL (' becomes %27, Latin-1 becomes UTF-8 escapes): when
 * that turns a form of the secret the header scan knows into one it does not, the Location is relayed
 * as the upstream wrote it, and masked (found by review). Known limit: a Location echoing the secret
 * twice, once where rewriting keeps it and once where it re-encodes it, is rewritten, and the second
 * copy is not masked.
 */
export function relayHeaders(headers: UpstreamHeaders, requestId: string, upstream: UpstreamTarget, agentPrefix: string, matcher: RedactionMatcher): string[] {
  const listed = connectionListedInObject(headers);
  const out: string[] = [];
  for (const name in headers) {
    const value = headers[name];
    if (value === undefined || HOP_BY_HOP_HEADERS.has(name) || listed.has(name) || name === REQUEST_ID_HEADER) continue;
    if (name === 'location') {
      const first = Array.isArray(value) ? value[0] : value;
      if (first !== undefined) {
        const rewritten = rewriteLocation(first, upstream, agentPrefix);
        // Rewritten (and then masked by the header scan) unless rewriting hid something the scan finds in
        // the original. clearOfText answers "surely nothing" or "scan to be sure", so a full scan decides.
        const hidden = rewritten !== first && !matcher.clearOfText(first, 'latin1') && holdsMatch(matcher, first) && !holdsMatch(matcher, rewritten);
        out.push(name, hidden ? first : rewritten);
      }
      continue;
    }
    if (Array.isArray(value)) for (const v of value) out.push(name, v);
    else out.push(name, value);
  }
  out.push(REQUEST_ID_HEADER, requestId);
  return out;
}

/** Whether the header scan would mask anything in `value` (as a header value: Latin-1 bytes). */
function holdsMatch(matcher: RedactionMatcher, value: string): boolean {
  const spans: number[] = [];
  matcher.scan(Buffer.from(value, 'latin1'), 0, true, spans, false);
  return spans.length > 0;
}
