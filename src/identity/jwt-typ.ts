/**
 * Explicit typing of workload JWTs (RFC 8725 3.11): the `typ` header says what kind of JWT a token is.
 * An issuer signs several kinds with the same keys, and some of them may carry the issuer, audience and
 * subject an agent's rules ask for without being meant as a credential: OpenID back-channel logout
 * tokens (`logout+jwt`), security event tokens (`secevent+jwt`, RFC 8417), token introspection answers
 * (`token-introspection+jwt`, RFC 9701), DPoP proofs (`dpop+jwt`, RFC 9449). An agent accepts the kinds
 * its `typ` lists, by default those Airlock took before the check existed and the access-token kinds:
 *
 * - `JWT`, which RFC 7519 5.1 makes optional, so a token without `typ` counts as `JWT` (Kubernetes
 *   service-account tokens carry none; GitHub's and most OIDC providers' say `JWT`);
 * - `JOSE`, which a SPIFFE JWT-SVID may carry (JWT-SVID 3: `JWT` or `JOSE`);
 * - `at+jwt`, an RFC 9068 access token.
 *
 * Values are compared as RFC 7515 4.1.9 says: media types are case-insensitive, and one without a `/` is
 * read with `application/` before it (`at+jwt` is `application/at+jwt`).
 */

/** The default of agents.NAME.jwt.typ. */
export const DEFAULT_JWT_TYP: readonly string[] = Object.freeze(['JWT', 'JOSE', 'at+jwt']);

/** A media type as RFC 6838 4.2 names one (restricted-name), `application/` optional, without parameters. */
export const JWT_TYP_PATTERN = /^[A-Za-z0-9][A-Za-z0-9!#$&^_.+-]{0,126}(?:\/[A-Za-z0-9][A-Za-z0-9!#$&^_.+-]{0,126})?$/;

/** `typ` in one spelling (RFC 7515 4.1.9): lower case, with `application/` when no type is given. */
export function normalizeTyp(typ: string): string {
  const lower = typ.toLowerCase();
  return lower.includes('/') ? lower : `application/${lower}`;
}

const JWT = normalizeTyp('JWT');

/** The accepted values of a `typ` list, normalized, sorted: equal for lists that accept the same tokens. */
export function typKey(typ: readonly string[]): string[] {
  return [...new Set(typ.map(normalizeTyp))].sort();
}

/** Whether the default list is in force (written out or left out), for digests that must not change with it. */
export function isDefaultTyp(typ: readonly string[]): boolean {
  const mine = typKey(typ);
  const usual = typKey(DEFAULT_JWT_TYP);
  return mine.length === usual.length && mine.every((value, index) => value === usual[index]);
}

/**
 * A test of a token's `typ` header against `accepted`, and how to say the list in a reason (the values as
 * the operator wrote them, never the token's own: it is the caller's text).
 */
export function typAcceptor(accepted: readonly string[]): { accepts(typ: unknown): boolean; readonly described: string } {
  const set = new Set(accepted.map(normalizeTyp));
  return {
    accepts(typ) {
      if (typ === undefined) return set.has(JWT);
      return typeof typ === 'string' && typ !== '' && set.has(normalizeTyp(typ));
    },
    described: accepted.map((value) => (normalizeTyp(value) === JWT ? `${value} or none` : value)).join(', '),
  };
}
