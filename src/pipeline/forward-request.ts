/**
 * Stage 8: send the request upstream and stream the response back.
 *
 * undici's `dispatch` with our own handler: no request/stream wrappers in between, backpressure by
 * pausing the upstream when the agent's socket is full, the upstream aborted when the agent goes away,
 * and the upstream body always either consumed or destroyed. Redirects are not followed (there is no
 * redirect interceptor on the pool). Once response headers are sent, a later failure can only cut the
 * response short; before that it becomes one of our errors (502/504).
 */
import type { ServerResponse } from 'node:http';
import type { Readable } from 'node:stream';
import type { Dispatcher } from 'undici';
import type { AirlockError } from '../errors.js';
import type { ServicePolicy } from '../policy/compile-policy.js';
import type { OutboundRequest } from '../upstream/outbound-request.js';
import { HOP_BY_HOP_HEADERS } from '../upstream/hop-by-hop.js';
import { relayHeaders, type UpstreamHeaders } from '../upstream/relay-headers.js';
import { upstreamFailure } from '../upstream/upstream-errors.js';

export interface ForwardInput {
  readonly dispatcher: Dispatcher;
  readonly outbound: OutboundRequest;
  readonly body: Readable | null;
  readonly res: ServerResponse;
  readonly requestId: string;
  readonly service: ServicePolicy;
  readonly agentPrefix: string;
}

export interface ForwardResult {
  readonly upstreamStatus: number;
  /** False when the response was cut short (upstream failure or the agent went away). */
  readonly complete: boolean;
  /** Why it was cut short, when the upstream failed after headers were sent. */
  readonly failure: AirlockError | null;
  readonly agentAborted: boolean;
}

class AgentWentAway extends Error {
  override name = 'AgentWentAway';
  constructor() {
    super('the agent closed the connection');
  }
}

class ResponseRelay implements Dispatcher.DispatchHandler {
  readonly #input: ForwardInput;
  readonly #resolve: (result: ForwardResult) => void;
  readonly #reject: (error: AirlockError) => void;
  #controller: Dispatcher.DispatchController | null = null;
  #status = 0;
  #started = false;
  #settled = false;
  #agentGone = false;

  constructor(input: ForwardInput, resolve: (result: ForwardResult) => void, reject: (error: AirlockError) => void) {
    this.#input = input;
    this.#resolve = resolve;
    this.#reject = reject;
    input.res.on('drain', this.#onDrain);
    input.res.on('close', this.#onAgentClose);
  }

  readonly #onDrain = (): void => {
    this.#controller?.resume();
  };

  readonly #onAgentClose = (): void => {
    if (this.#settled) return;
    this.#agentGone = true;
    this.#controller?.abort(new AgentWentAway());
    this.#settle({ upstreamStatus: this.#status, complete: false, failure: null, agentAborted: true });
  };

  #settle(result: ForwardResult): void {
    if (this.#settled) return;
    this.#settled = true;
    this.#input.res.off('drain', this.#onDrain);
    this.#input.res.off('close', this.#onAgentClose);
    this.#resolve(result);
  }

  onRequestStart(controller: Dispatcher.DispatchController): void {
    this.#controller = controller;
    if (this.#agentGone) controller.abort(new AgentWentAway());
  }

  onResponseStart(_controller: Dispatcher.DispatchController, statusCode: number, headers: UpstreamHeaders): void {
    // 1xx informational responses (RFC 9110 15.2) are this hop's business; wait for the final one.
    if (statusCode < 200 || this.#settled) return;
    const { res, requestId, service, agentPrefix } = this.#input;
    this.#status = statusCode;
    this.#started = true;
    res.writeHead(statusCode, relayHeaders(headers, requestId, service.upstream, agentPrefix));
  }

  onResponseData(controller: Dispatcher.DispatchController, chunk: Buffer): void {
    if (this.#settled) return;
    if (!this.#input.res.write(chunk)) controller.pause();
  }

  onResponseEnd(_controller: Dispatcher.DispatchController, trailers: UpstreamHeaders): void {
    if (this.#settled) return;
    const res = this.#input.res;
    const names = Object.keys(trailers);
    if (names.length > 0 && !res.hasHeader('content-length')) {
      const kept: Array<[string, string]> = [];
      for (const name of names) {
        const value = trailers[name];
        if (value === undefined || HOP_BY_HOP_HEADERS.has(name)) continue;
        for (const v of Array.isArray(value) ? value : [value]) kept.push([name, v]);
      }
      if (kept.length > 0) res.addTrailers(kept);
    }
    res.end();
    this.#settle({ upstreamStatus: this.#status, complete: true, failure: null, agentAborted: false });
  }

  onResponseError(_controller: Dispatcher.DispatchController, error: Error): void {
    if (this.#settled) return;
    if (error instanceof AgentWentAway) return;
    const failure = upstreamFailure(error, this.#input.service.name);
    if (!this.#started) {
      this.#settled = true;
      this.#input.res.off('drain', this.#onDrain);
      this.#input.res.off('close', this.#onAgentClose);
      this.#reject(failure);
      return;
    }
    // Headers are out: the only honest signal left is to cut the response (no clean chunked end).
    this.#input.res.destroy();
    this.#settle({ upstreamStatus: this.#status, complete: false, failure, agentAborted: false });
  }
}

export function forwardRequest(input: ForwardInput): Promise<ForwardResult> {
  return new Promise<ForwardResult>((resolve, reject) => {
    const relay = new ResponseRelay(input, resolve, reject);
    try {
      input.dispatcher.dispatch(
        {
          origin: input.service.upstream.origin,
          method: input.outbound.method,
          path: input.outbound.target(),
          headers: input.outbound.headers,
          body: input.body,
        },
        relay,
      );
    } catch (error) {
      relay.onResponseError(null as unknown as Dispatcher.DispatchController, error as Error);
    }
  });
}
