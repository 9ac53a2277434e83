/**
 * The agent's address behind trusted_proxies (resolve-client-address.ts): X-Forwarded-For read from the
 * right past every trusted hop; never believed from a peer that is not trusted, nor left of the first
 * untrusted hop (what the client wrote itself).
 */
import { describe, expect, it } from 'vitest';
import { createClientAddressResolver } from '../../src/ingress/resolve-client-address.js';

describe('the client address', () => {
  const none = createClientAddressResolver([]);
  const lb = createClientAddressResolver(['10.0.0.0/8', '127.0.0.1', 'fd00::/8']);

  it.each<[string, ReturnType<typeof createClientAddressResolver>, string | undefined, string | string[] | undefined, string | undefined]>([
    ['no trusted proxies: the peer, whatever the header says', none, '10.1.2.3', '203.0.113.7', '10.1.2.3'],
    ['an untrusted peer: the header is its own words, ignored', lb, '198.51.100.9', '203.0.113.7', '198.51.100.9'],
    ['a trusted peer with no header: the peer', lb, '10.1.2.3', undefined, '10.1.2.3'],
    ['a trusted peer: the hop it appended', lb, '10.1.2.3', '203.0.113.7', '203.0.113.7'],
    ['what the client wrote left of it is not believed', lb, '10.1.2.3', '192.0.2.66, 203.0.113.7', '203.0.113.7'],
    ['past every trusted hop', lb, '10.1.2.3', '203.0.113.7, 10.9.9.9, 127.0.0.1', '203.0.113.7'],
    ['all hops trusted: the leftmost', lb, '10.1.2.3', '10.5.5.5, 10.6.6.6', '10.5.5.5'],
    ['garbage right of the client: the last trusted address', lb, '10.1.2.3', '203.0.113.7, unknown', '10.1.2.3'],
    ['garbage left of the client is never reached', lb, '10.1.2.3', 'unknown, 203.0.113.7', '203.0.113.7'],
    ['several header lines read as one list', lb, '10.1.2.3', ['192.0.2.66', '203.0.113.7, 10.2.2.2'], '203.0.113.7'],
    ['a dual-stack peer (::ffff:) is its IPv4 address', lb, '::ffff:127.0.0.1', '203.0.113.7', '203.0.113.7'],
    ['IPv6 hops, bracketed with a port', lb, 'fd00::1', '[2001:db8::5]:4711', '2001:db8::5'],
    ['an IPv4 hop with a port', lb, '10.1.2.3', '203.0.113.7:51000', '203.0.113.7'],
    ['an empty header', lb, '10.1.2.3', '', '10.1.2.3'],
    ['no peer (a closed socket)', lb, undefined, '203.0.113.7', undefined],
    ['no trusted proxies, a dual-stack peer: its IPv4 address, as an IPv4 listener names it', none, '::ffff:10.0.0.7', undefined, '10.0.0.7'],
    ['an untrusted dual-stack peer: its IPv4 address', lb, '::ffff:198.51.100.9', '203.0.113.7', '198.51.100.9'],
    ['an IPv6 peer is kept as it is', none, '2001:db8::7', undefined, '2001:db8::7'],
  ])('%s', (_name, resolve, peer, header, expected) => {
    expect(resolve(peer, header)).toBe(expected);
  });
});
