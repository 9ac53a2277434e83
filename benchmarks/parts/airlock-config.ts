/**
 * The Airlock the benchmarks measure: every feature on (token auth, scope, rate limit, injection,
 * response redaction with the built-in key shapes, audit, metrics, anomaly detection, one log line per
 * request), in front of the bench upstream's /small, /64k, /1mb and /sse. Written as JSON (YAML is a
 * superset) to data_dir/airlock.yaml; returns the file's path.
 */
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';

export interface BenchAirlock {
  readonly dataDir: string;
  readonly upstreamPort: number;
  /** sha256: hashes of the agent's and the admin's tokens. */
  readonly agentHash: string;
  readonly adminHash: string;
  /** An OTLP/HTTP endpoint: tracing at sampling 1.0; null: tracing off. */
  readonly otlp: string | null;
  /** Top-level keys merged over the config (npm run profile's PROFILE_CONFIG). */
  readonly overrides?: Readonly<Record<string, unknown>>;
}

export function airlockConfig(spec: BenchAirlock): string {
  const routes = ['/small', '/64k', '/1mb', '/sse'].map((path) => ({ method: 'GET', path, scope: 'bench:read' }));
  const config = {
    listen: '127.0.0.1:0',
    data_dir: spec.dataDir,
    log: { level: 'info' },
    admin: { listen: '127.0.0.1:0', tokens: [spec.adminHash] },
    telemetry: spec.otlp === null ? {} : { otlp: { endpoint: spec.otlp }, sampling: 1 },
    reload: { watch: false },
    services: {
      api: {
        upstream: `http://127.0.0.1:${spec.upstreamPort}`,
        credential: { secret: 'env:BENCH_UPSTREAM_KEY' },
        max_connections: 128,
        routes,
      },
    },
    agents: {
      bench: { tokens: [spec.agentHash], credentials: [{ service: 'api', max_scope: ['bench:read'], rate: { requests: 100_000_000, per: 1 } }] },
    },
    ...spec.overrides,
  };
  const file = join(spec.dataDir, 'airlock.yaml');
  writeFileSync(file, JSON.stringify(config, null, 2));
  return file;
}
