/**
 * What node's HTTP parser lets through, by its version. Node 20 before 20.19.2 bundles llhttp 8, which
 * reads a header name with a space before its colon (`X-A : y`, as `X-A `) and an empty name (`: y`)
 * where llhttp 9 refuses both (HPE_INVALID_HEADER_TOKEN): a front proxy that drops or joins such a line
 * sees other headers than Airlock does, the ground of request smuggling (RFC 9112 section 5.1: "No
 * whitespace is allowed between the field name and colon"; a server MUST reject such a message). The
 * engines field allows Node 20.18.1, so on llhttp 8 the pipeline checks every name itself (found by
 * running the suite on Node 20.18.1). What llhttp 8 also takes and cannot be seen after parsing (a
 * header section ended by CR CR LF, a Content-Length in a chunked body's trailer) never reaches an
 * upstream, as Airlock sends every request re-framed and no trailer: the README says to prefer
 * Node 20.19.2 or later behind another proxy.
 */

/** Whether this llhttp version (process.versions.llhttp) reads malformed header names; unknown counts as yes. */
export function parserReadsMalformedNames(llhttpVersion: string | undefined): boolean {
  const major = Number.parseInt(llhttpVersion ?? '', 10);
  return !(major >= 9);
}

/** RFC 9110 section 5.6.2 token characters. */
const TOKEN = /^[!#$%&'*+\-.^_`|~0-9A-Za-z]+$/;

/** Whether some field name of these raw headers (name, value, name, value, ...) is not a token. */
export function hasMalformedName(rawHeaders: readonly string[]): boolean {
  for (let i = 0; i < rawHeaders.length; i += 2) if (!TOKEN.test(rawHeaders[i] as string)) return true;
  return false;
}
