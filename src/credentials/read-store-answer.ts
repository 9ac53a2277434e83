/**
 * The answer of a credential store (Vault, an OAuth2 token endpoint), read under a deadline for the
 * whole exchange and a size cap.
 *
 * undici's headersTimeout/bodyTimeout (and axios's `timeout`) bound silences, not the exchange: a store
 * that trickles a byte at a time, or streams without end, would hold the agent's request and grow the
 * heap for as long as it goes on. A token or a KV secret is a few KiB, so anything past the cap is a
 * broken or hostile store, and the call is abandoned (the caller turns it into 503).
 */
import { readFileSync } from 'node:fs';
import type { Dispatcher } from 'undici';
import { Agent, request } from 'undici';
import { VERIFY_PEER } from '../upstream/tls-verification.js';

/** A credential answer is a few KiB; 1 MiB leaves room for large KV entries and still bounds memory. */
export const STORE_ANSWER_MAX_BYTES = 1024 * 1024;

export class StoreAnswerTooLarge extends Error {
  override name = 'StoreAnswerTooLarge';
  constructor(limit: number) {
    super(`the store's answer is larger than ${limit} bytes`);
  }
}

export interface StoreAnswer {
  readonly status: number;
  readonly text: string;
}

export interface StoreCall {
  readonly method: Dispatcher.HttpMethod;
  readonly headers: Record<string, string>;
  readonly body?: string;
  readonly dispatcher: Dispatcher;
  /** The whole exchange, from connect to the last body byte. */
  readonly deadlineMs: number;
  readonly maxBytes?: number;
  /**
   * Ends the call before its deadline: the broker that asked closed (shutdown, or a reload that retired
   * its configuration). An undici agent's close() waits for the calls under way, so without this a store
   * that held its answer held the close for the whole deadline.
   */
  readonly cancel?: AbortSignal;
}

/**
 * The connection pool for one store: every silence (connect, headers, body) bounded by the same
 * deadline as the whole exchange, and the store's own CA certificates when it has them.
 */
export function storeAgent(deadlineMs: number, caFile: string | undefined): Agent {
  return new Agent({
    connect: { timeout: deadlineMs, ...VERIFY_PEER, ...(caFile === undefined ? {} : { ca: readFileSync(caFile, 'utf8') }) },
    headersTimeout: deadlineMs,
    bodyTimeout: deadlineMs,
  });
}

export async function readStoreAnswer(url: string, call: StoreCall): Promise<StoreAnswer> {
  const limit = call.maxBytes ?? STORE_ANSWER_MAX_BYTES;
  // One signal for connect, headers and body, fired by the deadline or by `cancel`: when it fires, undici
  // ends the request and destroys the body stream. A listener on `cancel` rather than AbortSignal.any:
  // `cancel` lives as long as its broker, and this listener is removed when the call ends, so nothing of
  // a finished call stays tied to it.
  const controller = new AbortController();
  const deadline = setTimeout(() => controller.abort(new DOMException('the store did not answer within its deadline', 'TimeoutError')), call.deadlineMs);
  deadline.unref();
  const cancel = (): void => controller.abort(call.cancel?.reason);
  if (call.cancel?.aborted === true) cancel();
  else call.cancel?.addEventListener('abort', cancel, { once: true });
  try {
    const response = await request(url, {
      method: call.method,
      headers: call.headers,
      ...(call.body === undefined ? {} : { body: call.body }),
      dispatcher: call.dispatcher,
      signal: controller.signal,
    });
    const chunks: Buffer[] = [];
    let size = 0;
    for await (const chunk of response.body as AsyncIterable<Buffer>) {
      size += chunk.length;
      if (size > limit) {
        response.body.destroy();
        throw new StoreAnswerTooLarge(limit);
      }
      chunks.push(chunk);
    }
    return { status: response.statusCode, text: Buffer.concat(chunks, size).toString('utf8') };
  } finally {
    clearTimeout(deadline);
    call.cancel?.removeEventListener('abort', cancel);
  }
}
