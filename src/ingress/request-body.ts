/**
 * The agent's request body as undici will read it: null when there is none, else a pass-through that
 * counts bytes (413 past the limit) and watches for managed secrets (400, the secret not forwarded:
 * only bytes that cannot be part of one leave, see guard-request-secrets.ts) and, in a form body, for a
 * method override (400, override-watch.ts). The pass-through also
 * isolates the socket: when an upstream fails, undici destroys the stream it was reading, and that
 * must not be the agent's connection, which still has to carry the 502.
 */
import type { IncomingMessage } from 'node:http';
import { Transform, type TransformCallback } from 'node:stream';
import { AirlockError } from '../errors.js';
import { carriesManagedSecret } from '../pipeline/guard-request-secrets.js';
import type { SecretIndex } from '../redaction/secret-catalog.js';
import { SecretDetector } from '../redaction/secret-detector.js';
import { overrideWatchFor, type OverrideWatch } from './override-watch.js';

export function hasRequestBody(req: IncomingMessage): boolean {
  const length = req.headers['content-length'];
  if (length !== undefined) return length !== '0';
  return req.headers['transfer-encoding'] !== undefined;
}

function tooLarge(limit: number): AirlockError {
  return new AirlockError('payload_too_large', `The request body is larger than the limit of ${limit} bytes (limits.max_body_bytes or the service's max_body_bytes).`);
}

function secretInBody(ref: string): AirlockError {
  return carriesManagedSecret(ref, 'request body');
}

function overrideInBody(): AirlockError {
  return new AirlockError('invalid_request', 'The request body carries a method override (_method or the like), which some frameworks would run instead of the method that was authorized; send the request with the method you mean.');
}

class BodyGuard extends Transform {
  readonly #limit: number;
  readonly #detector: SecretDetector | null;
  readonly #form: OverrideWatch | null;
  #seen = 0;

  constructor(limit: number, detector: SecretDetector | null, form: OverrideWatch | null) {
    super();
    this.#limit = limit;
    this.#detector = detector;
    this.#form = form;
  }

  override _transform(chunk: Buffer, _encoding: BufferEncoding, callback: TransformCallback): void {
    this.#seen += chunk.length;
    if (this.#seen > this.#limit) return callback(tooLarge(this.#limit));
    // A managed secret first: its refusal names the credential, which the operator must rotate, and a
    // body may hold both (a key written in \u escapes also trips the JSON override watch).
    const step = this.#detector?.push(chunk) ?? null;
    if (step !== null && step.found !== null) return callback(secretInBody(step.found));
    if (this.#form?.push(chunk) === true) return callback(overrideInBody());
    if (step === null) return callback(null, chunk);
    callback(null, step.forward.length === 0 ? undefined : step.forward);
  }

  override _flush(callback: TransformCallback): void {
    const step = this.#detector?.end() ?? null;
    if (step !== null && step.found !== null) return callback(secretInBody(step.found));
    if (this.#form?.end() === true) return callback(overrideInBody());
    if (step === null) return callback();
    callback(null, step.forward.length === 0 ? undefined : step.forward);
  }
}

/** Throws 413 at once when Content-Length already says the body is too large. */
/** `watchOverrides`: false for a service whose upstream honours no method override (its `method_overrides: forward`). */
export function requestBody(req: IncomingMessage, limit: number, secrets: SecretIndex | null, watchOverrides = true): Transform | null {
  if (!hasRequestBody(req)) return null;
  const declared = Number(req.headers['content-length']);
  if (Number.isFinite(declared) && declared > limit) throw tooLarge(limit);
  const detector = secrets === null || secrets.matcher.needles.size === 0 ? null : new SecretDetector(secrets);
  const form = watchOverrides ? overrideWatchFor(req.headers['content-type']) : null;
  const body = new BodyGuard(limit, detector, form);
  req.on('error', function agentUploadFailed(error) {
    body.destroy(error);
  });
  req.on('aborted', function agentUploadAborted() {
    body.destroy(new AirlockError('invalid_request', 'The agent closed the connection before sending the whole body.'));
  });
  // The agent's bytes flow in (and may be refused) before undici attaches its own listeners at
  // dispatch; the pipeline checks `body.errored` right before dispatching. Never an unhandled error.
  body.on('error', function bodyRefusedBeforeDispatch() {
    /* surfaced through body.errored or undici's handler */
  });
  req.pipe(body);
  return body;
}
