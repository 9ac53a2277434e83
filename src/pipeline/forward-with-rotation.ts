/**
 * Stage 8, with dual-credential overlap: inject, forward, and when the upstream answers a status the
 * credential lists in retry_on (typically 401, a key rotated out upstream) for a request that can be
 * replayed, fetch the credential again; if it changed and is usable (the check of stage 6), inject the
 * new value and forward once more; if not, relay the held answer as it came (redacted like any response).
 */
import type { IncomingMessage, ServerResponse } from 'node:http';
import type { Readable } from 'node:stream';
import type { Dispatcher } from 'undici';
import type { ConnectionGate } from '../upstream/connection-gate.js';
import { upstreamPath } from '../upstream/upstream-target.js';
import type { OutboundRequest } from '../upstream/outbound-request.js';
import type { Credential } from '../credentials/credential.js';
import type { CredentialBroker } from '../credentials/credential-broker.js';
import type { CredentialPlan, ServicePolicy } from '../policy/compile-policy.js';
import type { RequestTrace } from '../observability/tracing.js';
import type { SecretCatalog } from '../redaction/secret-catalog.js';
import { buildUpstreamRequest } from './build-upstream-request.js';
import type { CanonicalTarget } from './canonicalize-target.js';
import { forwardRequest, type ExchangeSlot, type ForwardResult } from './forward-request.js';
import { injectCredential } from './inject-credential.js';
import { replayCaptured, responseMatcher } from './redact-response.js';
import { usableCredential } from './resolve-credential.js';

const NO_CAPTURE: ReadonlySet<number> = new Set();
const RETRY_MIN_AGE_MS = 2_000;

export interface RotationInput {
  readonly req: IncomingMessage;
  /** The agent's address (ProxyRuntime.clientAddress), sent upstream as X-Forwarded-For. */
  readonly clientAddress: string | undefined;
  readonly res: ServerResponse;
  readonly requestId: string;
  readonly service: ServicePolicy;
  readonly servicePath: string;
  readonly agentPrefix: string;
  readonly target: CanonicalTarget;
  readonly plan: CredentialPlan;
  readonly credential: Credential;
  readonly broker: CredentialBroker;
  readonly pool: Dispatcher;
  readonly gate: ConnectionGate;
  /**
   * What each send's response is scanned for is looked up here per send: after a refresh the
   * catalogue knows the new value, and a replay's response (an upstream that refuses it too and echoes
   * it) must be scrubbed of it as well as of the old one.
   */
  readonly catalog: SecretCatalog;
  /** A stream, or the buffered body (replayable requests and approved ones). */
  readonly body: Readable | Buffer | null;
  readonly trace: RequestTrace;
  /** The kill switch's handle on whichever send is under way. */
  readonly exchange: ExchangeSlot;
}

/**
 * The exchange that answered, and when the first credential was refused and a rotated one answered,
 * which. A request sent once gets forwardRequest's own result, unwrapped (no object or promise more).
 */
export type RotationResult = ForwardResult & {
  readonly rotated?: { readonly from: string | null; readonly to: Credential };
};

/**
 * The request as the upstream gets it: built from the agent's (hop-by-hop and agent credentials
 * dropped, method overrides taken out of the query), stripped of every place a credential of this
 * service goes, not only this one's, and of the service's strip lists (compile-policy.ts
 * strippedFromAgent), then the credential injected, last. `explain` shows the same.
 */
export function outboundRequest(service: ServicePolicy, method: string, servicePath: string, query: string | null, rawHeaders: readonly string[], clientAddress: string | undefined, plan: CredentialPlan, credential: Credential): OutboundRequest {
  const outbound = buildUpstreamRequest({ method, rawHeaders, upstream: service.upstream, path: servicePath, query, clientAddress });
  const targets = service.strippedFromAgent;
  for (const name of targets.headers) outbound.removeHeader(name);
  outbound.removeQueryKeys(targets.queryKeyNames);
  injectCredential(outbound, plan, credential);
  return outbound;
}

/**
 * One injection and exchange; the upstream span ends with its outcome (forward-request.ts). Not async:
 * on the common path nothing here waits, and an async frame per request is an allocation that lives
 * until the response ends (a synchronous throw reaches the caller's try as a rejection would).
 */
function send(input: RotationInput, injected: Credential, capture: ReadonlySet<number>): Promise<ForwardResult> {
  const { req, body } = input;
  const outbound = outboundRequest(input.service, req.method ?? '', input.servicePath, input.target.query, req.rawHeaders, input.clientAddress, input.plan, injected);
  // The body may already have been refused (a managed secret in it, or too large) while we waited.
  if (body !== null && !Buffer.isBuffer(body) && body.errored !== null) throw body.errored;
  return forwardRequest({
    dispatcher: input.pool,
    gate: input.gate,
    outbound,
    body,
    res: input.res,
    requestId: input.requestId,
    service: input.service,
    agentPrefix: input.agentPrefix,
    matcher: responseMatcher(input.catalog, input.service, input.plan.ref),
    capture,
    exchange: input.exchange,
    span: input.trace.upstream(outbound, input.service.upstream, input.service.name),
  });
}

/** A credential without retry_on, or a request that cannot be replayed, is sent once. */
export function forwardWithRotation(input: RotationInput): Promise<RotationResult> {
  const { plan, body } = input;
  const replayable = plan.retryOn.size > 0 && (body === null || Buffer.isBuffer(body));
  return replayable ? forwardReplayable(input) : send(input, input.credential, NO_CAPTURE);
}

async function forwardReplayable(input: RotationInput): Promise<RotationResult> {
  const { req, plan } = input;
  const first = await send(input, input.credential, plan.retryOn);
  if (first.captured === null) return first;
  // One forced refetch per reference every few seconds, whatever the number of refused requests. A
  // rotated value that fails the check every other injection passes (too short for the catalogue to
  // register, or not well-formed text) is a failed refresh: injecting it would let a replay's echo of
  // it reach the agent unmasked, so the held first answer is relayed instead.
  const fresh = await input.broker
    .refresh(plan.ref, RETRY_MIN_AGE_MS)
    .then((credential) => usableCredential(plan, credential))
    .catch(() => null);
  // What the request runs under ended while the refetch waited (track-exchange.ts): neither the retry
  // nor the held answer goes to the agent.
  if (input.exchange.refusal !== null) throw input.exchange.refusal;
  if (fresh !== null && !fresh.sameValueAs(input.credential)) {
    return { ...(await send(input, fresh, NO_CAPTURE)), rotated: { from: input.credential.generation, to: fresh } };
  }
  // The agent may have left while the refresh waited on its store, or leave during the replay: the
  // record says so (found by review: a replay to an agent gone was audited complete).
  let agentLeft = input.res.destroyed;
  const onClose = (): void => {
    if (!input.res.writableFinished) agentLeft = true;
  };
  input.res.once('close', onClose);
  const replay = await replayCaptured(input.res, first.captured, responseMatcher(input.catalog, input.service, plan.ref), input.service, input.agentPrefix, { method: req.method ?? '', path: upstreamPath(input.service.upstream, input.servicePath) }).finally(() => input.res.off('close', onClose));
  if (replay.outcome.kind === 'refused') throw replay.outcome.error;
  const done = replay.outcome.kind === 'done' ? replay.outcome : null;
  return { upstreamStatus: first.captured.status, complete: (done?.complete ?? true) && !agentLeft, failure: done?.failure ?? null, agentAborted: agentLeft, redactions: replay.redactions, responseBytes: agentLeft ? 0 : replay.bytesSent, captured: null, sentAt: first.sentAt };
}
