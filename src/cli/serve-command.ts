/**
 * `airlock serve [--config F]`: runs the proxy until SIGINT/SIGTERM. JSON logs go to stdout; the
 * human summary (where it listens, what is missing, what to do next) goes to stderr.
 */
import { parseArgs } from 'node:util';
import { startAirlock } from '../app.js';
import type { AirlockConfig } from '../config/types.js';
import { EncryptedSecretFile } from '../credentials/encrypted-secret-file.js';
import { loadMasterKey } from '../credentials/master-key.js';
import { parseSecretRef } from '../credentials/secret-ref.js';
import type { CliIo } from './cli-io.js';
import { loadConfigOrReport } from './locate-config.js';

export async function serveCommand(io: CliIo): Promise<number> {
  const { values } = parseArgs({ args: [...io.args], options: { config: { type: 'string' } }, allowPositionals: false });
  const loaded = loadConfigOrReport(io, values.config);
  if (loaded === null) return 1;
  const { config } = loaded;
  for (const problem of loaded.loaded.problems) {
    if (problem.severity === 'warning') io.stderr.write(`warning: ${problem.message}\n`);
  }
  const airlock = await startAirlock(config, { env: io.env, logDestination: io.stdout });
  io.stderr.write(summary(config, airlock.url, airlock.serviceUrls, airlock.adminUrl, io.env));
  const signal = await io.stopRequested;
  io.stderr.write(`\n${signal} received: finishing in-flight requests and stopping.\n`);
  await airlock.close();
  return 0;
}

function missingSecrets(config: AirlockConfig, env: CliIo['env']): string[] {
  const missing = new Set<string>();
  let stored: Set<string>;
  try {
    const key = loadMasterKey({ dataDir: config.data_dir, env, create: false });
    stored = new Set(key === null ? [] : new EncryptedSecretFile(config.data_dir, key).names());
  } catch {
    stored = new Set();
  }
  const refs = [
    ...Object.values(config.services).map((s) => s.credential.secret),
    ...Object.values(config.agents).flatMap((a) => a.credentials.flatMap((g) => (g.credential === undefined ? [] : [g.credential.secret]))),
  ];
  for (const text of refs) {
    const parsed = parseSecretRef(text);
    if (!parsed.ok) continue;
    if (parsed.ref.kind === 'file' && !stored.has(parsed.ref.name)) missing.add(text);
    if (parsed.ref.kind === 'env' && (env[parsed.ref.name] ?? '') === '') missing.add(text);
  }
  return [...missing];
}

function summary(config: AirlockConfig, url: string, serviceUrls: Readonly<Record<string, string>>, adminUrl: string | null, env: CliIo['env']): string {
  const services = Object.values(config.services);
  const lines = ['', `Airlock is listening on ${url}`];
  for (const service of services) {
    const own = serviceUrls[service.name];
    lines.push(`  ${service.name.padEnd(12)} ${url}${service.prefix}/...${own === undefined ? '' : `   and ${own}/... (own listener)`}  ->  ${service.upstream}`);
  }
  lines.push(`  health       ${url}/_airlock/health`);
  if (adminUrl !== null) lines.push(`  admin API    ${adminUrl}/v1/health (Authorization: Bearer <admin token>)`);
  lines.push(`  config       ${config.source ?? '(built in)'}`);
  lines.push(`  audit log    ${config.audit.file}`);
  const next: string[] = [];
  const tokenless = Object.values(config.agents).filter((a) => a.tokens.length === 0).map((a) => a.name);
  if (tokenless.length > 0) next.push(`Give agent ${tokenless.join(', ')} a token: \`npx airlock token\`, paste the sha256 line into its tokens list, restart.`);
  const missing = missingSecrets(config, env);
  const fileMissing = missing.filter((r) => r.startsWith('file:')).map((r) => r.slice(5));
  const envMissing = missing.filter((r) => r.startsWith('env:')).map((r) => r.slice(4));
  if (fileMissing.length > 0) next.push(`Store the upstream keys: \`npx airlock secrets set ${fileMissing[0]}\` (value on stdin); not set yet: ${fileMissing.join(', ')}.`);
  if (envMissing.length > 0) next.push(`Set these environment variables and restart: ${envMissing.join(', ')}.`);
  const first = services[0];
  if (first !== undefined) next.push(`Point an SDK at ${url}${first.prefix} (plus the API's version path, e.g. /v1) with the alk_ token as its API key.`);
  next.push(`Check a decision without calling upstream: \`npx airlock explain --agent NAME GET ${first === undefined ? '/service/path' : `${first.prefix}/v1/models`}\`.`);
  lines.push('', 'Next:', ...next.map((n, i) => `  ${i + 1}. ${n}`), '', 'Stop with Ctrl-C.', '');
  return lines.join('\n');
}
