/**
 * The request Airlock is about to send upstream: method, the authorized path, the query as sent, and
 * headers as an ordered list of lower-case name/value pairs (repeats kept, as undici takes them).
 */

/**
 * A lower-case header name as CGI-style servers read it (Rack/Puma, PHP-CGI, older gunicorn): "_" and
 * "-" are one variable (HTTP_X_API_KEY), so x_api_key and x-api-key are one header to them
 * (CVE-2024-45614). Every check of a header by name that the upstream will read compares this form.
 */
export function cgiHeaderName(name: string): string {
  return name.includes('_') ? name.replaceAll('_', '-') : name;
}

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
   * case, and is read the same way: a configured name may hold "_" itself (a token, RFC 9110 5.1), and
   * compared as written it matched no agent copy, not even one spelled exactly so (found by review).
   */
  removeHeader(name: string): void {
    const key = cgiHeaderName(name);
    const headers = this.headers;
    let write = 0;
    for (let read = 0; read < headers.length; read += 2) {
      const present = headers[read] as string;
      if (cgiHeaderName(present) === key) continue;
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
   * Removes every query parameter a mainstream parser reads as `key`, ignoring case: every spelling
   * formKeyNames knows ("key[]", "key[0]", "[key]", "k%65y", " key", "key%00x", and for "a_key" also
   * "a.key" and "a[key", as PHP names them). Both "&" and ";" are treated as separators here, because
   * some frameworks split on ";" (query parameter pollution): a stripped key must not survive behind a
   * separator we did not consider.
   */
  removeQueryKey(key: string): void {
    this.removeQueryKeys(queryKeyNameSet([key]));
  }

  /**
   * removeQueryKey for several keys in one pass over the query, each pair's names read once: `names` is
   * queryKeyNameSet of the keys, built once (with the policy, or at load) rather than per request.
   */
  removeQueryKeys(names: ReadonlySet<string>): void {
    if (this.query === null || this.query === '' || names.size === 0) return;
    const pieces = this.query.split(QUERY_PAIR_SEPARATORS);
    let kept: string[] | null = null;
    for (let i = 0; i < pieces.length; i += 2) {
      const part = pieces[i] as string;
      if (formKeyNames(part).some((name) => names.has(name))) {
        // The first removal starts the list of kept pairs; a query with nothing to remove is left as it is.
        kept ??= pieces.slice(0, Math.max(0, i - 1));
        continue;
      }
      if (kept === null) continue;
      if (kept.length > 0) kept.push((pieces[i - 1] as string | undefined) ?? '&');
      kept.push(part);
    }
    if (kept !== null) this.query = kept.length === 0 ? null : kept.join('');
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

/**
 * The names a form or query pair's key (`key=value`, or `key` alone) is read as, lower case: decoded
 * ("+" is a space, %XX escapes), then named by queryKeyNames. Key comparisons go through this (method
 * override keys in the query and in a form body, strip_query keys, agent copies of an injected query
 * key), so a spelling that one framework reads as the key cannot pass as another name.
 */
export function formKeyNames(part: string): readonly string[] {
  return queryKeyNames(decodedQueryKey(part));
}

/** Every name queryKeyNames gives each of `keys`: what removeQueryKeys compares a pair's names with. */
export function queryKeyNameSet(keys: Iterable<string>): ReadonlySet<string> {
  const names = new Set<string>();
  for (const key of keys) for (const name of queryKeyNames(key)) names.add(name);
  return names;
}

/** The first of formKeyNames (the one Rack, qs and Rails give it), or "" when no parser names it. */
export function formKeyName(part: string): string {
  return formKeyNames(part)[0] ?? '';
}

/** ASCII whitespace before a name, dropped for every reading (PHP drops leading spaces). */
const LEADING_WHITESPACE = /^[\t\n\v\f\r ]+/;
/** A character some reading drops, cuts at or replaces: NUL, whitespace, brackets, ".". */
const NAME_CHANGING = /[\0\t\n\v\f\r .[\]]/;
/** bracketName's reading: past leading whitespace and brackets, the name up to the next bracket. */
const BRACKETED_NAME = /^[\t\n\v\f\r [\]]*([^[\]]*)/;

/**
 * The names mainstream parsers give the parameter a decoded key sets, lower case: compared ignoring
 * case, since Slim reads `_METHOD` where Rack and Symfony read `_method`. A key given in config
 * (strip_query, a query credential's key) is read the same way, so both sides of a comparison agree.
 * Found by review (PHP 8.2 with Symfony, Rack 2.2 and 3.2, qs), each spelling reaching the framework as
 * `_method` while the earlier single decoded name did not match it:
 *  - PHP reads a name as a C string (cut at NUL: "_method%00x") and drops leading spaces (" _method");
 *    any leading whitespace is dropped here, for every reading.
 *  - bracketName: a "key[]" or "key[0]" suffix names "key" (PHP, Rack, qs), and a leading bracket run
 *    is read past ("[_method]" is `_method` to Rack 2.2's normalize_params and to qs).
 *  - phpName: PHP's php_register_variable_ex turns "." and " " into "_" (".method", "%2Emethod").
 * Distinct names stay distinct: "payment_method", "method" and "_methods" are none of them `_method`.
 */
export function queryKeyNames(key: string): readonly string[] {
  // Most keys hold none of the characters any reading changes: one name, the key itself.
  if (!NAME_CHANGING.test(key)) return key === '' ? [] : [key.toLowerCase()];
  const nul = key.indexOf('\0');
  const name = (nul === -1 ? key : key.slice(0, nul)).replace(LEADING_WHITESPACE, '');
  const bracketed = bracketName(name).toLowerCase();
  const php = phpName(name).toLowerCase();
  if (php === bracketed || php === '') return bracketed === '' ? [] : [bracketed];
  return bracketed === '' ? [php] : [bracketed, php];
}

/** Rack 2.2 (`\A[\[\]]*([^\[\]]+)\]*`), qs and Rails: past leading brackets, up to the next bracket. */
function bracketName(name: string): string {
  return (BRACKETED_NAME.exec(name) as RegExpExecArray)[1] as string;
}

/**
 * PHP's name (php_register_variable_ex, main/php_variables.c): "." and " " become "_" up to the first
 * "["; a name that starts with "[" is dropped (""); a "[" closed by a later "]" starts an index, so the
 * name ends there; a "[" that no "]" closes becomes "_", and so do " ", "." and "[" after it ("a[b.c"
 * is `a_b_c`: `session[key` reaches PHP as `session_key`).
 */
function phpName(name: string): string {
  const open = name.indexOf('[');
  const head = (open === -1 ? name : name.slice(0, open)).replace(/[ .]/g, '_');
  if (open === -1 || head === '') return head;
  const rest = name.slice(open + 1);
  return rest.includes(']') ? head : `${head}_${rest.replace(/[ .[]/g, '_')}`;
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
