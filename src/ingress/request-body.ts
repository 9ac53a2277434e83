/**
 * The agent's request body as undici will read it: null when there is none, else a pass-through that
 * counts bytes and fails with 413 past the limit. The pass-through also isolates the socket: when an
 * upstream fails, undici destroys the stream it was reading, and that must not be the agent's
 * connection, which still has to carry the 502.
 */
import type { IncomingMessage } from 'node:http';
import { Transform, type TransformCallback } from 'node:stream';
import { AirlockError } from '../errors.js';

export function hasRequestBody(req: IncomingMessage): boolean {
  const length = req.headers['content-length'];
  if (length !== undefined) return length !== '0';
  return req.headers['transfer-encoding'] !== undefined;
}

function tooLarge(limit: number): AirlockError {
  return new AirlockError('payload_too_large', `The request body is larger than the limit of ${limit} bytes (limits.max_body_bytes or the service's max_body_bytes).`);
}

class BodyLimit extends Transform {
  readonly #limit: number;
  #seen = 0;

  constructor(limit: number) {
    super();
    this.#limit = limit;
  }

  override _transform(chunk: Buffer, _encoding: BufferEncoding, callback: TransformCallback): void {
    this.#seen += chunk.length;
    if (this.#seen > this.#limit) return callback(tooLarge(this.#limit));
    callback(null, chunk);
  }
}

/** Throws 413 at once when Content-Length already says the body is too large. */
export function requestBody(req: IncomingMessage, limit: number): Transform | null {
  if (!hasRequestBody(req)) return null;
  const declared = Number(req.headers['content-length']);
  if (Number.isFinite(declared) && declared > limit) throw tooLarge(limit);
  const body = new BodyLimit(limit);
  req.on('error', function agentUploadFailed(error) {
    body.destroy(error);
  });
  req.on('aborted', function agentUploadAborted() {
    body.destroy(new AirlockError('invalid_request', 'The agent closed the connection before sending the whole body.'));
  });
  req.pipe(body);
  return body;
}
