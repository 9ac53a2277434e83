/**
 * `airlock anomalies [--agent NAME] [--limit N] [--json]`: recent anomaly events of a running Airlock
 * with their evidence, through the admin API. A suspended agent is restored with `airlock restore agent`.
 */
import { parseArgs } from 'node:util';
import { AdminCallError, callAdmin, reportRefusal } from './admin-client.js';
import type { CliIo } from './cli-io.js';
import { loadConfigOrReport } from './locate-config.js';

export async function anomaliesCommand(io: CliIo): Promise<number> {
  const { values } = parseArgs({
    args: [...io.args],
    options: { config: { type: 'string' }, agent: { type: 'string' }, limit: { type: 'string', default: '50' }, json: { type: 'boolean', default: false } },
    allowPositionals: false,
  });
  const loaded = loadConfigOrReport(io, values.config, 'operator');
  if (loaded === null) return 1;
  const query = new URLSearchParams({ limit: values.limit });
  if (values.agent !== undefined) query.set('agent', values.agent);
  try {
    const answer = await callAdmin(io, loaded, 'GET', `/v1/anomalies?${query.toString()}`);
    if (answer.status !== 200) return reportRefusal(io, answer, 'Listing anomalies');
    const events = (answer.body['anomalies'] as Array<Record<string, unknown>> | undefined) ?? [];
    if (values.json) {
      io.stdout.write(`${JSON.stringify(events, null, 2)}\n`);
      return 0;
    }
    if (events.length === 0) io.stdout.write('No anomalies.\n');
    for (const e of events) {
      io.stdout.write(`${String(e['at'])}  ${String(e['rule']).padEnd(18)} ${String(e['action']).padEnd(7)} ${String(e['agent'])}${e['service'] ? `/${String(e['service'])}` : ''}  ${String(e['summary'])}\n`);
    }
    return 0;
  } catch (error) {
    if (!(error instanceof AdminCallError)) throw error;
    io.stderr.write(`${error.message}\n`);
    return 1;
  }
}
