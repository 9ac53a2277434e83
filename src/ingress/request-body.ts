/**
 * The agent's request body as undici will read it: null when there is none, else a pass-through that
 * counts bytes (413 past the limit) and watches for managed secrets (400, the secret not forwarded:
 * only bytes that cannot be part of one leave, see guard-request-secrets.ts) and, in a form body, for a
 * method override key (400, FormOverrideWatch). The pass-through also
 * isolates the socket: when an upstream fails, undici destroys the stream it was reading, and that
 * must not be the agent's connection, which still has to carry the 502.
 */
import type { IncomingMessage } from 'node:http';
import { Transform, type TransformCallback } from 'node:stream';
import { AirlockError } from '../errors.js';
import { METHOD_OVERRIDE_QUERY_KEYS } from '../pipeline/build-upstream-request.js';
import { carriesManagedSecret } from '../pipeline/guard-request-secrets.js';
import type { SecretIndex } from '../redaction/secret-catalog.js';
import { SecretDetector } from '../redaction/secret-detector.js';
import { formKeyName } from '../upstream/outbound-request.js';

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

/** Watches a body for a method override as it streams: true once one is found. */
interface OverrideWatch {
  push(chunk: Buffer): boolean;
  end(): boolean;
}

/** Longer keys are not read: every override key fits, percent-encoded whole, well within it. */
const FORM_KEY_LIMIT = 256;
const OVERRIDE_KEYS: ReadonlySet<string> = new Set(METHOD_OVERRIDE_QUERY_KEYS);

/**
 * The keys of an application/x-www-form-urlencoded body, read as they stream. Rack::MethodOverride (in
 * Rails' default stack), Laravel and Symfony read `_method` from a POST form body and run that method
 * instead, so a grant for POST would run DELETE while the audit said POST (found by review). Such a key
 * is refused, as the same key in the query is removed (build-upstream-request.ts).
 */
class FormOverrideWatch implements OverrideWatch {
  #key = '';
  #inKey = true;

  /** True once a key naming a method override has been read whole. */
  push(chunk: Buffer): boolean {
    for (let i = 0; i < chunk.length; i++) {
      const byte = chunk[i] as number;
      if (byte === 0x26 || byte === 0x3b) {
        // "&" (and ";", which some parsers also split on) ends a pair; a key without "=" counts too.
        if (this.#inKey && this.#overrides()) return true;
        this.#inKey = true;
        this.#key = '';
      } else if (this.#inKey) {
        if (byte === 0x3d) {
          if (this.#overrides()) return true;
          this.#inKey = false;
        } else if (this.#key.length < FORM_KEY_LIMIT) {
          this.#key += String.fromCharCode(byte);
        }
      }
    }
    return false;
  }

  end(): boolean {
    return this.#inKey && this.#overrides();
  }

  #overrides(): boolean {
    return this.#key !== '' && OVERRIDE_KEYS.has(formKeyName(this.#key));
  }
}

/**
 * The same override named as a field of a multipart body (Content-Disposition: form-data;
 * name="_method") or as a key of a JSON body (Laravel reads JSON input as the request's fields), searched
 * as the body streams: Buffer#indexOf over each chunk, and the few bytes across a chunk boundary checked
 * on their own, so a large body is not copied. `_method` only: it is the one name those frameworks read
 * from a body.
 *
 * In JSON, any character of the key may be written as a \u escape ("\u005fmethod", "_m\u0065thod"),
 * which the upstream's parser reads as the same key (RFC 8259 7). Encoders escape control characters,
 * quotes, backslash, "<>&'" and non-ASCII, never a lower-case letter or "_", so an escape of one of the
 * key's characters is refused wherever it appears (found by the owner's review of the first version,
 * which saw only the key written plainly). Only a real escape counts: "\\" is the escape for a backslash
 * (RFC 8259 7), so the backslash of "\u0065" preceded by an odd run of backslashes is the second half of
 * one, and the text is the six characters `\u0065`, as JSON.stringify writes a regex or code that holds
 * them (found by review: such a prompt was refused). A run can cross chunk boundaries, so the parity of
 * the backslashes ending the data so far, and of those ending just before the carry, is kept.
 */
class LiteralOverrideWatch implements OverrideWatch {
  readonly #needles: readonly Buffer[];
  readonly #escapes: boolean;
  readonly #keep: number;
  #carry: Buffer = Buffer.alloc(0);
  /** An odd number of backslashes ends the data so far: a backslash first in the next chunk is escaped. */
  #oddAtEnd = false;
  /** An odd number of backslashes ends just before the carry's first byte (the seam's first byte). */
  #oddBeforeCarry = false;

  constructor(needles: readonly Buffer[], escapes: boolean) {
    this.#needles = needles;
    this.#escapes = escapes;
    this.#keep = Math.max(JSON_ESCAPE_LENGTH, ...needles.map((n) => n.length)) - 1;
  }

  push(chunk: Buffer): boolean {
    if (this.#carry.length > 0) {
      const seam = Buffer.concat([this.#carry, chunk.subarray(0, this.#keep)]);
      if (this.#holds(seam, this.#oddBeforeCarry)) return true;
    }
    if (this.#holds(chunk, this.#oddAtEnd)) return true;
    if (chunk.length >= this.#keep) {
      const from = chunk.length - this.#keep;
      if (this.#escapes) this.#oddBeforeCarry = oddBackslashesBefore(chunk, from, this.#oddAtEnd);
      this.#carry = chunk.subarray(from);
    } else {
      // The new carry is the end of the old one and this chunk: the run before it may reach back into
      // the old carry, and past its start.
      const joined = Buffer.concat([this.#carry, chunk]);
      const from = Math.max(0, joined.length - this.#keep);
      if (this.#escapes) this.#oddBeforeCarry = oddBackslashesBefore(joined, from, this.#oddBeforeCarry);
      this.#carry = joined.subarray(from);
    }
    if (this.#escapes) this.#oddAtEnd = oddBackslashesBefore(chunk, chunk.length, this.#oddAtEnd);
    return false;
  }

  end(): boolean {
    return false;
  }

  /** `oddBefore`: whether an odd number of backslashes ends just before `bytes` in the body. */
  #holds(bytes: Buffer, oddBefore: boolean): boolean {
    if (!this.#escapes) return this.#needles.some((needle) => bytes.includes(needle));
    // JSON: a quote after an odd run of backslashes is text inside a string (\"), not the start of a key
    // ({"note":"say \"_method\""} was refused; found by the owner's review), so the same parity as below.
    for (const needle of this.#needles) {
      for (let at = bytes.indexOf(needle); at !== -1; at = bytes.indexOf(needle, at + 1)) {
        if (!oddBackslashesBefore(bytes, at, oddBefore)) return true;
      }
    }
    // "\u00" then two hex digits; one that does not end within these bytes is seen across the next seam.
    for (let at = bytes.indexOf(ESCAPE_START); at !== -1 && at + JSON_ESCAPE_LENGTH <= bytes.length; at = bytes.indexOf(ESCAPE_START, at + 1)) {
      if (oddBackslashesBefore(bytes, at, oddBefore)) continue;
      const code = Number.parseInt(bytes.toString('latin1', at + 4, at + 6), 16);
      if (OVERRIDE_KEY_CHARS.has(code)) return true;
    }
    return false;
  }
}

/**
 * Whether the run of backslashes ending just before `end` in `bytes` is odd, counting `oddBefore` (the
 * same for the bytes before `bytes`) when the run reaches back to the start. A plain walk: each run
 * walked ends right before one match or the chunk's end, so runs are not walked twice and a body costs
 * time in proportion to its length.
 */
function oddBackslashesBefore(bytes: Buffer, end: number, oddBefore: boolean): boolean {
  let at = end;
  while (at > 0 && bytes[at - 1] === BACKSLASH) at--;
  const odd = (end - at) % 2 === 1;
  return at === 0 ? odd !== oddBefore : odd;
}

/** Built once: every JSON or multipart request body gets a watch over them. */
// Not `name="_method"` as written: Rack reads the parameter name case-insensitively and with spaces
// around "=" (NAME="_method", name= "_method"; found by the owner's review), so the field's value as it
// follows either spelling is looked for. A file part holding those bytes is refused too (fails closed).
const MULTIPART_OVERRIDES: readonly Buffer[] = ['"_method"', '=_method'].map((n) => Buffer.from(n, 'latin1'));
const JSON_OVERRIDES: readonly Buffer[] = [Buffer.from('"_method"', 'latin1')];
/** "\u00XX": the escapes that can spell a character of "_method". */
const ESCAPE_START = Buffer.from('\\u00', 'latin1');
const JSON_ESCAPE_LENGTH = 6;
const BACKSLASH = 0x5c;
const OVERRIDE_KEY_CHARS: ReadonlySet<number> = new Set([...'_method'].map((char) => char.charCodeAt(0)));

/**
 * Which watch a body gets by its Content-Type. None given is read as a form too: Rack parses a POST
 * without a Content-Type as one (found by the owner's review: the override passed that way).
 */
function overrideWatchFor(contentType: string | undefined): OverrideWatch | null {
  const type = (contentType ?? '').trim().toLowerCase();
  if (type === '' || type.startsWith('application/x-www-form-urlencoded')) return new FormOverrideWatch();
  if (type.startsWith('multipart/form-data')) return new LiteralOverrideWatch(MULTIPART_OVERRIDES, false);
  if (type.startsWith('application/json') || /^application\/[a-z0-9.+-]*\+json/.test(type)) return new LiteralOverrideWatch(JSON_OVERRIDES, true);
  return null;
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
export function requestBody(req: IncomingMessage, limit: number, secrets: SecretIndex | null): Transform | null {
  if (!hasRequestBody(req)) return null;
  const declared = Number(req.headers['content-length']);
  if (Number.isFinite(declared) && declared > limit) throw tooLarge(limit);
  const detector = secrets === null || secrets.matcher.needles.size === 0 ? null : new SecretDetector(secrets);
  const form = overrideWatchFor(req.headers['content-type']);
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
