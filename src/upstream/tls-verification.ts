/**
 * Certificates are always verified on the connections Airlock sets up (upstreams, Vault, OAuth2 token
 * endpoints). Node verifies a TLS peer unless told not to, and NODE_TLS_REJECT_UNAUTHORIZED=0 in the
 * environment tells it not to for every connection that does not say otherwise (tls.connect reads it
 * at each connect): a variable left over from a development shell would have Airlock send credentials
 * to, and take keys and tokens from, whoever answers. So these connections ask for verification
 * themselves, and start-up refuses the variable (assess-environment.ts) for the libraries' own. A
 * private CA is trusted by naming it (a service's `ca`, `secrets.vault.ca_file`, an OAuth2 client's
 * `ca`, or NODE_EXTRA_CA_CERTS), never by switching checks off.
 */

/** Spread into every TLS connect option Airlock builds. */
export const VERIFY_PEER = { rejectUnauthorized: true } as const;
