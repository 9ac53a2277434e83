/**
 * Announces each pending approval with a JSON POST to approvals.webhook: the approval's fields (its
 * preview of the query and body too, masked before it was cut: preview-request.ts), a link to the
 * console, and a `text` field so a Slack (or Mattermost, Teams workflow) incoming webhook shows it as a
 * message, with the start of the query and body. Fire and forget, bounded by a timeout; a failed
 * announcement is logged, and the approval still waits in the console and the admin API.
 */
import type { Logger } from 'pino';
import { postWebhook } from '../observability/post-webhook.js';
import type { ApprovalPreview, ApprovalRecord } from '../state/governance-records.js';
import { headerLine, previewOf, previewView } from './preview-request.js';

/** Characters of the query and of the body quoted in the chat message (the whole preview is in `preview`). */
const SNIPPET_CHARS = 200;

export function createApprovalNotifier(
  webhook: string | undefined,
  logger: Logger,
  consoleLink: (id: string) => string | null,
  scrub: (text: string) => string,
): (approval: ApprovalRecord) => void {
  if (webhook === undefined) return function noWebhook() {};
  return function announceApproval(approval) {
    const link = consoleLink(approval.id);
    const preview = previewOf(approval);
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
      preview: previewView(approval),
      text:
        `Airlock: agent *${approval.agent}* asks to call \`${approval.method} ${approval.path}\` on ${approval.service} (scope ${approval.scope})` +
        // Agent-sent text, as the preview is (found by review: raw, its line breaks, *bold* and
        // <!channel> drew a fake "Approved by" line, pinged the channel and dressed a link).
        `${approval.justification === null ? '' : `. Justification: ${snippet(approval.justification)}`}${previewText(preview)}. Approval ${approval.id}` +
        `${link === null ? '' : `: ${link}`} (or \`npx airlock approvals approve ${approval.id}\`).`,
    };
    postWebhook(webhook, body, scrub, logger, `approval ${approval.id}`);
  };
}

/**
 * The start of the query and body for the chat message, as inline code, and the bound headers (whose
 * account it acts on): ". Query: `...`. Headers: `stripe-account: acct_...`. Body (N bytes, type): `...`".
 */
function previewText(preview: ApprovalPreview | null): string {
  if (preview === null) return '';
  let text = preview.query === null ? '' : `. Query: ${snippet(preview.query)}`;
  const headers = headerLine(preview.headers);
  if (headers !== '') text += `. Headers: ${snippet(headers)}`;
  if (preview.bodyBytes > 0) {
    const what = `${preview.bodyBytes.toLocaleString('en-US')} bytes${preview.contentType === null ? '' : `, ${slackEscaped(preview.contentType)}`}`;
    text += preview.body === null ? `. Body: ${what}, not shown` : `. Body (${what}): ${snippet(preview.body)}`;
  }
  return text;
}

/** One line of agent-sent text as Slack inline code; a backtick would end the code span, so it is shown as a quote. */
function snippet(text: string): string {
  const chars = Array.from(text.replace(/\s+/g, ' ').trim());
  const cut = chars.length > SNIPPET_CHARS ? `${chars.slice(0, SNIPPET_CHARS).join('')}…` : chars.join('');
  return `\`${slackEscaped(cut).replace(/`/g, "'")}\``;
}

/**
 * Slack reads <...> as links and mentions (<!channel>) and & as an entity, inside code too; the three
 * are escaped as its message formatting docs ask, so agent-sent text cannot ping a channel or dress a
 * link as something else.
 */
function slackEscaped(text: string): string {
  return text.replace(/&/g, '&amp;').replace(/</g, '&lt;').replace(/>/g, '&gt;');
}
