/**
 * Fire-and-forget JSON POSTs to operator-configured webhooks (approval announcements, anomaly alerts):
 * bounded by a timeout, failures logged, never blocking or failing the request that caused them.
 */
import type { Logger } from 'pino';
import { request } from 'undici';

export function postWebhook(url: string, body: unknown, logger: Logger, what: string): void {
  request(url, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify(body), headersTimeout: 5_000, bodyTimeout: 5_000 })
    .then(async (response) => {
      await response.body.dump();
      if (response.statusCode >= 300) logger.warn({ webhook: what, status: response.statusCode }, 'webhook answered with an error');
    })
    .catch((error: unknown) => logger.warn({ webhook: what, err: error }, 'webhook could not be reached'));
}
