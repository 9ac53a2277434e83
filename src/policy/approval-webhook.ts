/**
 * Announces each pending approval with a JSON POST to approvals.webhook: the approval's fields, a link
 * to the console, and a `text` field so a Slack (or Mattermost, Teams workflow) incoming webhook shows
 * it as a message. Fire and forget, bounded by a timeout; a failed announcement is logged, and the
 * approval still waits in the console and the admin API.
 */
import type { Logger } from 'pino';
import { postWebhook } from '../observability/post-webhook.js';
import type { ApprovalRecord } from '../state/governance-records.js';

export function createApprovalNotifier(
  webhook: string | undefined,
  logger: Logger,
  consoleLink: (id: string) => string | null,
  scrub: (text: string) => string,
): (approval: ApprovalRecord) => void {
  if (webhook === undefined) return function noWebhook() {};
  return function announceApproval(approval) {
    const link = consoleLink(approval.id);
    const body = {
      type: 'airlock.approval.pending',
      approval_id: approval.id,
      agent: approval.agent,
      service: approval.service,
      method: approval.method,
      path: approval.path,
      route: approval.route,
      scope: approval.scope,
      session: approval.session,
      justification: approval.justification,
      task_id: approval.taskId,
      mode: approval.mode,
      expires_at: new Date(approval.expiresAt).toISOString(),
      console_url: link,
      text:
        `Airlock: agent *${approval.agent}* asks to call \`${approval.method} ${approval.path}\` on ${approval.service} (scope ${approval.scope})` +
        `${approval.justification === null ? '' : `. Justification: ${approval.justification}`}. Approval ${approval.id}` +
        `${link === null ? '' : `: ${link}`} (or \`npx airlock approvals approve ${approval.id}\`).`,
    };
    postWebhook(webhook, body, scrub, logger, `approval ${approval.id}`);
  };
}
