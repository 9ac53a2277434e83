/**
 * `airlock explain --agent NAME METHOD PATH [--host H] [--listen ADDR] [--config F]`: the decision the
 * proxy would make and why, through the same stages, without calling upstream or reading a secret.
 * `--listen` names the listener the request arrives on: a service's own `listen` address selects that
 * service alone, as the live listener does (no prefix); without it, the shared listener.
 * Exit 0 when allowed, 2 when denied, 1 on a usage or config error.
 */
import { parseArgs } from 'node:util';
import { parseListen } from '../config/schema.js';
import type { AirlockConfig } from '../config/types.js';
import { compilePolicy } from '../policy/compile-policy.js';
import { explainRequest } from '../pipeline/run-pipeline.js';
import type { ListenerBinding } from '../pipeline/select-service.js';
import { statusOf } from '../errors.js';
import { maskAgentTokens } from '../identity/agent-token.js';
import { UsageError, type CliIo } from './cli-io.js';
import { configFlagFor, loadConfigOrReport } from './locate-config.js';
import { checkSecretPresence } from './check-secret-presence.js';
import type { GrantPolicy } from '../policy/compile-policy.js';

export async function explainCommand(io: CliIo): Promise<number> {
  const { values, positionals } = parseArgs({
    args: [...io.args],
    options: { agent: { type: 'string' }, host: { type: 'string' }, listen: { type: 'string' }, config: { type: 'string' } },
    allowPositionals: true,
  });
  if (values.agent === undefined || positionals.length !== 2) {
    throw new UsageError('usage: airlock explain --agent NAME METHOD PATH [--host H] [--listen ADDR]   (e.g. airlock explain --agent support-bot GET /openai/v1/models)');
  }
  const [method, target] = positionals as [string, string];
  const loaded = loadConfigOrReport(io, values.config);
  if (loaded === null) return 1;
  const listeners = listenersOf(loaded.config);
  let binding: ListenerBinding = { kind: 'shared' };
  if (values.listen !== undefined) {
    const found = listeners.find((l) => sameAddress(l.address, values.listen as string));
    if (found === undefined) {
      // Not repeated: what was typed may be anything; the config's own addresses are said instead.
      io.stderr.write(`--listen names no listener of this config; its listeners are: ${listeners.map((l) => `${l.address} (${l.binding.kind === 'shared' ? 'shared: services by prefix or Host' : `service ${l.binding.name} alone`})`).join(', ')}.\n`);
      return 1;
    }
    binding = found.binding;
  }
  const policy = compilePolicy(loaded.config);
  const result = explainRequest(policy, values.agent, method, target, values.host ?? null, binding);
  const lines: string[] = [];
  // An agent token typed in the target is not printed back (invariant 1 counts CLI output).
  const shownTarget = maskAgentTokens(target);
  if (result.decision === 'allow') {
    lines.push(`ALLOW  ${method} ${shownTarget}`);
  } else {
    lines.push(`DENY   ${method} ${shownTarget}  ->  ${result.code === null ? '' : `${statusOf(result.code)} ${result.code}`}`);
  }
  lines.push(`  agent       ${values.agent}${result.agent === null ? ' (unknown)' : ''}`);
  const spec = loaded.config.agents[values.agent];
  if (spec !== undefined && spec.tokens.length === 0 && spec.jwt === undefined) {
    lines.push(`  note        agent ${values.agent} has no tokens (nor jwt) yet: until one is added, every request it sends gets 401 unauthenticated (npx airlock token prints a pair)`);
  }
  if (result.service !== null) {
    const via = binding.kind === 'service' ? `own listener ${result.service.config.listen ?? ''}` : `prefix ${result.service.prefix}`;
    lines.push(`  service     ${result.service.name} (${via}, upstream ${result.service.upstream.origin}${result.service.upstream.basePath})`);
  }
  if (result.route !== null) lines.push(`  route       routes[${result.route.index}]: ${[...result.route.methods].join('|')} ${result.route.template}`);
  if (result.route !== null) lines.push(`  scope       ${result.route.scope}${result.grantedBy === null ? '' : ` (granted by "${result.grantedBy}")`}`);
  if (result.credential !== null) {
    lines.push(`  credential  ${result.credential.ref}, injected as ${result.credential.injector.description}`);
    lines.push(`  secret      ${checkSecretPresence(result.credential.ref, loaded.config, io.env, configFlagFor(io, loaded.file)).text}`);
  }
  if (result.grant !== null) lines.push(...grantTerms(result.grant, result.route?.requireApproval === true));
  if (result.upstreamTarget !== null && result.service !== null) lines.push(`  forwards    ${method.toUpperCase()} ${result.service.upstream.origin}${result.upstreamTarget}`);
  lines.push(`  why         ${result.reason}`);
  // What explain cannot see: it reads the config, not a running Airlock's state.
  if (result.decision === 'allow') {
    lines.push("  not seen    a running Airlock's revocations (kill switch), anomaly suspensions and rate budgets (`airlock status` shows the revocations); and whether the path, query, headers or body hold a managed secret's value (refused 400): explain reads no secret values");
  }
  // `--host 127.0.0.1:7711` reads like "the request to 127.0.0.1:7711", which is a service's own
  // listener, not a Host on the shared one (found by a fresh-user walkthrough).
  const ownListener = result.code === 'unknown_service' && values.listen === undefined && values.host !== undefined ? listeners.find((l) => l.binding.kind === 'service' && sameAddress(l.address, values.host as string)) : undefined;
  if (ownListener !== undefined && ownListener.binding.kind === 'service') {
    lines.push(`  note        ${ownListener.address} is service ${ownListener.binding.name}'s own listener; --host is a Host header on the shared listener. For a request sent to ${ownListener.address}: --listen ${ownListener.address}`);
  }
  io.stdout.write(`${lines.join('\n')}\n`);
  return result.decision === 'allow' ? 0 : 2;
}

/**
 * The terms a caller meets beyond its scope: a human's approval (the grant's, or the route's whatever
 * the grant says, as await-approval.ts decides; found by review), a rate limit.
 */
function grantTerms(grant: GrantPolicy, routeApproval: boolean): string[] {
  const terms: string[] = [];
  const { require_approval: grantApproval, approval_mode: mode, approval_timeout: timeout, rate } = grant.config;
  if (grantApproval || routeApproval) {
    terms.push(
      mode === 'hold'
        ? `  approval    a human approves each call: the request waits for the decision, up to ${timeout} s (then 403 approval_timeout)`
        : `  approval    a human approves each call: the first is answered 202 with an approval id, and the agent sends it again with header x-airlock-approval: <id> once approved (within ${timeout} s)`,
    );
  }
  if (rate !== undefined) {
    const burst = rate.burst ?? rate.requests;
    terms.push(`  rate        ${rate.requests} requests per ${rate.per} s, ${burst} at once${rate.concurrency === undefined ? '' : `, ${rate.concurrency} in flight per replica`}; beyond, 429 rate_limited`);
  }
  return terms;
}

/** The agent listeners a config opens: the shared one, then each service's own. */
function listenersOf(config: AirlockConfig): Array<{ address: string; binding: ListenerBinding }> {
  const listeners: Array<{ address: string; binding: ListenerBinding }> = [{ address: config.listen, binding: { kind: 'shared' } }];
  for (const service of Object.values(config.services)) {
    if (service.listen !== undefined) listeners.push({ address: service.listen, binding: { kind: 'service', name: service.name } });
  }
  return listeners;
}

/** HOST:PORT as configured against one typed: the same port, and the same host or a wildcard bind. */
function sameAddress(configured: string, typed: string): boolean {
  const a = parseListen(configured);
  const b = parseListen(typed);
  if (a === null || b === null || a.port !== b.port) return false;
  return a.host.toLowerCase() === b.host.toLowerCase() || a.host === '0.0.0.0' || a.host === '::';
}
