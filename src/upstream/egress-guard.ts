/**
 * Egress guard: which addresses an upstream may connect to.
 *
 * The check runs on the address the socket is about to use, inside the DNS lookup that net.connect
 * calls at connect time, so a name that resolves to a public address at start-up and to 169.254.169.254
 * later (DNS rebinding) is still refused. IP literals in config skip DNS and are checked at start-up.
 * Ranges: RFC 6890 special-purpose registries; cloud metadata endpoints per AWS, GCP, Azure, Alibaba docs.
 */
import { lookup as dnsLookup, type LookupAddress, type LookupOptions } from 'node:dns';
import { BlockList, isIPv4, isIPv6 } from 'node:net';

export type AddressClass = 'public' | 'loopback' | 'private' | 'link-local' | 'metadata' | 'reserved';

const METADATA = new Set(['169.254.169.254', '169.254.170.2', '100.100.100.200', '168.63.129.16', 'fd00:ec2::254']);

function buildList(entries: ReadonlyArray<readonly [string, number, 'ipv4' | 'ipv6']>): BlockList {
  const list = new BlockList();
  for (const [net, prefix, type] of entries) list.addSubnet(net, prefix, type);
  return list;
}

const LOOPBACK = buildList([['127.0.0.0', 8, 'ipv4'], ['::1', 128, 'ipv6']]);
const LINK_LOCAL = buildList([['169.254.0.0', 16, 'ipv4'], ['fe80::', 10, 'ipv6']]);
const PRIVATE = buildList([
  ['10.0.0.0', 8, 'ipv4'],
  ['172.16.0.0', 12, 'ipv4'],
  ['192.168.0.0', 16, 'ipv4'],
  ['100.64.0.0', 10, 'ipv4'], // RFC 6598 shared address space (CGNAT)
  ['fc00::', 7, 'ipv6'], // RFC 4193 unique local
]);
const RESERVED = buildList([
  ['0.0.0.0', 8, 'ipv4'],
  ['192.0.0.0', 24, 'ipv4'],
  ['192.0.2.0', 24, 'ipv4'],
  ['198.18.0.0', 15, 'ipv4'],
  ['198.51.100.0', 24, 'ipv4'],
  ['203.0.113.0', 24, 'ipv4'],
  ['224.0.0.0', 4, 'ipv4'],
  ['240.0.0.0', 4, 'ipv4'],
  ['::', 128, 'ipv6'],
  ['100::', 64, 'ipv6'],
  ['2001:db8::', 32, 'ipv6'],
  ['ff00::', 8, 'ipv6'],
]);

/** IPv6 forms that carry an IPv4 address the packet really goes to: mapped, NAT64 and 6to4. */
function embeddedIPv4(address: string): string | null {
  const lower = address.toLowerCase();
  const dotted = /^(?:::ffff:|64:ff9b::)(\d+\.\d+\.\d+\.\d+)$/.exec(lower);
  if (dotted) return dotted[1] as string;
  const hex = /^(?:::ffff:|64:ff9b::)([0-9a-f]{1,4}):([0-9a-f]{1,4})$/.exec(lower);
  if (hex) return hexPairToIPv4(hex[1] as string, hex[2] as string);
  const sixToFour = /^2002:([0-9a-f]{1,4}):([0-9a-f]{1,4}):/.exec(lower);
  if (sixToFour) return hexPairToIPv4(sixToFour[1] as string, sixToFour[2] as string);
  return null;
}

function hexPairToIPv4(high: string, low: string): string {
  const h = parseInt(high, 16);
  const l = parseInt(low, 16);
  return `${h >> 8}.${h & 255}.${l >> 8}.${l & 255}`;
}

export function classifyAddress(address: string): AddressClass {
  if (isIPv6(address)) {
    const inner = embeddedIPv4(address);
    if (inner !== null) return classifyAddress(inner);
  } else if (!isIPv4(address)) {
    return 'reserved';
  }
  const type = isIPv4(address) ? 'ipv4' : 'ipv6';
  if (METADATA.has(address.toLowerCase())) return 'metadata';
  if (LOOPBACK.check(address, type)) return 'loopback';
  if (LINK_LOCAL.check(address, type)) return 'link-local';
  if (PRIVATE.check(address, type)) return 'private';
  if (RESERVED.check(address, type)) return 'reserved';
  return 'public';
}

/**
 * An IP literal written in config is the operator's explicit choice, except link-local and metadata
 * addresses, which stay behind `allow_private` (DESIGN.md section 5).
 */
export function literalNeedsAllowPrivate(address: string): boolean {
  const cls = classifyAddress(address);
  return cls === 'link-local' || cls === 'metadata';
}

export class EgressRefusedError extends Error {
  readonly code = 'AIRLOCK_EGRESS_REFUSED';
  readonly hostname: string;
  readonly address: string;
  readonly addressClass: AddressClass;
  constructor(hostname: string, address: string, addressClass: AddressClass) {
    super(`upstream host ${hostname} resolved to ${address} (${addressClass}); set allow_private: true on the service if this is intended`);
    this.name = 'EgressRefusedError';
    this.hostname = hostname;
    this.address = address;
    this.addressClass = addressClass;
  }
}

type LookupCallback = (err: NodeJS.ErrnoException | null, address: string | LookupAddress[], family?: number) => void;
export type GuardedLookup = (hostname: string, options: LookupOptions, callback: LookupCallback) => void;

/**
 * A `lookup` for net/tls.connect that refuses to hand back any non-public address. Every address of
 * the answer must pass: with happy eyeballs (autoSelectFamily) the socket may try any of them.
 */
export function createGuardedLookup(): GuardedLookup {
  return function airlockEgressLookup(hostname, options, callback) {
    dnsLookup(hostname, { ...options, all: true }, function checkResolved(err, addresses) {
      if (err) return callback(err, []);
      for (const entry of addresses) {
        const cls = classifyAddress(entry.address);
        if (cls !== 'public') return callback(new EgressRefusedError(hostname, entry.address, cls) as NodeJS.ErrnoException, []);
      }
      if (addresses.length === 0) return callback(Object.assign(new Error(`no address for ${hostname}`), { code: 'ENOTFOUND' }), []);
      if (options.all) return callback(null, addresses);
      const first = addresses[0] as LookupAddress;
      return callback(null, first.address, first.family);
    });
  };
}
