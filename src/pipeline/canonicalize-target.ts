/**
 * Stage 1: the request target, canonical or rejected (invariant 3).
 *
 * Only origin-form targets are accepted (RFC 9112 3.2.1). The path is then held to one canonical
 * spelling: percent-escapes of unreserved characters are decoded and other escapes upper-cased
 * (RFC 3986 6.2.2.1-2); everything that upstream servers and frameworks are known to interpret
 * differently is refused instead of guessed at - dot segments raw or encoded, "//", encoded "\"
 * (CVE-2021-22911-style path confusion), raw "\", ";"
 * and its escape %3B (matrix parameters, Tomcat's ..;/ CVE-2020-1938 family), "%25" (double encoding), control
 * characters, invalid or overlong UTF-8, characters that NFKC-normalize to "/", "\" or "." (fullwidth
 * forms), and slash look-alikes that NFKC keeps (U+2215 and kin). The query is kept as sent: it is not matched, only forwarded.
 *
 * An encoded slash (%2F) is data inside a segment, as GitHub reads it (octokit sends a file's path in one
 * segment, `contents/docs%2FREADME.md`), but upstreams disagree on whether it separates segments
 * (Envoy's path_with_escaped_slashes_action), so the path must read safely both ways: split at each %2F
 * too, no piece may be empty or a dot segment (so a server that decodes it gets no "//", "." or ".."),
 * and the route stage requires both readings to select the same route (match-route.ts).
 */
import { AirlockError } from '../errors.js';
import { isUnreserved } from '../ingress/percent-escapes.js';

export interface CanonicalTarget {
  /** Canonical path, starts with "/". */
  readonly path: string;
  /** Raw query without "?", or null when there was no "?". */
  readonly query: string | null;
}

/** How an encoded slash is spelled in a canonical path (escapes are upper-cased). */
export const ENCODED_SLASH = '%2F';

const HEX = '0123456789ABCDEF';

function hexValue(code: number): number {
  if (code >= 0x30 && code <= 0x39) return code - 0x30;
  if (code >= 0x41 && code <= 0x46) return code - 0x37;
  if (code >= 0x61 && code <= 0x66) return code - 0x57;
  return -1;
}

/** A path servers could read differently: probing (errors.ts AirlockError.probing). */
function reject(detail: string): never {
  throw new AirlockError('invalid_request', detail, { probing: true });
}

/**
 * A target that is no path at all (absolute-form, asterisk-form): a client set up to use Airlock as its
 * HTTP proxy, a setup mistake the detail names. Not probing, as CONNECT (the other proxy form, refused on
 * the raw connection) is not (found by review: an agent with HTTP_PROXY pointed here was suspended by
 * denial_burst after 30 such requests).
 */
function refuseForm(detail: string): never {
  throw new AirlockError('invalid_request', detail);
}

const utf8 = new TextDecoder('utf-8', { fatal: true });

export function canonicalizeTarget(target: string): CanonicalTarget {
  if (target === '*') refuseForm('The request target "*" (asterisk-form) is not accepted; send a path such as /v1/models.');
  if (target.charCodeAt(0) !== 0x2f) {
    refuseForm('The request target must be a path starting with "/" (origin-form); absolute URLs and host:port targets are refused. Point your SDK base URL at Airlock instead of using it as an HTTP proxy.');
  }
  const questionMark = target.indexOf('?');
  const rawPath = questionMark === -1 ? target : target.slice(0, questionMark);
  const query = questionMark === -1 ? null : target.slice(questionMark + 1);

  for (let i = 0; i < target.length; i++) {
    const code = target.charCodeAt(i);
    if (code <= 0x20 || code === 0x7f) reject('The request target contains a control character or space; percent-encode it.');
    if (code > 0x7e) reject('The request target contains a raw non-ASCII byte; percent-encode it as UTF-8.');
    if (code === 0x23) reject('The request target contains "#"; fragments are never sent to servers, percent-encode it as %23 if it is data.');
  }
  if (rawPath.includes('//')) reject('The request path contains an empty segment ("//"); remove the doubled slash.');
  if (rawPath.includes('\\')) reject('The request path contains a backslash; upstreams disagree on whether it separates segments. Percent-encoding it is refused too.');
  if (rawPath.includes(';')) reject('The request path contains ";" (matrix parameters), which upstream frameworks interpret differently; it is refused.');

  let out = '';
  let runStart = 0;
  let sawHighByte = false;
  for (let i = 0; i < rawPath.length; i++) {
    if (rawPath.charCodeAt(i) !== 0x25) continue;
    const high = hexValue(rawPath.charCodeAt(i + 1));
    const low = hexValue(rawPath.charCodeAt(i + 2));
    if (high < 0 || low < 0) reject('The request path contains "%" that does not start a valid %XX escape.');
    const byte = high * 16 + low;
    if (byte === 0x5c) reject('The request path contains an encoded backslash (%5C); upstreams disagree on whether it separates segments, so it is refused.');
    if (byte === 0x25) reject('The request path contains "%25", an escaped "%" (double encoding); it is refused.');
    if (byte < 0x20 || byte === 0x7f) reject('The request path contains an encoded control character (such as %00); it is refused.');
    // Servlet containers decode %3B before splitting off path parameters, so "..%3B/" is Tomcat's "..;/".
    if (byte === 0x3b) reject('The request path contains an encoded ";" (%3B), which some upstream frameworks treat as a path parameter separator; it is refused.');
    out += rawPath.slice(runStart, i);
    if (isUnreserved(byte)) out += String.fromCharCode(byte);
    else out += `%${HEX[high]}${HEX[low]}`;
    if (byte >= 0x80) sawHighByte = true;
    runStart = i + 3;
    i += 2;
  }
  const path = runStart === 0 ? rawPath : out + rawPath.slice(runStart);

  // Dot segments after decoding, so %2e%2e is caught as "..".
  let segmentStart = 1;
  for (let i = 1; i <= path.length; i++) {
    if (i !== path.length && path.charCodeAt(i) !== 0x2f) continue;
    const length = i - segmentStart;
    if ((length === 1 && path.charCodeAt(segmentStart) === 0x2e) || (length === 2 && path.charCodeAt(segmentStart) === 0x2e && path.charCodeAt(segmentStart + 1) === 0x2e)) {
      reject('The request path contains a dot segment ("." or "..", raw or encoded); send the resolved path.');
    }
    segmentStart = i + 1;
  }
  if (path.includes(ENCODED_SLASH)) checkEncodedSlashes(path);

  if (sawHighByte) checkUnicode(path);
  return { path, query };
}

/**
 * A path read with each %2F as a separator (as a server that decodes it before routing does) must still
 * be canonical: no empty piece (`a%2F%2Fb`, `%2Fetc`, a segment ending in %2F) and no dot piece
 * (`..%2Fadmin`, `x%2F.%2Fy`), raw or encoded (escapes of "." were decoded above).
 */
function checkEncodedSlashes(path: string): void {
  // A trailing "/" (an empty last segment) is canonical as it was; only the pieces of a segment are checked.
  for (const piece of path.slice(1).split('/').flatMap((segment) => (segment === '' ? [] : segment.split(ENCODED_SLASH)))) {
    if (piece === '') reject('The request path contains an encoded slash (%2F) at the start or end of a segment, or two together; read as a separator it makes an empty segment, so it is refused.');
    if (piece === '.' || piece === '..') reject('The request path contains a dot segment between encoded slashes (such as ..%2F); read as separators they make a dot segment, so it is refused.');
  }
}

/**
 * Slashes that NFKC leaves as they are but Windows' "best fit" conversions and some servers' Unicode
 * folding turn into "/" or "\\" (the WorstFit research, 2025; U+2215 in IIS path confusion): U+2215
 * DIVISION SLASH, U+2044 FRACTION SLASH, U+29F8 BIG SOLIDUS, U+2216 SET MINUS, U+29F9 BIG REVERSE
 * SOLIDUS. No API path needs them.
 */
const SLASH_LOOKALIKES = /[\u2215\u2044\u29f8\u2216\u29f9]/;

function checkUnicode(path: string): void {
  const bytes: number[] = [];
  for (let i = 0; i < path.length; i++) {
    const code = path.charCodeAt(i);
    if (code === 0x25) {
      bytes.push(parseInt(path.slice(i + 1, i + 3), 16));
      i += 2;
    } else {
      bytes.push(code);
    }
  }
  let decoded: string;
  try {
    decoded = utf8.decode(Uint8Array.from(bytes));
  } catch {
    reject('The request path is not valid UTF-8 once decoded (overlong or truncated sequences are refused).');
  }
  if (SLASH_LOOKALIKES.test(decoded)) {
    reject('The request path contains a character that looks like "/" or "\\" (division slash, fraction slash, set minus, big solidus); some servers map them to "/" and "\\", so they are refused.');
  }
  for (const segment of decoded.split('/')) {
    const normalized = segment.normalize('NFKC');
    if (normalized === segment) continue;
    if (/[/\\%;?#]/.test(normalized) || normalized === '.' || normalized === '..') {
      reject('The request path contains characters that Unicode normalization (NFKC) turns into "/", "\\", "%", ";" or a dot segment, such as fullwidth forms; they are refused.');
    }
  }
}
