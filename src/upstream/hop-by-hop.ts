/**
 * Hop-by-hop header rules, in one place.
 *
 * RFC 9110 7.6.1: a proxy MUST remove the Connection header and every header it names, and SHOULD
 * remove the well-known hop-by-hop fields (Proxy-Connection, Keep-Alive, TE, Transfer-Encoding,
 * Upgrade). Proxy-Authenticate/Proxy-Authorization are meant for this hop's proxy (RFC 9110 11.7).
 * Removal happens before injection, so "Connection: authorization" cannot strip the credential Airlock
 * sets, only the agent's copy.
 */

export const HOP_BY_HOP_HEADERS: ReadonlySet<string> = new Set([
  'connection',
  'proxy-connection',
  'keep-alive',
  'te',
  'transfer-encoding',
  'upgrade',
  'trailer',
  'proxy-authenticate',
  'proxy-authorization',
  'http2-settings',
]);

/** Lower-case header names listed in every Connection header of a raw header list. */
export function connectionListedHeaders(rawHeaders: readonly string[]): Set<string> {
  const listed = new Set<string>();
  for (let i = 0; i < rawHeaders.length; i += 2) {
    if ((rawHeaders[i] as string).toLowerCase() !== 'connection') continue;
    for (const token of (rawHeaders[i + 1] as string).split(',')) {
      const name = token.trim().toLowerCase();
      if (name !== '') listed.add(name);
    }
  }
  return listed;
}

/** Same, for a header object as undici parses responses (lower-case keys, arrays for repeats). */
export function connectionListedInObject(headers: Readonly<Record<string, string | string[] | undefined>>): Set<string> {
  const listed = new Set<string>();
  const value = headers['connection'];
  if (value === undefined) return listed;
  for (const line of Array.isArray(value) ? value : [value]) {
    for (const token of line.split(',')) {
      const name = token.trim().toLowerCase();
      if (name !== '') listed.add(name);
    }
  }
  return listed;
}
