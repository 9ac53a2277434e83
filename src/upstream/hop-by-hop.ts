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

const NOTHING_MORE: ReadonlySet<string> = new Set();

/**
 * "Connection: keep-alive", what nearly every HTTP/1.1 client and server sends, names a header that is
 * hop-by-hop anyway: nothing more to remove, and no set to build per message.
 */
function namesNothingMore(value: string): boolean {
  return value === 'keep-alive' || value === 'Keep-Alive';
}

/** Lower-case header names listed in every Connection header of a raw header list. */
export function connectionListedHeaders(rawHeaders: readonly string[]): ReadonlySet<string> {
  let listed: Set<string> | null = null;
  for (let i = 0; i < rawHeaders.length; i += 2) {
    if ((rawHeaders[i] as string).toLowerCase() !== 'connection') continue;
    const value = rawHeaders[i + 1] as string;
    if (namesNothingMore(value)) continue;
    listed ??= new Set<string>();
    for (const token of value.split(',')) {
      const name = token.trim().toLowerCase();
      if (name !== '') listed.add(name);
    }
  }
  return listed ?? NOTHING_MORE;
}

/** Same, for a header object as undici parses responses (lower-case keys, arrays for repeats). */
export function connectionListedInObject(headers: Readonly<Record<string, string | string[] | undefined>>): ReadonlySet<string> {
  const value = headers['connection'];
  if (value === undefined || (typeof value === 'string' && namesNothingMore(value))) return NOTHING_MORE;
  const listed = new Set<string>();
  for (const line of Array.isArray(value) ? value : [value]) {
    for (const token of line.split(',')) {
      const name = token.trim().toLowerCase();
      if (name !== '') listed.add(name);
    }
  }
  return listed;
}
