/**
 * Stage 5c: a human in the loop. When the grant (require_approval) or the route requires approval, the
 * request is bound to a hash of agent, method, canonical path, query and body (the body is buffered,
 * within approvals.max_body_bytes), and either waits for the decision (hold) or is answered 202 with an
 * approval id (async). A retry carrying `x-airlock-approval: <id>` redeems an approval given for this
 * exact request, once.
 *
 * A held request waits minutes; a reload meanwhile may take away what it was authorized on, so once
 * approved it is authorized again under the configuration then in force (authorizeAfterApproval).
 */
import { createHash } from 'node:crypto';
import type { IncomingMessage } from 'node:http';
import { AirlockError } from '../errors.js';
import { maskAgentTokens } from '../identity/agent-token.js';
import { APPROVAL_ID_HEADER, type ApprovalBroker, type ApprovalGrant } from '../policy/approval-broker.js';
import type { CredentialPlan, GrantPolicy, Policy, ServicePolicy } from '../policy/compile-policy.js';
import type { CompiledRoute } from '../policy/route-table.js';
import type { GovernanceState } from '../state/governance-state.js';
import { cgiHeaderName } from '../upstream/outbound-request.js';
import { authenticateAgain, type Principal } from './authenticate-agent.js';
import { authorizeScope } from './authorize-scope.js';
import { matchRoute } from './match-route.js';
import { selectService, type ListenerBinding } from './select-service.js';

/** The request header that redeems an async approval; a 202 names its id under the same header. */
export const APPROVAL_HEADER = APPROVAL_ID_HEADER;

export function approvalRequired(grant: GrantPolicy, route: CompiledRoute): boolean {
  return grant.config.require_approval || route.requireApproval;
}

/**
 * What an approval is good for: this agent, this service, this method, this canonical path, this query,
 * this body. The service is part of it because the path alone does not name one: services on their own
 * listener or selected by Host have no prefix, and an approval shown for a test account must not send
 * the same request to the live one (found by review). And the task session it was asked under (none for
 * the agent's own token or a JWT): the approver saw that session's justification, so the approval is
 * not good under another session or without one (found by review).
 *
 * And what the request is sent to and with (`sentWith`): the service's upstream origin and base path and
 * the credential reference, so an async approval redeemed after a reload moved the service to another
 * upstream or credential is refused, as a held one is (authorizeAfterApproval); its Content-Type, which
 * says how the upstream reads the body; and the headers of approvals.bind_headers, which choose whose
 * account it acts on (found by review: an approval given for `Stripe-Account: acct_TEST` was redeemed
 * with the live account's).
 */
export function approvalBinding(agent: string, session: string | null, service: string, method: string, path: string, query: string | null, body: Buffer | null, sentWith: readonly string[]): string {
  const hash = createHash('sha256');
  for (const part of [agent, session ?? '', service, method, path, query ?? '', ...sentWith]) hash.update(part, 'utf8').update('\u0000');
  hash.update(createHash('sha256').update(body ?? Buffer.alloc(0)).digest());
  return `sha256:${hash.digest('hex')}`;
}

/**
 * What approvalBinding binds beyond the request line and body; a header absent and a header empty
 * differ. Header names are read as CGI-style servers read them (cgiHeaderName): `Stripe_Account` is
 * Stripe-Account to Rack, PHP-CGI and gunicorn, and it is forwarded as sent (found by review: an approval for acct_TEST redeemed
 * with `stripe_account: acct_LIVE` added).
 */
function sentWith(req: IncomingMessage, context: ApprovalContext): string[] {
  const parts = [`${context.service.upstream.origin}${context.service.upstream.basePath}`, context.plan.ref];
  const bound = ['content-type', ...context.boundHeaders];
  const values = new Map<string, string[]>(bound.map((name) => [name, []]));
  for (const [name, value] of boundHeadersSent(req, bound)) values.get(cgiHeaderName(name))?.push(value);
  for (const name of bound) {
    const sent = values.get(name) as string[];
    parts.push(sent.length === 0 ? `${name}\u0001` : `${name}:${sent.join('\u0002')}`);
  }
  return parts;
}

/** The headers of `bound` (lower case) the request carries, each as sent (name in lower case), in order. */
function boundHeadersSent(req: IncomingMessage, bound: readonly string[]): Array<readonly [string, string]> {
  const sent: Array<readonly [string, string]> = [];
  const raw = req.rawHeaders;
  for (let i = 0; i < raw.length; i += 2) {
    const name = (raw[i] as string).toLowerCase();
    if (bound.includes(cgiHeaderName(name))) sent.push([name, raw[i + 1] as string]);
  }
  return sent;
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
  /** The credential the request is to be sent with. */
  readonly plan: CredentialPlan;
  /** approvals.bind_headers, lower case. */
  readonly boundHeaders: readonly string[];
}

/** `recheck`: the request's revocation check, run again whenever something is revoked while it is held (ApprovalBroker.hold). */
export async function awaitApproval(broker: ApprovalBroker, req: IncomingMessage, context: ApprovalContext, signal: AbortSignal, recheck: () => void): Promise<ApprovalGrant> {
  const binding = approvalBinding(context.principal.agent.name, context.principal.session?.id ?? null, context.service.name, context.method, context.path, context.query, context.body, sentWith(req, context));
  const presented = req.headers[APPROVAL_HEADER];
  if (typeof presented === 'string' && presented !== '') return broker.redeem(presented.trim(), binding, context.principal.agent.name).catch((failure: unknown) => answeredAsStream(failure, req, context.body));
  const session = context.principal.session;
  const contentType = req.headers['content-type'];
  const request = {
    agent: context.principal.agent.name,
    service: context.service.name,
    route: context.route.template,
    scope: context.route.scope,
    method: context.method,
    // Shown to approvers and kept in state: a JWT an agent put in its path is masked (agent-token.ts).
    path: maskAgentTokens(context.path),
    binding,
    session: session?.id ?? null,
    justification: session?.justification ?? null,
    taskId: session?.taskId ?? null,
    mode: context.grant.config.approval_mode,
    ...(presenterOf(context.principal) === undefined ? {} : { presenter: presenterOf(context.principal) as string }),
    timeoutMs: context.grant.config.approval_timeout * 1000,
    // What the approver is shown of the query and body (preview-request.ts masks it, then cuts it).
    content: {
      query: context.query,
      contentType: contentType === undefined || contentType === '' ? null : contentType,
      // Whose account it acts on is part of what is approved (approvalBinding), so the approver sees it.
      headers: boundHeadersSent(req, context.boundHeaders),
      body: context.body,
      shapes: context.service.redaction.rules,
      strippedQueryKeys: context.service.strippedFromAgent.queryKeys,
    },
  } as const;
  if (request.mode === 'async') return broker.submit(request).catch((failure: unknown) => answeredAsStream(failure, req, context.body));
  return broker.hold(request, signal, recheck);
}

/**
 * A 202 approval_pending for a call that asked for a stream (`Accept: text/event-stream`, or a JSON body
 * with `"stream": true`, as the openai and anthropic SDKs send it) goes as an SSE error event, which
 * their stream readers raise; a JSON 202 read as a stream ends without an event, silently. Its id is in
 * the x-airlock-approval header as well, where an SDK error keeps the response's headers.
 */
function answeredAsStream(failure: unknown, req: IncomingMessage, body: Buffer | null): never {
  if (!(failure instanceof AirlockError) || failure.code !== 'approval_pending' || !asksForStream(req, body)) throw failure;
  throw new AirlockError(failure.code, failure.detail, { headers: { ...failure.headers }, extensions: { ...failure.extensions }, cause: failure, eventStream: true });
}

function asksForStream(req: IncomingMessage, body: Buffer | null): boolean {
  if (req.headers.accept?.includes('text/event-stream') === true) return true;
  if (body === null || body.length === 0 || !/\bjson\b/.test(req.headers['content-type'] ?? '')) return false;
  try {
    return (JSON.parse(body.toString('utf8')) as { stream?: unknown } | null)?.stream === true;
  } catch {
    return false;
  }
}

/** The credential presented, as a key (never the credential): a token's hash, a session, a JWT's issuer and subject. */
function presenterOf(principal: Principal): string | undefined {
  const credential = principal.credential;
  if (credential === undefined) return undefined;
  switch (credential.kind) {
    case 'token':
      return `token ${credential.tokenHash}`;
    case 'session':
      return `session ${credential.session}`;
    case 'jwt':
      // Without a subject, every caller of the issuer looks alike: none joins another's approval.
      return credential.subject === null ? undefined : `jwt ${credential.issuer}\u0000${credential.subject}`;
  }
}

const RELOADED = 'The configuration was reloaded while the request waited for approval';

/** What a request was authorized on before it waited, and what it is forwarded with after. */
export interface AuthorizedRequest {
  readonly principal: Principal;
  readonly service: ServicePolicy;
  /** The path the service's routes matched (prefix removed). */
  readonly servicePath: string;
  readonly plan: CredentialPlan;
  readonly method: string;
  /** Canonical path as the agent sent it (prefix included). */
  readonly path: string;
}

/**
 * The stages from authenticate to authorize once more, under `policy`, the configuration in force when
 * the approval came: found by review, a request held for approval was forwarded under the configuration
 * it arrived in, after a reload had removed its agent, grant or scope, or moved the service to another
 * upstream or credential. The request still goes to the upstream origin (and base path) and with the
 * credential reference it was approved for, or not at all: an approver said yes to that.
 */
export function authorizeAfterApproval(
  held: AuthorizedRequest,
  policy: Policy,
  state: GovernanceState,
  binding: ListenerBinding,
  rawHeaders: readonly string[],
  now: number,
): void {
  const principal = authenticateAgain(held.principal, policy, state, now);
  const name = held.service.name;
  let plan: CredentialPlan;
  let service: ServicePolicy;
  try {
    const selected = selectService(policy, binding, rawHeaders, held.path);
    if (selected.service.name !== name || selected.path !== held.servicePath) {
      throw new AirlockError('scope_denied', `${held.path} no longer selects service ${name}.`);
    }
    service = selected.service;
    const grant = authorizeScope(principal, service, matchRoute(service, held.method, selected.path));
    plan = grant.credential ?? service.credential;
  } catch (error) {
    // The stage's own detail (what is missing, what an operator adds), said to be about the reload.
    if (!(error instanceof AirlockError)) throw error;
    throw new AirlockError(error.code, `${RELOADED}: ${error.detail} It was not sent.`, {
      headers: { ...error.headers },
      extensions: { ...error.extensions },
      ...(error.credentialRef === null ? {} : { credentialRef: error.credentialRef }),
      cause: error,
    });
  }
  const before = held.service.upstream;
  if (service.upstream.origin !== before.origin || service.upstream.basePath !== before.basePath) {
    throw new AirlockError('scope_denied', `${RELOADED}, and service ${name} now has another upstream than the one the approval was given for; it was not sent. Send it again to ask for a new approval.`);
  }
  if (plan.ref !== held.plan.ref) {
    throw new AirlockError('scope_denied', `${RELOADED}, and this call to service ${name} now uses another credential than the one the approval was given for; it was not sent. Send it again to ask for a new approval.`);
  }
}
