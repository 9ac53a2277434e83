/**
 * The agent's address when Airlock runs behind a load balancer or ingress (`trusted_proxies`): the
 * peer is the proxy, and the agent is in X-Forwarded-For. Read as nginx's real_ip_recursive and
 * Envoy's xff_num_trusted_hops do, from the right: each hop a trusted proxy appended is skipped, and
 * the first address that is not a trusted proxy is the client. Anything left of it was written by the
 * client itself and is never believed. With no trusted proxies (the default), or a peer that is not
 * one, the header is ignored and the peer is the client: an agent cannot choose the address its audit
 * records, its anomaly rules (new_client_address) and its spans name.
 */
import { BlockList, isIP } from 'node:net';

export type ResolveClientAddress = (peer: string | undefined, forwardedFor: string | string[] | undefined) => string | undefined;

/** Builds the resolver once per configuration; `trusted` holds addresses and CIDR ranges, validated by the schema. */
export function createClientAddressResolver(trusted: readonly string[]): ResolveClientAddress {
  // The peer in one spelling: a dual-stack listener (`[::]:7700`) reports an IPv4 agent as
  // ::ffff:a.b.c.d, an IPv4 one as a.b.c.d (found by review: one agent's records and spans named two
  // addresses, and a search by address found half of them).
  if (trusted.length === 0) return function peerAddress(peer) {
    return peer === undefined ? peer : unmapped(peer);
  };
  const list = new BlockList();
  for (const entry of trusted) {
    const [address, bits] = entry.split('/') as [string, string | undefined];
    const family = isIP(address) === 6 ? 'ipv6' : 'ipv4';
    if (bits === undefined) list.addAddress(address, family);
    else list.addSubnet(address, Number(bits), family);
  }
  const isTrusted = (address: string): boolean => {
    const plain = unmapped(address);
    const family = isIP(plain);
    return family !== 0 && list.check(plain, family === 6 ? 'ipv6' : 'ipv4');
  };
  return function forwardedClientAddress(peer, forwardedFor) {
    if (peer === undefined || !isTrusted(peer)) return peer === undefined ? peer : unmapped(peer);
    const hops = (Array.isArray(forwardedFor) ? forwardedFor.join(',') : (forwardedFor ?? '')).split(',');
    let client = unmapped(peer);
    for (let i = hops.length - 1; i >= 0; i--) {
      const hop = bareAddress((hops[i] as string).trim());
      // Not an address (garbage, or an obfuscated identifier): the last trusted hop is as far as it goes.
      if (hop === null) break;
      client = hop;
      if (!isTrusted(hop)) break;
    }
    return client;
  };
}

/** An IPv4 address a dual-stack socket reports as ::ffff:a.b.c.d, as written in config. */
function unmapped(address: string): string {
  return address.startsWith('::ffff:') && isIP(address.slice(7)) === 4 ? address.slice(7) : address;
}

/** The address of one X-Forwarded-For element: a bare IP, or [v6]:port / v4:port as some proxies write. */
function bareAddress(hop: string): string | null {
  if (isIP(hop) !== 0) return unmapped(hop);
  const bracketed = /^\[([^\]]+)\](?::\d{1,5})?$/.exec(hop);
  if (bracketed !== null && isIP(bracketed[1] as string) === 6) return unmapped(bracketed[1] as string);
  const withPort = /^([0-9.]+):\d{1,5}$/.exec(hop);
  if (withPort !== null && isIP(withPort[1] as string) === 4) return withPort[1] as string;
  return null;
}
