/**
 * The request lifecycle. This file draws it and calls the stages in this order; no other place decides
 * the order (DESIGN.md section 3).
 *
 *   agent ─▶ canonicalize ─▶ authenticate ─▶ revoked? ─▶ guard secrets ─▶ select service ─▶ match route ─▶ authorize ─▶ suspended? ─▶ rate limit ─▶ anomalies ─▶ approval ─▶ resolve credential ─▶ inject ─▶ forward ─▶ redact & stream ─▶ agent
 *              400 ◀─┘          401 ◀─┘      401/503 ◀─┘    400 ◀─┘          404 ◀─┘        403/405 ◀─┘    403 ◀─┘      503 ◀─┘      429 ◀─┘    401 ◀─┘     202/403 ◀─┘      503 ◀─┘                     502/504 ◀─┘      502 ◀─┘
 *   every exit ─▶ audit record + log line + metrics + trace + anomaly detector
 *                 (a record that cannot be written turns the answer into 503 audit_unavailable;
 *                  the path it records has agent and session tokens masked: pathForRecord)
 *
 *   400 at canonicalize (a path servers read differently) ─▶ its caller named when its credential is valid and not
 *                         revoked, for the record and denial_burst (identify-refused-caller.ts); the answer stays the 400
 *
 *   approval (hold) ─▶ reloaded meanwhile? ─▶ authenticate, select service, match route, authorize again
 *                      under the config now in force; same upstream and credential reference, or refused
 *                      401/403 ◀─┘ (authorizeAfterApproval)
 *
 *   /_airlock/health answers before authentication; /_airlock/sessions (task sessions) after the
 *   revocation check, in place of service selection.
 *   forward ─▶ an upstream status listed in the credential's retry_on (e.g. 401), on a replayable request
 *            ─▶ fetch the credential again ─▶ changed: inject and forward once more │ unchanged: relay the held answer
 *   while a response streams, a revocation of its agent, session, service or credential ends it (kill switch).
 *   Expect: 100-continue is answered once the request is allowed (after the rate limit), when the body is first read: a refused client never uploads it.
 *
 * `explainRequest` walks the same decision stages for `airlock explain`, without a network or a secret.
 */
import { randomUUID } from 'node:crypto';
import { METHODS, type IncomingMessage, type ServerResponse } from 'node:http';
import type { Readable } from 'node:stream';
import type { Duplex } from 'node:stream';
import { hasMalformedName } from '../ingress/parser-leniency.js';
import { Credential } from '../credentials/credential.js';
import { AirlockError, asAirlockError, isPolicyRefusal, operatorReason, type ErrorCode } from '../errors.js';
import { decodeUnreservedEscapes } from '../ingress/percent-escapes.js';
import { sendContinue } from '../ingress/expect-continue.js';
import { hasRequestBody, requestBody } from '../ingress/request-body.js';
import { connectionListedHeaders } from '../upstream/hop-by-hop.js';
import { checkConnectionOptions } from './build-upstream-request.js';
import type { AuditRecord } from '../observability/audit-record.js';
import type { SessionRecord } from '../state/governance-records.js';
import type { GovernanceState } from '../state/governance-state.js';
import type { AgentPolicy, CredentialPlan, GrantPolicy, Policy, ServicePolicy } from '../policy/compile-policy.js';
import type { CompiledRoute } from '../policy/route-table.js';
import { grantingEntry } from '../policy/scope-grant.js';
import { maskAgentTokens, TOKEN_IN_TEXT } from '../identity/agent-token.js';
import { authenticateAgent, type Principal } from './authenticate-agent.js';
import { approvalRequired, authorizeAfterApproval, awaitApproval } from './await-approval.js';
import { authorizeScope } from './authorize-scope.js';
import { canonicalizeTarget, type CanonicalTarget } from './canonicalize-target.js';
import { checkMintRate, checkRateLimit } from './check-rate-limit.js';
import { checkPrincipalRevocations, checkStateFresh, checkTargetRevocations, recheckAfterWait, recheckPrincipalAfterWait } from './check-revocations.js';
import type { ForwardResult } from './forward-request.js';
import { forwardWithRotation, outboundRequest, type RotationResult } from './forward-with-rotation.js';
import { decodedTarget, guardRequestSecrets, managedSecrets, noteHeldSecret, noteHeldSecretBeforeAuthentication } from './guard-request-secrets.js';
import { identifyRefusedCaller } from './identify-refused-caller.js';
import { matchRoute } from './match-route.js';
import type { ProxyRuntime } from './proxy-runtime.js';
import { auditAnswered, auditRequest, logRequest, observeRequest, stampDuration } from './record-outcome.js';
import type { RequestTrace } from '../observability/tracing.js';
import { resolveCredential } from './resolve-credential.js';
import { screenAnomalies } from './screen-anomalies.js';
import { selectService, type ListenerBinding } from './select-service.js';
import { answerRefusal, sendRawProblem } from './send-problem.js';
import { TrackedExchange } from './track-exchange.js';
import { isReservedPath, serveReserved } from './serve-reserved.js';
import { isSessionsPath, serveSessions } from './serve-sessions.js';

/**
 * `currentRuntime` is read once per request: a request runs start to end on the configuration it
 * arrived under, even when a reload swaps in a new one meanwhile. The one exception is a request held
 * for approval, which is authorized again under the configuration in force when the approval came.
 */
/**
 * The audit record of the request a response belongs to, and the failure node's parser reported on its
 * connection after the pipeline took the request (a broken chunk, a body past request_timeout): the raw
 * refusal handler answers that request under its own id and leaves the record to the pipeline, so one
 * request has one record and one answer.
 */
const RECORD = Symbol('airlock.record');
const CLIENT_FAILURE = Symbol('airlock.clientFailure');
/** The request's body as undici reads it: ended with the parser's failure the moment that is known. */
const BODY = Symbol('airlock.body');
type OwnedResponse = ServerResponse & { [RECORD]?: AuditRecord; [CLIENT_FAILURE]?: AirlockError; [BODY]?: Readable };

/** Applies a parser failure reported while the pipeline held the request (see RECORD). */
function applyClientFailure(res: ServerResponse, record: AuditRecord): void {
  const failure = (res as OwnedResponse)[CLIENT_FAILURE];
  if (failure === undefined) return;
  record.code = failure.code;
  record.status = failure.status;
  record.incomplete = true;
}

export function createRequestHandler(currentRuntime: () => ProxyRuntime, binding: ListenerBinding): (req: IncomingMessage, res: ServerResponse) => void {
  return function handleAgentRequest(req, res) {
    void runPipeline(currentRuntime(), currentRuntime, binding, req, res);
  };
}

/** Who the request was made as: the agent, and the session with its justification and task. */
function recordPrincipal(record: AuditRecord, principal: Principal): void {
  record.agent = principal.agent.name;
  record.session = principal.session?.id ?? null;
  record.justification = principal.session?.justification ?? null;
  record.task_id = principal.session?.taskId ?? null;
}

/** Nothing to undo: what untrack and releaseSlot are until a stage gives something to undo. */
const NOTHING = (): void => undefined;

/**
 * The pipeline, counted in flight. A throw that escaped the pipeline's own error handling is a bug:
 * logged, and the connection closed. One async function per request, not a wrapper awaiting it: each
 * is a frame and a promise that live until the response ends.
 */
async function runPipeline(runtime: ProxyRuntime, currentRuntime: () => ProxyRuntime, binding: ListenerBinding, req: IncomingMessage, res: ServerResponse): Promise<void> {
  runtime.inflight.enter();
  try {
    const startedAt = performance.now();
    const record = newRecord(runtime, req.method ?? null, runtime.clientAddress(req.socket.remoteAddress, req.headers['x-forwarded-for']));
    (res as OwnedResponse)[RECORD] = record;
    const trace = runtime.tracing.begin(req);
    record.trace_id = trace.traceId;
    let httpRoute: string | null = null;
    let forwarded: RotationResult;
    let upstreamStartedAt = 0;
    let exchange: TrackedExchange | null = null;
    let untrack = NOTHING;
    let releaseSlot = NOTHING;
    let screened = false;
    try {
      let target: CanonicalTarget;
      try {
        checkRequestShape(req, runtime.limits);
        target = canonicalizeTarget(req.url ?? '');
      } catch (error) {
        // Until the path is canonical the record keeps what was sent (rawPathForAudit).
        record.path = rawPathForAudit(req.url ?? '', runtime.catalog);
        // A path refused as probing, before authentication: named only here, as the agent whose valid
        // credential it carried, against which denial_burst then counts it (a refused shape is not named).
        // The answer stays this refusal, whoever sent it.
        if (error instanceof AirlockError && error.probing) {
          const identified = identifyRefusedCaller(runtime, req.rawHeaders, record.request_id);
          const caller = identified instanceof Promise ? await identified : identified;
          if (caller !== null) recordPrincipal(record, caller);
        }
        // A real key in a request refused for its shape is an incident all the same (guard-request-secrets.ts).
        throw noteHeldSecretBeforeAuthentication(error, managedSecrets(runtime), req.url ?? '', req.rawHeaders);
      }
      record.path = pathForRecord(target.path);
      if (isReservedPath(target.path) && !isSessionsPath(target.path)) {
        serveReserved(req, res, target.path, record.request_id, runtime.readiness);
        return;
      }

      // Stages that usually answer at once return a value, not a promise; only a promise is awaited
      // (each await is a suspension and a microtask per request).
      let principal: Principal;
      try {
        const authenticated = authenticateAgent(req.rawHeaders, runtime.policy, runtime.state, runtime.jwt, runtime.tokenHashes, runtime.nowMs());
        principal = authenticated instanceof Promise ? await authenticated : authenticated;
        recordPrincipal(record, principal);
        checkStateFresh(runtime.state, runtime.limits.stateStaleAfterMs, runtime.nowMs());
        // A revoked agent's or session's 401 too (found by review: an agent revoked for a suspected
        // prompt injection that then sent the real key left a record with neither credential nor reason).
        checkPrincipalRevocations(runtime.state, principal);
      } catch (failure) {
        // A real key sent without a valid token is an incident all the same (guard-request-secrets.ts).
        throw noteHeldSecret(failure, managedSecrets(runtime), decodedTarget(req.url ?? '', target), req.rawHeaders);
      }

      const requestSecrets = managedSecrets(runtime);
      guardRequestSecrets(requestSecrets, decodedTarget(req.url ?? '', target), req.rawHeaders);

      if (isSessionsPath(target.path)) {
        // A use of the session the call is made with (a child's mint among them: found by review, a
        // stolen session token minted a child from a new address and used that). The child then starts
        // from where its parent was first used.
        screened = true;
        screenAnomalies(runtime, principal, record);
        // serveSessions answers Expect: 100-continue, once the mint rate allows a mint.
        const { sessionMintBucket, sessionMintRate } = runtime.limits;
        const outcome = await serveSessions(
          req,
          res,
          target.path,
          principal,
          runtime.state,
          requestSecrets,
          record.request_id,
          runtime.nowMs(),
          runtime.limits.maxSessionsPerAgent,
          runtime.sessionMints,
          () => checkMintRate(runtime.rateLimiter, principal.agent.name, sessionMintBucket, sessionMintRate),
          () => recheckPrincipalAfterWait(runtime.state, principal, runtime.limits.stateStaleAfterMs, runtime.nowMs()),
        );
        record.decision = 'allow';
        record.route = outcome.route;
        record.status = outcome.status;
        if (outcome.session !== null) {
          record.session = outcome.session.id;
          record.justification = outcome.session.justification;
          record.task_id = outcome.session.taskId;
          if (outcome.status === 201) noteMintedSession(record, outcome.session);
        }
        const audited = await auditRequest(runtime, record, startedAt, true);
        observeRequest(runtime, record, trace, outcome.route, true);
        const parent = outcome.session?.parent ?? null;
        if (parent !== null && outcome.session !== null) runtime.anomalies.adoptFirstAddress(outcome.session.id, parent);
        logRequest(runtime, record, audited);
        return;
      }

      const selected = selectService(runtime.policy, binding, req.rawHeaders, target.path);
      record.service = selected.service.name;

      const route = matchRoute(selected.service, req.method ?? '', selected.path);
      record.route = route.template;
      record.scope = route.scope;
      httpRoute = selected.agentPrefix + route.template;

      const grant = authorizeScope(principal, selected.service, route);
      const plan = grant.credential ?? selected.service.credential;
      record.credential = plan.ref;
      checkTargetRevocations(runtime.state, selected.service.name, plan.ref);
      const slot = checkRateLimit(runtime.rateLimiter, runtime.concurrency, principal.agent.name, grant);
      releaseSlot = slot instanceof Promise ? await slot : slot;
      // From here the request rules have seen the request, even one they refuse.
      screened = true;
      screenAnomalies(runtime, principal, record);
      record.decision = 'allow';

      runtime.audit.assertWritable();
      const stream = requestBody(req, selected.service.config.max_body_bytes ?? runtime.limits.maxBodyBytes, requestSecrets, selected.service.config.method_overrides === 'refuse');
      // Authorized, and not too large by its Content-Length: a client waiting on Expect: 100-continue may
      // send its body now, not before (expect-continue.ts).
      sendContinue(res);
      if (stream !== null) (res as OwnedResponse)[BODY] = stream;
      let body: Readable | Buffer | null = stream;

      if (approvalRequired(grant, route)) {
        // An approval is for an exact request, body included: hold the body (bounded) to hash it.
        body = stream === null ? null : await collectBody(stream, runtime.limits.maxApprovalBodyBytes);
        const approved = await awaitApproval(
          runtime.approvals,
          req,
          { principal, service: selected.service, route, grant, method: req.method ?? '', path: target.path, query: target.query, body, plan, boundHeaders: runtime.limits.approvalHeaders },
          abortSignalOf(res),
          () => recheckAfterWait(runtime.state, principal, selected.service.name, plan.ref, runtime.limits.stateStaleAfterMs, runtime.nowMs()),
        ).catch((error: unknown) => {
          noteRefusedApproval(runtime.state, record, error);
          throw error;
        });
        record.approval = approved.id;
        record.approver = approved.approver;
        record.approval_reason = approved.reason;
        // A reload while the request was held may have taken away what it was authorized on (found by
        // review): it is authorized again under the config now in force. It still runs on this runtime
        // (pools, credential store), which the check keeps to the same upstream and credential reference.
        const latest = currentRuntime();
        if (latest !== runtime) {
          authorizeAfterApproval(
            { principal, service: selected.service, servicePath: selected.path, plan, method: req.method ?? '', path: target.path },
            latest.policy,
            latest.state,
            binding,
            req.rawHeaders,
            runtime.nowMs(),
          );
        }
        // Revocations are checked again below, before the upstream is asked, as after every wait.
      } else if (plan.retryOn.size > 0 && stream !== null && Number(req.headers['content-length'] ?? NaN) <= REPLAYABLE_BODY_BYTES) {
        // A small body is kept so the request can be replayed with a rotated credential.
        body = await collectBody(stream, REPLAYABLE_BODY_BYTES);
      }

      // A cached credential answers at once and has no span; a wait for the store (a fetch, or a refusal
      // while it fails) is the credential.resolve span, timed from when the resolution began.
      const resolveStartedAt = performance.now();
      const resolving = resolveCredential(runtime.secrets, plan);
      const credential = resolving instanceof Promise ? await traceResolve(trace, resolving, plan.ref, selected.service.name, resolveStartedAt) : resolving;
      record.generation = credential.generation;

      const pool = runtime.pools.get(selected.service.name);
      const gate = runtime.gates.get(selected.service.name);
      if (pool === undefined || gate === undefined) throw new Error(`no upstream pool for service ${selected.service.name}`);
      // node's parser may have refused the rest of this request (its body framing) while the stages above
      // ran: such a request is abandoned, never started upstream.
      const clientFailure = (res as OwnedResponse)[CLIENT_FAILURE];
      if (clientFailure !== undefined) throw clientFailure;
      // Checked again just before the upstream is asked: the stages above may have waited (a Redis rate
      // limit, a replayable body arriving, a credential fetch), and a revocation or lockdown made meanwhile
      // must stop this request, not only the next one. Nothing awaits between here and dispatch.
      recheckAfterWait(runtime.state, principal, selected.service.name, plan.ref, runtime.limits.stateStaleAfterMs, runtime.nowMs());
      upstreamStartedAt = performance.now();
      exchange = new TrackedExchange(runtime, principal, sessionChain(runtime, principal.session?.id ?? null), selected.service.name, plan.ref, res);
      untrack = runtime.killSwitch.track(exchange);
      forwarded = await forwardWithRotation({
        req,
        clientAddress: record.client ?? undefined,
        res,
        requestId: record.request_id,
        service: selected.service,
        servicePath: selected.path,
        agentPrefix: selected.agentPrefix,
        target,
        plan,
        credential,
        broker: runtime.secrets,
        pool,
        gate,
        catalog: runtime.catalog,
        body,
        trace,
        exchange,
      });
      if (forwarded.rotated !== undefined) {
        // Dual-credential overlap: the upstream refused the old value; the new one answered.
        record.rotated_from = forwarded.rotated.from ?? 'unversioned';
        record.generation = forwarded.rotated.to.generation;
      }
    } catch (error) {
      untrack();
      releaseSlot();
      const failure = asAirlockError(error);
      // A policy stage after the request was authorized (its approval, a revocation or lockdown while it
      // waited, a shared-state check that could not run) refused it as much as one before: found by
      // review, such records said `allow`, and an audit search for denials missed them. Once the upstream
      // was asked, `allow` stays: it saw the request, whatever the agent was then told.
      if (upstreamStartedAt === 0 && isPolicyRefusal(failure.code)) record.decision = 'deny';
      await refuse(runtime, req, res, record, failure, startedAt, trace, httpRoute, screened);
      return;
    }
    untrack();
    releaseSlot();
    // From the hand-over to undici: a wait for a connection under max_connections is Airlock's, not the
    // upstream's (it is in the request duration).
    runtime.metrics.observeUpstream(record.service ?? 'none', (performance.now() - (forwarded.sentAt === 0 ? upstreamStartedAt : forwarded.sentAt)) / 1000, forwarded.upstreamStatus);

    record.upstream_status = forwarded.upstreamStatus === 0 ? null : forwarded.upstreamStatus;
    record.status = record.upstream_status;
    record.code = forwarded.failure?.code ?? null;
    record.incomplete = !forwarded.complete;
    // Why it was cut, when Airlock cut it (found by an ops walkthrough: a stream cut by a revocation, by
    // shutdown or by the agent hanging up all read alike).
    if (!forwarded.complete && record.reason === null) {
      record.reason = exchange?.cutReason ?? (runtime.cutForStop() ? 'cut: Airlock was stopping, and the request was still running at the end of shutdown_timeout (or a second stop signal came).' : null);
    }
    record.redactions = forwarded.redactions;
    record.response_bytes = forwarded.responseBytes;
    applyClientFailure(res, record);
    // Counted before the audit write: whoever reads the audit line finds the metrics up to date.
    stampDuration(record, startedAt);
    observeRequest(runtime, record, trace, httpRoute, screened);
    auditAnswered(runtime, record, forwarded.failure?.cause);
  } catch (error) {
    runtime.logger.error({ err: error }, 'request pipeline failed outside its error handling');
    res.destroy();
  } finally {
    runtime.inflight.leave();
  }
}

/** Waits for a credential fetched from its store, as the request's credential.resolve span. */
async function traceResolve(trace: RequestTrace, resolving: Promise<Credential>, ref: string, service: string, startedAt: number): Promise<Credential> {
  let endResolve: ((error: string | null) => void) | null = null;
  try {
    // Inside the try: were opening the span to throw, the request is refused with that error and the
    // fetch's promise still gets a handler (an unhandled rejection would end the process).
    endResolve = trace.step('credential.resolve', { 'airlock.credential.ref': ref, 'airlock.service': service }, startedAt);
    const credential = await resolving;
    endResolve(null);
    return credential;
  } catch (error) {
    if (endResolve === null) void resolving.catch(() => undefined);
    else endResolve((error as { code?: string }).code ?? 'error');
    throw error;
  }
}

/** A session and the sessions it was narrowed from, nearest first (the kill switch matches any). */
function sessionChain(runtime: ProxyRuntime, id: string | null): string[] {
  const chain: string[] = [];
  for (let current = id; current !== null && chain.length < 32; ) {
    chain.push(current);
    current = runtime.state.session(current)?.parent ?? null;
  }
  return chain;
}

/** Aborts when the agent's connection closes before the response is complete (a held approval stops waiting). */
function abortSignalOf(res: ServerResponse): AbortSignal {
  const controller = new AbortController();
  res.once('close', () => {
    if (!res.writableFinished) controller.abort();
  });
  return controller.signal;
}

/** A denial or failure before anything was sent: audit first, and refuse with 503 if that fails. */
async function refuse(
  runtime: ProxyRuntime,
  req: IncomingMessage,
  res: ServerResponse,
  record: AuditRecord,
  failure: AirlockError,
  startedAt: number,
  trace: RequestTrace,
  httpRoute: string | null,
  screened: boolean,
): Promise<void> {
  record.code = failure.code;
  record.status = failure.status;
  if (failure.credentialRef !== null) record.credential = failure.credentialRef;
  // What the caller is not told (who revoked it and why, which store entry failed; errors.ts
  // OperatorReason): the operator's, in the record; the log line has it as the cause.
  const reason = operatorReason(failure);
  if (reason !== null) record.reason = reason;
  applyClientFailure(res, record);
  // The agent went away before its answer (a held request whose caller hung up): nothing was sent, so
  // the record says so with no status, as the log line did (found by review: the record said 403, and
  // a security team could not tell an agent that left from an approver who never decided).
  if (res.destroyed) record.status = null;
  const audited = await auditRequest(runtime, record, startedAt);
  let answer = failure;
  if (!audited && runtime.audit.failsClosed) {
    answer = auditUnavailable();
    record.code = answer.code;
    record.status = answer.status;
  }
  if (res.destroyed) record.status = null;
  // Observed before answering: a denial that trips the anomaly detector suspends the agent before the
  // agent can see this answer and send its next request.
  observeRequest(runtime, record, trace, httpRoute, screened, failure.probing);
  // The rest of a body the agent is still sending is read and thrown away, within bounds
  // (answerRefusal). A request whose connection node's parser refused was already answered on the socket.
  if ((res as OwnedResponse)[CLIENT_FAILURE] === undefined) answerRefusal(req, res, answer, record.request_id, (text) => runtime.catalog.scrub(text));
  logRequest(runtime, record, audited, failure.cause);
}

/**
 * Requests that never reach the pipeline as a parsed request: node's parser refused them (malformed,
 * headers too large, too slow), or they ask for a tunnel (CONNECT) or a protocol switch (Upgrade).
 * They are answered on the raw socket, which is then closed, and audited like any other request.
 */
export function createRawRefusalHandler(currentRuntime: () => ProxyRuntime): (socket: Duplex, failure: AirlockError, method: string | null) => void {
  return function refuseOnSocket(socket, failure, method) {
    // node leaves null here between responses on a keep-alive connection.
    const owner = (socket as { _httpMessage?: OwnedResponse | null })._httpMessage ?? undefined;
    const owned = owner?.[RECORD];
    // Only a failure in the body of the request being served is that request's; a malformed request
    // pipelined behind a complete one is its own request, with its own record.
    if (owner !== undefined && owned !== undefined && owner.req.complete === false) {
      // The pipeline holds this request: answer it under its id, and let its record say what happened.
      owner[CLIENT_FAILURE] ??= failure;
      // The body undici reads (or is about to) ends here with the failure, so the upstream request is
      // abandoned before its first byte when it has not started (a framing error in the first packet
      // is reported after the pipeline may already have dispatched), and cut at once when it has.
      owner[BODY]?.destroy(failure);
      if (socket.writable && !owner.headersSent) sendRawProblem(socket, failure, owned.request_id, (text) => currentRuntime().catalog.scrub(text));
      else socket.destroy();
      return;
    }
    const runtime = currentRuntime();
    const startedAt = performance.now();
    const record = newRecord(runtime, method, (socket as { remoteAddress?: string }).remoteAddress);
    record.code = failure.code;
    record.status = failure.status;
    const reason = operatorReason(failure);
    if (reason !== null) record.reason = reason;
    if (failure.credentialRef !== null) record.credential = failure.credentialRef;
    // A complete request ahead of this one on the connection is still being answered: HTTP/1.1 answers
    // in order (RFC 9112 9.3.2), so this refusal waits for that response to end.
    const ahead = owner !== undefined && !owner.writableFinished && !owner.destroyed ? new Promise<void>((resolve) => owner.once('close', () => resolve())) : Promise.resolve();
    void Promise.all([auditRequest(runtime, record, startedAt), ahead]).then(function answerRefusal([audited]) {
      // The same rule as refuse(): a record that cannot be written turns the answer into 503.
      const answer = audited || !runtime.audit.failsClosed ? failure : auditUnavailable();
      record.code = answer.code;
      record.status = answer.status;
      if (socket.writable) sendRawProblem(socket, answer, record.request_id, (text) => runtime.catalog.scrub(text));
      else socket.destroy();
      runtime.metrics.countRequest('none', 'none', 'deny', answer.code, record.duration_ms / 1000);
      logRequest(runtime, record, audited, failure.cause);
    }).catch(function refusalBug(error: unknown) {
      // Not awaited by anyone: unhandled, a throw here would end the process.
      runtime.logger.error({ err: error }, 'answering a request refused on its socket failed');
      socket.destroy();
    });
  };
}

function auditUnavailable(): AirlockError {
  return new AirlockError('audit_unavailable', 'The audit log cannot be written, so Airlock refuses requests until it can. An operator checks the disk and the audit file.');
}

export function newRecord(runtime: Pick<ProxyRuntime, 'nowMs' | 'isoTime'>, method: string | null, client: string | undefined): AuditRecord {
  return {
    time: runtime.isoTime.format(runtime.nowMs()),
    trace_id: null,
    request_id: randomUUID(),
    agent: null,
    session: null,
    justification: null,
    task_id: null,
    session_scopes: null,
    session_expires_at: null,
    session_parent: null,
    service: null,
    method,
    path: null,
    route: null,
    scope: null,
    decision: 'deny',
    code: null,
    status: null,
    upstream_status: null,
    response_bytes: 0,
    duration_ms: 0,
    credential: null,
    generation: null,
    rotated_from: null,
    approval: null,
    approver: null,
    approval_reason: null,
    actor: null,
    reason: null,
    redactions: 0,
    client: client ?? null,
    incomplete: false,
  };
}

/** Bodies up to this size are kept so the request can be replayed with a rotated credential. */
const REPLAYABLE_BODY_BYTES = 64 * 1024;

async function collectBody(body: Readable, limit: number): Promise<Buffer> {
  const chunks: Buffer[] = [];
  let size = 0;
  for await (const chunk of body) {
    size += (chunk as Buffer).length;
    if (size > limit) throw new AirlockError('payload_too_large', `The request body is larger than the ${limit} bytes Airlock holds while a request waits for approval (approvals.max_body_bytes).`);
    chunks.push(chunk as Buffer);
  }
  return Buffer.concat(chunks);
}

/**
 * What a mint gave, in its audit record: the session's scopes, end and parent. The state keeps a session
 * only until it ends; the audit log is where a security team reads later what an agent was allowed
 * during a task (found by review: the record named the new session alone).
 */
function noteMintedSession(record: AuditRecord, session: SessionRecord): void {
  record.session_scopes = Object.entries(session.scopes)
    .flatMap(([service, scopes]) => scopes.map((scope) => `${service}/${scope}`))
    .join(' ');
  // Not runtime.isoTime: its cached minute is the requests' (iso-time.ts).
  record.session_expires_at = new Date(session.expiresAt).toISOString();
  record.session_parent = session.parent;
}

/**
 * The approval a refusal was about (asked and pending, denied, expired, used, or given for another
 * request), and for a denial who denied it and why: in the audit record, as an approved request's are
 * (found by review: a denied request could not be tied to its approval or its approver).
 */
function noteRefusedApproval(state: GovernanceState, record: AuditRecord, error: unknown): void {
  const id = error instanceof AirlockError ? error.extensions['approval_id'] : undefined;
  if (id === undefined) return;
  record.approval = id;
  const approval = state.approval(id);
  if (approval?.status !== 'denied') return;
  record.approver = approval.decidedBy;
  record.approval_reason = approval.reason;
}

/**
 * The path as records keep it: the audit record, the log line and the span's url.path all read
 * record.path. An agent or session token, or a signed JWT, in it is masked (prefix kept, so the
 * operator sees what it was): such a request is refused (401, or 400 by guardRequestSecrets), but its
 * record kept the token as sent (found by review).
 */
function pathForRecord(path: string): string {
  return maskAgentTokens(path);
}

/**
 * Until the path is canonical the record keeps what was sent (no query: values there may be secrets),
 * cut at 512 characters. Masked and scrubbed before the cut (invariant 1; found by review): the scrub
 * of the audit line and the log line comes after, and cannot recognize the part of a secret left in
 * front of the cut. Escapes of unreserved characters are read first, as canonicalization would, so a key
 * or token spelled with them ("%73k-...") is recognized too.
 */
function rawPathForAudit(target: string, catalog: Pick<ProxyRuntime['catalog'], 'scrub'>): string {
  const questionMark = target.indexOf('?');
  const sent = questionMark === -1 ? target : target.slice(0, questionMark);
  let path = catalog.scrub(pathForRecord(sent));
  if (path.includes('%')) {
    // The path as sent, for the forensic record, unless decoding its escapes spells out a secret or a
    // token (%73k-live-...): then the decoded path, masked. Decoded from the path already masked as sent
    // (as the approval preview reads its text), so what was masked as sent stays masked.
    const decoded = decodeUnreservedEscapes(path);
    const masked = catalog.scrub(pathForRecord(decoded));
    if (masked !== decoded) path = masked;
  }
  return path.length > 512 ? `${path.slice(0, 512)}...` : path;
}

/**
 * node silently drops header lines past server.maxHeadersCount; Airlock sets that limit off and counts
 * here instead, so a flood is refused rather than truncated (a truncated list could hide a header).
 * A transfer coding other than chunked (RFC 9112 6.1) would reach the upstream undecoded as the body
 * once the hop-by-hop Transfer-Encoding is removed, so it is refused.
 */
/**
 * Refusals of a message whose framing cannot be trusted close the connection (RFC 9112 6.1: "close the
 * connection after processing the message"): what node read as this body's end may not be where a front
 * end meant it, and the bytes after it would be read as a next request (found by review: a request
 * hidden there was forwarded). answerRefusal does not keep or drain such a connection.
 */
const FAULTY_FRAMING = { headers: { connection: 'close' } };
/**
 * Set on a socket once a request on it was refused for its framing. node parses what follows in the
 * same packet at once, and a request pipelined there reaches the pipeline before the connection closes:
 * it is refused, never forwarded.
 */
const FRAMING_BROKEN = Symbol('airlock.framingBroken');

function faultyFraming(req: IncomingMessage, detail: string): AirlockError {
  (req.socket as { [FRAMING_BROKEN]?: true })[FRAMING_BROKEN] = true;
  return new AirlockError('invalid_request', detail, FAULTY_FRAMING);
}

function checkRequestShape(req: IncomingMessage, limits: ProxyRuntime['limits']): void {
  if ((req.socket as { [FRAMING_BROKEN]?: true })[FRAMING_BROKEN] === true) {
    throw new AirlockError('invalid_request', 'An earlier request on this connection was refused for its framing, so what follows it cannot be trusted as a request; open a new connection.', FAULTY_FRAMING);
  }
  const raw = req.rawHeaders;
  if (raw.length / 2 > limits.maxHeaders) {
    throw new AirlockError('headers_too_large', `The request has ${raw.length / 2} header fields; the limit is ${limits.maxHeaders} (limits.max_headers).`);
  }
  // What llhttp 9 refuses while parsing, checked here on the llhttp 8 of Node 20 before 20.19.2.
  if (limits.checkHeaderNames && hasMalformedName(raw)) {
    throw faultyFraming(req, 'A header name is not a token (a space before its colon, or an empty name; RFC 9112 section 5.1); send each header as Name: value.');
  }
  // node's parser reads "GET /x" (no version, HTTP/0.9) and "HTTP/2.0" request lines, headers and all;
  // only HTTP/1.0 and 1.1 are spoken here (HTTP/2 agents are refused, README).
  if (req.httpVersionMajor !== 1) {
    throw faultyFraming(req, `HTTP/${req.httpVersion} is not accepted; Airlock speaks HTTP/1.1 (and 1.0) to agents.`);
  }
  // Host is required of HTTP/1.1 requests (RFC 9112 3.2); node's own check would answer without a problem body or an audit record.
  if (req.httpVersionMinor === 1 && req.headers.host === undefined) {
    throw new AirlockError('invalid_request', 'An HTTP/1.1 request must carry a Host header (RFC 9112 section 3.2).');
  }
  const codings = req.headers['transfer-encoding'];
  if (codings !== undefined && req.httpVersionMinor === 0) {
    // RFC 9112 6.1: Transfer-Encoding in an HTTP/1.0 message means the framing is faulty.
    throw faultyFraming(req, 'Transfer-Encoding is not part of HTTP/1.0; send HTTP/1.1, or a Content-Length.');
  }
  if (codings !== undefined && codings.split(',').some((c) => c.trim().toLowerCase() !== 'chunked')) {
    throw faultyFraming(req, `Transfer-Encoding "${codings}" is not supported; send the body with Content-Length or plain chunked framing.`);
  }
  // Content-Type is a singleton (RFC 9110 8.3): node keeps the first copy, which picks the body's override
  // watch (override-watch.ts), while an upstream that takes the last (or joins them) could read the body
  // as another type, unchecked (found by the owner's review). Both copies would be forwarded, so refuse.
  if (req.headers['content-type'] !== undefined && repeatsField(raw, 'content-type')) {
    throw new AirlockError('invalid_request', 'The request carries more than one Content-Type header; send exactly one.');
  }
  // A coded body (gzip, deflate, br) is read by the secret check and the override watches as its coded
  // bytes, while an upstream that decodes it (Express's body-parser does by default) would run the
  // `_method` inside, or receive a managed secret, unchecked (found by the owner's review). Fail closed.
  const coding = req.headers['content-encoding'];
  if (coding !== undefined && coding.trim().toLowerCase() !== 'identity' && hasRequestBody(req)) {
    throw new AirlockError('invalid_request', 'Compressed request bodies (Content-Encoding) are not accepted: Airlock could not check them for secrets and method overrides. Send the body uncompressed.');
  }
  // Before authentication and any approval: a held request would otherwise be shown to an approver and
  // refused only when forwarded (buildUpstreamRequest checks again, for its other callers).
  if (req.headers.connection !== undefined) checkConnectionOptions(connectionListedHeaders(raw));
  const expectation = req.headers.expect;
  if (expectation !== undefined && expectation.trim().toLowerCase() !== '100-continue') {
    // RFC 9110 10.1.1: only 100-continue is defined; a server MAY answer others with 417.
    throw new AirlockError('invalid_request', `Expect: ${expectation} is not supported; only "Expect: 100-continue" is.`);
  }
}

/** Whether the raw header list names `lowerName` more than once (any case). */
function repeatsField(raw: readonly string[], lowerName: string): boolean {
  let seen = 0;
  for (let i = 0; i < raw.length; i += 2) {
    const name = raw[i] as string;
    if (name.length === lowerName.length && name.toLowerCase() === lowerName && ++seen > 1) return true;
  }
  return false;
}

export interface Explanation {
  readonly decision: 'allow' | 'deny';
  readonly code: ErrorCode | null;
  readonly reason: string;
  readonly agent: AgentPolicy | null;
  readonly service: ServicePolicy | null;
  readonly route: CompiledRoute | null;
  /** The grant entry that holds the scope ("chat:write", "files:*", "*"). */
  readonly grantedBy: string | null;
  /** The agent's grant for the service, when it holds the scope: its approval and rate terms. */
  readonly grant: GrantPolicy | null;
  readonly credential: CredentialPlan | null;
  /** Path and query as they would be sent upstream (before credential injection). */
  readonly upstreamTarget: string | null;
}

/**
 * The decision for a request arriving on the listener `binding` names (the shared one unless a service's
 * own), by the same stages as the live path, with the agent given by name.
 */

export function explainRequest(policy: Policy, agentName: string, method: string, target: string, host: string | null, binding: ListenerBinding = { kind: 'shared' }): Explanation {
  let agent: AgentPolicy | null = null;
  let service: ServicePolicy | null = null;
  let route: CompiledRoute | null = null;
  try {
    // Looked up first so a refused path still shows the agent; the decision order is the live one.
    agent = policy.agentByName.get(agentName) ?? null;
    // node's parser refuses a method it does not know (TRACK, FROB) before the pipeline runs: the live
    // answer is 400, not the 405 that matchRoute would give.
    if (!METHODS.includes(method)) {
      // Methods are case-sensitive (RFC 9110 9.1): node's parser refuses `get` as it refuses FROB (found
      // by a fresh-user walkthrough: explain said ALLOW GET for `get`, and the request got 400).
      const upper = method.toUpperCase();
      throw new AirlockError(
        'invalid_request',
        METHODS.includes(upper)
          ? `${method} is not ${upper}: methods are case-sensitive (RFC 9110 9.1), and node's parser refuses a request with ${method} as malformed before any route is looked at. Explain ${upper} instead.`
          : `${upper} is not an HTTP method node's parser accepts; such a request is refused as malformed before any route is looked at.`,
      );
    }
    const canonical = canonicalizeTarget(target);
    if (agent === null) {
      throw new AirlockError('unauthenticated', `No agent named ${agentName}; agents are: ${[...policy.agentByName.keys()].join(', ') || '(none)'}.`);
    }
    // Where the live pipeline's secret guard refuses it, after authentication and before any service is
    // selected (guard-request-secrets.ts); a managed secret's value there is refused too, but explain
    // reads no secret values, and says so (explain-command.ts).
    if (TOKEN_IN_TEXT.test(target)) throw new AirlockError('invalid_request', 'An Airlock agent or session token appears in the query string or the path; it would be forwarded upstream. Send it only as the API key (Authorization, x-api-key, api-key).');
    const selected = selectService(policy, binding, host === null ? [] : ['host', host], canonical.path);
    service = selected.service;
    route = matchRoute(service, method.toUpperCase(), selected.path);
    const grant = authorizeScope({ agent, session: null, via: 'token' }, service, route);
    const credential = grant.credential ?? service.credential;
    // The target the upstream is sent: method overrides and the service's strip lists taken out of the
    // query, a query-injected credential added (shown by name, never read); found by an ops walkthrough:
    // explain showed the query as the agent sent it.
    // What explain injects in place of a value it never reads, then names the reference there: a new
    // marker each time, which no target can hold already (found by review: one typed in the query
    // moved the label).
    const injectedHere = `airlock-injects-${randomUUID()}`;
    const upstreamTarget = outboundRequest(service, method.toUpperCase(), selected.path, canonical.query, [], undefined, credential, new Credential(credential.ref, injectedHere, null))
      .target()
      .replaceAll(injectedHere, `<the value of ${credential.ref}>`);
    return {
      decision: 'allow',
      code: null,
      reason: `agent ${agent.name} holds scope ${route.scope} on service ${service.name}`,
      agent,
      service,
      route,
      grantedBy: grantingEntry(grant.scopes, route.scope),
      grant,
      credential,
      upstreamTarget,
    };
  } catch (error) {
    const failure = asAirlockError(error);
    return { decision: 'deny', code: failure.code, reason: failure.detail, agent, service, route, grantedBy: null, grant: null, credential: null, upstreamTarget: null };
  }
}
