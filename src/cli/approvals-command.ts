/**
 * `airlock approvals list [--all]` / `approve ID --reason TEXT` / `deny ID --reason TEXT`: decide on
 * pending approvals of a running Airlock through its admin API. The approver recorded is the admin
 * token's name. The list shows, under each approval, the start of its query and body as the admin API
 * previews them (masked there; the console shows the whole preview).
 */
import { parseArgs } from 'node:util';
import { APPROVAL_ID } from '../policy/approval-broker.js';
import { headerLine, headersOf } from '../policy/preview-request.js';
import { AdminCallError, callAdmin, reportRefusal } from './admin-client.js';
import { UsageError, type CliIo } from './cli-io.js';
import { loadConfigOrReport } from './locate-config.js';
import { oneLine } from './one-line.js';

const USAGE = 'usage: airlock approvals list [--all] | approvals approve ID [--reason TEXT] | approvals deny ID [--reason TEXT]   [--config FILE]';

export async function approvalsCommand(io: CliIo): Promise<number> {
  const { values, positionals } = parseArgs({
    args: [...io.args],
    options: { config: { type: 'string' }, reason: { type: 'string' }, all: { type: 'boolean', default: false } },
    allowPositionals: true,
  });
  const [action, id, ...extra] = positionals;
  if (action === undefined || extra.length > 0) throw new UsageError(USAGE);
  const loaded = loadConfigOrReport(io, values.config, 'operator');
  if (loaded === null) return 1;
  try {
    if (action === 'list' || action === 'ls') {
      const answer = await callAdmin(io, loaded, 'GET', values.all ? '/v1/approvals' : '/v1/approvals?status=pending');
      if (answer.status !== 200) return reportRefusal(io, answer, 'Listing approvals');
      const approvals = (answer.body['approvals'] as Array<Record<string, unknown>> | undefined) ?? [];
      if (approvals.length === 0) io.stdout.write(values.all ? 'No approvals.\n' : 'No pending approvals.\n');
      for (const a of approvals) {
        io.stdout.write(
          `${String(a['id'])}  ${String(a['status']).padEnd(8)}  ${String(a['agent'])}  ${String(a['method'])} ${String(a['path'])}  (${String(a['service'])}, ${String(a['scope'])})` +
            `${a['justification'] ? `  "${oneLine(String(a['justification']), JUSTIFICATION_CHARS)}"` : ''}  until ${String(a['expires_at'])}${a['decided_by'] ? `  by ${String(a['decided_by'])}` : ''}` +
            // Why it was denied or withdrawn (found by review: --all showed who, not why).
            `${typeof a['reason'] === 'string' && a['reason'] !== '' ? `: "${oneLine(a['reason'], JUSTIFICATION_CHARS)}"` : ''}\n`,
        );
        for (const line of previewLines(a['preview'])) io.stdout.write(`    ${line}\n`);
      }
      return 0;
    }
    if (action === 'approve' || action === 'deny') {
      if (id === undefined) throw new UsageError(USAGE);
      // Not repeated when it is not an approval id (found by review): it may be a key pasted by mistake.
      if (!APPROVAL_ID.test(id)) {
        io.stderr.write('That is not an approval id ("apr_" and 16 letters, digits, "-" or "_": `npx airlock approvals list` shows them); not repeated here, as it may be a key.\n');
        return 1;
      }
      const answer = await callAdmin(io, loaded, 'POST', `/v1/approvals/${encodeURIComponent(id)}/${action}`, { reason: values.reason ?? '' });
      if (answer.status !== 200) return reportRefusal(io, answer, `${action === 'approve' ? 'Approving' : 'Denying'} ${id}`);
      const approval = answer.body['approval'] as Record<string, unknown>;
      io.stdout.write(`${id} ${String(approval['status'])} by ${String(approval['decided_by'])}: ${String(approval['method'])} ${String(approval['path'])} for ${String(approval['agent'])}.\n`);
      return 0;
    }
  } catch (error) {
    if (error instanceof AdminCallError) {
      io.stderr.write(`${error.message}\n`);
      return 1;
    }
    throw error;
  }
  throw new UsageError(USAGE);
}

/** Characters of the query and of the body shown in the list. */
const SUMMARY_CHARS = 80;
/** Characters of the bound headers' line (each value is at most 128). */
const HEADERS_CHARS = 300;
/** Characters of a justification shown in the list (the console shows it whole). */
const JUSTIFICATION_CHARS = 300;

/**
 * "query: confirm=true&...", "headers: stripe-account: acct_1..." and "body: 2,048 bytes application/json
 * {"amount": ...": one line each, or
 * none (no preview: approvals.preview_bytes 0, or an approval made by an earlier version).
 */
function previewLines(preview: unknown): string[] {
  if (typeof preview !== 'object' || preview === null) return [];
  const p = preview as Record<string, unknown>;
  const lines: string[] = [];
  if (typeof p['query'] === 'string') lines.push(`query: ${oneLine(p['query'], SUMMARY_CHARS)}`);
  const headers = headerLine(headersOf(p['headers']));
  if (headers !== '') lines.push(`headers: ${oneLine(headers, HEADERS_CHARS)}`);
  const bytes = typeof p['body_bytes'] === 'number' ? p['body_bytes'] : 0;
  if (bytes > 0) {
    const type = typeof p['content_type'] === 'string' ? ` ${oneLine(p['content_type'], SUMMARY_CHARS)}` : '';
    const body = typeof p['body'] === 'string' ? `  ${oneLine(p['body'], SUMMARY_CHARS)}` : '  (not text, not shown)';
    lines.push(`body: ${bytes.toLocaleString('en-US')} bytes${type}${body}`);
  }
  return lines;
}
