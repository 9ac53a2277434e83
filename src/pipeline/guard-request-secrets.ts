/**
 * Stage 2b: what the agent sends must not carry secrets. Two checks on the request target (as sent and
 * as decoded) and every header value, before anything is decided or forwarded:
 *  - the value of a credential Airlock manages, in any of its encodings: an agent holding a real key is
 *    refused (400) and the audit record names the credential reference, so it can be rotated;
 *  - an Airlock agent token anywhere but the carrier headers (in the query string, in a custom header):
 *    those would be forwarded upstream and leak the agent's own credential to a third party.
 * The body gets the first check while it streams (request-body.ts), holding back only the bytes of a
 * live partial match, so no byte of a secret is forwarded before it is recognized.
 */
import { decodeEscape, PERCENT_ESCAPE } from '../ingress/percent-escapes.js';
import { AirlockError, OperatorReason, operatorReason } from '../errors.js';
import { JWT_IN_TEXT, TOKEN_IN_TEXT } from '../identity/agent-token.js';
import { TOKEN_CARRIER_HEADERS } from '../identity/token-carriers.js';
import type { SecretIndex } from '../redaction/secret-catalog.js';
import { SecretDetector } from '../redaction/secret-detector.js';
import type { CanonicalTarget } from './canonicalize-target.js';
import type { ProxyRuntime } from './proxy-runtime.js';

/** Every "+" of a query, which a form parser reads as a space (for replace). */
const PLUS = /\+/g;

// Agent and session tokens alike: a session token forwarded upstream leaks a credential as much as an
// agent token does (TOKEN_IN_TEXT, shared with the session and admin bodies).

/**
 * The target as sent, plus what it says once decoded, when that differs: the canonical path (escapes of
 * unreserved characters decoded, canonicalize-target.ts) and the query with every escape decoded. The
 * forms of a secret include its whole and its minimal percent-encoding, not every mix of escaped and
 * literal characters: "%73k-live-..." matched none of them, and its canonical path, which the pipeline
 * goes on to use (approvals, routes), held the key as written.
 */
export function decodedTarget(target: string, canonical: CanonicalTarget): string {
  let text = target;
  const questionMark = target.indexOf('?');
  const sentPath = questionMark === -1 ? target : target.slice(0, questionMark);
  if (canonical.path !== sentPath) text += `\n${canonical.path}`;
  // The path's escapes decoded too: a canonical path keeps %2F (and other reserved escapes) beside raw
  // characters, and no form of a secret mixes an escaped "/" with a raw "+" (found by review: an
  // AWS-shaped base64 key sent as `…%2F…+…` went upstream once %2F was accepted).
  if (canonical.path.includes('%')) text += `\n${canonical.path.replace(PERCENT_ESCAPE, decodeEscape)}`;
  // Each escape as its byte, read as Latin-1: the secrets' forms are compared as bytes (ASCII keys exactly).
  if (canonical.query !== null && canonical.query.includes('%')) text += `\n${canonical.query.replace(PERCENT_ESCAPE, decodeEscape)}`;
  // And read as a form, "+" a space (WHATWG URLSearchParams, Rack, PHP, Python's parse_qs): a secret
  // holding a space sent as jQuery.param writes it (`correct+horse!battery`: "!" raw, which every
  // form-encoded form escapes) matched no form, and reached an upstream that reads it so (found by review).
  // The "+" first, so that an escaped "%2B" stays a "+".
  if (canonical.query !== null && canonical.query.includes('+')) text += `\n${canonical.query.replace(PLUS, ' ').replace(PERCENT_ESCAPE, decodeEscape)}`;
  return text;
}

/** What a request is checked against: every managed value but those the guard exempts (identifiers). */
export function managedSecrets(runtime: Pick<ProxyRuntime, 'catalog' | 'guard'>): SecretIndex {
  return runtime.catalog.index(runtime.guard.key, null, [], runtime.guard.exempt);
}

/** The reference of a managed credential whose value (in one of its forms) the text holds, or null. */
export function managedSecretIn(runtime: Pick<ProxyRuntime, 'catalog' | 'guard'>, text: string): string | null {
  return SecretDetector.findIn(managedSecrets(runtime), text);
}

/**
 * The target (decodedTarget) and every header, names too (node takes a token or a key as a header name,
 * and the name is forwarded; found by review), one per line; a value holding an escape is read decoded
 * as well. Found by review: `Cookie: note=%73k-…` matched no form of the key and was forwarded, while
 * the cookie parsers of Express, Rack and PHP decode a cookie's escapes and hand the upstream the key.
 */
function carriedText(target: string, rawHeaders: readonly string[]): string {
  let carried = target;
  for (let i = 0; i < rawHeaders.length; i += 2) {
    const value = rawHeaders[i + 1] as string;
    carried += `\n${rawHeaders[i] as string}\n${value}`;
    const decoded = decodedValue(value);
    if (decoded !== null) carried += `\n${decoded}`;
  }
  return carried;
}

/** A header value with each escape read as its byte (Latin-1), or null when it holds no "%" (most do not). */
function decodedValue(value: string): string | null {
  return value.includes('%') ? value.replace(PERCENT_ESCAPE, decodeEscape) : null;
}

export function guardRequestSecrets(index: SecretIndex, target: string, rawHeaders: readonly string[]): void {
  // A token cannot span the pieces (none of its characters is a line break), so each piece is tested on
  // its own rather than joined into a second string.
  let misplacedToken = TOKEN_IN_TEXT.test(target);
  let presentedJwt = false;
  // carriedText's text, built in this same pass: a value holding an escape is decoded once, for both checks.
  let carried = target;
  for (let i = 0; i < rawHeaders.length; i += 2) {
    const name = rawHeaders[i] as string;
    const value = rawHeaders[i + 1] as string;
    const decoded = decodedValue(value);
    carried += `\n${name}\n${value}`;
    if (decoded !== null) carried += `\n${decoded}`;
    const carrier = TOKEN_CARRIER_HEADERS.has(name.toLowerCase());
    if (carrier && value.includes('eyJ')) presentedJwt = true;
    // The decoded value too (found by review): `X-Note: alk%5F…` or `Cookie: t=alk%5F…` has no token's
    // shape as sent and was forwarded, while a cookie parser (Express, Rack, PHP) hands the upstream the token.
    if (!misplacedToken) misplacedToken = TOKEN_IN_TEXT.test(name) || (!carrier && (TOKEN_IN_TEXT.test(value) || (decoded !== null && TOKEN_IN_TEXT.test(decoded))));
  }
  const ref = SecretDetector.findIn(index, carried);
  if (ref !== null) throw carriesManagedSecret(ref);
  if (!misplacedToken && presentedJwt) misplacedToken = jwtRepeated(target, rawHeaders);
  if (misplacedToken) {
    throw new AirlockError('invalid_request', 'An Airlock agent or session token appears in the query string, the path or a header that is not an API-key header (or the workload JWT sent as the API key appears there again); it would be forwarded upstream. Send it only as the API key (Authorization, x-api-key, api-key).');
  }
}

/**
 * A refusal at authentication (401, or the revocation, lockdown and shared-state checks beside it) for a
 * request that carries the value of a managed credential: the
 * same answer (the caller learns nothing it could test values with), and the record names the
 * credential and the incident, the log line a warning. Found by the SDK walkthrough: the likeliest leak,
 * an agent still sending the provider's real key as its API key, left a 401 with no reason at `info`,
 * while the same key beside a valid token was an incident. Only refusals pay for the scan.
 */
export function noteHeldSecret(failure: unknown, index: SecretIndex, target: string, rawHeaders: readonly string[]): unknown {
  if (!(failure instanceof AirlockError) || failure.credentialRef !== null) return failure;
  const ref = SecretDetector.findIn(index, carriedText(target, rawHeaders));
  if (ref === null) return failure;
  // Any refusal of this step, not only a 401 (found by review: a lockdown's 503 locked_down, or a stale
  // shared state's, left the key's holder unnamed, though the request was refused before its scan).
  const incident =
    failure.code === 'unauthenticated'
      ? `A request without a valid Airlock credential carried the value of ${ref} (the provider's real key, sent as the API key?)`
      : `A request refused before its secrets were checked (${failure.code}) carried the value of ${ref}`;
  return withHeldSecret(failure, ref, `${incident}: whoever sent it holds that key. Rotate ${ref} and find how it got out.`);
}

/**
 * The same for a request refused before authentication, for its shape (checkRequestShape: 400, 431) or
 * its target (canonicalizeTarget: `GET /svc/v1//<key>`): found by review, such a refusal forwarded
 * nothing but did not tell the operator that a real key was in an agent's hands, while the same key
 * sent without a token did. There is no canonical target, so the target as sent is read as
 * decodedTarget reads one, its escapes decoded (`//%73k-…`). The answer stays as it was.
 */
export function noteHeldSecretBeforeAuthentication(failure: unknown, index: SecretIndex, sentTarget: string, rawHeaders: readonly string[]): unknown {
  if (!(failure instanceof AirlockError) || failure.credentialRef !== null) return failure;
  const questionMark = sentTarget.indexOf('?');
  const asSent: CanonicalTarget = questionMark === -1 ? { path: sentTarget, query: null } : { path: sentTarget.slice(0, questionMark), query: sentTarget.slice(questionMark + 1) };
  const ref = SecretDetector.findIn(index, carriedText(decodedTarget(sentTarget, asSent), rawHeaders));
  if (ref === null) return failure;
  // The code, not the detail: a detail may quote what was sent (`Expect: …`), which the record must not hold.
  return withHeldSecret(failure, ref, `A request refused before authentication (${failure.code}) carried the value of ${ref}: whoever sent it holds that key. Rotate ${ref} and find how it got out.`);
}

/** The refusal as it was (code, detail, headers), naming the credential, with the incident as its operator reason. */
function withHeldSecret(failure: AirlockError, ref: string, incident: string): AirlockError {
  // The refusal's own reason (a workload JWT refused, and why) is kept beside it.
  const refused = operatorReason(failure);
  return new AirlockError(failure.code, failure.detail, {
    headers: { ...failure.headers },
    extensions: { ...failure.extensions },
    eventStream: failure.eventStream,
    probing: failure.probing,
    credentialRef: ref,
    cause: new OperatorReason(`${incident}${refused === null ? '' : ` It was refused because: ${refused}`}`, { alert: true, cause: failure.cause }),
  });
}

/**
 * Whether a JWT presented as the API key (a workload JWT) appears again in the target or in another
 * header: forwarded there, it would hand the agent's credential to the upstream as an agent token would
 * (found by review: it reached the upstream, and the audit record's path). Other JWTs pass: an API may
 * take a JWT of its own in a parameter.
 */
function jwtRepeated(target: string, rawHeaders: readonly string[]): boolean {
  const presented: string[] = [];
  for (let i = 0; i < rawHeaders.length; i += 2) {
    if (!TOKEN_CARRIER_HEADERS.has((rawHeaders[i] as string).toLowerCase())) continue;
    for (const jwt of (rawHeaders[i + 1] as string).match(JWT_IN_TEXT) ?? []) presented.push(jwt);
  }
  if (presented.length === 0) return false;
  const holds = (text: string): boolean => presented.some((jwt) => text.includes(jwt));
  if (holds(target)) return true;
  for (let i = 0; i < rawHeaders.length; i += 2) {
    const name = rawHeaders[i] as string;
    if (holds(name)) return true;
    if (TOKEN_CARRIER_HEADERS.has(name.toLowerCase())) continue;
    // Read decoded too, as for agent tokens (`Cookie: jwt=eyJ…%2E…` reaches a cookie parser whole).
    const value = rawHeaders[i + 1] as string;
    const decoded = decodedValue(value);
    if (holds(value) || (decoded !== null && holds(decoded))) return true;
  }
  return false;
}

/**
 * The refusal of a request that carries a managed credential's value (in its target or headers, or,
 * found while it streams, in its body); the audit record names the reference.
 */
export function carriesManagedSecret(ref: string, where: 'request' | 'request body' = 'request'): AirlockError {
  return new AirlockError(
    'invalid_request',
    `The ${where} carries the value of the credential ${ref}, which Airlock manages; agents must not hold real keys. It was not forwarded. An operator should rotate ${ref} and find how the agent got it.`,
    // An agent holding a real key is an incident, not a malformed request (found by review: it was an
    // `info` line with no reason): the record says so, and the log line is a warning.
    { credentialRef: ref, cause: new OperatorReason(`The agent sent the value of ${ref} in its ${where}: it holds a real key. Rotate ${ref} and find how the agent got it.`, { alert: true }) },
  );
}
