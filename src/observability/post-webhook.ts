/**
 * Fire-and-forget JSON POSTs to operator-configured webhooks (approval announcements, anomaly alerts):
 * bounded by a timeout, failures logged, never blocking or failing the request that caused them.
 *
 * The text passes the secret catalogue's scrub, as log lines and audit records do: an announcement
 * carries what an agent sent (a path, a session's justification), and the request guard does not
 * cover every value the catalogue knows (an OAuth2 client_id or an AppRole role_id is scrubbed from
 * outputs but accepted in requests; a key learnt after the session was opened). A scrubber that fails
 * leaves the webhook unsent, and says so.
 */
import type { Logger } from 'pino';
import { request } from 'undici';

export function postWebhook(url: string, body: unknown, scrub: (text: string) => string, logger: Logger, what: string): void {
  let text: string;
  try {
    text = scrub(JSON.stringify(body));
  } catch (error) {
    logger.error({ webhook: what, err: error }, 'webhook not sent: its text could not be checked for secrets');
    return;
  }
  request(url, { method: 'POST', headers: { 'content-type': 'application/json' }, body: text, headersTimeout: 5_000, bodyTimeout: 5_000 })
    .then(async (response) => {
      await response.body.dump();
      if (response.statusCode >= 300) logger.warn({ webhook: what, status: response.statusCode }, 'webhook answered with an error');
    })
    .catch((error: unknown) => logger.warn({ webhook: what, err: error }, 'webhook could not be reached'));
}
