/**
 * `airlock approvals list [--all]` / `approve ID --reason TEXT` / `deny ID --reason TEXT`: decide on
 * pending approvals of a running Airlock through its admin API. The approver recorded is the admin
 * token's name.
 */
import { parseArgs } from 'node:util';
import { AdminCallError, callAdmin, reportRefusal } from './admin-client.js';
import { UsageError, type CliIo } from './cli-io.js';
import { loadConfigOrReport } from './locate-config.js';

const USAGE = 'usage: airlock approvals list [--all] | approvals approve ID [--reason TEXT] | approvals deny ID [--reason TEXT]   [--config FILE]';

export async function approvalsCommand(io: CliIo): Promise<number> {
  const { values, positionals } = parseArgs({
    args: [...io.args],
    options: { config: { type: 'string' }, reason: { type: 'string' }, all: { type: 'boolean', default: false } },
    allowPositionals: true,
  });
  const [action, id, ...extra] = positionals;
  if (action === undefined || extra.length > 0) throw new UsageError(USAGE);
  const loaded = loadConfigOrReport(io, values.config);
  if (loaded === null) return 1;
  try {
    if (action === 'list' || action === 'ls') {
      const answer = await callAdmin(io, loaded.config, 'GET', values.all ? '/v1/approvals' : '/v1/approvals?status=pending');
      if (answer.status !== 200) return reportRefusal(io, answer, 'Listing approvals');
      const approvals = (answer.body['approvals'] as Array<Record<string, unknown>> | undefined) ?? [];
      if (approvals.length === 0) io.stdout.write(values.all ? 'No approvals.\n' : 'No pending approvals.\n');
      for (const a of approvals) {
        io.stdout.write(
          `${String(a['id'])}  ${String(a['status']).padEnd(8)}  ${String(a['agent'])}  ${String(a['method'])} ${String(a['path'])}  (${String(a['service'])}, ${String(a['scope'])})` +
            `${a['justification'] ? `  "${String(a['justification'])}"` : ''}  until ${String(a['expires_at'])}${a['decided_by'] ? `  by ${String(a['decided_by'])}` : ''}\n`,
        );
      }
      return 0;
    }
    if (action === 'approve' || action === 'deny') {
      if (id === undefined) throw new UsageError(USAGE);
      const answer = await callAdmin(io, loaded.config, 'POST', `/v1/approvals/${encodeURIComponent(id)}/${action}`, { reason: values.reason ?? '' });
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
