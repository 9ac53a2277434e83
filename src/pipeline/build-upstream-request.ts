/**
 * Stage 7a: the upstream request before injection. Headers are copied from node's rawHeaders (so
 * repeats are all seen) minus everything an agent must not control:
 *  - hop-by-hop headers and every header named in Connection (RFC 9110 7.6.1); a request whose
 *    Connection names Host or a Content-* field is refused instead (checkConnectionOptions);
 *  - every agent-token carrier (Authorization, x-api-key, ...), whatever it holds;
 *  - Host (undici sets the upstream's), Expect (handled by this hop);
 *  - X-Forwarded-*, Forwarded, X-Real-IP: Airlock sets its own X-Forwarded-For;
 *  - X-Original-URL / X-Rewrite-URL (IIS/Symfony routing overrides, used to bypass path rules);
 *  - method-override headers and query keys (X-HTTP-Method-Override & co.), which would make the
 *    upstream run a method other than the one authorized; host-override headers (X-Host & co.);
 *  - Range and If-Range (a range could cut a reflected credential where the redactor cannot see it);
 *  - Accept-Encoding codings Airlock could not decode (and therefore could not scan).
 * The forwarded path is the upstream base path plus the authorized canonical path, byte for byte.
 */
import { AirlockError } from '../errors.js';
import { TOKEN_CARRIER_HEADERS } from '../identity/token-carriers.js';
import { connectionListedHeaders, HOP_BY_HOP_HEADERS } from '../upstream/hop-by-hop.js';
import { cgiHeaderName, OutboundRequest, queryKeyNameSet } from '../upstream/outbound-request.js';
import { upstreamPath, type UpstreamTarget } from '../upstream/upstream-target.js';

const DROPPED_HEADERS: ReadonlySet<string> = new Set([
  'host',
  'expect',
  'forwarded',
  'x-real-ip',
  'x-original-url',
  'x-rewrite-url',
  'x-http-method-override',
  'x-http-method',
  'x-method-override',
  'x-airlock-approval',
  // A byte range of a reflected request could start inside the injected credential, where no whole form
  // of it is left to find, and a few ranges rebuild it (found by review). The upstream answers with the
  // whole representation instead (RFC 9110 14.2: a server may ignore Range), which is scanned whole; and
  // Airlock hands on a decoded body, which ranges of an encoded one would not fit anyway.
  'range',
  'if-range',
  // Host-override headers some frameworks and load balancers honour (X-Forwarded-Host is dropped below).
  'x-host',
  'x-original-host',
  'x-http-host-override',
]);

/** Content codings Airlock can decode, and so may let an upstream use (redact-response.ts). */
const DECODABLE_CODINGS: ReadonlySet<string> = new Set(['gzip', 'x-gzip', 'deflate', 'br', 'identity']);

/**
 * The agent's Accept-Encoding reduced to codings Airlock can decode (q-values kept); "*" and unknown
 * codings dropped. Airlock decodes what it receives and sends it on decoded, so an upstream must never
 * pick a coding the redactor cannot read.
 */
export function decodableAcceptEncoding(value: string): string | null {
  const kept = value
    .split(',')
    .map((part) => part.trim())
    .filter((part) => DECODABLE_CODINGS.has((part.split(';')[0] as string).trim().toLowerCase()));
  return kept.length === 0 ? null : kept.join(', ');
}

export const METHOD_OVERRIDE_QUERY_KEYS: readonly string[] = ['_method', 'x-http-method-override', 'x-http-method', 'x-method-override'];
/** Every name a parser may read the override keys as (queryKeyNames): one set for the query and the body watches. */
export const METHOD_OVERRIDE_NAMES = queryKeyNameSet(METHOD_OVERRIDE_QUERY_KEYS);

/**
 * Refuses a Connection header naming Host or a Content-* field. RFC 9110 7.6.1: a sender must not list
 * a field meant for every recipient of the content, and a proxy removes whatever is listed. Removing
 * Content-Type after the body was checked by it (override-watch.ts picks its watch by Content-Type)
 * sent the upstream a body it read another way: `Connection: content-type` with `Content-Type:
 * application/json` and the body `_method=DELETE` reached Rack with no Content-Type, which parsed it as
 * a form and ran DELETE (found by review). Content-Length and Content-Encoding frame and code the body
 * that was checked, and an HTTP/1.1 request without Host is invalid (RFC 9112 3.2), so none of them is
 * dropped silently either. Hop-by-hop fields (Transfer-Encoding, TE, Upgrade) and headers Airlock removes
 * or replaces anyway (Authorization and the other token carriers: the injected credential is set after)
 * may be listed: removing them changes nothing the upstream reads. Names are compared with "_" read as
 * "-", as the header loop below compares them.
 */
export function checkConnectionOptions(listed: ReadonlySet<string>): void {
  for (const option of listed) {
    const name = cgiHeaderName(option);
    if (name === 'host' || name.startsWith('content-')) {
      // Named back only when it is a field name we know: the rest is the agent's text, which a detail never repeats.
      const shown = KNOWN_CONTENT_FIELDS.test(name) ? name : 'a Content-* field';
      throw new AirlockError(
        'invalid_request',
        `The Connection header lists ${shown}, a field meant for every recipient of the message (RFC 9110 section 7.6.1), which would be removed before forwarding; send the request without naming it in Connection.`,
      );
    }
  }
}

const KNOWN_CONTENT_FIELDS = /^(host|content-(type|length|encoding|language|location|range|md5|digest|disposition))$/;

export interface UpstreamRequestInput {
  readonly method: string;
  readonly rawHeaders: readonly string[];
  readonly upstream: UpstreamTarget;
  /** Authorized, canonical, service-relative path. */
  readonly path: string;
  readonly query: string | null;
  readonly clientAddress: string | undefined;
}

export function buildUpstreamRequest(input: UpstreamRequestInput): OutboundRequest {
  const outbound = new OutboundRequest(input.method, upstreamPath(input.upstream, input.path), input.query);
  const raw = input.rawHeaders;
  const listed = connectionListedHeaders(raw);
  checkConnectionOptions(listed);
  for (let i = 0; i < raw.length; i += 2) {
    const name = (raw[i] as string).toLowerCase();
    // Checked as CGI-style servers read it (cgiHeaderName): x_forwarded_for or x_api_key would otherwise
    // pass as a different name and overwrite what Airlock set (found by review).
    const key = cgiHeaderName(name);
    if (HOP_BY_HOP_HEADERS.has(key) || TOKEN_CARRIER_HEADERS.has(key) || DROPPED_HEADERS.has(key) || listed.has(key)) continue;
    // Content_Type or Content_Length: a CGI-style server reads it as CONTENT_TYPE, beside or before the
    // real one (Puma before 6.4.2 joins the two, and Rack reads the first), while the body was checked
    // by the Content-Type node read (override-watch.ts). No client sends it; dropped.
    if (key !== name && key.startsWith('content-')) continue;
    if (key.startsWith('x-forwarded-')) continue;
    if (key === 'accept-encoding') {
      const accepted = decodableAcceptEncoding(raw[i + 1] as string);
      if (accepted !== null) outbound.addHeader(name, accepted);
      continue;
    }
    outbound.addHeader(name, raw[i + 1] as string);
  }
  if (input.clientAddress !== undefined) outbound.addHeader('x-forwarded-for', input.clientAddress);
  outbound.removeQueryKeys(METHOD_OVERRIDE_NAMES);
  return outbound;
}
