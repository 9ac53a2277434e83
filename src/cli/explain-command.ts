/**
 * `airlock explain --agent NAME METHOD PATH [--host H] [--config F]`: the decision the proxy would make
 * and why, through the same stages, without calling upstream or reading a secret.
 * Exit 0 when allowed, 2 when denied, 1 on a usage or config error.
 */
import { parseArgs } from 'node:util';
import { compilePolicy } from '../policy/compile-policy.js';
import { explainRequest } from '../pipeline/run-pipeline.js';
import { statusOf } from '../errors.js';
import { UsageError, type CliIo } from './cli-io.js';
import { loadConfigOrReport } from './locate-config.js';

export async function explainCommand(io: CliIo): Promise<number> {
  const { values, positionals } = parseArgs({
    args: [...io.args],
    options: { agent: { type: 'string' }, host: { type: 'string' }, config: { type: 'string' } },
    allowPositionals: true,
  });
  if (values.agent === undefined || positionals.length !== 2) {
    throw new UsageError('usage: airlock explain --agent NAME METHOD PATH   (e.g. airlock explain --agent support-bot GET /openai/v1/models)');
  }
  const [method, target] = positionals as [string, string];
  const loaded = loadConfigOrReport(io, values.config);
  if (loaded === null) return 1;
  const policy = compilePolicy(loaded.config);
  const result = explainRequest(policy, values.agent, method, target, values.host ?? null);
  const lines: string[] = [];
  if (result.decision === 'allow') {
    lines.push(`ALLOW  ${method.toUpperCase()} ${target}`);
  } else {
    lines.push(`DENY   ${method.toUpperCase()} ${target}  ->  ${result.code === null ? '' : `${statusOf(result.code)} ${result.code}`}`);
  }
  lines.push(`  agent       ${values.agent}${result.agent === null ? ' (unknown)' : ''}`);
  if (result.service !== null) lines.push(`  service     ${result.service.name} (prefix ${result.service.prefix}, upstream ${result.service.upstream.origin}${result.service.upstream.basePath})`);
  if (result.route !== null) lines.push(`  route       routes[${result.route.index}]: ${[...result.route.methods].join('|')} ${result.route.template}`);
  if (result.route !== null) lines.push(`  scope       ${result.route.scope}${result.grantedBy === null ? '' : ` (granted by "${result.grantedBy}")`}`);
  if (result.credential !== null) lines.push(`  credential  ${result.credential.ref}, injected as ${result.credential.injector.description}`);
  if (result.upstreamTarget !== null && result.service !== null) lines.push(`  forwards    ${method.toUpperCase()} ${result.service.upstream.origin}${result.upstreamTarget}`);
  lines.push(`  why         ${result.reason}`);
  io.stdout.write(`${lines.join('\n')}\n`);
  return result.decision === 'allow' ? 0 : 2;
}
