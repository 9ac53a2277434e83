/**
 * Everything the request path reads, built once by the composition root (app.ts). Immutable from the
 * pipeline's point of view: stages look things up, they never build or register anything.
 */
import type { Logger } from 'pino';
import type { Dispatcher } from 'undici';
import type { CredentialBroker } from '../credentials/credential-broker.js';
import type { AuditLog } from '../observability/audit-log.js';
import type { Metrics } from '../observability/metrics.js';
import type { SecretCatalog } from '../redaction/secret-catalog.js';
import type { Policy } from '../policy/compile-policy.js';

export interface ProxyRuntime {
  readonly policy: Policy;
  /** One pool per service, by service name. */
  readonly pools: ReadonlyMap<string, Dispatcher>;
  readonly secrets: CredentialBroker;
  /** Every managed secret value: what responses, logs and audit are scrubbed of. */
  readonly catalog: SecretCatalog;
  readonly metrics: Metrics;
  readonly audit: AuditLog;
  readonly logger: Logger;
  readonly limits: { readonly maxHeaders: number; readonly maxBodyBytes: number };
  readonly now: () => Date;
}
