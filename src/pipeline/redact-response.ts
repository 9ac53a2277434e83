/**
 * Stage 9: redact & stream. Everything the upstream says reaches the agent through here, scanned for
 * the secrets in the service's redaction scope and the enabled key shapes: every header value (Location,
 * WWW-Authenticate, Set-Cookie, Link, custom ones), the body, and the trailers.
 *
 * Body handling, decided when the headers arrive:
 *  - no body (HEAD, 204, 304): headers only;
 *  - a Content-Length up to BUFFERED_BODY_LIMIT: held until it is whole and sent with its new exact
 *    length (an identity body is redacted chunk by chunk as it arrives, an encoded one decoded and
 *    redacted at its end); a body that cannot be decoded is refused with 502 before anything is sent;
 *  - otherwise streamed: Content-Length dropped (the length may change; node sends chunked), each chunk
 *    decoded and redacted as it arrives, holding back only the bytes of a live partial match.
 * gzip, deflate (zlib or raw) and br are decoded and passed on decoded, bounded in size and ratio against
 * decompression bombs; any other Content-Encoding is refused with 502 unscannable_response, because a
 * body Airlock cannot read is a body it cannot vouch for.
 */
import type { IncomingMessage, ServerResponse } from 'node:http';
import { brotliDecompressSync, createBrotliDecompress, createGunzip, createInflate, createInflateRaw, gunzipSync, inflateRawSync, inflateSync } from 'node:zlib';
import type { Transform } from 'node:stream';
import { AirlockError } from '../errors.js';
import type { ServicePolicy } from '../policy/compile-policy.js';
import { MIN_MASKED_PARTIAL, type RedactionMatcher } from '../redaction/redaction-matcher.js';
import type { SecretCatalog } from '../redaction/secret-catalog.js';
import { SseDeltaRedactor, type EventFraming } from '../redaction/sse-delta-redactor.js';
import { StreamRedactor } from '../redaction/stream-redactor.js';
import { HOP_BY_HOP_HEADERS } from '../upstream/hop-by-hop.js';
import { REQUEST_ID_HEADER } from '../upstream/relay-headers.js';
import { agentOrigin, rewriteLinks } from '../upstream/rewrite-link.js';
import { rewriteLocation } from '../upstream/rewrite-location.js';
import type { UpstreamTarget } from '../upstream/upstream-target.js';

/** Bodies announced at or under this size are buffered so their Content-Length stays exact. */
export const BUFFERED_BODY_LIMIT = 64 * 1024;
/** More parts than this in a buffered body are joined into one buffer before they are written. */
const MAX_WRITE_PARTS = 16;
/** A ratio check needs some volume first: tiny bodies compress absurdly well legitimately. */
const RATIO_FLOOR_BYTES = 1024 * 1024;
const DIGEST_HEADERS: ReadonlySet<string> = new Set(['content-md5', 'digest', 'content-digest', 'repr-digest']);

export type ContentCoding = 'identity' | 'gzip' | 'deflate' | 'br';

export interface RedactionLimits {
  readonly maxDecodedBytes: number;
  readonly maxRatio: number;
}

/** A small upstream response held back unsent (a 401 that may be retried with a rotated credential). */
export interface CapturedResponse {
  readonly status: number;
  readonly headers: string[];
  readonly contentEncoding: string | string[] | undefined;
  readonly body: Buffer;
  readonly trailers: Readonly<Record<string, string | string[] | undefined>>;
}

export type WriterOutcome =
  | { readonly kind: 'refused'; readonly error: AirlockError }
  | { readonly kind: 'captured'; readonly response: CapturedResponse }
  | { readonly kind: 'done'; readonly complete: boolean; readonly failure: AirlockError | null };

export interface WriterHooks {
  pauseUpstream(): void;
  resumeUpstream(): void;
  abortUpstream(reason: Error): void;
  settle(outcome: WriterOutcome): void;
}

/** The single coding of a Content-Encoding header, or null when Airlock cannot decode it. */
export function contentCodingOf(value: string | string[] | undefined): ContentCoding | null {
  if (value === undefined) return 'identity';
  const codings = (Array.isArray(value) ? value.join(',') : value)
    .split(',')
    .map((c) => c.trim().toLowerCase())
    .filter((c) => c !== '' && c !== 'identity');
  if (codings.length === 0) return 'identity';
  if (codings.length > 1) return null;
  const coding = codings[0];
  if (coding === 'gzip' || coding === 'x-gzip') return 'gzip';
  if (coding === 'deflate' || coding === 'br') return coding;
  return null;
}

function unscannable(detail: string, cause?: unknown): AirlockError {
  return new AirlockError('unscannable_response', detail, cause === undefined ? {} : { cause });
}

/**
 * What the writer throws is a fault in Airlock's own handling of the response (a redactor bug, memory
 * exhausted), never the upstream's: said so, instead of undici reporting it as the request's error
 * (which read as 502 upstream_unreachable, "Could not get a response from the upstream").
 */
function ownFault(error: unknown): AirlockError {
  if (error instanceof AirlockError) return error;
  return unscannable("Airlock failed while scanning the upstream's response for secrets, so the response was not passed on (or was cut short). This is a fault in Airlock, not in the upstream: report it with the x-airlock-request-id.", error);
}

/** RFC 1950: a zlib stream starts with CMF/FLG where CM = 8 and (CMF*256 + FLG) % 31 == 0; else raw deflate. */
function isZlibWrapped(head: Buffer): boolean {
  return head.length >= 2 && ((head[0] as number) & 0x0f) === 8 && (((head[0] as number) << 8) | (head[1] as number)) % 31 === 0;
}

/**
 * Scans headers in place (flat name/value list); returns the number of replacements. A value is masked
 * where a secret shows; a header whose NAME holds one is dropped, name and value, since a name cannot
 * carry the marker (RFC 9110 5.1: a token) and an upstream that echoes input into a header name
 * (`x-<hex of the key>: 1`) would otherwise hand the secret over (found by review). Names arrive lower
 * case (undici), so they are compared with the forms, and the key shapes, folded to lower case too
 * (nameHoldsSecret, nameHoldsKeyShape).
 */
export function redactHeaderValues(pairs: string[], matcher: RedactionMatcher): number {
  let count = 0;
  for (let i = 1; i < pairs.length; i += 2) {
    // Airlock's own request id (the upstream's was dropped): a random UUID whose hex tail would, about
    // once in 30,000 responses, look like the start of a secret's hex form and be masked as a partial.
    if (pairs[i - 1] === REQUEST_ID_HEADER) continue;
    const name = pairs[i - 1] as string;
    // The key shapes are checked folded only: a name in lower case holds none of the upper-case ones as written.
    if (matcher.nameHoldsSecret(name) || matcher.nameHoldsKeyShape(name) || (!matcher.textHoldsNoNeedle(name, 'latin1', MIN_MASKED_PARTIAL) && redactedCount(name, matcher) > 0)) {
      pairs.splice(i - 1, 2);
      i -= 2;
      count += 1;
      continue;
    }
    count += redactHeaderValue(pairs, i, matcher);
  }
  return count;
}

/** How many replacements masking `text` would make. */
function redactedCount(text: string, matcher: RedactionMatcher): number {
  const redactor = new StreamRedactor(matcher);
  redactor.whole(Buffer.from(text, 'latin1'));
  return redactor.redactions;
}

function redactHeaderValue(pairs: string[], i: number, matcher: RedactionMatcher): number {
  if (matcher.clearOfText(pairs[i] as string, 'latin1')) return 0;
  const redactor = new StreamRedactor(matcher);
  const output = redactor.whole(Buffer.from(pairs[i] as string, 'latin1'));
  if (redactor.redactions > 0) pairs[i] = output.toString('latin1');
  return redactor.redactions;
}

/**
 * A same-origin Location (and each Link target inside the upstream), already masked as the upstream wrote it, is rewritten to the agent's view of
 * the service and scanned once more. Masking comes first because rewriting parses and re-serializes the
 * URL (' becomes %27, Latin-1 becomes UTF-8 escapes), which can turn a form of the secret the scan knows
 * into one it does not (found by review); the second scan catches a form that re-encoding completed.
 */
function relocate(pairs: string[], matcher: RedactionMatcher, upstream: UpstreamTarget, agentPrefix: string, request: IncomingMessage, forwardedPath: string): number {
  let redactions = 0;
  let origin: string | undefined;
  // Relative references resolve against the URL the request went to (RFC 3986 5.2, RFC 8288 3.2).
  const base = `${upstream.origin}${forwardedPath}`;
  for (let i = 0; i < pairs.length; i += 2) {
    const name = pairs[i];
    if (name !== 'location' && name !== 'link') continue;
    const value = pairs[i + 1] as string;
    let rewritten = value;
    if (name === 'location') {
      rewritten = rewriteLocation(value, upstream, agentPrefix, base);
    } else {
      // Pagination links (rewrite-link.ts); the origin is worked out once, and only for a Link.
      origin ??= agentOrigin(request.headers, (request.socket as { encrypted?: boolean }).encrypted === true);
      rewritten = rewriteLinks(value, upstream, origin, agentPrefix, base);
    }
    if (rewritten === value) continue;
    pairs[i + 1] = rewritten;
    redactions += redactHeaderValue(pairs, i + 1, matcher);
  }
  return redactions;
}

/** Media types of one JSON value per line: NDJSON (Ollama's streams), JSON Lines, LDJSON. */
const JSON_LINES = /^application\/(?:x-)?(?:ndjson|jsonl|json-lines|jsonlines|ldjson)\s*(?:;|$)/;
/** JSON text sequences (RFC 7464), `application/geo+json-seq` too. */
const JSON_SEQ = /^application\/(?:[\w.-]+\+)?json-seq\s*(?:;|$)/;
/** JSON (RFC 8259 11, and +json types, RFC 6839 3.1). */
const JSON_TYPE = /^application\/(?:[\w.-]+\+)?json\s*(?:;|$)/;

/**
 * A streaming custom method in Google's REST style (AIP-136: the last segment's `:verb`): Gemini's
 * `:streamGenerateContent`, Vertex AI's `:streamRawPredict` and `:serverStreamingPredict`. Without
 * `alt=sse` they answer with one JSON array written element by element. The colon may come escaped
 * (`%3A`, which canonical paths keep as sent and Google's front end decodes: found by review).
 */
const STREAMING_CUSTOM_METHOD = /(?::|%3[Aa])(?:[Ss]tream|[a-z][A-Za-z]*Stream)[A-Za-z]*$/;

/** The request a response answers, as far as reading the response needs it. */
export interface AnsweredRequest {
  readonly method: string;
  /** The path forwarded upstream (no query). */
  readonly path: string;
}

/**
 * How a streamed body's events are framed, for the layer that joins a secret spread over them
 * (sse-delta-redactor.ts): SSE, one JSON value per line, JSON text sequence records, the elements of a
 * JSON array (the answer to `path` when it names a streaming custom method), or neither (null). Other
 * JSON arrays are answers, not streams of tokens: following every string of every element costs ~10-30
 * MB/s against the byte scan's GB/s (a 370 KB GitHub issue list took 11 ms), for pieces of a key that
 * only a model repeating one token by token would spread over elements.
 */
function eventFramingOf(pairs: readonly string[], path: string): EventFraming | null {
  for (let i = 0; i < pairs.length; i += 2) {
    if (pairs[i] !== 'content-type') continue;
    const type = (pairs[i + 1] as string).toLowerCase().trim();
    if (type.includes('text/event-stream')) return 'sse';
    if (JSON_LINES.test(type)) return 'lines';
    if (JSON_SEQ.test(type)) return 'seq';
    if (JSON_TYPE.test(type) && STREAMING_CUSTOM_METHOD.test(path)) return 'array';
  }
  return null;
}

function withoutHeaders(pairs: readonly string[], drop: (name: string) => boolean): string[] {
  const out: string[] = [];
  for (let i = 0; i < pairs.length; i += 2) if (!drop(pairs[i] as string)) out.push(pairs[i] as string, pairs[i + 1] as string);
  return out;
}

export class RedactingResponseWriter {
  readonly #res: ServerResponse;
  readonly #matcher: RedactionMatcher;
  readonly #limits: RedactionLimits;
  readonly #upstream: UpstreamTarget;
  readonly #agentPrefix: string;
  readonly #hooks: WriterHooks;
  readonly #bodyless: boolean;
  /** The path the request was forwarded to (STREAMING_CUSTOM_METHOD is tested only for JSON answers). */
  readonly #path: string;
  #mode: 'headers-only' | 'buffer' | 'stream' | 'capture' = 'stream';
  #contentEncoding: string | string[] | undefined;
  #coding: ContentCoding = 'identity';
  #headers: string[] = [];
  /** Stream mode's headers, until the first body bytes go out. */
  #streamHead: string[] | null = null;
  #status = 0;
  /** Capture mode's body, and a buffered body that must be decoded first: as it came. */
  #buffered: Buffer[] = [];
  /**
   * A buffered identity body, redacted chunk by chunk as it arrives: the parts are views of the
   * upstream's chunks wherever nothing was masked, so the body is never copied into one buffer (that
   * copy and its garbage were ~5% of Airlock's CPU per 64 KiB response in npm run profile).
   */
  #redactedParts: Buffer[] = [];
  #redactor: StreamRedactor;
  /** For text/event-stream and NDJSON: secrets spread over events (an LLM repeating a key token by token). */
  #events: SseDeltaRedactor | null = null;
  #decoder: Transform | null = null;
  /** A deflate body's first byte, held until a second shows whether it is zlib-wrapped (isZlibWrapped). */
  #deflateHead: Buffer | null = null;
  #encodedBytes = 0;
  #decodedBytes = 0;
  #trailers: string[] = [];
  #done = false;
  /** timeouts.body: how long an agent may leave its socket full (below), as the upstream may be silent. */
  readonly #stallMs: number;
  #stall: NodeJS.Timeout | null = null;
  redactions = 0;
  /** Body bytes written to the agent. */
  bytesSent = 0;

  /**
   * `service` gives the limits and, with `agentPrefix`, where a same-origin Location is pointed back to
   * (rewrite-location.ts).
   */
  constructor(res: ServerResponse, matcher: RedactionMatcher, service: ServicePolicy, agentPrefix: string, hooks: WriterHooks, request: AnsweredRequest) {
    this.#res = res;
    this.#matcher = matcher;
    this.#limits = service.redaction.limits;
    this.#upstream = service.upstream;
    this.#agentPrefix = agentPrefix;
    this.#hooks = hooks;
    this.#bodyless = request.method === 'HEAD';
    this.#stallMs = service.config.timeouts.body * 1000;
    this.#path = request.path;
    this.#redactor = new StreamRedactor(matcher);
    res.on('drain', this.#onAgentDrain);
  }

  get headersSent(): boolean {
    return this.#res.headersSent;
  }

  /**
   * The agent's connection closed (it hung up, or a revocation or shutdown cut it): stop, counting what
   * both layers masked in what was sent. Found by an ops walkthrough: such a stream's record and
   * airlock_redactions_total said 0 however many keys it had masked, so an agent that fished for a key
   * and hung up left no trace.
   */
  agentGone(): void {
    if (this.#done) return;
    this.#done = true;
    this.#clearStall();
    this.#countScanned();
    this.#decoder?.destroy();
    this.#res.off('drain', this.#onAgentDrain);
  }

  /** The upstream failed before anything reached the agent: stop, so the caller can answer instead. */
  abandon(): void {
    if (this.#done) return;
    this.#done = true;
    this.#clearStall();
    this.#decoder?.destroy();
    this.#res.off('drain', this.#onAgentDrain);
  }

  #sendStreamHead(): void {
    if (this.#streamHead === null) return;
    this.#res.writeHead(this.#status, this.#streamHead);
    this.#streamHead = null;
  }

  #clearStall(): void {
    if (this.#stall !== null) clearTimeout(this.#stall);
    this.#stall = null;
  }

  readonly #onAgentDrain = (): void => {
    this.#clearStall();
    if (this.#decoder !== null) this.#decoder.resume();
    else this.#hooks.resumeUpstream();
  };

  /**
   * The agent has read nothing for timeouts.body while its socket was full: the response is cut and
   * the upstream connection freed (found by review: undici's body timeout does not run while a
   * response is paused, so agents that stopped reading held a service's connections for ever, and
   * requests queued behind them were never answered).
   */
  readonly #onAgentStalled = (): void => {
    this.#stall = null;
    if (this.#done) return;
    const failure = new AirlockError('request_timeout', `The agent read nothing of the response for ${this.#stallMs / 1000} s (timeouts.body of the service); the response was cut.`);
    this.#hooks.abortUpstream(failure);
    this.abort(failure);
  };

  /**
   * Takes the relayed headers (flat, already hop-by-hop filtered). Returns an error, having written
   * nothing, when the body cannot be scanned.
   */
  start(status: number, pairs: string[], contentEncoding: string | string[] | undefined, contentLength: string | undefined, capture = false): AirlockError | null {
    try {
      return this.#start(status, pairs, contentEncoding, contentLength, capture);
    } catch (error) {
      return ownFault(error);
    }
  }

  #start(status: number, pairs: string[], contentEncoding: string | string[] | undefined, contentLength: string | undefined, capture: boolean): AirlockError | null {
    this.#status = status;
    const declaredLength = contentLength === undefined ? NaN : Number(contentLength);
    if (capture && (this.#bodylessStatus(status) || (Number.isFinite(declaredLength) && declaredLength <= BUFFERED_BODY_LIMIT))) {
      // Held unsent and unscanned: it is either replaced by a retry or replayed through a new writer.
      this.#mode = 'capture';
      this.#headers = pairs;
      this.#contentEncoding = contentEncoding;
      return null;
    }
    this.redactions += redactHeaderValues(pairs, this.#matcher) + relocate(pairs, this.#matcher, this.#upstream, this.#agentPrefix, this.#res.req, this.#path);
    if (this.#bodylessStatus(status)) {
      this.#mode = 'headers-only';
      // Digests of the body a GET would have had (HEAD) or of the stored one (304): that body was never
      // scanned, so they would let an agent test guesses of a secret it holds offline, as streamed
      // headers and trailers would (found by review).
      this.#headers = withoutHeaders(pairs, (name) => DIGEST_HEADERS.has(name));
      return null;
    }
    const framing = this.#matcher.needles.size > 0 ? eventFramingOf(pairs, this.#path) : null;
    if (framing !== null) this.#events = new SseDeltaRedactor(this.#matcher.needles, framing);
    const coding = contentCodingOf(contentEncoding);
    if (coding === null) {
      // The value is not quoted: it is the upstream's, and an agent's error holds only our words (found
      // by review: a key shape the response scan would have masked came back in this detail).
      return unscannable('The upstream sent a body with a Content-Encoding Airlock cannot decode (it decodes gzip, deflate and br, one at a time) and therefore cannot scan for secrets; it was not passed on.');
    }
    this.#coding = coding;
    const declared = contentLength === undefined ? NaN : Number(contentLength);
    if (Number.isFinite(declared) && declared <= BUFFERED_BODY_LIMIT) {
      this.#mode = 'buffer';
      this.#headers = pairs;
      return null;
    }
    this.#mode = 'stream';
    const decoded = coding !== 'identity';
    // Sent with the first body bytes (node would hold them until then anyway): an upstream that fails
    // before any byte still gets the agent a whole 502 problem instead of a cut connection.
    this.#streamHead = withoutHeaders(pairs, (name) => name === 'content-length' || DIGEST_HEADERS.has(name) || (decoded && name === 'content-encoding'));
    return null;
  }

  #bodylessStatus(status: number): boolean {
    return this.#bodyless || status === 204 || status === 304;
  }

  data(chunk: Buffer): void {
    try {
      this.#data(chunk);
    } catch (error) {
      this.#fault(error);
    }
  }

  #data(chunk: Buffer): void {
    if (this.#done) return;
    this.#encodedBytes += chunk.length;
    if (this.#mode === 'buffer' || this.#mode === 'capture') {
      if (this.#encodedBytes > BUFFERED_BODY_LIMIT) return this.#refuse(unscannable('The upstream sent more body than its Content-Length announced.'));
      // Scanned as it comes when no event layer runs first; with one, the body is read whole at its end.
      if (this.#mode === 'buffer' && this.#coding === 'identity' && this.#events === null) this.#redactedParts.push(this.#redactor.push(chunk));
      else this.#buffered.push(chunk);
      return;
    }
    if (this.#mode === 'headers-only') return;
    if (this.#coding === 'identity') {
      this.#write(this.#scan(chunk));
      return;
    }
    let encoded = chunk;
    if (this.#decoder === null && this.#coding === 'deflate') {
      // Found by review: a first chunk of one byte chose raw deflate for a zlib stream, and refused it.
      if (this.#deflateHead !== null) encoded = Buffer.concat([this.#deflateHead, chunk]);
      // An empty chunk holds nothing: nothing is decoded, and an empty body stays empty.
      this.#deflateHead = encoded.length === 1 ? encoded : null;
      if (encoded.length < 2) return;
    }
    const decoder = this.#decoder ?? this.#createDecoder(encoded);
    if (!decoder.write(encoded)) this.#hooks.pauseUpstream();
  }

  end(trailers: Readonly<Record<string, string | string[] | undefined>>): void {
    try {
      this.#end(trailers);
    } catch (error) {
      this.#fault(error);
    }
  }

  #end(trailers: Readonly<Record<string, string | string[] | undefined>>): void {
    if (this.#done) return;
    for (const [name, value] of Object.entries(trailers)) {
      // The upstream's own x-airlock-request-id is dropped here as in relayHeaders: that name is exempt
      // from the scan below, so relaying it would pass whatever it carries unscanned.
      // Digests of the body are dropped from trailers as from streamed headers: of a body that may have
      // been masked or decoded, they would fail clients that check them and let an agent test guesses
      // of a secret offline (found by review).
      if (value === undefined || HOP_BY_HOP_HEADERS.has(name) || name === REQUEST_ID_HEADER || DIGEST_HEADERS.has(name)) continue;
      for (const v of Array.isArray(value) ? value : [value]) this.#trailers.push(name, v);
    }
    if (this.#mode === 'capture') {
      this.#done = true;
      this.#res.off('drain', this.#onAgentDrain);
      this.#hooks.settle({ kind: 'captured', response: { status: this.#status, headers: this.#headers, contentEncoding: this.#contentEncoding, body: Buffer.concat(this.#buffered), trailers } });
      return;
    }
    this.redactions += redactHeaderValues(this.#trailers, this.#matcher);
    if (this.#mode === 'headers-only') {
      this.#res.writeHead(this.#status, this.#headers);
      this.#res.end();
      return this.#finish(true, null);
    }
    if (this.#mode === 'buffer') return this.#endBuffered();
    if (this.#decoder === null && this.#deflateHead !== null) this.#createDecoder(this.#deflateHead).write(this.#deflateHead);
    if (this.#decoder === null) return this.#endStream();
    this.#decoder.end();
  }

  /** The upstream failed after headers: drop what is held (a partial secret is never flushed) and cut. */
  abort(failure: AirlockError): void {
    if (this.#done) return;
    this.#decoder?.destroy();
    // Nothing reached the agent yet: it gets a whole problem rather than a cut connection.
    if (this.#streamHead !== null) return this.#refuse(failure);
    this.#finish(false, failure);
    this.#res.destroy();
  }

  /** A fault of our own mid-response: a whole 502 problem while nothing was sent, else the response cut. */
  #fault(error: unknown): void {
    if (this.#done) return;
    const failure = ownFault(error);
    this.#hooks.abortUpstream(failure);
    if (this.#res.headersSent) this.abort(failure);
    else {
      this.#decoder?.destroy();
      this.#refuse(failure);
    }
  }

  #endBuffered(): void {
    let parts: Buffer[];
    if (this.#coding === 'identity' && this.#events === null) {
      // The same bytes as one whole() scan: the byte redactor's output does not depend on the chunking.
      parts = this.#redactedParts;
      parts.push(this.#redactor.end());
    } else if (this.#coding === 'identity') {
      // The event layer's does: fed chunk by chunk, it lets out an event that ends in under 4 characters
      // of a secret (the streaming trade-off, README). With the whole body at hand it is fed once, and
      // masks every piece.
      parts = [this.#scanWhole(Buffer.concat(this.#buffered))];
    } else {
      const encoded = Buffer.concat(this.#buffered);
      let body: Buffer;
      try {
        body = this.#decodeWhole(encoded);
      } catch (error) {
        return this.#refuse(error instanceof AirlockError ? error : unscannable(`The upstream's ${this.#coding} body could not be decoded, so it could not be scanned; it was not passed on.`, error));
      }
      parts = [this.#scanWhole(body)];
    }
    this.#buffered = [];
    this.#redactedParts = [];
    this.#countScanned();
    const changed = this.#coding !== 'identity' || this.#redactor.redactions > 0 || (this.#events?.redactions ?? 0) > 0;
    const headers = withoutHeaders(this.#headers, (name) => name === 'content-length' || (this.#coding !== 'identity' && name === 'content-encoding') || (changed && DIGEST_HEADERS.has(name)));
    let length = 0;
    for (const part of parts) length += part.length;
    headers.push('content-length', String(length));
    this.#res.writeHead(this.#status, headers);
    // node corks the socket for the rest of this tick on the first write: header and parts leave in one
    // writev. An upstream that dribbled its body in many small chunks gets them joined first, so the
    // write is not a vector of thousands of slivers.
    if (parts.length > MAX_WRITE_PARTS) parts = [Buffer.concat(parts, length)];
    for (const part of parts) if (part.length > 0) this.#res.write(part);
    this.#res.end();
    this.bytesSent += length;
    this.#finish(true, null);
  }

  #decodeWhole(encoded: Buffer): Buffer {
    // An empty body is empty in every coding (found by review: an empty gzip body with Content-Length: 0
    // was refused, while the same sent chunked passed).
    if (this.#coding === 'identity' || encoded.length === 0) return encoded;
    // Decoded at once, on the event loop: bounded by the ratio too, not only by max_decoded_bytes (found
    // by review: 211 bytes of brotli decoded to 127 MiB, 220-330 ms of a blocked loop each, before the
    // ratio was checked).
    const ratioBound = Math.max(RATIO_FLOOR_BYTES, Math.floor(encoded.length * this.#limits.maxRatio));
    const options = { maxOutputLength: Math.min(this.#limits.maxDecodedBytes, ratioBound) + 1 };
    let decoded: Buffer;
    try {
      if (this.#coding === 'gzip') decoded = gunzipSync(encoded, options);
      else if (this.#coding === 'br') decoded = brotliDecompressSync(encoded, options);
      else decoded = isZlibWrapped(encoded) ? inflateSync(encoded, options) : inflateRawSync(encoded, options);
    } catch (error) {
      if ((error as NodeJS.ErrnoException).code === 'ERR_BUFFER_TOO_LARGE' || error instanceof RangeError) {
        if (ratioBound < this.#limits.maxDecodedBytes) throw this.#tooExpanded(error);
        throw unscannable(`The upstream's ${this.#coding} body decodes to more than ${this.#limits.maxDecodedBytes} bytes (redact.max_decoded_bytes); it was refused as a likely decompression bomb.`, error);
      }
      throw error;
    }
    this.#checkRatio(decoded.length, encoded.length);
    return decoded;
  }

  #checkRatio(decoded: number, encoded: number): void {
    if (decoded > this.#limits.maxDecodedBytes) {
      throw unscannable(`The upstream's ${this.#coding} body decodes to more than ${this.#limits.maxDecodedBytes} bytes (redact.max_decoded_bytes); it was refused as a likely decompression bomb.`);
    }
    if (decoded > RATIO_FLOOR_BYTES && decoded > encoded * this.#limits.maxRatio) throw this.#tooExpanded();
  }

  #tooExpanded(cause?: unknown): AirlockError {
    return unscannable(`The upstream's ${this.#coding} body expands more than ${this.#limits.maxRatio}x (redact.max_ratio); it was refused as a likely decompression bomb.`, cause);
  }

  #createDecoder(first: Buffer): Transform {
    const decoder = this.#coding === 'gzip' ? createGunzip() : this.#coding === 'br' ? createBrotliDecompress() : isZlibWrapped(first) ? createInflate() : createInflateRaw();
    this.#decoder = decoder;
    decoder.on('data', (decoded: Buffer) => {
      if (this.#done) return;
      this.#decodedBytes += decoded.length;
      try {
        this.#checkRatio(this.#decodedBytes, this.#encodedBytes);
      } catch (error) {
        this.#hooks.abortUpstream(error as Error);
        this.abort(error as AirlockError);
        return;
      }
      try {
        this.#write(this.#scan(decoded));
      } catch (error) {
        this.#fault(error);
      }
    });
    decoder.on('drain', () => this.#hooks.resumeUpstream());
    decoder.on('end', () => {
      try {
        this.#endStream();
      } catch (error) {
        this.#fault(error);
      }
    });
    decoder.on('error', (error) => {
      const failure = unscannable(`The upstream's ${this.#coding} body is corrupt; the response was cut.`, error);
      this.#hooks.abortUpstream(failure);
      this.abort(failure);
    });
    return decoder;
  }

  #endStream(): void {
    if (this.#done) return;
    this.#write(this.#scanEnd());
    this.#sendStreamHead();
    this.#countScanned();
    if (this.#trailers.length > 0) {
      const kept: Array<[string, string]> = [];
      for (let i = 0; i < this.#trailers.length; i += 2) kept.push([this.#trailers[i] as string, this.#trailers[i + 1] as string]);
      this.#res.addTrailers(kept);
    }
    this.#res.end();
    this.#finish(true, null);
  }

  /**
   * The event layer first, on the events as the upstream sent them, then the byte scan on its output.
   * The other way round (found by review), a piece of a key with its head in one event was masked by
   * the byte scan before the event layer read it, which then joined the marker and the rest of the key
   * across events, found no head in that, and let the rest of the key out in the events that followed.
   */
  #scan(chunk: Buffer): Buffer {
    return this.#redactor.push(this.#events === null ? chunk : this.#events.push(chunk));
  }

  #scanEnd(): Buffer {
    if (this.#events === null) return this.#redactor.end();
    const rest = this.#redactor.push(this.#events.end());
    return Buffer.concat([rest, this.#redactor.end()]);
  }

  /** A whole body (held, or decoded whole): the same bytes as a stream of it would end in, every piece masked. */
  #scanWhole(body: Buffer): Buffer {
    return this.#redactor.whole(this.#events === null ? body : Buffer.concat([this.#events.push(body), this.#events.end()]));
  }

  /** The body's redactions, once: the byte scan's and the event layer's. */
  #countScanned(): void {
    this.redactions += this.#redactor.redactions + (this.#events?.redactions ?? 0);
  }

  #write(out: Buffer): void {
    if (out.length === 0) return;
    this.#sendStreamHead();
    this.bytesSent += out.length;
    if (!this.#res.write(out)) {
      if (this.#decoder !== null) this.#decoder.pause();
      else this.#hooks.pauseUpstream();
      if (this.#stall === null && !this.#done) {
        this.#stall = setTimeout(this.#onAgentStalled, this.#stallMs);
        this.#stall.unref();
      }
    }
  }

  #refuse(error: AirlockError): void {
    if (this.#done) return;
    this.#done = true;
    this.#clearStall();
    this.#res.off('drain', this.#onAgentDrain);
    this.#hooks.abortUpstream(error);
    this.#hooks.settle({ kind: 'refused', error });
  }

  #finish(complete: boolean, failure: AirlockError | null): void {
    if (this.#done) return;
    this.#done = true;
    this.#clearStall();
    // Cut short: what both layers masked in what was sent (found by review: since the event layer runs
    // first, a key masked in an event was not counted when the stream was then cut).
    if (!complete) this.#countScanned();
    this.#res.off('drain', this.#onAgentDrain);
    this.#hooks.settle({ kind: 'done', complete, failure });
  }
}

/**
 * The matcher for one response, by the service's redaction scope: the injected credential only
 * ("request"), every credential the service injects ("service", the default), or every managed secret
 * ("all"); plus the service's key-shape rules. Cached in the catalogue until a secret changes.
 */
export function responseMatcher(catalog: SecretCatalog, service: ServicePolicy, injectedRef: string): RedactionMatcher {
  const { scope, refs, rules } = service.redaction;
  if (scope === 'request') return catalog.index(`request|${service.name}|${injectedRef}`, [injectedRef], rules).matcher;
  if (scope === 'service') return catalog.index(`service|${service.name}`, refs.includes(injectedRef) ? refs : [...refs, injectedRef], rules).matcher;
  return catalog.index(`all|${service.name}`, null, rules).matcher;
}

/** Sends a captured response to the agent after all, through the same redaction as any response. */
export function replayCaptured(res: ServerResponse, captured: CapturedResponse, matcher: RedactionMatcher, service: ServicePolicy, agentPrefix: string, request: AnsweredRequest): Promise<{ redactions: number; bytesSent: number; outcome: WriterOutcome }> {
  return new Promise((resolve) => {
    const writer = new RedactingResponseWriter(res, matcher, service, agentPrefix, {
      pauseUpstream: () => undefined,
      resumeUpstream: () => undefined,
      abortUpstream: () => undefined,
      settle: (outcome) => resolve({ redactions: writer.redactions, bytesSent: writer.bytesSent, outcome }),
    }, request);
    const refusal = writer.start(captured.status, [...captured.headers], captured.contentEncoding, String(captured.body.length));
    if (refusal !== null) return resolve({ redactions: writer.redactions, bytesSent: 0, outcome: { kind: 'refused', error: refusal } });
    if (captured.body.length > 0) writer.data(captured.body);
    writer.end(captured.trailers);
  });
}
