/**
 * The validated, frozen configuration the rest of Airlock reads. Same shape as the YAML (so a problem's
 * path is the path a user edits), with defaults filled in and file paths made absolute.
 */
import type { AdminSpec, AgentSpec, AnomaliesSpec, ApprovalsSpec, AuditSpec, LimitsSpec, ListenerTlsSpec, SecretsSpec, ServiceSpec, StateSpec, TelemetrySpec } from './schema.js';

export type DeepReadonly<T> = T extends (infer E)[]
  ? ReadonlyArray<DeepReadonly<E>>
  : T extends object
    ? { readonly [K in keyof T]: DeepReadonly<T[K]> }
    : T;

export type ServiceConfig = DeepReadonly<Omit<ServiceSpec, 'prefix'> & { name: string; prefix: string }>;
export type AgentConfig = DeepReadonly<AgentSpec & { name: string }>;

export interface AirlockConfig {
  /** The file it was loaded from, or null when built from an object (tests, demo). */
  readonly source: string | null;
  readonly listen: string;
  /** HTTPS on the agent-facing listeners; `cert_file` and `key_file` are absolute. Null: plain HTTP. */
  readonly tls: DeepReadonly<ListenerTlsSpec> | null;
  /** Load balancers whose X-Forwarded-For is believed (addresses and CIDR ranges). */
  readonly trusted_proxies: readonly string[];
  /** Absolute. */
  readonly data_dir: string;
  /** `file` is absolute. */
  readonly audit: DeepReadonly<AuditSpec>;
  readonly telemetry: DeepReadonly<TelemetrySpec>;
  readonly log: { readonly level: 'fatal' | 'error' | 'warn' | 'info' | 'debug' | 'trace' | 'silent'; readonly requests: 'all' | 'problems' };
  readonly limits: DeepReadonly<LimitsSpec>;
  /** Store settings; `vault.ca_file` and `oauth2.*.ca` are absolute. */
  readonly secrets: DeepReadonly<SecretsSpec>;
  readonly admin: DeepReadonly<AdminSpec> | null;
  readonly approvals: DeepReadonly<ApprovalsSpec>;
  readonly state: DeepReadonly<StateSpec>;
  readonly anomalies: DeepReadonly<AnomaliesSpec>;
  readonly workers: number | 'auto';
  readonly shutdown_timeout: number;
  readonly reload: { readonly watch: boolean };
  readonly services: Readonly<Record<string, ServiceConfig>>;
  readonly agents: Readonly<Record<string, AgentConfig>>;
}
