/**
 * Stage 8: send the request upstream and hand the response to the redacting writer (stage 9).
 *
 * undici's `dispatch` with our own handler: no request/stream wrappers in between, backpressure by
 * pausing the upstream while the agent's socket (or the decoder) is full, the upstream aborted when
 * the agent goes away, and the upstream body always either consumed or destroyed. Redirects are not
 * followed (there is no redirect interceptor on the pool). Before response headers are sent a failure
 * becomes one of our errors (502/504); after, it can only cut the response short.
 */
import type { ServerResponse } from 'node:http';
import type { Readable } from 'node:stream';
import type { Dispatcher } from 'undici';
import { AirlockError } from '../errors.js';
import type { ServicePolicy } from '../policy/compile-policy.js';
import type { UpstreamSpan } from '../observability/tracing.js';
import type { RedactionMatcher } from '../redaction/redaction-matcher.js';
import type { ConnectionGate, GateWaiter } from '../upstream/connection-gate.js';
import type { OutboundRequest } from '../upstream/outbound-request.js';
import { relayHeaders, type UpstreamHeaders } from '../upstream/relay-headers.js';
import { upstreamFailure } from '../upstream/upstream-errors.js';
import { RedactingResponseWriter, type CapturedResponse, type WriterOutcome } from './redact-response.js';

export interface ForwardInput {
  readonly dispatcher: Dispatcher;
  /** The service's requests with its upstream at once (connection-gate.ts). */
  readonly gate: ConnectionGate;
  readonly outbound: OutboundRequest;
  /** A stream, or a buffered body when the request may be replayed. */
  readonly body: Readable | Buffer | null;
  readonly res: ServerResponse;
  readonly requestId: string;
  readonly service: ServicePolicy;
  readonly agentPrefix: string;
  /** What the response is scanned for. */
  readonly matcher: RedactionMatcher;
  /** Statuses whose (small) response is held back unsent, for a retry with a rotated credential. */
  readonly capture: ReadonlySet<number>;
  /** Where the kill switch finds this relay while it runs (track-exchange.ts), to refuse it before its answer. */
  readonly exchange: ExchangeSlot;
  /**
   * The attempt's CLIENT span, ended here with its outcome as the result settles: the caller needs no
   * continuation of its own (an async frame and a promise per request, forward-with-rotation.ts).
   */
  readonly span: UpstreamSpan;
}

/** A relay the kill switch can stop before anything of its answer was sent. */
export interface Interruptible {
  interrupt(failure: AirlockError): void;
}

export interface ExchangeSlot {
  relay: Interruptible | null;
  /**
   * Set by the kill switch when what the request runs under ended while no relay was sending it (between
   * an answer held for retry_on and the retry, while the credential is fetched again): no later send or
   * replay of the held answer goes, and the agent gets this instead.
   */
  refusal: AirlockError | null;
}

export interface ForwardResult {
  readonly upstreamStatus: number;
  /** False when the response was cut short (upstream failure or the agent went away). */
  readonly complete: boolean;
  /** Why it was cut short, when the upstream failed after headers were sent. */
  readonly failure: AirlockError | null;
  readonly agentAborted: boolean;
  /** Secrets and key shapes replaced in headers, body and trailers. */
  readonly redactions: number;
  /** Body bytes sent to the agent. */
  readonly responseBytes: number;
  /** The held-back response when its status was in `capture`; nothing was sent to the agent then. */
  readonly captured: CapturedResponse | null;
  /**
   * performance.now() when the request was handed to undici, after any wait for a connection under
   * max_connections; 0 when it never was. The upstream duration counts from here (the wait is Airlock's).
   */
  readonly sentAt: number;
}

class AgentWentAway extends Error {
  override name = 'AgentWentAway';
  constructor() {
    super('the agent closed the connection');
  }
}

class ResponseRelay implements Dispatcher.DispatchHandler, GateWaiter, Interruptible {
  readonly #input: ForwardInput;
  readonly #resolve: (result: ForwardResult) => void;
  readonly #reject: (error: AirlockError) => void;
  readonly #writer: RedactingResponseWriter;
  #controller: Dispatcher.DispatchController | null = null;
  #status = 0;
  #started = false;
  #settled = false;
  #agentGone = false;
  /** Set while the request waits for a slot of its service's gate (connection-gate.ts): its deadline. */
  #queueTimer: NodeJS.Timeout | null = null;
  /** Holds one of the gate's slots: from dispatch until undici is done with the request. */
  #holdsSlot = false;
  #sentAt = 0;

  constructor(input: ForwardInput, resolve: (result: ForwardResult) => void, reject: (error: AirlockError) => void) {
    this.#input = input;
    this.#resolve = resolve;
    this.#reject = reject;
    this.#writer = new RedactingResponseWriter(input.res, input.matcher, input.service, input.agentPrefix, this, input.outbound);
    input.res.on('close', this.#onAgentClose);
    input.exchange.relay = this;
  }

  /**
   * The kill switch's call, while nothing of the answer was sent (TrackedExchange checks): the upstream
   * request is aborted (before undici writes it, if it has not yet) and the agent gets `failure`.
   */
  interrupt(failure: AirlockError): void {
    if (this.#settled) return;
    this.#controller?.abort(failure);
    this.#writer.abandon();
    this.#fail(failure);
  }

  /** The agent is gone before anything was dispatched. */
  agentLeft(): void {
    this.#onAgentClose();
  }

  readonly #onAgentClose = (): void => {
    if (this.#settled) return;
    this.#agentGone = true;
    this.#controller?.abort(new AgentWentAway());
    this.#writer.agentGone();
    this.#finish({ upstreamStatus: this.#status, complete: false, failure: null, agentAborted: true, redactions: this.#writer.redactions, responseBytes: this.#writer.bytesSent, captured: null, sentAt: this.#sentAt });
  };

  /** Dispatches at once when the service has a free slot, else waits for one until timeouts.queue. */
  enter(): void {
    const { gate } = this.#input;
    if (gate.tryEnter()) return this.#dispatch();
    gate.wait(this);
    this.#queueTimer = setTimeout(this.#onQueueDeadline, this.#input.service.config.timeouts.queue * 1000);
  }

  /** The gate's call: a slot is taken for this request. */
  admit(): void {
    this.#stopWaiting();
    if (this.#settled) {
      // Settled while waiting (the agent left): the slot goes to the next one.
      this.#input.gate.leave();
      return;
    }
    this.#dispatch();
  }

  readonly #onQueueDeadline = (): void => {
    this.#queueTimer = null;
    if (this.#settled || !this.#input.gate.cancel(this)) return;
    const { service } = this.#input;
    this.#fail(
      new AirlockError('upstream_busy', `Every connection to the upstream of service ${service.name} stayed busy for ${service.config.timeouts.queue} s (max_connections ${service.config.max_connections}, timeouts.queue); the request was not sent. Retry later, or raise max_connections.`),
    );
  };

  #stopWaiting(): void {
    if (this.#queueTimer === null) return;
    clearTimeout(this.#queueTimer);
    this.#queueTimer = null;
    this.#input.gate.cancel(this);
  }

  #dispatch(): void {
    this.#holdsSlot = true;
    this.#sentAt = performance.now();
    const input = this.#input;
    try {
      input.dispatcher.dispatch(
        {
          origin: input.service.upstream.origin,
          method: input.outbound.method,
          path: input.outbound.target(),
          headers: input.outbound.headers,
          body: input.body,
        },
        this,
      );
    } catch (error) {
      this.onResponseError(null as unknown as Dispatcher.DispatchController, error as Error);
    }
  }

  /** undici is done with the request (it ended, failed or was aborted): its slot goes back. */
  #leaveGate(): void {
    if (!this.#holdsSlot) return;
    this.#holdsSlot = false;
    this.#input.gate.leave();
  }

  #finish(result: ForwardResult): void {
    if (this.#settled) return;
    this.#stopWaiting();
    this.#settled = true;
    this.#input.res.off('close', this.#onAgentClose);
    this.#leaveSlot();
    this.#input.span.end(result.upstreamStatus === 0 ? null : result.upstreamStatus, result.failure?.code ?? (result.agentAborted ? 'client_closed' : null));
    this.#resolve(result);
  }

  #fail(error: AirlockError): void {
    if (this.#settled) return;
    this.#stopWaiting();
    this.#settled = true;
    this.#input.res.off('close', this.#onAgentClose);
    this.#leaveSlot();
    this.#input.span.end(null, error.code);
    this.#reject(error);
  }

  #leaveSlot(): void {
    if (this.#input.exchange.relay === this) this.#input.exchange.relay = null;
  }

  // Writer hooks.
  pauseUpstream(): void {
    this.#controller?.pause();
  }

  resumeUpstream(): void {
    this.#controller?.resume();
  }

  abortUpstream(reason: Error): void {
    this.#controller?.abort(reason);
  }

  settle(outcome: WriterOutcome): void {
    if (outcome.kind === 'refused') return this.#fail(outcome.error);
    if (outcome.kind === 'captured') {
      return this.#finish({ upstreamStatus: this.#status, complete: true, failure: null, agentAborted: false, redactions: 0, responseBytes: 0, captured: outcome.response, sentAt: this.#sentAt });
    }
    this.#finish({ upstreamStatus: this.#status, complete: outcome.complete, failure: outcome.failure, agentAborted: false, redactions: this.#writer.redactions, responseBytes: this.#writer.bytesSent, captured: null, sentAt: this.#sentAt });
  }

  // undici handler.
  onRequestStart(controller: Dispatcher.DispatchController): void {
    this.#controller = controller;
    // Aborted here, undici writes nothing of the request (client-h1.js writeH1).
    if (this.#agentGone) controller.abort(new AgentWentAway());
    // Interrupted between dispatch and this call: nothing of it is written either.
    else if (this.#settled) controller.abort(new Error('the request was interrupted before it was written'));
  }

  onResponseStart(controller: Dispatcher.DispatchController, statusCode: number, headers: UpstreamHeaders): void {
    // 1xx informational responses (RFC 9110 15.2: 102, 103) are this hop's business; wait for the final
    // one. (An unsolicited 100 Continue never gets here: undici takes it for a bad response, a 502.)
    if (statusCode < 200 || this.#settled) return;
    const { requestId, service, agentPrefix } = this.#input;
    this.#status = statusCode;
    this.#started = true;
    const unreadable = unreadableTransferCoding(headers['transfer-encoding'], service.name);
    if (unreadable !== null) {
      controller.abort(unreadable);
      this.#fail(unreadable);
      return;
    }
    const contentLength = headers['content-length'];
    const refusal = this.#writer.start(
      statusCode,
      relayHeaders(headers, requestId),
      headers['content-encoding'],
      Array.isArray(contentLength) ? undefined : contentLength,
      this.#input.capture.has(statusCode),
    );
    if (refusal !== null) {
      controller.abort(refusal);
      this.#fail(refusal);
    }
  }

  onResponseData(_controller: Dispatcher.DispatchController, chunk: Buffer): void {
    if (!this.#settled) this.#writer.data(chunk);
  }

  onResponseEnd(_controller: Dispatcher.DispatchController, trailers: UpstreamHeaders): void {
    this.#leaveGate();
    if (!this.#settled) this.#writer.end(trailers);
  }

  onResponseError(_controller: Dispatcher.DispatchController, error: Error): void {
    this.#leaveGate();
    if (this.#settled || error instanceof AgentWentAway) return;
    // A 304 may carry the Content-Length its 200 would have (RFC 9110 8.6) and has no body (15.4.5);
    // undici counts the missing body as a mismatch (found by review: such a 304 became a 502).
    if (this.#status === 304 && (error as { code?: unknown }).code === 'UND_ERR_RES_CONTENT_LENGTH_MISMATCH') {
      this.#writer.end({});
      return;
    }
    const failure = upstreamFailure(error, this.#input.service.name);
    if (!this.#started || !this.#writer.headersSent) {
      this.#writer.abandon();
      this.#fail(failure);
      return;
    }
    // Headers are out: the only honest signal left is to cut the response (no clean chunked end).
    this.#writer.abort(failure);
  }
}

/**
 * A response transfer-coding other than chunked (RFC 9112 6.1: "gzip, chunked"): undici removes only
 * the chunked framing, and Transfer-Encoding is hop-by-hop, so the body would be scanned, and relayed,
 * still compressed, past the redactor. Airlock never offers TE, so a conforming upstream never sends
 * one; one that does is refused like an unknown Content-Encoding (found by review).
 */
function unreadableTransferCoding(value: string | string[] | undefined, service: string): AirlockError | null {
  if (value === undefined) return null;
  const codings = (Array.isArray(value) ? value.join(',') : value).split(',').map((coding) => coding.trim().toLowerCase());
  if (codings.every((coding) => coding === 'chunked' || coding === '')) return null;
  // The header's value is not quoted: it is the upstream's, and an agent's error must hold only our words.
  return new AirlockError('unscannable_response', `The upstream of ${service} sent its response with a transfer-coding other than chunked, which Airlock cannot read through, so it could not be checked for secrets and was not relayed.`);
}

export function forwardRequest(input: ForwardInput): Promise<ForwardResult> {
  return new Promise<ForwardResult>((resolve, reject) => {
    if (input.exchange.refusal !== null) {
      input.span.end(null, input.exchange.refusal.code);
      reject(input.exchange.refusal);
      return;
    }
    let relay: ResponseRelay;
    try {
      relay = new ResponseRelay(input, resolve, reject);
    } catch (error) {
      // A throw here would reject this promise all the same; the span must still end.
      input.span.end(null, (error as { code?: string }).code ?? 'error');
      throw error;
    }
    // The agent may have left while earlier stages waited (a credential fetch, an approval): its
    // 'close' has already fired, so nothing is sent upstream for nobody (a POST would still execute).
    if (input.res.destroyed || input.res.closed || input.res.req.socket.destroyed) {
      relay.agentLeft();
      return;
    }
    relay.enter();
  });
}
