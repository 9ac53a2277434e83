/**
 * The egress guard's address classes (RFC 6890 special-purpose registries, RFC 6598 CGNAT, cloud metadata
 * endpoints) including the IPv6 forms that carry an IPv4 address (mapped, NAT64, 6to4), and the rule for IP
 * literals in config: link-local and metadata need allow_private, the rest is the operator's choice.
 */
import { describe, expect, it } from 'vitest';
import { classifyAddress, createGuardedLookup, EgressRefusedError, literalNeedsAllowPrivate, type AddressClass } from '../../src/upstream/egress-guard.js';

const TABLE: Array<[string, AddressClass]> = [
  // loopback
  ['127.0.0.1', 'loopback'],
  ['127.255.255.254', 'loopback'],
  ['::1', 'loopback'],
  // private (RFC 1918, RFC 4193)
  ['10.0.0.1', 'private'],
  ['10.255.255.255', 'private'],
  ['172.16.0.1', 'private'],
  ['172.31.255.255', 'private'],
  ['192.168.1.1', 'private'],
  ['fc00::1', 'private'],
  ['fd12:3456:789a::1', 'private'],
  // CGNAT (RFC 6598)
  ['100.64.0.1', 'private'],
  ['100.127.255.255', 'private'],
  // link-local
  ['169.254.1.1', 'link-local'],
  ['fe80::1', 'link-local'],
  ['febf::1', 'link-local'],
  // cloud metadata
  ['169.254.169.254', 'metadata'],
  ['169.254.170.2', 'metadata'],
  ['100.100.100.200', 'metadata'],
  ['168.63.129.16', 'metadata'],
  ['fd00:ec2::254', 'metadata'],
  ['fd20:ce::254', 'metadata'],
  ['fd20:00ce:0:0::0254', 'metadata'],
  ['FD00:EC2::254', 'metadata'],
  // IPv4-mapped IPv6, dotted and hex
  ['::ffff:127.0.0.1', 'loopback'],
  ['::ffff:7f00:1', 'loopback'],
  ['::ffff:10.0.0.1', 'private'],
  ['::ffff:a00:1', 'private'],
  ['::ffff:169.254.169.254', 'metadata'],
  ['::ffff:a9fe:a9fe', 'metadata'],
  ['::FFFF:A9FE:A9FE', 'metadata'],
  ['::ffff:8.8.8.8', 'public'],
  // IPv4-translated (RFC 6145; found by review: classified public)
  ['::ffff:0:a9fe:a9fe', 'metadata'],
  ['::ffff:0:7f00:1', 'loopback'],
  ['::ffff:0:808:808', 'public'],
  // deprecated site-local (RFC 3879), 6to4 relay anycast (RFC 7526), ORCHID (RFC 4843)
  ['fec0::1', 'private'],
  ['192.88.99.1', 'reserved'],
  ['2001:10::1', 'reserved'],
  // NAT64 (RFC 6052 well-known prefix)
  ['64:ff9b::10.0.0.1', 'private'],
  ['64:ff9b::a00:1', 'private'],
  ['64:ff9b::169.254.169.254', 'metadata'],
  ['64:ff9b::a9fe:a9fe', 'metadata'],
  ['64:ff9b::7f00:1', 'loopback'],
  ['64:ff9b::808:808', 'public'],
  // 6to4 (RFC 3056)
  ['2002:a9fe:a9fe::1', 'metadata'],
  ['2002:a9fe:a9fe::', 'metadata'],
  ['2002:a00:1::1', 'private'],
  ['2002:7f00:1::1', 'loopback'],
  ['2002:c0a8:101:5::1', 'private'],
  ['2002:808:808::1', 'public'],
  // reserved
  ['0.0.0.0', 'reserved'],
  ['224.0.0.1', 'reserved'],
  ['255.255.255.255', 'reserved'],
  ['192.0.2.10', 'reserved'],
  ['198.18.0.1', 'reserved'],
  ['::', 'reserved'],
  ['ff02::1', 'reserved'],
  ['2001:db8::1', 'reserved'],
  // not an address at all
  ['example.com', 'reserved'],
  ['', 'reserved'],
  // public
  ['8.8.8.8', 'public'],
  ['1.1.1.1', 'public'],
  ['172.32.0.1', 'public'],
  ['100.128.0.1', 'public'],
  ['169.253.255.255', 'public'],
  ['2606:4700:4700::1111', 'public'],
  ['2a00:1450:4001::200e', 'public'],
];

describe('classifyAddress', () => {
  it.each(TABLE)('%s is %s', (address, expected) => {
    expect(classifyAddress(address)).toBe(expected);
  });

  // 6to4 addresses whose low IPv4 half is zero are spelled with "::" and must still be decoded.
  it.each([
    ['2002:a01::1', 'private'],
    ['2002:c0a8::', 'private'],
    ['2002:7f00::1', 'loopback'],
    ['2002:a9fe::1', 'link-local'],
  ] as Array<[string, AddressClass]>)('6to4 %s with a zero low half is %s', (address, expected) => {
    expect(classifyAddress(address)).toBe(expected);
  });
});

describe('literalNeedsAllowPrivate', () => {
  it.each(TABLE)('%s (%s)', (address, cls) => {
    expect(literalNeedsAllowPrivate(address)).toBe(cls === 'link-local' || cls === 'metadata');
  });

  it('needs allow_private for link-local and metadata literals only', () => {
    expect(literalNeedsAllowPrivate('169.254.169.254')).toBe(true);
    expect(literalNeedsAllowPrivate('fe80::1')).toBe(true);
    expect(literalNeedsAllowPrivate('::ffff:169.254.169.254')).toBe(true);
    expect(literalNeedsAllowPrivate('127.0.0.1')).toBe(false);
    expect(literalNeedsAllowPrivate('10.0.0.5')).toBe(false);
    expect(literalNeedsAllowPrivate('8.8.8.8')).toBe(false);
  });
});

describe('createGuardedLookup (no network: localhost resolves from the hosts file)', () => {
  it('refuses a name that resolves to loopback, naming the address and its class', async () => {
    const lookup = createGuardedLookup();
    const error = await new Promise<unknown>((resolve) => {
      lookup('localhost', {}, (err) => resolve(err));
    });
    expect(error).toBeInstanceOf(EgressRefusedError);
    expect((error as EgressRefusedError).hostname).toBe('localhost');
    expect((error as EgressRefusedError).addressClass).toBe('loopback');
    expect((error as EgressRefusedError).code).toBe('AIRLOCK_EGRESS_REFUSED');
  });

  it('refuses an IP literal handed to it that is not public', async () => {
    const lookup = createGuardedLookup();
    const error = await new Promise<unknown>((resolve) => {
      lookup('169.254.169.254', {}, (err) => resolve(err));
    });
    expect(error).toBeInstanceOf(EgressRefusedError);
    expect((error as EgressRefusedError).addressClass).toBe('metadata');
  });

  it('passes a public address through, in the shape net.connect asks for', async () => {
    const lookup = createGuardedLookup();
    const single = await new Promise<{ err: unknown; address: unknown; family: unknown }>((resolve) => {
      lookup('8.8.8.8', {}, (err, address, family) => resolve({ err, address, family }));
    });
    expect(single).toEqual({ err: null, address: '8.8.8.8', family: 4 });
    const all = await new Promise<{ err: unknown; address: unknown }>((resolve) => {
      lookup('8.8.8.8', { all: true }, (err, address) => resolve({ err, address }));
    });
    expect(all).toEqual({ err: null, address: [{ address: '8.8.8.8', family: 4 }] });
  });
});

describe('classifyAddress, unusual spellings of the same address', () => {
  it.each([
    ['0:0:0:0:0:ffff:a9fe:a9fe', 'metadata'],
    ['64:ff9b:1::a9fe:a9fe', 'metadata'],
    ['64:ff9b:1::a00:1', 'private'],
    ['FD00:EC2:0::254', 'metadata'],
    ['::a00:1', 'private'],
    ['2001:0:4136:e378:8000:63bf:3fff:fdd2', 'reserved'],
  ] as Array<[string, AddressClass]>)('%s is %s', (address, expected) => {
    expect(classifyAddress(address)).toBe(expected);
  });
});
