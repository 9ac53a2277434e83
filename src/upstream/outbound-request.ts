/**
 * The request Airlock is about to send upstream: method, the authorized path, the query as sent, and
 * headers as an ordered list of lower-case name/value pairs (repeats kept, as undici takes them).
 */

export class OutboundRequest {
  readonly method: string;
  /** Base path of the upstream + the authorized canonical path; never re-normalized. */
  readonly path: string;
  /** Raw query without "?", or null when the target had no "?". */
  query: string | null;
  readonly headers: string[] = [];

  constructor(method: string, path: string, query: string | null) {
    this.method = method;
    this.path = path;
    this.query = query;
  }

  addHeader(name: string, value: string): void {
    this.headers.push(name, value);
  }

  /**
   * Removes every copy of a header, spelled with "_" for "-" too (CGI-style servers read both as one:
   * an agent's x_api_key next to the injected x-api-key overwrote it; CVE-2024-45614). `name` is lower
   * case.
   */
  removeHeader(name: string): void {
    const headers = this.headers;
    let write = 0;
    for (let read = 0; read < headers.length; read += 2) {
      const present = headers[read] as string;
      if (present === name || (present.includes('_') && present.replaceAll('_', '-') === name)) continue;
      headers[write] = headers[read] as string;
      headers[write + 1] = headers[read + 1] as string;
      write += 2;
    }
    headers.length = write;
  }

  /** Replaces every copy of a header with one value: the injected credential is set this way, last. */
  setHeader(name: string, value: string): void {
    this.removeHeader(name);
    this.headers.push(name, value);
  }

  hasHeader(name: string): boolean {
    for (let i = 0; i < this.headers.length; i += 2) if (this.headers[i] === name) return true;
    return false;
  }

  /**
   * Removes every query parameter whose decoded key equals `key` ignoring case (also as "key[]" or
   * "key[0]", which PHP, Rails and qs read as the same parameter). Both "&" and ";" are
   * treated as separators here, because some frameworks split on ";" (query parameter pollution):
   * a stripped key must not survive behind a separator we did not consider.
   */
  removeQueryKey(key: string): void {
    if (this.query === null || this.query === '') return;
    const wanted = key.toLowerCase();
    const pieces = this.query.split(QUERY_PAIR_SEPARATORS);
    const kept: string[] = [];
    for (let i = 0; i < pieces.length; i += 2) {
      const part = pieces[i] as string;
      if (formKeyName(part) === wanted) continue;
      if (kept.length > 0) kept.push((pieces[i - 1] as string | undefined) ?? '&');
      kept.push(part);
    }
    this.query = kept.length === 0 ? null : kept.join('');
  }

  appendQueryParam(key: string, value: string): void {
    const pair = `${encodeURIComponent(key)}=${encodeURIComponent(value)}`;
    this.query = this.query === null || this.query === '' ? pair : `${this.query}&${pair}`;
  }

  /** The request target sent on the wire. */
  target(): string {
    return this.query === null ? this.path : `${this.path}?${this.query}`;
  }
}

/**
 * Where a query splits into pairs, as removeQueryKey splits it ("&" and ";"), the separators captured:
 * the approval preview splits a query with it and masks the value of each pair removeQueryKey removes
 * (preview-request.ts).
 */
export const QUERY_PAIR_SEPARATORS = /([&;])/;

/** PHP, Rails and qs read "key[]" and "key[0]" as the parameter "key": strip bracket suffixes too. */
/** The name a form or query pair's key is read as: decoded, without a [] or [0] suffix, lower case. */
export function formKeyName(part: string): string {
  return baseKey(decodedQueryKey(part)).toLowerCase();
}

function baseKey(key: string): string {
  const bracket = key.indexOf('[');
  return bracket > 0 ? key.slice(0, bracket) : key;
}

/** application/x-www-form-urlencoded key decoding ("+" is a space), lenient on bad escapes. */
function decodedQueryKey(part: string): string {
  const eq = part.indexOf('=');
  const raw = (eq === -1 ? part : part.slice(0, eq)).replace(/\+/g, ' ');
  if (!raw.includes('%')) return raw;
  try {
    return decodeURIComponent(raw);
  } catch {
    return raw.replace(/%([0-9A-Fa-f]{2})/g, (_m, hex: string) => String.fromCharCode(parseInt(hex, 16)));
  }
}
