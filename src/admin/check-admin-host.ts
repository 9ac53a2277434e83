/**
 * The admin listener answers only for its own names: a DNS-rebinding guard (found by review). A web page
 * the operator opens on attacker.example can point that name at 127.0.0.1 and read what the admin
 * listener serves without a token (/metrics: services, route templates, credential references), as the
 * browser takes it for the page's own origin; the Host header still says attacker.example. The token-
 * bearing API is out of reach either way (a token the page does not have), but nothing is answered for
 * a name that is not Airlock's.
 *
 * Accepted without configuration: IP literals (a rebinding needs a name), names without a dot (a
 * Compose or Kubernetes service name, `localhost`), names under the special-use `.localhost` (RFC 6761),
 * `.local` (RFC 6762), `.home.arpa` (RFC 8375) and `.internal` (ICANN's private-use TLD), which nobody
 * can register, and Kubernetes' `.svc` (`airlock.ops.svc`); then admin.listen's and admin.public_url's
 * host and the names in admin.hosts.
 */
import { isIP } from 'node:net';
import { AirlockError } from '../errors.js';

const PRIVATE_SUFFIXES = ['.localhost', '.local', '.home.arpa', '.internal', '.svc'];

/** The names accepted besides the ones every listener answers to, lower case. */
export function adminHostNames(hosts: readonly string[], publicUrl: string | undefined, listenHost: string): ReadonlySet<string> {
  const names = new Set(hosts.map((host) => host.toLowerCase()));
  if (publicUrl !== undefined) names.add(new URL(publicUrl).hostname.toLowerCase());
  // The CLI calls the admin API by the name admin.listen gives (found by review: refused, were it a DNS name).
  names.add(listenHost.toLowerCase());
  return names;
}

/** Throws 400 when the Host header names something other than this listener. */
export function checkAdminHost(host: string | undefined, allowed: ReadonlySet<string>): void {
  const name = hostOf(host ?? '');
  if (name === null || isIP(name) !== 0 || !name.includes('.') || allowed.has(name)) return;
  if (PRIVATE_SUFFIXES.some((suffix) => name.endsWith(suffix))) return;
  // The name is not repeated: it is the caller's text.
  throw new AirlockError('invalid_request', 'The admin API does not answer for the name in this Host header; reach it by IP address or by a name listed in admin.hosts (or admin.public_url).');
}

/** The name in a Host header, lower case, without port or trailing dot; null for an IPv6 literal. */
function hostOf(host: string): string | null {
  if (host.startsWith('[')) {
    const end = host.indexOf(']');
    // Only a real IPv6 address in brackets (found by review: "[attacker.example]" passed as one).
    return end > 0 && isIP(host.slice(1, end)) === 6 ? null : host.toLowerCase();
  }
  const colon = host.lastIndexOf(':');
  const name = (colon >= 0 && /^\d*$/.test(host.slice(colon + 1)) ? host.slice(0, colon) : host).toLowerCase();
  return name.endsWith('.') ? name.slice(0, -1) : name;
}
