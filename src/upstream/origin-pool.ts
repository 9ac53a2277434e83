/**
 * One undici Pool per service, built at start-up: bounded connections, keep-alive, connect/headers/body
 * timeouts from the service config, the system CAs plus an optional CA file, and the egress guard on
 * every DNS answer when the upstream is a host name. Pools are never created on the request path.
 */
import { readFileSync } from 'node:fs';
import { rootCertificates } from 'node:tls';
import { Pool } from 'undici';
import type { ServiceConfig } from '../config/types.js';
import { createGuardedLookup } from './egress-guard.js';
import { VERIFY_PEER } from './tls-verification.js';
import type { UpstreamTarget } from './upstream-target.js';

export function createOriginPool(service: ServiceConfig, upstream: UpstreamTarget): Pool {
  const connect: Record<string, unknown> = { timeout: service.timeouts.connect * 1000, ...VERIFY_PEER };
  if (service.ca !== undefined) connect['ca'] = [...rootCertificates, readFileSync(service.ca, 'utf8')];
  // IP literals skip DNS (and were checked at start-up); names are checked on every answer.
  if (upstream.ipFamily === 0 && !service.allow_private) connect['lookup'] = createGuardedLookup();
  return new Pool(upstream.origin, {
    connections: service.max_connections,
    pipelining: 1,
    connect,
    headersTimeout: service.timeouts.headers * 1000,
    bodyTimeout: service.timeouts.body * 1000,
    keepAliveTimeout: 4_000,
    keepAliveMaxTimeout: 60_000,
  });
}
