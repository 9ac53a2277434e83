/**
 * Stage 5c: a human in the loop. When the grant (require_approval) or the route requires approval, the
 * request is bound to a hash of agent, method, canonical path, query and body (the body is buffered,
 * within approvals.max_body_bytes), and either waits for the decision (hold) or is answered 202 with an
 * approval id (async). A retry carrying `x-airlock-approval: <id>` redeems an approval given for this
 * exact request, once.
 */
import { createHash } from 'node:crypto';
import type { IncomingMessage } from 'node:http';
import type { ApprovalBroker, ApprovalGrant } from '../policy/approval-broker.js';
import type { GrantPolicy, ServicePolicy } from '../policy/compile-policy.js';
import type { CompiledRoute } from '../policy/route-table.js';
import type { Principal } from './authenticate-agent.js';

export const APPROVAL_HEADER = 'x-airlock-approval';

export function approvalRequired(grant: GrantPolicy, route: CompiledRoute): boolean {
  return grant.config.require_approval || route.requireApproval;
}

/**
 * What an approval is good for: this agent, this service, this method, this canonical path, this query,
 * this body. The service is part of it because the path alone does not name one: services on their own
 * listener or selected by Host have no prefix, and an approval shown for a test account must not send
 * the same request to the live one (found by review).
 */
export function approvalBinding(agent: string, service: string, method: string, path: string, query: string | null, body: Buffer | null): string {
  const hash = createHash('sha256');
  for (const part of [agent, service, method, path, query ?? '']) hash.update(part, 'utf8').update('\u0000');
  hash.update(createHash('sha256').update(body ?? Buffer.alloc(0)).digest());
  return `sha256:${hash.digest('hex')}`;
}

export interface ApprovalContext {
  readonly principal: Principal;
  readonly service: ServicePolicy;
  readonly route: CompiledRoute;
  readonly grant: GrantPolicy;
  readonly method: string;
  /** Canonical path as the agent sent it (prefix included). */
  readonly path: string;
  readonly query: string | null;
  readonly body: Buffer | null;
}

export async function awaitApproval(broker: ApprovalBroker, req: IncomingMessage, context: ApprovalContext, signal: AbortSignal): Promise<ApprovalGrant> {
  const binding = approvalBinding(context.principal.agent.name, context.service.name, context.method, context.path, context.query, context.body);
  const presented = req.headers[APPROVAL_HEADER];
  if (typeof presented === 'string' && presented !== '') return broker.redeem(presented.trim(), binding, context.principal.agent.name);
  const session = context.principal.session;
  const request = {
    agent: context.principal.agent.name,
    service: context.service.name,
    route: context.route.template,
    scope: context.route.scope,
    method: context.method,
    path: context.path,
    binding,
    session: session?.id ?? null,
    justification: session?.justification ?? null,
    taskId: session?.taskId ?? null,
    mode: context.grant.config.approval_mode,
    timeoutMs: context.grant.config.approval_timeout * 1000,
  } as const;
  if (request.mode === 'async') return broker.submit(request);
  return broker.hold(request, signal);
}
