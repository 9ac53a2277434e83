/**
 * Certificates are always verified on the connections Airlock makes.
 *
 * Node verifies a TLS peer unless told not to, and NODE_TLS_REJECT_UNAUTHORIZED=0 in the environment
 * tells it not to for every connection that does not say otherwise (Node's tls.connect reads it on
 * each connect). A variable left over from a development shell would have Airlock send credentials
 * to, and take keys and tokens from, whoever answers. So the connections Airlock configures itself
 * (upstreams, Vault, OAuth2 token endpoints) ask for verification explicitly, and start-up refuses the
 * variable outright, since libraries' own connections (JWKS, webhooks, the OTLP exporter, Redis) would
 * still obey it. A private CA is trusted by naming it (a service's `ca`, `secrets.vault.ca_file`, an
 * OAuth2 client's `ca`, or NODE_EXTRA_CA_CERTS), never by switching checks off.
 */

/** Spread into every TLS connect option Airlock builds. */
export const VERIFY_PEER = { rejectUnauthorized: true } as const;

/** Throws, saying what to do, when the environment switches certificate checks off. */
export function assertCertificatesVerified(env: Readonly<Record<string, string | undefined>>): void {
  if (env['NODE_TLS_REJECT_UNAUTHORIZED'] !== '0') return;
  throw new Error(
    'NODE_TLS_REJECT_UNAUTHORIZED=0 is set, which turns off certificate checks for TLS connections, and Airlock sends credentials over them and trusts the keys it fetches. ' +
      "Unset it; to trust a private CA, name it: a service's ca:, secrets.vault.ca_file, an OAuth2 client's ca:, or NODE_EXTRA_CA_CERTS.",
  );
}
