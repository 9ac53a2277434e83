/**
 * The admin API and console, on their own listener (admin.listen; keep it on loopback or a private
 * network). JSON in and out; errors are the same RFC 9457 problems as on the agent side. Every API call
 * needs an admin token; the console's static files do not (the page asks for the token and sends it
 * with each call). Nothing returned holds a secret value: credentials are described by reference and
 * generation, sessions without their tokens, approvals with a preview of the request's query and body
 * in which secrets, key shapes and Airlock tokens were masked before it was cut (preview-request.ts);
 * every JSON answer also passes the secret catalogue's scrubber as a backstop. Changes are audited with
 * the admin token's name as `actor`.
 *
 *   GET  /v1/health                          audit log, shared state, credentials, pending approvals, lockdown
 *   GET  /v1/credentials                     per reference: state, generation, age, failures
 *   POST /v1/credentials/refresh             {"ref"}: fetch again now (rotation)
 *   GET  /v1/agents                          agents, grants, revocation, live sessions
 *   POST /v1/agents/:name/revoke             {"reason"}: every token and session of the agent, at once
 *   POST /v1/agents/:name/restore            lift it
 *   GET  /v1/sessions                        live task sessions
 *   POST /v1/sessions/:id/revoke             {"reason"}
 *   GET  /v1/approvals[?status=pending]      approvals, newest last, each with its preview (query, body)
 *   POST /v1/approvals/:id/approve|deny      {"reason"}
 *   GET  /v1/anomalies[?agent=&limit=]       recent anomaly events with their evidence
 *   GET  /v1/revocations                     what is revoked, by whom, why
 *   POST /v1/revocations                     {"kind": agent|session|credential|service|all, "target", "reason"}
 *   POST /v1/revocations/lift                {"kind", "target"}
 *   GET  /v1/audit/stream[?replay=N]         server-sent events: the last N records, then each record as written
 *   GET  /metrics                            Prometheus metrics (no token: counts only, no secrets)
 *   GET  /  /console.js  /console.css        the console
 */
import { randomUUID } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { EXPIRY_WARNING_DAYS, type TlsIdentity } from '../ingress/tls-identity.js';
import { serveTls, type TlsFailureReason } from '../ingress/serve-tls.js';
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import { createServer as createHttpsServer } from 'node:https';
import type { Socket } from 'node:net';
import type { Logger } from 'pino';
import type { Registry } from 'prom-client';
import type { CredentialBroker } from '../credentials/credential-broker.js';
import { parseSecretRef } from '../credentials/secret-ref.js';
import { open } from 'node:fs/promises';
import { AirlockError, asAirlockError } from '../errors.js';
import { holdsAgentToken, maskAgentTokens, TOKEN_IN_TEXT } from '../identity/agent-token.js';
import { SESSION_ID } from '../identity/mint-session.js';
import type { AuditLog } from '../observability/audit-log.js';
import type { AuditRecord } from '../observability/audit-record.js';
import type { AnomalyDetector } from '../policy/anomaly-detector.js';
import { APPROVAL_ID, type ApprovalBroker } from '../policy/approval-broker.js';
import { previewView } from '../policy/preview-request.js';
import { allSecretRefs, type Policy } from '../policy/compile-policy.js';
import { canonicalizeTarget, ENCODED_SLASH } from '../pipeline/canonicalize-target.js';
import { answerRefusal, sendRawProblem } from '../pipeline/send-problem.js';
import { refuseClientErrors } from '../ingress/create-listener.js';
import type { GuardScope, SecretCatalog } from '../redaction/secret-catalog.js';
import { looksLikeKey, maskKeyShapes } from '../redaction/key-patterns.js';
import { SecretDetector } from '../redaction/secret-detector.js';
import { REVOCATION_KINDS, type ApprovalRecord, type RevocationKind, type SessionRecord } from '../state/governance-records.js';
import type { GovernanceState } from '../state/governance-state.js';
import { REQUEST_ID_HEADER } from '../upstream/relay-headers.js';
import { authenticateAdmin, presentedToAdmin, type AdminDirectory } from './authenticate-admin.js';
import { AdminConnections } from './bound-admin-connections.js';
import { checkAdminHost } from './check-admin-host.js';

export interface AdminContext {
  readonly directory: AdminDirectory;
  /** Host names answered besides the ones every admin listener answers to (check-admin-host.ts). */
  readonly hosts: ReadonlySet<string>;
  /** Prometheus exposition of this instance's registry. */
  readonly metrics: Registry;
  /** The /metrics text: this registry's, or the whole cluster's under `workers` (cluster-metrics.ts). */
  readonly metricsText: () => Promise<string>;
  readonly broker: CredentialBroker;
  readonly audit: AuditLog;
  readonly catalog: SecretCatalog;
  readonly logger: Logger;
  readonly policy: Policy;
  /** What POST /v1/credentials/refresh accepts: the references services and grants inject, and store logins'. */
  readonly refreshable: ReadonlySet<string>;
  /** What a reason is checked against: managed values but identifiers (proxy-runtime.ts). */
  readonly guard: GuardScope;
  readonly state: GovernanceState;
  readonly approvals: ApprovalBroker;
  readonly anomalies: AnomalyDetector;
  /** Writes an audit record for an admin change. */
  readonly auditChange: (change: AdminChange) => Promise<void>;
  readonly now: () => number;
  /** The certificate the agent listeners present (tls), never its key; null without tls. */
  readonly certificate: CertificateView | null;
  /** The certificate this admin listener presents (admin.tls), never its key; null without admin.tls. */
  readonly adminCertificate: CertificateView | null;
  /** The shared state as /_airlock/ready reads it (app.ts), so /v1/health cannot say ok while readiness says 503. */
  readonly sharedState: () => SharedStateView;
}

/** A served certificate as the admin API shows it: public parts only. */
export interface CertificateView {
  readonly subject: string;
  readonly names: string;
  readonly notAfter: number;
}

/** The governance state's backend and whether this replica is cut off from it. */
export interface SharedStateView {
  readonly type: 'memory' | 'redis';
  /** Since when Redis has been unreachable (either connection, or its state not yet reloaded); null when reachable. */
  readonly unreachableSince: number | null;
  /** Unreachable past state.stale_after: requests that need shared state are refused (503 state_unavailable). */
  readonly stale: boolean;
  /** state.stale_after in seconds; null for memory, which is never stale. */
  readonly staleAfterSeconds: number | null;
}

export interface AdminChange {
  readonly actor: string;
  readonly method: string;
  readonly path: string;
  readonly route: string;
  readonly agent: string | null;
  readonly session: string | null;
  readonly credential: string | null;
  readonly service: string | null;
  readonly approval: string | null;
  readonly reason: string;
  readonly status: number;
}

const MAX_BODY = 64 * 1024;
const MAX_REASON = 1000;
const CONSOLE_DIR = new URL('../../console/', import.meta.url);

/**
 * The body of an admin change, refused when it carries a managed credential's value or an Airlock token
 * (as it is or encoded): its reason and target are kept as they are in the state file (and in the audit
 * log, scrubbed there). Once the body is in, the caller's token is checked again against the admin
 * tokens now in force (found by review: a token a reload removed while its body was still arriving,
 * which may take the request deadline, still made its change).
 */
async function readJson(context: AdminContext, call: AdminCall): Promise<Record<string, unknown>> {
  const body = await readJsonObject(call.req);
  call.recheck();
  let text: string;
  try {
    text = JSON.stringify(body);
  } catch (error) {
    // Nested deeper than the stack goes: JSON.parse took it, JSON.stringify cannot (found by review: a 500).
    if (error instanceof RangeError) throw new AirlockError('invalid_request', 'The request body is nested too deeply; send a flat object such as {"reason": "..."}.');
    throw error;
  }
  const ref = SecretDetector.findInBytes(context.catalog.index(context.guard.key, null, [], context.guard.exempt), Buffer.from(text, 'utf8'));
  if (ref !== null) throw new AirlockError('invalid_request', `The request carries the value of the credential ${ref}; reasons and targets are kept in the state file and the audit log. Leave the value out.`, { credentialRef: ref });
  if (holdsAgentToken(text)) throw new AirlockError('invalid_request', 'The request carries an Airlock agent or session token; reasons and targets are kept in the state file and the audit log. Name the agent or the session id instead.');
  return body;
}

async function readJsonObject(req: IncomingMessage): Promise<Record<string, unknown>> {
  const chunks: Buffer[] = [];
  let size = 0;
  try {
    for await (const chunk of req) {
      size += (chunk as Buffer).length;
      if (size > MAX_BODY) throw new AirlockError('payload_too_large', `Admin request bodies are limited to ${MAX_BODY} bytes.`);
      chunks.push(chunk as Buffer);
    }
  } catch (error) {
    // The client closed the connection mid-body: its mistake (or its network's), not a fault of ours to log as one.
    if (error instanceof AirlockError || req.complete) throw error;
    throw new AirlockError('invalid_request', 'The request body ended before its announced length (the client closed the connection, or sent too slowly).');
  }
  if (size === 0) return {};
  try {
    const parsed: unknown = JSON.parse(Buffer.concat(chunks).toString('utf8'));
    if (parsed !== null && typeof parsed === 'object' && !Array.isArray(parsed)) return parsed as Record<string, unknown>;
  } catch {
    // fall through
  }
  throw new AirlockError('invalid_request', 'The admin API takes a JSON object as its request body.');
}

function reasonOf(body: Record<string, unknown>): string {
  const reason = body['reason'] ?? '';
  if (typeof reason !== 'string' || reason.length > MAX_REASON) throw new AirlockError('invalid_request', `"reason" is a string of up to ${MAX_REASON} characters.`);
  return reason.trim();
}

/** A whole number in [min, max] from the query, or `fallback` when absent; anything else is refused, not clamped. */
function countParameter(query: URLSearchParams, name: string, fallback: number, min: number, max: number): number {
  const raw = query.get(name);
  if (raw === null) return fallback;
  if (!/^\d{1,7}$/.test(raw) || Number(raw) < min || Number(raw) > max) {
    throw new AirlockError('invalid_request', `"${name}" is a whole number from ${min} to ${max}.`);
  }
  return Number(raw);
}

function sendJson(res: ServerResponse, status: number, body: unknown, requestId: string, catalog: SecretCatalog): void {
  const text = catalog.scrub(JSON.stringify(body));
  res.writeHead(status, { 'content-type': 'application/json; charset=utf-8', 'content-length': Buffer.byteLength(text), 'cache-control': 'no-store', [REQUEST_ID_HEADER]: requestId });
  res.end(text);
}

function iso(ms: number | null): string | null {
  return ms === null ? null : new Date(ms).toISOString();
}

function sessionView(session: SessionRecord): Record<string, unknown> {
  return {
    id: session.id,
    agent: session.agent,
    parent: session.parent,
    scopes: session.scopes,
    justification: session.justification,
    task_id: session.taskId,
    created_at: iso(session.createdAt),
    expires_at: iso(session.expiresAt),
  };
}

function approvalView(approval: ApprovalRecord, now: number): Record<string, unknown> {
  const status = approval.status === 'pending' && approval.expiresAt <= now ? 'expired' : approval.status;
  return {
    id: approval.id,
    status,
    agent: approval.agent,
    service: approval.service,
    method: approval.method,
    path: approval.path,
    route: approval.route,
    scope: approval.scope,
    session: approval.session,
    justification: approval.justification,
    task_id: approval.taskId,
    mode: approval.mode,
    created_at: iso(approval.createdAt),
    expires_at: iso(approval.expiresAt),
    decided_by: approval.decidedBy,
    reason: approval.reason,
    decided_at: iso(approval.decidedAt),
    preview: previewView(approval),
  };
}

type Handler = (context: AdminContext, call: AdminCall) => Promise<unknown>;

interface AdminCall {
  readonly req: IncomingMessage;
  readonly res: ServerResponse;
  readonly requestId: string;
  readonly actor: string;
  /** The canonical path (canonicalize-target.ts): what the audit record keeps, not the raw target. */
  readonly path: string;
  /** Throws 401 when the caller's token is no longer an admin token (a reload removed it meanwhile). */
  readonly recheck: () => void;
  readonly params: Readonly<Record<string, string>>;
  readonly query: URLSearchParams;
}

interface Route {
  readonly method: string;
  readonly template: string;
  readonly pattern: RegExp;
  readonly names: readonly string[];
  readonly handler: Handler;
}

function route(method: string, template: string, handler: Handler): Route {
  const names: string[] = [];
  const pattern = new RegExp(
    `^${template.replace(/:([a-z]+)/g, (_m, name: string) => {
      names.push(name);
      return '([A-Za-z0-9_.:@-]+)';
    })}$`,
  );
  return { method, template, pattern, names, handler };
}

/** A change an admin made: recorded as a governance event, audited, then answered. */
async function change(context: AdminContext, call: AdminCall, what: Omit<AdminChange, 'actor' | 'method' | 'path' | 'status' | 'route'> & { route: string }, body: unknown, status = 200): Promise<unknown> {
  // The canonical path, tokens masked (found by review: the raw target was kept, an absolute-form one
  // with its user:password@ part, and escapes undecoded).
  await context.auditChange({ ...what, actor: call.actor, method: call.req.method ?? '', path: maskAgentTokens(call.path), status });
  context.logger.info({ actor: call.actor, route: what.route, agent: what.agent, session: what.session, credential: what.credential, service: what.service, approval: what.approval, reason: what.reason }, 'admin change');
  return body;
}

const APPROVAL_STATUSES: readonly string[] = ['pending', 'approved', 'denied', 'expired', 'consumed'] satisfies readonly ApprovalRecord['status'][];

/**
 * A revocation's target that cannot name anything (found by review: any string was kept, and repeated
 * in the state file, the audit log, logs, admin output and the CLI). A session's target must be a
 * session id: sessions are revoked by ids this replica may not know yet (another replica's), so it
 * cannot be checked against the live ones. Otherwise a target that names what it should (an agent, a
 * service or a credential reference of the policy; for a lift, a revocation in force) is taken whatever
 * it looks like: config names such as sk-support-triage-bot-prod or ASIAPACIFICSALESBOT01 match key
 * shapes, and refusing them left such an agent impossible to revoke, or to restore once the anomaly
 * detector had suspended it (found by review). Any other target that looks like a key was pasted by
 * mistake: refused without being repeated, as it would otherwise be copied to every replica.
 */
function refuseOddTarget(context: AdminContext, kind: string, target: string, lifting: boolean): void {
  if (lifting && context.state.revocation(kind as RevocationKind, target) !== null) return;
  if (kind === 'session' && !SESSION_ID.test(target)) throw new AirlockError('invalid_request', 'A session is named by its id: "ses_" and 16 letters, digits, "-" or "_", as GET /v1/agents, the audit record\'s "session" and the mint response show.');
  const named =
    (kind === 'agent' && context.policy.agentByName.has(target)) ||
    (kind === 'service' && context.policy.serviceByName.has(target)) ||
    (kind === 'credential' && allSecretRefs(context.policy).includes(target));
  if (!named && looksLikeKey(target)) throw new AirlockError('invalid_request', 'The target looks like an API key or token and names nothing revoked or configured, so it is neither kept nor repeated here; a revocation names an agent, a session id, a credential reference (env:NAME, file:NAME, vault:...) or a service.');
}

async function revoke(context: AdminContext, call: AdminCall, kind: RevocationKind, target: string, reason: string, routeTemplate: string): Promise<unknown> {
  if (kind === 'agent' && !context.policy.agentByName.has(target)) throw new AirlockError('not_found', `There is no agent named ${target}.`);
  if (kind === 'service' && !context.policy.serviceByName.has(target)) throw new AirlockError('not_found', `There is no service named ${target}.`);
  if (kind === 'credential' && !allSecretRefs(context.policy).includes(target)) {
    throw new AirlockError('not_found', `No service or grant injects ${target}; the credentials in use are: ${allSecretRefs(context.policy).join(', ')}.`);
  }
  if (kind === 'all' && target !== '*') throw new AirlockError('invalid_request', 'A lockdown (kind "all") has target "*".');
  // Revoked already: the revocation in force is kept as it was made, not replaced by this one (found by
  // review: a second revoke overwrote who revoked and why, the anomaly detector's evidence among them).
  // The call is still audited, with its own reason.
  const standing = context.state.revocation(kind, target);
  if (standing !== null) {
    return change(
      context,
      call,
      { route: routeTemplate, agent: kind === 'agent' ? target : null, session: kind === 'session' ? target : null, credential: kind === 'credential' ? target : null, service: kind === 'service' ? target : null, approval: null, reason },
      {
        revoked: { kind, target, reason: standing.reason, by: standing.by, at: iso(standing.at) },
        note: `Already revoked by ${standing.by} at ${iso(standing.at)}; that revocation stays as it was made (its reason is kept), and this call is in the audit trail with its own.${
          // Found by review: a second revoke said nothing of a first one the store had not taken.
          context.state.revocationUnsaved(kind, target) ? ' It is not yet written to the shared state (it was unreachable): it holds on this replica, and is written once the state answers.' : ''
        }`,
      },
    );
  }
  const unknownSession = kind === 'session' && context.state.session(target) === null;
  const revocation = { kind, target, reason, by: call.actor, at: context.now() };
  const outcome = await context.state.record({ type: 'revocation.added', revocation });
  return change(
    context,
    call,
    {
      route: routeTemplate,
      agent: kind === 'agent' ? target : null,
      session: kind === 'session' ? target : null,
      credential: kind === 'credential' ? target : null,
      service: kind === 'service' ? target : null,
      approval: null,
      reason,
    },
    {
      revoked: { kind, target, reason, by: call.actor, at: iso(revocation.at) },
      // Kept even so, not refused: with shared state the session may live on a replica this one has not
      // heard from yet (cut off from Redis, or the mint not yet replicated), and a kill switch that
      // refuses is worse than one that names what it could not check. A typo is visible here.
      ...(unknownSession
        ? { note: `No live session ${target} is known to this replica. The revocation is kept: it ends the session if one with this id exists on another replica or is minted there (shared state), and does nothing otherwise.` }
        : {}),
      // Shared state unreachable: enforced here now, by the other replicas once it is back.
      ...(outcome === 'pending' ? { propagation: 'pending: the state store could not keep it (Redis unreachable, or the state file not writable); this process enforces the revocation now and writes it to the store as soon as it can (retried every second), for the other replicas and for restarts' } : {}),
    },
  );
}

async function lift(context: AdminContext, call: AdminCall, kind: RevocationKind, target: string, reason: string, routeTemplate: string): Promise<unknown> {
  if (context.state.revocation(kind, target) === null) throw new AirlockError('not_found', kind === 'all' ? 'No lockdown is in force.' : `Nothing is revoked for ${kind} ${target}.`);
  // Revoking a session ends it (and the sessions narrowed from it), like revoking a Vault token: there
  // is nothing to bring back, and saying "restored" would be a lie.
  if (kind === 'session') {
    throw new AirlockError('invalid_request', `Session ${target} was ended when it was revoked, and an ended session cannot be restored. The agent mints a new one (POST /_airlock/sessions).`);
  }
  await context.state.record({ type: 'revocation.lifted', kind, target, by: call.actor, at: context.now() });
  return change(
    context,
    call,
    // The restorer's reason, when given, in the audit record as a revocation's is (found by review: it was dropped).
    { route: routeTemplate, agent: kind === 'agent' ? target : null, session: null, credential: kind === 'credential' ? target : null, service: kind === 'service' ? target : null, approval: null, reason },
    { lifted: { kind, target, by: call.actor } },
  );
}

function certificateView(certificate: CertificateView | null, nowMs: number): Record<string, unknown> | null {
  if (certificate === null) return null;
  return { subject: certificate.subject, names: certificate.names, expires_at: new Date(certificate.notAfter).toISOString(), expires_in_days: Math.floor((certificate.notAfter - nowMs) / 86_400_000) };
}

const ROUTES: readonly Route[] = [
  route('GET', '/v1/health', async (context) => {
    const credentials = context.broker.status();
    const lockdown = context.state.revocation('all', '*');
    // A certificate within EXPIRY_WARNING_DAYS of its end needs an operator, as `airlock status` says
    // (found by the TLS walkthrough: status said NEEDS ATTENTION while this said ok).
    const renew = [context.certificate, context.adminCertificate].some((certificate) => certificate !== null && certificate.notAfter - context.now() < EXPIRY_WARNING_DAYS * 86_400_000);
    // Redis past state.stale_after refuses requests and fails readiness (found by review: this said ok
    // then, and so did `airlock status`). Unreachable for less is shown, not degraded: requests are
    // still served from what this replica knows, and a blip would make every probe flap.
    const shared = context.sharedState();
    return {
      status: context.audit.healthy && lockdown === null && !renew && !shared.stale ? 'ok' : 'degraded',
      audit: context.audit.healthy ? 'writable' : 'failing',
      audit_head: context.audit.head,
      // What a failing audit log does to requests (audit.on_failure): refused, or sent unaudited.
      audit_on_failure: context.audit.failsClosed ? 'refuse' : 'log',
      state: {
        type: shared.type,
        reachable: shared.unreachableSince === null,
        unreachable_since: shared.unreachableSince === null ? null : new Date(shared.unreachableSince).toISOString(),
        stale: shared.stale,
        stale_after_seconds: shared.staleAfterSeconds,
      },
      lockdown: lockdown !== null,
      approvals_pending: context.approvals.pendingCount(),
      sessions_active: context.state.sessions().length,
      credentials: { total: credentials.length, failing: credentials.filter((c) => c.failing).length, expired: credentials.filter((c) => c.state === 'expired').length },
      tls: certificateView(context.certificate, context.now()),
      admin_tls: certificateView(context.adminCertificate, context.now()),
    };
  }),
  route('GET', '/v1/credentials', async (context) => ({
    credentials: context.broker.status().map((c) => ({
      ref: c.ref,
      state: c.state,
      generation: c.generation,
      fetched_at: c.fetchedAt,
      age_seconds: c.ageSeconds,
      servable_for_seconds: c.servableForSeconds,
      failing: c.failing,
      consecutive_failures: c.consecutiveFailures,
      last_error: c.lastError,
    })),
  })),
  route('POST', '/v1/credentials/refresh', async (context, call) => {
    const body = await readJson(context, call);
    const ref = body['ref'];
    if (typeof ref !== 'string' || !parseSecretRef(ref).ok) throw new AirlockError('invalid_request', 'Send {"ref": "<secret reference>"}, e.g. {"ref": "vault:secret/stripe#api_key"}.');
    // Only a reference the config uses: one that a service or grant injects, or a store login's or an
    // OAuth2 client's (taken from the config, not from what this replica has read: a replica served by
    // a shared token from Redis never reads its client secret). Any other would be fetched and
    // remembered as a managed secret (env:PATH: every request carrying that text refused) or listed as
    // failing for good.
    if (!context.refreshable.has(ref)) {
      throw new AirlockError('not_found', `Airlock does not use ${ref}: no service, grant, Vault login or OAuth2 client in the config names it. The credentials in use are: ${[...context.refreshable].join(', ')}.`);
    }
    const before = context.broker.status().find((s) => s.ref === ref)?.generation ?? null;
    const credential = await context.broker.refresh(ref);
    return change(
      context,
      call,
      { route: '/v1/credentials/refresh', agent: null, session: null, credential: ref, service: null, approval: null, reason: 'refresh' },
      { ref, generation: credential.generation, previous_generation: before, changed: credential.generation !== before || before === null },
    );
  }),
  route('GET', '/v1/agents', async (context) => {
    const sessions = context.state.sessions();
    return {
      agents: [...context.policy.agentByName.values()].map((agent) => {
        const revocation = context.state.revocation('agent', agent.name);
        const spec = context.policy.agentSpecs.get(agent.name);
        return {
          name: agent.name,
          status: revocation === null ? 'active' : 'revoked',
          revoked: revocation === null ? null : { by: revocation.by, reason: revocation.reason, at: iso(revocation.at) },
          tokens: spec?.tokens.length ?? 0,
          jwt: spec?.jwt === undefined ? null : { issuer: spec.jwt.issuer, audience: spec.jwt.audience, subject: spec.jwt.subject ?? null },
          sessions: sessions.filter((s) => s.agent === agent.name).length,
          grants: [...agent.grants.values()].map((grant) => ({
            service: grant.service,
            scopes: grant.scopes.written,
            require_session: grant.config.require_session,
            require_approval: grant.config.require_approval,
            approval_mode: grant.config.approval_mode,
            credential: (grant.credential ?? context.policy.serviceByName.get(grant.service)?.credential)?.ref ?? null,
          })),
        };
      }),
    };
  }),
  // The path's target is held to POST /v1/revocations' rule (found by review: an agent token pasted as the
  // name came back whole in the 404, "There is no agent named alk_...").
  route('POST', '/v1/agents/:name/revoke', async (context, call) => {
    refuseOddTarget(context, 'agent', call.params['name'] as string, false);
    return revoke(context, call, 'agent', call.params['name'] as string, reasonOf(await readJson(context, call)), '/v1/agents/:name/revoke');
  }),
  route('POST', '/v1/agents/:name/restore', async (context, call) => {
    refuseOddTarget(context, 'agent', call.params['name'] as string, true);
    return lift(context, call, 'agent', call.params['name'] as string, reasonOf(await readJson(context, call)), '/v1/agents/:name/restore');
  }),
  route('GET', '/v1/sessions', async (context) => ({ sessions: context.state.sessions().map(sessionView) })),
  route('POST', '/v1/sessions/:id/revoke', async (context, call) => {
    const id = call.params['id'] as string;
    // Not repeated when it looks like a key or token (found by review: an agent token pasted as the id
    // came back whole in the 404); another id that names no live session keeps its 404, naming it.
    if (context.state.session(id) === null && looksLikeKey(id)) throw new AirlockError('invalid_request', 'A session is named by its id ("ses_" and 16 letters, digits, "-" or "_"); what was given looks like an API key or token, so it is not repeated here.');
    if (context.state.session(id) === null) throw new AirlockError('not_found', `There is no live session ${id} on this replica; POST /v1/revocations {"kind": "session"} revokes an id it does not know too.`);
    return revoke(context, call, 'session', id, reasonOf(await readJson(context, call)), '/v1/sessions/:id/revoke');
  }),
  route('GET', '/v1/approvals', async (context, call) => {
    const now = context.now();
    const wanted = call.query.get('status');
    // A mistyped filter ("Pending") matched nothing and told the operator nothing waited (found by review).
    if (wanted !== null && !APPROVAL_STATUSES.includes(wanted)) throw new AirlockError('invalid_request', `status is one of ${APPROVAL_STATUSES.join(', ')}.`);
    const list = context.state.approvals().map((a) => approvalView(a, now));
    return { approvals: wanted === null ? list : list.filter((a) => a['status'] === wanted) };
  }),
  route('POST', '/v1/approvals/:id/approve', async (context, call) => decide(context, call, 'approved')),
  route('POST', '/v1/approvals/:id/deny', async (context, call) => decide(context, call, 'denied')),
  route('GET', '/v1/anomalies', async (context, call) => {
    const limit = countParameter(call.query, 'limit', 100, 1, 1000);
    const agent = call.query.get('agent');
    const events = context.anomalies.events().filter((e) => agent === null || e.agent === agent);
    return { anomalies: events.slice(-limit).map((e) => ({ ...e, at: iso(e.at) })) };
  }),
  route('GET', '/v1/revocations', async (context) => ({
    revocations: context.state.revocations().map((r) => ({ kind: r.kind, target: r.target, reason: r.reason, by: r.by, at: iso(r.at) })),
  })),
  route('POST', '/v1/revocations', async (context, call) => {
    const body = await readJson(context, call);
    const kind = body['kind'];
    const target = kind === 'all' ? (body['target'] ?? '*') : body['target'];
    if (typeof kind !== 'string' || !REVOCATION_KINDS.has(kind) || typeof target !== 'string' || target === '') {
      throw new AirlockError('invalid_request', 'Send {"kind": "agent"|"session"|"credential"|"service"|"all", "target": "...", "reason": "..."}.');
    }
    refuseOddTarget(context, kind, target, false);
    return revoke(context, call, kind as RevocationKind, target, reasonOf(body), '/v1/revocations');
  }),
  route('POST', '/v1/revocations/lift', async (context, call) => {
    const body = await readJson(context, call);
    const kind = body['kind'];
    const target = kind === 'all' ? (body['target'] ?? '*') : body['target'];
    if (typeof kind !== 'string' || !REVOCATION_KINDS.has(kind) || typeof target !== 'string') {
      throw new AirlockError('invalid_request', 'Send {"kind": "...", "target": "...", "reason": "..."} (reason optional).');
    }
    refuseOddTarget(context, kind, target, true);
    return lift(context, call, kind as RevocationKind, target, reasonOf(body), '/v1/revocations/lift');
  }),
];

async function decide(context: AdminContext, call: AdminCall, decision: 'approved' | 'denied'): Promise<unknown> {
  const id = call.params['id'] as string;
  // Not repeated when it is not an approval id: what is pasted there may be a key or a token (found by
  // review: an agent token given as the id came back in the 404's detail).
  if (!APPROVAL_ID.test(id)) throw new AirlockError('invalid_request', 'An approval is named by its id: "apr_" and 16 letters, digits, "-" or "_", as GET /v1/approvals and the 202 answers show; what was given is not one (not repeated here: it may be a key).');
  const reason = reasonOf(await readJson(context, call));
  const approval = await context.approvals.decide(id, decision, call.actor, reason);
  return change(
    context,
    call,
    { route: `/v1/approvals/:id/${decision === 'approved' ? 'approve' : 'deny'}`, agent: approval.agent, session: approval.session, credential: null, service: approval.service, approval: id, reason },
    { approval: approvalView(approval, context.now()) },
  );
}

/** The last `count` lines of the audit file (read from its end, never the whole file). */
async function lastAuditRecords(file: string, count: number): Promise<AuditRecord[]> {
  if (count <= 0) return [];
  const handle = await open(file, 'r').catch(() => null);
  if (handle === null) return [];
  try {
    const { size } = await handle.stat();
    const length = Math.min(size, 1024 * 1024);
    const buffer = Buffer.alloc(length);
    await handle.read(buffer, 0, length, size - length);
    const lines = buffer.toString('utf8').split('\n').filter((l) => l !== '');
    if (length < size) lines.shift(); // the first line may be cut
    return lines.slice(-count).flatMap((line) => {
      try {
        return [JSON.parse(line) as AuditRecord];
      } catch {
        return [];
      }
    });
  } finally {
    await handle.close();
  }
}

/**
 * What outlives one request on the admin listener: the context in force now (a reload replaces it) and
 * the audit streams open on it.
 */
interface AdminListener {
  readonly currentContext: () => AdminContext;
  readonly streams: Set<ServerResponse>;
  /** Set once the server exists: the bound on its sockets, which keeps those of admin calls. */
  connections: AdminConnections | null;
}

/**
 * A reader this far behind is not following the feed: its stream is ended rather than buffered for
 * (res.write queues in memory whatever the socket cannot take, so a reader that stops reading grew the
 * proxy by every record written, without bound). The console reconnects, replaying the last records.
 */
const AUDIT_STREAM_BACKLOG_BYTES = 1024 * 1024;
/** How long an ended stream's backlog may take to reach its reader before the connection is cut. */
const AUDIT_STREAM_DRAIN_MS = 10_000;
/** Streams open at once on one admin listener (a console tab holds one): each may hold a backlog. */
const MAX_AUDIT_STREAMS = 32;
const AUDIT_STREAM_KEEP_ALIVE_MS = 15_000;

/**
 * Server-sent events (WHATWG HTML 9.2): one `audit` event per record with the request id as its `id`,
 * `?replay=N` (up to 1000) first sends the last N records already written; a comment every 15 s keeps
 * intermediaries from timing the stream out.
 *
 * The stream ends (cleanly: the reader gets what was queued, then the end) when its reader falls
 * AUDIT_STREAM_BACKLOG_BYTES behind, and when its admin token is no longer listed under admin.tokens: the
 * token was checked when the stream opened, and a reload that removes it must cut off what it still
 * reads, as it cuts off every call it would make. The check runs before each write (a reload writes its
 * own airlock:reload record, so it is noticed at once), against the current directory, hashing the token
 * again only when a reload replaced the directory.
 */
async function streamAudit(context: AdminContext, call: AdminCall, listener: AdminListener): Promise<void> {
  const { res } = call;
  const replay = countParameter(call.query, 'replay', 0, 0, 1000);
  const headers = { 'content-type': 'text/event-stream; charset=utf-8', 'cache-control': 'no-store', [REQUEST_ID_HEADER]: call.requestId };
  if (call.req.method === 'HEAD') {
    res.writeHead(200, headers);
    res.end();
    return;
  }
  if (listener.streams.size >= MAX_AUDIT_STREAMS) {
    throw new AirlockError('rate_limited', `At most ${MAX_AUDIT_STREAMS} audit streams are open at once on this admin listener; close one (each console tab holds one) and retry.`, {
      headers: { 'retry-after': String(AUDIT_STREAM_KEEP_ALIVE_MS / 1000) },
    });
  }
  listener.streams.add(res);
  res.writeHead(200, { ...headers, connection: 'keep-alive' });
  res.write(': airlock audit feed\n\n');
  let admitted = context.directory;
  let ended = false;
  let unsubscribe: () => void = () => undefined;
  const keepAlive = setInterval(() => write(': keep-alive\n\n'), AUDIT_STREAM_KEEP_ALIVE_MS);
  keepAlive.unref();
  const stop = (): void => {
    ended = true;
    clearInterval(keepAlive);
    unsubscribe();
  };
  res.on('close', () => {
    stop();
    listener.streams.delete(res);
  });
  function end(why: string): void {
    stop();
    context.logger.warn({ actor: call.actor, request_id: call.requestId, backlog_bytes: res.writableLength }, `audit stream ended: ${why}`);
    res.end();
    // A reader that does not read at all would hold the backlog (and the connection) for ever.
    const cut = setTimeout(() => res.destroy(), AUDIT_STREAM_DRAIN_MS);
    cut.unref();
    res.once('close', () => clearTimeout(cut));
  }
  function stillAdmitted(): boolean {
    const directory = listener.currentContext().directory;
    if (directory === admitted) return true;
    try {
      authenticateAdmin(call.req.rawHeaders, directory);
    } catch {
      return false;
    }
    admitted = directory;
    return true;
  }
  function write(text: string): void {
    if (ended) return;
    if (!stillAdmitted()) return end('its admin token is no longer listed under admin.tokens');
    if (res.writableLength > AUDIT_STREAM_BACKLOG_BYTES) return end(`the reader fell more than ${AUDIT_STREAM_BACKLOG_BYTES} bytes behind; it may reconnect with ?replay=N`);
    res.write(text);
  }
  const send = (record: AuditRecord): void => write(`id: ${record.request_id}\nevent: audit\ndata: ${context.catalog.scrub(JSON.stringify(record))}\n\n`);
  // Subscribe first so nothing written during the replay is missed (the console drops duplicates by id).
  unsubscribe = context.audit.subscribe(send);
  for (const record of await lastAuditRecords(context.audit.file, replay)) send(record);
}

const CONSOLE_FILES: Readonly<Record<string, string>> = {
  '/': 'index.html',
  '/index.html': 'index.html',
  '/console.js': 'console.js',
  '/console.css': 'console.css',
};
const CONSOLE_TYPES: Readonly<Record<string, string>> = { html: 'text/html; charset=utf-8', js: 'text/javascript; charset=utf-8', css: 'text/css; charset=utf-8' };

function serveConsole(res: ServerResponse, file: string): void {
  const body = readFileSync(new URL(file, CONSOLE_DIR));
  res.writeHead(200, {
    'content-type': CONSOLE_TYPES[file.slice(file.lastIndexOf('.') + 1)] ?? 'application/octet-stream',
    'content-length': body.length,
    'cache-control': 'no-store',
    // The console loads only its own script and style and talks only to this origin.
    'content-security-policy': "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; img-src 'self' data:; base-uri 'none'; form-action 'none'; frame-ancestors 'none'",
    'x-content-type-options': 'nosniff',
    'referrer-policy': 'no-referrer',
  });
  res.end(body);
}

async function handle(context: AdminContext, listener: AdminListener, req: IncomingMessage, res: ServerResponse, requestId: string): Promise<void> {
  checkAdminHost(req.headers.host, context.hosts);
  // Held to the agent listener's canonical form: "..", "//", encoded slashes and the like are refused
  // rather than resolved (a WHATWG URL would read "/v1/x/../health" as /v1/health and "//v1/health" as a host).
  const target = canonicalizeTarget(originForm(req.url ?? '/'));
  const path = target.path;
  // No admin path holds data with a slash: an encoded one is refused here, not read as "no such path".
  if (path.includes(ENCODED_SLASH)) throw new AirlockError('invalid_request', 'The admin API has no path with an encoded slash (%2F) in it; send the path with "/".');
  const query = new URLSearchParams(target.query ?? '');
  const method = req.method ?? 'GET';
  // HEAD is GET without the content (RFC 9110 9.3.2); node sends no body for it.
  const asGet = method === 'HEAD' ? 'GET' : method;
  const consoleFile = CONSOLE_FILES[path];
  if ((consoleFile !== undefined || path === '/favicon.ico') && asGet !== 'GET') throw methodNotAllowed(path, ['GET']);
  if (consoleFile !== undefined) return serveConsole(res, consoleFile);
  if (path === '/favicon.ico') {
    res.writeHead(204, { 'cache-control': 'max-age=86400' });
    res.end();
    return;
  }
  // Scraped without a token, like any Prometheus target on a private network: it holds no secret,
  // only counts by service, route template and code.
  if (path === '/metrics') {
    if (asGet !== 'GET') throw methodNotAllowed(path, ['GET']);
    const text = await context.metricsText();
    res.writeHead(200, { 'content-type': context.metrics.contentType, 'content-length': Buffer.byteLength(text), 'cache-control': 'no-store' });
    res.end(text);
    return;
  }
  let actor: string;
  try {
    actor = authenticateAdmin(req.rawHeaders, context.directory);
  } catch (error) {
    context.logger.warn(
      { request_id: requestId, method, path: context.catalog.scrub(maskAgentTokens(path)).slice(0, 512), client: req.socket.remoteAddress ?? null, presented: presentedToAdmin(req.rawHeaders, (hash) => context.policy.agentByTokenHash.get(hash)?.name) },
      'admin API refused a call without a valid admin token',
    );
    throw error;
  }
  listener.connections?.hold(req, res);
  // A change that could not be audited is not made.
  if (asGet !== 'GET') context.audit.assertWritable();
  const recheck = (): void => void authenticateAdmin(req.rawHeaders, listener.currentContext().directory);
  if (path === '/v1/audit/stream') {
    if (asGet !== 'GET') throw methodNotAllowed(path, ['GET']);
    return streamAudit(context, { req, res, requestId, actor, path, recheck, params: {}, query }, listener);
  }
  const allowed = new Set<string>();
  for (const candidate of ROUTES) {
    const match = candidate.pattern.exec(path);
    if (match === null) continue;
    if (candidate.method !== asGet) {
      allowed.add(candidate.method);
      continue;
    }
    const params: Record<string, string> = {};
    candidate.names.forEach((name, i) => {
      params[name] = pathParameter(match[i + 1] as string);
    });
    const body = await candidate.handler(context, { req, res, requestId, actor, path, recheck, params, query });
    return sendJson(res, 200, body, requestId, context.catalog);
  }
  if (allowed.size > 0) throw methodNotAllowed(path, [...allowed]);
  // Key shapes and tokens masked: the path is the caller's text (found by review: /v1/nothing/alk_... came back whole).
  throw new AirlockError('not_found', `No admin endpoint ${method} ${maskKeyShapes(path, '[REDACTED]')}; see GET /v1/health and the README's admin API table.`);
}

/**
 * A server must accept the absolute-form of a request target (RFC 9112 3.2.2); the admin API reads the
 * path and query of one. The agent listener refuses it instead, as there it means a client that took
 * Airlock for a forward proxy.
 */
function originForm(target: string): string {
  const origin = /^https?:\/\/[^/?#]*/i.exec(target);
  if (origin === null) return target;
  const rest = target.slice(origin[0].length);
  return rest === '' || rest.startsWith('?') ? `/${rest}` : rest;
}

/** 405 with the Allow header (RFC 9110 15.5.6); a resource that answers GET answers HEAD too. */
function methodNotAllowed(path: string, methods: readonly string[]): AirlockError {
  const allow = methods.flatMap((m) => (m === 'GET' ? ['GET', 'HEAD'] : [m])).join(', ');
  return new AirlockError('method_not_allowed', `${path} answers ${allow}.`, { headers: { allow } });
}

const ADMIN_HEADERS_TIMEOUT_MS = 10_000;
const ADMIN_MAX_CONNECTIONS = 1024;
const ADMIN_REQUEST_TIMEOUT_MS = 30_000;
/** node's default --max-http-header-size, which the admin listener keeps. */
const ADMIN_MAX_HEADER_BYTES = 16 * 1024;
/** The admin listener's own bounds (not the agent listener's `limits`): node's 16 KiB of headers, fixed deadlines. */
const ADMIN_LISTENER_BOUNDS = { headerBytes: "16 KiB, node's default, for the admin API", deadlines: `${ADMIN_HEADERS_TIMEOUT_MS / 1000} s for the headers and ${ADMIN_REQUEST_TIMEOUT_MS / 1000} s for the request, for the admin API` };

/**
 * `currentContext` is read per request, so a reload's new policy and broker are what the API sees.
 * With `tls` (admin.tls) it serves HTTPS; a reload's renewed certificate is set on it by app.ts.
 */
export function createAdminServer(currentContext: () => AdminContext, tls: TlsIdentity | null = null, onTlsFailure?: (reason: TlsFailureReason) => void): Server {
  const listener: AdminListener = { currentContext, streams: new Set(), connections: null };
  // Deadlines are checked every second, as on the agent listener (create-listener.ts): at node's default
  // of 30 s the 10 s header deadline held for up to ~30 s (found by review).
  const options = { requireHostHeader: true, headersTimeout: ADMIN_HEADERS_TIMEOUT_MS, requestTimeout: ADMIN_REQUEST_TIMEOUT_MS, connectionsCheckingInterval: 1_000 };
  const handleAdminRequest = (req: IncomingMessage, res: ServerResponse): void => {
    const requestId = randomUUID();
    const context = currentContext();
    handle(context, listener, req, res, requestId).catch((error: unknown) => {
      const failure = asAirlockError(error);
      if (failure.code === 'internal_error') context.logger.error({ err: error, request_id: requestId }, 'admin request failed');
      answerRefusal(req, res, failure, requestId, (text) => context.catalog.scrub(text));
    });
  };
  const server =
    tls === null
      ? createServer(options, handleAdminRequest)
      : serveTls(
          // A handshake gets no longer than the headers, as on the agent listeners.
          // With admin.tls.client_ca_file, a connection without a client certificate one of those CAs
          // signed ends in its handshake (mTLS): no admin call, /metrics or console page is read from it.
          createHttpsServer({ ...options, ...tls.contextOptions(), handshakeTimeout: ADMIN_HEADERS_TIMEOUT_MS, ...(tls.clientCa === null ? {} : { requestCert: true, rejectUnauthorized: true }) }, handleAdminRequest),
          { headersTimeoutMs: ADMIN_HEADERS_TIMEOUT_MS, maxHeaderBytes: ADMIN_MAX_HEADER_BYTES },
          { onPlainHttp: (socket, head) => refusePlainAdminCall(socket, head, currentContext()), ...(onTlsFailure === undefined ? {} : { onTlsFailure }) },
        );
  // Malformed HTTP, an oversized header, a request too slow: a problem body like every other admin error.
  refuseClientErrors(server, (socket, failure) => sendRawProblem(socket, failure, randomUUID(), (text) => currentContext().catalog.scrub(text)), ADMIN_LISTENER_BOUNDS);
  // Operators, their consoles and a scraper: a bound on sockets keeps a flood from taking the process's
  // descriptors, and past it the oldest idle socket makes room, so a flood does not lock operators out.
  // Over TLS a connection counts from its first byte on, its handshake included; a request's socket is
  // the TLS one, taken back to its TCP connection.
  listener.connections = new AdminConnections(server, ADMIN_MAX_CONNECTIONS, tls !== null);
  return server;
}

/**
 * A plain-HTTP request on the HTTPS admin listener (an http:// URL, a scraper not switched to https):
 * 400 in plain HTTP saying so, rather than a dropped connection. An admin token in its head crossed
 * the network in clear text: the log says to replace it (its hash names no one here; no token is echoed).
 */
function refusePlainAdminCall(socket: Socket, head: string, context: AdminContext): void {
  if (TOKEN_IN_TEXT.test(head)) {
    context.logger.warn({ listener: 'admin' }, 'a plain-HTTP request reached the HTTPS admin listener carrying a token: it crossed the network in clear text. Treat that admin token as exposed: make a new one (npx airlock token), list its hash under admin.tokens and remove the old one; the caller must use https://');
  }
  sendRawProblem(socket, new AirlockError('invalid_request', 'This admin listener speaks HTTPS only (admin.tls), and the request came in plain HTTP. Use https:// with the same host and port.'), randomUUID(), (text) => context.catalog.scrub(text));
}

/**
 * A path parameter, its escapes decoded as UTF-8. An escape that is not UTF-8 (`/v1/agents/%C3/revoke`)
 * names nothing Airlock has: 400, not the 500 of decodeURIComponent's URIError (found by review).
 */
function pathParameter(raw: string): string {
  try {
    return decodeURIComponent(raw);
  } catch {
    throw new AirlockError('invalid_request', 'A name in the path holds a percent-escape that is not UTF-8 (a % must start %XX, and the bytes spell UTF-8); nothing is named so. Check the name, and escape a % in it as %25.');
  }
}
