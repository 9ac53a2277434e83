/**
 * Everything the request path reads, built once by the composition root (app.ts). Immutable from the
 * pipeline's point of view: stages look things up, they never build or register anything.
 */
import type { ResolveClientAddress } from '../ingress/resolve-client-address.js';
import type { Logger } from 'pino';
import type { Dispatcher } from 'undici';
import type { CredentialBroker } from '../credentials/credential-broker.js';
import type { AuditLog } from '../observability/audit-log.js';
import type { IsoTime } from '../observability/iso-time.js';
import type { RequestLog } from '../observability/logger.js';
import type { Metrics } from '../observability/metrics.js';
import type { Tracing } from '../observability/tracing.js';
import type { GuardScope, SecretCatalog } from '../redaction/secret-catalog.js';
import type { TokenHashes } from '../identity/token-hashes.js';
import type { JwtVerifier } from '../identity/jwt-verifier.js';
import type { AnomalyDetector, AnomalyEvent } from '../policy/anomaly-detector.js';
import type { ApprovalBroker } from '../policy/approval-broker.js';
import type { ConnectionGate } from '../upstream/connection-gate.js';
import type { BucketShape, ConcurrencyGate, RateLimiter } from '../policy/rate-limiter.js';
import type { MintRate } from './check-rate-limit.js';
import type { Policy } from '../policy/compile-policy.js';
import type { KillSwitch } from '../policy/kill-switch.js';
import type { GovernanceState } from '../state/governance-state.js';
import type { Readiness } from './serve-reserved.js';

export interface ProxyRuntime {
  readonly policy: Policy;
  /** One pool per service, by service name. */
  readonly pools: ReadonlyMap<string, Dispatcher>;
  /** Per service, its requests with the upstream at once, and those waiting (connection-gate.ts). */
  readonly gates: ReadonlyMap<string, ConnectionGate>;
  readonly secrets: CredentialBroker;
  /** Every managed secret value: what responses, logs and audit are scrubbed of. */
  readonly catalog: SecretCatalog;
  /**
   * What the request guard checks against: every managed value but identifiers (compile-policy.ts
   * identifierRefs), cached under a key that changes with them (a reload may change them).
   */
  readonly guard: GuardScope;
  readonly metrics: Metrics;
  readonly tracing: Tracing;
  readonly audit: AuditLog;
  readonly logger: Logger;
  /** The one line per request (the same destination and level as `logger`). */
  readonly requestLog: RequestLog;
  readonly state: GovernanceState;
  readonly jwt: JwtVerifier;
  readonly tokenHashes: TokenHashes;
  readonly approvals: ApprovalBroker;
  readonly killSwitch: KillSwitch;
  readonly rateLimiter: RateLimiter;
  readonly concurrency: ConcurrencyGate;
  /**
   * Session mints under way, by agent, for limits.max_sessions_per_agent (serve-sessions.ts). One per
   * app, handed from each generation to the next (app.ts), so a reload mid-mint does not forget them.
   */
  readonly sessionMints: ConcurrencyGate;
  readonly anomalies: AnomalyDetector;
  readonly respondToAnomaly: (event: AnomalyEvent) => void;
  readonly limits: { readonly maxHeaders: number; readonly checkHeaderNames: boolean; readonly maxBodyBytes: number; readonly maxApprovalBodyBytes: number; readonly approvalHeaders: readonly string[]; readonly maxSessionsPerAgent: number; readonly sessionMintBucket: BucketShape; readonly sessionMintRate: MintRate; readonly stateStaleAfterMs: number };
  readonly readiness: () => Readiness;
  /** True once shutdown has cut the connections still open (shutdown_timeout, or a second stop signal). */
  readonly cutForStop: () => boolean;
  /** Requests being served on this runtime (a reloaded-away runtime is closed when it reaches 0). */
  readonly inflight: { enter(): void; leave(): void };
  /** Epoch milliseconds (a test's clock when it brings one). */
  readonly nowMs: () => number;
  /** Formats the audit record's `time`. */
  readonly isoTime: IsoTime;
  /** The agent's address: the peer, or behind `trusted_proxies` what they forwarded (resolve-client-address.ts). */
  readonly clientAddress: ResolveClientAddress;
}
