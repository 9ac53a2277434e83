/**
 * What happens when the detector raises an event: every event is logged, counted, audited and (when
 * configured) posted to the anomaly webhook; a `suspend` event also revokes the agent through the kill
 * switch, with an audit record saying why, until an admin restores it.
 */
import type { Logger } from 'pino';
import type { Counter } from 'prom-client';
import { postWebhook } from '../observability/post-webhook.js';
import type { GovernanceState } from '../state/governance-state.js';
import type { AnomalyEvent } from './anomaly-detector.js';

export const DETECTOR_IDENTITY = 'anomaly-detector';

export interface AnomalyResponseOptions {
  readonly state: GovernanceState;
  readonly logger: Logger;
  readonly counter: Counter<'rule' | 'action'>;
  readonly webhook: string | null;
  /** The secret backstop for the webhook's text (post-webhook.ts). */
  readonly scrub: (text: string) => string;
  /** Writes the event to the audit trail. */
  readonly audit: (event: AnomalyEvent) => Promise<void>;
}

export function createAnomalyResponder(options: AnomalyResponseOptions): (event: AnomalyEvent) => void {
  return function respondToAnomaly(event) {
    options.counter.inc({ rule: event.rule, action: event.action });
    options.logger.warn({ anomaly: event.id, rule: event.rule, action: event.action, agent: event.agent, service: event.service, evidence: event.evidence }, `anomaly: ${event.summary}`);
    void options.audit(event).catch((error: unknown) => options.logger.error({ err: error, anomaly: event.id }, 'anomaly event could not be audited'));
    if (options.webhook !== null) {
      postWebhook(
        options.webhook,
        {
          type: 'airlock.anomaly',
          ...event,
          at: new Date(event.at).toISOString(),
          text: `Airlock anomaly (${event.rule}, ${event.action}): agent *${event.agent}*${event.service === null ? '' : ` on ${event.service}`}: ${event.summary}${event.action === 'suspend' ? '. The agent is suspended until an admin restores it (`npx airlock restore agent ' + event.agent + '`).' : '.'}`,
        },
        options.scrub,
        options.logger,
        `anomaly ${event.id}`,
      );
    }
    if (event.action === 'suspend' && options.state.revocation('agent', event.agent) === null) {
      options.state
        .record({ type: 'revocation.added', revocation: { kind: 'agent', target: event.agent, reason: `anomaly ${event.rule}: ${event.summary}`, by: DETECTOR_IDENTITY, at: event.at } })
        .catch((error: unknown) => options.logger.error({ err: error, anomaly: event.id }, 'could not suspend the agent for an anomaly'));
    }
  };
}
