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

/**
 * Metadata endpoints: AWS (also ECS 169.254.170.2 and IPv6 fd00:ec2::254), GCP (also IPv6 fd20:ce::254, on
 * IPv6-only and dual-stack instances), Azure (wireserver), Alibaba. The IPv6 ones lie in fc00::/7, which
 * an IP literal may name without allow_private; as metadata they need it (found by review).
 */
const METADATA = new Set(['169.254.169.254', '169.254.170.2', '100.100.100.200', '168.63.129.16', 'fd00:ec2:0:0:0:0:0:254', 'fd20:ce:0:0:0:0:0:254']);

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
  ['fec0::', 10, 'ipv6'], // RFC 3879 deprecated site-local, still routed inside some networks
]);
const RESERVED = buildList([
  ['0.0.0.0', 8, 'ipv4'],
  ['192.0.0.0', 24, 'ipv4'],
  ['192.0.2.0', 24, 'ipv4'],
  ['198.18.0.0', 15, 'ipv4'],
  ['198.51.100.0', 24, 'ipv4'],
  ['203.0.113.0', 24, 'ipv4'],
  ['192.88.99.0', 24, 'ipv4'], // RFC 7526 deprecated 6to4 relay anycast
  ['224.0.0.0', 4, 'ipv4'],
  ['240.0.0.0', 4, 'ipv4'],
  ['::', 128, 'ipv6'],
  ['100::', 64, 'ipv6'],
  ['2001:db8::', 32, 'ipv6'],
  ['2001:10::', 28, 'ipv6'], // RFC 4843 ORCHID
  ['ff00::', 8, 'ipv6'],
]);

/** The 16 bytes of an IPv6 address in any spelling ("::" folding, embedded dotted IPv4), or null. */
function ipv6Bytes(address: string): Uint8Array | null {
  let text = address.toLowerCase();
  const zone = text.indexOf('%');
  if (zone !== -1) text = text.slice(0, zone);
  const groups: number[] = [];
  const dotted = /(\d+\.\d+\.\d+\.\d+)$/.exec(text);
  if (dotted) {
    const parts = (dotted[1] as string).split('.').map(Number);
    text = `${text.slice(0, -(dotted[1] as string).length)}${(((parts[0] as number) << 8) | (parts[1] as number)).toString(16)}:${(((parts[2] as number) << 8) | (parts[3] as number)).toString(16)}`;
  }
  const halves = text.split('::');
  if (halves.length > 2) return null;
  const head = halves[0] === '' ? [] : (halves[0] as string).split(':');
  const tail = halves.length === 2 ? (halves[1] === '' ? [] : (halves[1] as string).split(':')) : [];
  const missing = 8 - head.length - tail.length;
  if (halves.length === 1 ? missing !== 0 : missing < 1) return null;
  for (const group of [...head, ...Array<string>(halves.length === 2 ? missing : 0).fill('0'), ...tail]) {
    if (!/^[0-9a-f]{1,4}$/.test(group)) return null;
    groups.push(parseInt(group, 16));
  }
  const bytes = new Uint8Array(16);
  groups.forEach((g, i) => {
    bytes[i * 2] = g >> 8;
    bytes[i * 2 + 1] = g & 255;
  });
  return bytes;
}

function dottedFrom(bytes: Uint8Array, at: number): string {
  return `${bytes[at]}.${bytes[at + 1]}.${bytes[at + 2]}.${bytes[at + 3]}`;
}

function startsWith(bytes: Uint8Array, prefix: readonly number[]): boolean {
  return prefix.every((b, i) => bytes[i] === b);
}

/**
 * IPv6 forms whose packets really go to an IPv4 address: IPv4-mapped ::ffff:0:0/96 and the deprecated
 * IPv4-compatible ::/96 (RFC 4291 2.5.5), IPv4-translated ::ffff:0:0:0/96 (RFC 6145, behind an SIIT
 * translator; found by review), NAT64 64:ff9b::/96 (RFC 6052) and 64:ff9b:1::/48 (RFC 8215), and 6to4
 * 2002::/16 (RFC 3056). Classified by the IPv4 address they carry.
 */
function embeddedIPv4(bytes: Uint8Array): string | null {
  const zeros10 = [0, 0, 0, 0, 0, 0, 0, 0, 0, 0];
  if (startsWith(bytes, [...zeros10, 0xff, 0xff])) return dottedFrom(bytes, 12);
  if (startsWith(bytes, [0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff, 0, 0])) return dottedFrom(bytes, 12);
  if (startsWith(bytes, [...zeros10, 0, 0]) && (bytes[12] !== 0 || bytes[13] !== 0)) return dottedFrom(bytes, 12);
  if (startsWith(bytes, [0x00, 0x64, 0xff, 0x9b, 0, 0, 0, 0, 0, 0, 0, 0])) return dottedFrom(bytes, 12);
  if (startsWith(bytes, [0x00, 0x64, 0xff, 0x9b, 0x00, 0x01])) return dottedFrom(bytes, 12);
  if (startsWith(bytes, [0x20, 0x02])) return dottedFrom(bytes, 2);
  return null;
}

/** Teredo (2001::/32, RFC 4380) tunnels to an obfuscated IPv4 address: never an upstream. */
function isTeredo(bytes: Uint8Array): boolean {
  return startsWith(bytes, [0x20, 0x01, 0x00, 0x00]);
}

function canonicalIPv6(bytes: Uint8Array): string {
  const groups: string[] = [];
  for (let i = 0; i < 16; i += 2) groups.push((((bytes[i] as number) << 8) | (bytes[i + 1] as number)).toString(16));
  return groups.join(':');
}

export function classifyAddress(address: string): AddressClass {
  if (isIPv6(address)) {
    const bytes = ipv6Bytes(address);
    if (bytes === null) return 'reserved';
    const inner = embeddedIPv4(bytes);
    if (inner !== null) return classifyAddress(inner);
    if (isTeredo(bytes)) return 'reserved';
    address = canonicalIPv6(bytes);
  } else if (!isIPv4(address)) {
    return 'reserved';
  }
  const type = isIPv4(address) ? 'ipv4' : 'ipv6';
  if (METADATA.has(address)) return 'metadata';
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
