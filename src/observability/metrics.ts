/**
 * Prometheus metrics (prom-client), one registry per Airlock instance (no global default registry, so
 * tests can run many proxies in one process). Label sets are bounded: service names from config, never
 * paths or values. Later features add their series here.
 */
import { Counter, Registry } from 'prom-client';

export interface Metrics {
  readonly registry: Registry;
  /** Secrets and key shapes replaced in responses (headers, body, trailers), by service. */
  readonly redactions: Counter<'service'>;
}

export function createMetrics(): Metrics {
  const registry = new Registry();
  return {
    registry,
    redactions: new Counter({
      name: 'airlock_redactions_total',
      help: 'Secrets and key shapes replaced in upstream responses before they reached the agent.',
      labelNames: ['service'],
      registers: [registry],
    }),
  };
}
