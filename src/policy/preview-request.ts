/**
 * What an approver is shown of a held request besides its method and path: the query, the content type
 * and the body, so that approving `POST /v1/charges` is a decision about an amount, not a rubber stamp.
 *
 * The preview leaves the process (admin API, console, CLI, webhook and its Slack text) and is kept in
 * the governance state, so it is masked before it is kept (DESIGN.md invariant 1), and masked before it
 * is cut, so that a secret starting before the cut is masked whole: each output's backstop scrub comes
 * after the cut and cannot recognize the front of a secret left in front of it (as with run-pipeline.ts's
 * raw path before its 512 character cut).
 * Masked are:
 *  - Airlock agent and session tokens, and compact JWS (a workload identity): an agent may send its own
 *    credential in a body, which is forwarded by design, but no approver or chat channel should read it;
 *  - every value the secret catalogue knows, in each of its encodings (the scrub of logs and audit);
 *  - key shapes: the built-in ones whatever the service's redact settings (this text goes to people and
 *    chat, where a false positive costs a glance and a miss costs a key), and the service's own rules.
 * Escapes of unreserved characters (%73k-..., \u0073k-...) are read as well, as canonicalization reads
 * a path, so a key spelled with them is recognized; only those, so that reading them cannot change what
 * the approver takes for the request's structure (%26, \u0022 stay as sent).
 * Control and bidirectional-formatting characters are shown as \uXXXX: the text is read in terminals and
 * chat, where they could hide or reorder what the approver sees.
 *
 * A long body is masked in a window past the cut, not whole (bodyPreview): a held body may be
 * approvals.max_body_bytes (1 MiB), masking costs 5 to 20 ms a MiB, synchronously, and one agent may
 * have 100 approvals pending.
 */
import { isUtf8 } from 'node:buffer';
import { maskAgentTokens } from '../identity/agent-token.js';
import { decodeEscape, decodeUnreservedEscapes, UNRESERVED_HEX } from '../ingress/percent-escapes.js';
import { BUILTIN_RULES, type KeyRule } from '../redaction/key-patterns.js';
import { NeedleSet } from '../redaction/needle-set.js';
import { RedactionMatcher } from '../redaction/redaction-matcher.js';
import { StreamRedactor } from '../redaction/stream-redactor.js';
import type { ApprovalPreview, ApprovalRecord } from '../state/governance-records.js';

/** The query and the content type are cut at these many characters (the body at approvals.preview_bytes). */
export const PREVIEW_QUERY_CHARS = 512;
export const PREVIEW_CONTENT_TYPE_CHARS = 128;
const MARKER = '[REDACTED]';

/**
 * How far past the shown part a body is masked, in UTF-8 bytes: longer than anything masking must see
 * whole, so that whatever starts before the cut is masked whole. The longest:
 *  - the catalogue's forms of a value (secret-forms.ts): every character as \uXXXX is six bytes a
 *    character of the value, percent-encoding three a byte, base64 4/3. A 4096-bit RSA private key in
 *    PEM (~3.2 KB) is ~19.5 KB as \uXXXX, ~4.3 KB as base64; 32 KiB covers every form of a value up to
 *    5461 bytes (16 KiB would miss that key's \uXXXX form);
 *  - a value spelled with escapes of unreserved characters (\u0073k-..., read by maskWhole): six bytes
 *    a character, the same bound;
 *  - key shapes: a run rule's prefix and at most 4096 characters (redact max_length; built-in ones at
 *    most 266 in all), masked at the window's end too once it has its shortest run; a PEM block is
 *    masked to the window's end when it does not close in it (key-patterns.ts fails closed), so only
 *    its BEGIN line (at most 75 characters) must fit;
 *  - an agent or session token, 47 characters (masked from there however long its run); a JWS, sent
 *    in a header (8 to 16 KiB at most upstream) and masked once both its dots are in.
 * A form longer than this (a value over 5461 bytes sent in its \uXXXX form) that crosses the window's
 * end, where the cut reaches (after masking shortened what is before it), may be shown in part: the
 * price of not masking 1 MiB for each preview.
 */
export const PREVIEW_MASK_MARGIN = 32 * 1024;

/** The parts of a held request a preview is made from. */
export interface RequestContent {
  /** As sent, without the "?". */
  readonly query: string | null;
  readonly contentType: string | null;
  /** Whole: held within approvals.max_body_bytes. */
  readonly body: Buffer | null;
  /** The service's key-shape rules (its redact settings), masked besides the built-in ones. */
  readonly shapes: readonly KeyRule[];
}

export interface PreviewOptions {
  /** approvals.preview_bytes: where the body text is cut, in UTF-8 bytes; 0: no preview. */
  readonly bytes: number;
  /** The secret catalogue's scrub: every value it knows, in every form. */
  readonly scrub: (text: string) => string;
}

/**
 * A previewer for one configuration generation. The shape matcher of each service's rules is built on
 * its first approval and kept (the rules array is the compiled policy's, one per service).
 */
export function createRequestPreviewer(options: PreviewOptions): (content: RequestContent) => ApprovalPreview | null {
  const matchers = new WeakMap<readonly KeyRule[], RedactionMatcher>();
  const shapesFor = (rules: readonly KeyRule[]): RedactionMatcher => {
    let matcher = matchers.get(rules);
    if (matcher === undefined) {
      matcher = new RedactionMatcher(new NeedleSet([]), [...new Set([...Object.values(BUILTIN_RULES), ...rules])]);
      matchers.set(rules, matcher);
    }
    return matcher;
  };
  return function previewRequest(content) {
    if (options.bytes <= 0) return null;
    const shapes = shapesFor(content.shapes);
    const mask = (text: string): string => maskWhole(text, (t) => maskShapes(shapes, options.scrub(maskCredentials(t))));
    const show = (text: string): string => escapeHidden(mask(text));
    try {
      const bodyBytes = content.body?.length ?? 0;
      const body = bodyBytes === 0 || !isText(content.body as Buffer, content.contentType) ? null : bodyPreview(content.body as Buffer, options.bytes, mask);
      return {
        query: content.query === null ? null : capped(show(content.query), PREVIEW_QUERY_CHARS),
        contentType: content.contentType === null ? null : capped(show(content.contentType), PREVIEW_CONTENT_TYPE_CHARS),
        bodyBytes,
        body: body?.text ?? null,
        truncated: body?.truncated ?? false,
      };
    } catch {
      // A scrub that fails: the approver sees no preview rather than an unchecked one (the same scrub
      // failing fails the request's log line and audit record, which is where it is reported).
      return null;
    }
  };
}

/** A record's preview, or null: none asked (preview_bytes 0), an earlier version's record, or one malformed in shared state. */
export function previewOf(approval: ApprovalRecord): ApprovalPreview | null {
  const preview = approval.preview as unknown;
  if (typeof preview !== 'object' || preview === null) return null;
  const p = preview as Record<string, unknown>;
  if (typeof p['bodyBytes'] !== 'number' || typeof p['truncated'] !== 'boolean') return null;
  const text = (value: unknown): string | null => (typeof value === 'string' ? value : null);
  return { query: text(p['query']), contentType: text(p['contentType']), bodyBytes: p['bodyBytes'], body: text(p['body']), truncated: p['truncated'] };
}

/** The preview as the admin API and the webhook show it. */
export function previewView(approval: ApprovalRecord): Record<string, unknown> | null {
  const preview = previewOf(approval);
  if (preview === null) return null;
  return { query: preview.query, content_type: preview.contentType, body_bytes: preview.bodyBytes, body: preview.body, truncated: preview.truncated };
}

/**
 * Whether the body is shown as text: when its content type says so (JSON, XML, forms, text/*) or, with
 * none, when it reads as UTF-8 without NULs; in either case only when it is valid UTF-8. Anything else
 * (an image, a multipart upload) is shown by size and content type alone. Checked on the bytes, all of
 * them (~16 µs a MiB): only the window bodyPreview masks is decoded.
 */
function isText(body: Buffer, contentType: string | null): boolean {
  if (contentType !== null && !textLike(contentType)) return false;
  return isUtf8(body) && (contentType !== null || !body.includes(0));
}

function textLike(contentType: string): boolean {
  const media = (contentType.split(';')[0] ?? '').trim().toLowerCase();
  const slash = media.indexOf('/');
  if (slash === -1) return false;
  const type = media.slice(0, slash);
  const subtype = media.slice(slash + 1);
  if (type === 'text') return true;
  return subtype === 'json' || subtype.endsWith('+json') || subtype === 'xml' || subtype.endsWith('+xml') || (type === 'application' && subtype === 'x-www-form-urlencoded');
}

/**
 * Masked as sent; and when reading escapes of unreserved characters in that masked text reveals more to
 * mask, the text so read, masked again. Read from the masked text, not the text as sent (found by the
 * owner's review): a value sent fully escaped ("\u0077\u004a...\u002f") is masked as sent, but read
 * back it is a mixed form no catalogue form matches, and it was shown when something else in the body
 * (a %61lk_ token) made the read text the one kept.
 */
function maskWhole(text: string, mask: (text: string) => string): string {
  const masked = mask(text);
  const read = readUnreservedEscapes(masked);
  if (read === masked) return masked;
  const maskedRead = mask(read);
  return maskedRead === read ? masked : maskedRead;
}

/** JSON's \u00XX escapes of unreserved characters (RFC 3986 2.3), as percent-escapes.ts reads %XX ones. */
const JSON_UNRESERVED_ESCAPE = new RegExp(`\\\\u00${UNRESERVED_HEX}`, 'g');

function readUnreservedEscapes(text: string): string {
  const read = decodeUnreservedEscapes(text);
  return read.includes('\\u') ? read.replace(JSON_UNRESERVED_ESCAPE, decodeEscape) : read;
}

/** A compact JWS or JWT (RFC 7515 7.1): header {" (eyJ), payload, signature (empty when unsigned). */
const JWS_RUNS = /eyJ[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]*/g;

function maskCredentials(text: string): string {
  const masked = maskAgentTokens(text);
  return masked.includes('eyJ') ? masked.replace(JWS_RUNS, MARKER) : masked;
}

function maskShapes(matcher: RedactionMatcher, text: string): string {
  if (matcher.rules.surelyAbsentFrom(text)) return text;
  const redactor = new StreamRedactor(matcher);
  const output = redactor.whole(Buffer.from(text, 'utf8'));
  return redactor.redactions === 0 ? text : output.toString('utf8');
}

/**
 * The body text as shown: masked, then cut at `bytes` UTF-8 bytes; masked in a window of the body when
 * it is longer than bytes + PREVIEW_MASK_MARGIN, not whole.
 *
 * What may be shown of a window is what comes from its bytes but the last PREVIEW_MASK_MARGIN: whatever
 * masking must see whole and starts there lies in the window whole, while what crosses the window's end
 * may be left unmasked in part (the front of a token, of a short key run). The cut falls there as long
 * as masking shortened the text before it by no more than (window - margin - bytes), since a character
 * kept is shown in at least its own bytes. Masking shortened that part by at most what it shortened the
 * whole window by plus what the markers lengthened (a marker replaces at least one character), which is
 * checked; when it fails, a longer window is masked: as long as it would have to be had the rest of the
 * body shrunk as this window did, a quarter more (the whole body when the window was all masking). A
 * body of values masked before the cut thus costs two or three windows, never much more than masking it
 * whole. Whenever a window stops short of the body, the preview is truncated.
 */
function bodyPreview(body: Buffer, bytes: number, mask: (text: string) => string): { text: string; truncated: boolean } {
  let end = bytes + PREVIEW_MASK_MARGIN;
  for (;;) {
    // At a character's first byte, so the window decodes as the start of the body's text does.
    while (end < body.length && ((body[end] as number) & 0xc0) === 0x80) end++;
    if (end >= body.length) {
      const shown = escapeHidden(mask(utf8(body)));
      const cut = cutText(shown, bytes, utf8Length);
      return { text: cut ?? shown, truncated: cut !== null };
    }
    const masked = mask(utf8(body.subarray(0, end)));
    const shortenedBy = end - Buffer.byteLength(masked, 'utf8') + MARKER.length * occurrences(masked, MARKER);
    if (bytes + shortenedBy <= end - PREVIEW_MASK_MARGIN) {
      const shown = escapeHidden(masked);
      return { text: cutText(shown, bytes, utf8Length) ?? shown, truncated: true };
    }
    const likeThisWindow = shortenedBy >= end ? Infinity : (1.25 * (bytes + PREVIEW_MASK_MARGIN) * end) / (end - shortenedBy);
    end = Math.ceil(Math.max(likeThisWindow, bytes + PREVIEW_MASK_MARGIN + 2 * shortenedBy));
  }
}

/** Valid UTF-8 (isText) as text; a leading BOM dropped, as TextDecoder drops it. */
function utf8(bytes: Buffer): string {
  return new TextDecoder('utf-8').decode(bytes);
}

function occurrences(text: string, part: string): number {
  let count = 0;
  for (let at = text.indexOf(part); at !== -1; at = text.indexOf(part, at + part.length)) count++;
  return count;
}

/** C0 and C1 controls but tab and line ends, and the characters that hide or reorder text (Unicode bidi, zero-width). */
const HIDDEN = /[\u0000-\u0008\u000b\u000c\u000e-\u001f\u007f-\u009f\u061c\u200b-\u200f\u2028-\u202e\u2060-\u2069\ufeff]/g;

function escapeHidden(text: string): string {
  return text.replace(HIDDEN, (char) => `\\u${char.charCodeAt(0).toString(16).padStart(4, '0')}`);
}

function capped(text: string, chars: number): string {
  const cut = cutText(text, chars, () => 1);
  return cut === null ? text : `${cut}...`;
}

function utf8Length(codePoint: number): number {
  return codePoint < 0x80 ? 1 : codePoint < 0x800 ? 2 : codePoint < 0x10000 ? 3 : 4;
}

/**
 * The longest start of `text` within `limit` (as `size` counts each character), or null when all of it
 * fits. Cut between characters, never inside a surrogate pair, and never inside a "[REDACTED]" marker
 * (the text is masked already: a cut can only shorten a marker, but a half marker reads as data).
 */
function cutText(text: string, limit: number, size: (codePoint: number) => number): string | null {
  let used = 0;
  let end = 0;
  for (const char of text) {
    used += size(char.codePointAt(0) as number);
    if (used > limit) {
      const marker = text.lastIndexOf(MARKER, end);
      if (marker !== -1 && marker < end && marker + MARKER.length > end) end = marker;
      return text.slice(0, end);
    }
    end += char.length;
  }
  return null;
}
