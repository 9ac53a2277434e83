/**
 * `airlock status [--json] [--config F]`: what a running Airlock holds right now, through its admin API:
 * the audit log, a lockdown and the revocations in force (the kill switch, anomaly suspensions among
 * them), pending approvals, live task sessions and each credential's state. The other commands change
 * these; without this one an operator had no command to see them (found by a fresh-user walkthrough).
 * Exit 0 when all is well, 2 when something needs an operator (audit failing, the shared state in Redis
 * unreachable past state.stale_after, a lockdown, a revocation, a credential failing or missing, the listeners' certificate within 14 days of its end, a config file
 * with errors, which a running Airlock refuses to reload), 1 when the
 * admin API cannot be asked.
 */
import { parseArgs } from 'node:util';
import { AdminCallError, callAdmin, reportRefusal } from './admin-client.js';
import type { CliIo } from './cli-io.js';
import { loadConfigOrReport } from './locate-config.js';
import { EXPIRY_WARNING_DAYS } from '../ingress/tls-identity.js';
import { oneLine } from './one-line.js';

type View = Record<string, unknown>;

/** A served certificate as /v1/health gives it (tls, admin_tls). */
interface CertificateLine {
  readonly subject: string;
  readonly expires_at: string;
  readonly expires_in_days: number;
}

/** Characters of a reason, a justification or an error shown on a line. */
const TEXT_CHARS = 120;

export async function statusCommand(io: CliIo): Promise<number> {
  const { values } = parseArgs({ args: [...io.args], options: { config: { type: 'string' }, json: { type: 'boolean', default: false } }, allowPositionals: false });
  const loaded = loadConfigOrReport(io, values.config, 'operator');
  if (loaded === null) return 1;
  const answers: Record<string, View> = {};
  try {
    for (const [name, path] of [
      ['health', '/v1/health'],
      ['revocations', '/v1/revocations'],
      ['sessions', '/v1/sessions'],
      ['credentials', '/v1/credentials'],
      ['approvals', '/v1/approvals?status=pending'],
    ] as const) {
      const answer = await callAdmin(io, loaded, 'GET', path);
      if (answer.status !== 200) return reportRefusal(io, answer, `Asking ${path}`);
      answers[name] = answer.body;
    }
  } catch (error) {
    if (!(error instanceof AdminCallError)) throw error;
    io.stderr.write(`${error.message}\n`);
    return 1;
  }
  const health = answers['health'] as View;
  const revocations = listOf(answers['revocations'], 'revocations');
  const sessions = listOf(answers['sessions'], 'sessions');
  const credentials = listOf(answers['credentials'], 'credentials');
  const pendingApprovals = listOf(answers['approvals'], 'approvals');
  // Past its ttl or even its max_staleness is normal for a value no request has needed lately; only a
  // store that fails, or a value never fetched, needs an operator (found by the ops walkthrough: a
  // healthy file: secret, cached 1 s, read "stale", and an idle Vault secret "expired", exit 2).
  const troubled = credentials.filter((c) => c['failing'] === true || c['state'] === 'missing');
  // A revoked session ended for good (nothing to restore): listed, but no operator's job is waiting on
  // it (found by review: one such revocation left status at "needs attention" for good, and its hint
  // named a restore the admin API refuses).
  const liftable = revocations.filter((r) => r['kind'] !== 'session');
  const tls = health['tls'] as CertificateLine | null | undefined;
  const adminTls = health['admin_tls'] as CertificateLine | null | undefined;
  const renewing = (certificate: CertificateLine | null | undefined): boolean => certificate !== null && certificate !== undefined && certificate.expires_in_days < EXPIRY_WARNING_DAYS;
  const renew = renewing(tls) || renewing(adminTls);
  // A config file with errors is not what the running Airlock serves: it refused to reload it (found by a
  // README walkthrough: status said ok while its own stderr listed the file's problems).
  const fileErrors = loaded.loaded.config === null ? loaded.loaded.problems.filter((p) => p.severity === 'error').length : 0;
  // Redis past state.stale_after: every request that needs shared state is refused, and readiness fails
  // (found by review: status said ok then). An Airlock older than the state field has none to show.
  const shared = health['state'] as { type: string; reachable: boolean; unreachable_since: string | null; stale: boolean; stale_after_seconds: number | null } | undefined;
  const stale = shared?.stale === true;
  const attention = stale || health['audit'] !== 'writable' || health['lockdown'] === true || liftable.length > 0 || troubled.length > 0 || renew || fileErrors > 0;
  if (values.json) {
    io.stdout.write(`${JSON.stringify({ health, config: { file: loaded.file, errors: fileErrors }, revocations, approvals: pendingApprovals, sessions, credentials }, null, 2)}\n`);
    return attention ? 2 : 0;
  }
  const lines: string[] = [`Airlock at admin ${loaded.config.admin?.listen ?? ''}: ${attention ? 'NEEDS ATTENTION' : 'ok'}`];
  const head = typeof health['audit_head'] === 'string' ? ` (head ${health['audit_head'].slice(0, 12)}…)` : '';
  // Under audit.on_failure: log the proxy forwards unaudited (found by review: status said refused).
  const failing = health['audit_on_failure'] === 'log' ? 'FAILING: requests are forwarded UNAUDITED (audit.on_failure: log) until it is writable again' : 'FAILING: requests are refused (503 audit_unavailable) until it is writable again';
  if (fileErrors > 0) {
    lines.push(`  config       ${loaded.file} HAS ${fileErrors} ERROR${fileErrors === 1 ? '' : 'S'}: a running Airlock refuses to reload it and serves the config it last loaded; npx airlock check lists them`);
  }
  lines.push(`  audit        ${health['audit'] === 'writable' ? `writable${head}` : failing}`);
  if (shared !== undefined) lines.push(`  state        ${stateLine(shared)}`);
  const lockdown = revocations.find((r) => r['kind'] === 'all');
  lines.push(`  lockdown     ${lockdown === undefined ? 'none' : `IN FORCE: every request refused (503 locked_down); ${revoked(lockdown)}; lift: npx airlock restore all`}`);
  const others = liftable.filter((r) => r['kind'] !== 'all');
  lines.push(`  revocations  ${others.length === 0 ? 'none' : `${others.length}; lift one with  npx airlock restore KIND TARGET`}`);
  for (const r of others) lines.push(`    ${String(r['kind'])} ${String(r['target'])}  ${revoked(r)}`);
  const ended = revocations.filter((r) => r['kind'] === 'session');
  if (ended.length > 0) lines.push(`  ended        ${ended.length} session${ended.length === 1 ? '' : 's'} revoked (for good: a session is not restored; the agent mints a new one)`);
  for (const r of ended) lines.push(`    session ${String(r['target'])}  ${revoked(r)}`);
  for (const [label, setting, certificate] of [['tls      ', 'tls', tls], ['admin tls', 'admin.tls', adminTls]] as const) {
    if (certificate === null || certificate === undefined) continue;
    const days = certificate.expires_in_days;
    const due = renewing(certificate);
    lines.push(`  ${label}    ${due ? 'RENEW: ' : ''}${certificate.subject}, expires ${certificate.expires_at} (${days < 0 ? 'EXPIRED: clients refuse it' : days < 1 ? 'in less than a day' : `in ${days} day${days === 1 ? '' : 's'}`})${due ? `; write the renewed certificate and key over ${setting}.cert_file and ${setting}.key_file, and Airlock serves them (reload.watch, or SIGHUP)` : ''}`);
  }
  lines.push(`  approvals    ${pendingApprovals.length === 0 ? 'none pending' : `${pendingApprovals.length} pending: decide with  npx airlock approvals approve|deny ID --reason TEXT`}`);
  for (const a of pendingApprovals) lines.push(`    ${String(a['id'])}  ${String(a['agent'])}  ${String(a['method'])} ${oneLine(String(a['path']), TEXT_CHARS)}  until ${String(a['expires_at'])}`);
  lines.push(`  sessions     ${sessions.length === 0 ? 'none live' : `${sessions.length} live`}`);
  for (const s of sessions) {
    const scopes = Object.entries((s['scopes'] as Record<string, string[]> | null) ?? {})
      .map(([service, list]) => `${service}: ${list.join(' ')}`)
      .join('; ');
    const why = typeof s['justification'] === 'string' ? `  "${oneLine(s['justification'], TEXT_CHARS)}"` : '';
    lines.push(`    ${String(s['id'])}  ${String(s['agent'])}  until ${String(s['expires_at'])}  ${oneLine(scopes, TEXT_CHARS)}${why}`);
  }
  // An expired value is not served: the next request waits for a fetch (found by review: "all
  // servable" counted it).
  const refetch = credentials.filter((c) => c['state'] === 'expired' && c['failing'] !== true).length;
  const summary = troubled.length > 0 ? `, ${troubled.length} failing or missing` : refetch > 0 ? `, ${refetch} to be fetched again by the next request` : ', all servable';
  lines.push(`  credentials  ${credentials.length === 0 ? 'none fetched yet' : `${credentials.length}${summary}`}`);
  const revokedRefs = new Set(others.filter((r) => r['kind'] === 'credential').map((r) => String(r['target'])));
  for (const c of credentials) lines.push(`    ${credentialLine(c)}${revokedRefs.has(String(c['ref'])) ? ', REVOKED: refused (503 credential_revoked) until restored' : ''}`);
  io.stdout.write(`${lines.join('\n')}\n`);
  return attention ? 2 : 0;
}

function stateLine(shared: { type: string; reachable: boolean; unreachable_since: string | null; stale: boolean; stale_after_seconds: number | null }): string {
  if (shared.type !== 'redis') return 'embedded (data_dir/state.jsonl)';
  if (shared.reachable) return 'redis, reachable';
  const since = `redis UNREACHABLE since ${String(shared.unreachable_since)}`;
  const bound = `state.stale_after, ${String(shared.stale_after_seconds)} s`;
  return shared.stale
    ? `${since} (past ${bound}): requests that need shared state are refused (503 state_unavailable) until Redis is back; check that Redis runs at state.url`
    : `${since} (within ${bound}): served from what this replica knows; past it, requests that need shared state are refused (503 state_unavailable)`;
}

function listOf(view: View | undefined, key: string): View[] {
  const list = view?.[key];
  return Array.isArray(list) ? (list as View[]) : [];
}

function revoked(r: View): string {
  return `by ${String(r['by'])} at ${String(r['at'])}${typeof r['reason'] === 'string' && r['reason'] !== '' ? `: "${oneLine(r['reason'], TEXT_CHARS)}"` : ''}`;
}

/**
 * What a state past the cache ttl means when the last fetch succeeded: idle, not known to be unwell
 * (the store is not asked until a request needs the value, so a store that went down since shows
 * only then).
 */
const IDLE_STATES: Readonly<Record<string, string>> = {
  stale: ' (idle: past its cache ttl and not needed since, its last fetch succeeded; the next request is served it while it is fetched again)',
  expired: ' (idle: no longer servable and not needed since, its last fetch succeeded; the next request waits for a fetch)',
};

function credentialLine(c: View): string {
  const age = typeof c['age_seconds'] === 'number' ? `, fetched ${Math.round(c['age_seconds'])} s ago` : '';
  const generation = c['generation'] === null || c['generation'] === undefined ? '' : `, generation ${String(c['generation'])}`;
  const failures = c['failing'] === true ? `, FAILING (${String(c['consecutive_failures'])} in a row)${typeof c['last_error'] === 'string' ? `: ${oneLine(c['last_error'], TEXT_CHARS)}` : ''}` : '';
  return `${String(c['ref'])}  ${String(c['state'])}${c['failing'] === true ? '' : (IDLE_STATES[String(c['state'])] ?? '')}${generation}${age}${failures}`;
}
