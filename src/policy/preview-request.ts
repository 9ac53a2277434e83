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
 *  - a token's base64 copy (either alphabet, padded or not) or hex copy, with the whole run it is part of:
 *    an HTTP Basic value made of one ("user:alk_...", ":alk_...", "alk_...:") is as much the credential;
 *  - in the query, the values of the keys the forwarded request loses (the service's strip_query and the
 *    query keys its credentials are injected as, compile-policy.ts strippedFromAgent): credentials the
 *    agent should not send on, so not ones to show either; the key stays, so the approver sees that one
 *    was sent;
 *  - every value the secret catalogue knows, in each of its encodings (the scrub of logs and audit);
 *  - key shapes: the built-in ones whatever the service's redact settings (this text goes to people and
 *    chat, where a false positive costs a glance and a miss costs a key), and the service's own rules.
 * Escapes of unreserved characters (%73k-..., \u0073k-...) are read as well, as canonicalization reads
 * a path, so a key spelled with them is recognized; only those, so that reading them cannot change what
 * the approver takes for the request's structure (%26, \u0022 stay as sent).
 * Control and bidirectional-formatting characters (hidden-characters.ts) are shown as \uXXXX: the text
 * is read in terminals and chat, where they could hide or reorder what the approver sees.
 *
 * A long body is masked in a window past the cut, not whole (bodyPreview): a held body may be
 * approvals.max_body_bytes (1 MiB), masking costs 5 to 20 ms a MiB, synchronously, and one agent may
 * have 100 approvals pending.
 */
import { isUtf8 } from 'node:buffer';
import { holdsAgentToken, maskAgentTokens } from '../identity/agent-token.js';
import { decodeEscape, decodeUnreservedEscapes, UNRESERVED_HEX } from '../ingress/percent-escapes.js';
import { BUILTIN_RULES, type KeyRule } from '../redaction/key-patterns.js';
import { NeedleSet } from '../redaction/needle-set.js';
import { RedactionMatcher } from '../redaction/redaction-matcher.js';
import { StreamRedactor } from '../redaction/stream-redactor.js';
import type { ApprovalPreview, ApprovalRecord } from '../state/governance-records.js';
import { OutboundRequest, QUERY_PAIR_SEPARATORS, queryKeyNameSet } from '../upstream/outbound-request.js';
import { HIDDEN_CHARACTERS } from './hidden-characters.js';

/** The query and each header (the content type, the bound ones) are cut at these many characters (the body at approvals.preview_bytes). */
export const PREVIEW_QUERY_CHARS = 512;
export const PREVIEW_HEADER_CHARS = 128;
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
 *  - an agent or session token, 47 characters (masked from there however long its run); its base64
 *    copy, at most 66 characters (masked with the whole run it is in; of a run longer than the margin,
 *    what lies before a copy that is past the window may be shown: it holds nothing of the token); a
 *    JWS, sent in a header (8 to 16 KiB at most upstream) and masked once both its dots are in.
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
  /** The headers of approvals.bind_headers the request carries: name (lower case, as sent) and value. */
  readonly headers: ReadonlyArray<readonly [string, string]>;
  /** Whole: held within approvals.max_body_bytes. */
  readonly body: Buffer | null;
  /** The service's key-shape rules (its redact settings), masked besides the built-in ones. */
  readonly shapes: readonly KeyRule[];
  /** Query keys the forwarded request loses (ServicePolicy.strippedFromAgent.queryKeys): their values are masked. */
  readonly strippedQueryKeys: readonly string[];
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
        query: content.query === null ? null : capped(show(maskStrippedValues(content.query, content.strippedQueryKeys)), PREVIEW_QUERY_CHARS),
        contentType: content.contentType === null ? null : capped(show(content.contentType), PREVIEW_HEADER_CHARS),
        headers: headersShown(content.headers, show),
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
  return { query: text(p['query']), contentType: text(p['contentType']), headers: headersOf(p['headers']), bodyBytes: p['bodyBytes'], body: text(p['body']), truncated: p['truncated'] };
}

/**
 * The bound headers as shown: each value masked and cut at PREVIEW_HEADER_CHARS, a name sent twice
 * joined by ", " (as RFC 9110 section 5.3 combines field lines). Names are tokens (node refuses others),
 * cut likewise. No prototype: a header named __proto__ is a name like any other.
 */
function headersShown(sent: ReadonlyArray<readonly [string, string]>, show: (text: string) => string): Record<string, string> {
  const shown = Object.create(null) as Record<string, string>;
  for (const [name, value] of sent) {
    const key = capped(name, PREVIEW_HEADER_CHARS);
    const text = capped(show(value), PREVIEW_HEADER_CHARS);
    shown[key] = key in shown ? `${shown[key]}, ${text}` : text;
  }
  return shown;
}

/** The bound headers on one line, as the CLI and the webhook's text show them: "stripe-account: acct_1; openai-project: proj_2" ("" for none). */
export function headerLine(headers: Readonly<Record<string, string>>): string {
  return Object.entries(headers)
    .map(([name, value]) => `${name}: ${value}`)
    .join('; ');
}

/** A kept preview's headers: strings only (shared state may hold anything); none in records made before they were shown. */
export function headersOf(value: unknown): Record<string, string> {
  const headers = Object.create(null) as Record<string, string>;
  if (typeof value !== 'object' || value === null || Array.isArray(value)) return headers;
  for (const [name, text] of Object.entries(value)) if (typeof text === 'string') headers[name] = text;
  return headers;
}

/** The preview as the admin API and the webhook show it. */
export function previewView(approval: ApprovalRecord): Record<string, unknown> | null {
  const preview = previewOf(approval);
  if (preview === null) return null;
  return { query: preview.query, content_type: preview.contentType, headers: preview.headers, body_bytes: preview.bodyBytes, body: preview.body, truncated: preview.truncated };
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
  return maskHexTokens(maskBase64Tokens(masked.includes('eyJ') ? masked.replace(JWS_RUNS, MARKER) : masked));
}

/** "alk_" or "als_" in hex, either case: a text without it holds no token's hex copy. */
const HEX_TOKEN_START = /616c(?:6b|73)5f/i;
/** 47 characters of token are 94 hex digits. */
const HEX_RUNS = /[0-9A-Fa-f]{94,}/g;

/**
 * A token's hex copy, masked with the whole hex run it is in, as a base64 copy is (found by review: a
 * bound header holding one reached the preview; the request guard looks for the token as it is).
 */
function maskHexTokens(text: string): string {
  return HEX_TOKEN_START.test(text) ? text.replace(HEX_RUNS, (run) => (holdsAgentToken(run) ? MARKER : run)) : text;
}

/**
 * A token's base64 copy: base64 of "alk_" (or "als_") has, at each of the three places it can start in
 * a 3-byte group, characters that no other byte changes ("YWxrX", "Fsa1", "hbGtf"), so a text holding
 * none of the six has no copy, and most text is passed over with six searches. `tokenAt`: where, from
 * the first of them, the character holding the token's first bit is, and how many bits of it come before.
 */
const BASE64_TOKEN_STARTS = (['alk_', 'als_'] as const).flatMap((prefix) =>
  [0, 1, 2].map((offset) => {
    const first = Math.ceil((4 * offset) / 3);
    const encoded = Buffer.concat([Buffer.alloc(offset), Buffer.from(prefix, 'latin1')]).toString('base64');
    const tokenBit = 8 * (offset + prefix.length) - 6 * first;
    return { fixed: encoded.slice(first, Math.floor((4 * (offset + prefix.length)) / 3)), tokenAt: Math.floor(tokenBit / 6), skipBits: tokenBit % 6 };
  }),
);

/**
 * A base64 run: either alphabet; "+" and "/" also as a query or form escapes them (%2B, %2F) and as JSON
 * may ("\\/"), as the character carrying a token's last bits can be one of them (a non-ASCII byte after
 * it), and the run split there leaves no piece holding the token whole; its padding taken with it.
 */
const BASE64_RUNS = /(?:[A-Za-z0-9+/_-]|%2[BbFf]|\\\/)+(?:=|%3[Dd]){0,2}/g;

/** The run with its escapes read and its padding dropped: base64 characters only. */
function base64Of(run: string): string {
  return /[%\\=]/.test(run) ? run.replace(/%2[Bb]/g, '+').replace(/%2[Ff]|\\\//g, '/').replace(/%3[Dd]|=/g, '') : run;
}

/** The 6 bits each base64 character stands for, either alphabet; -1: not one. */
const SEXTETS = (() => {
  const sextets = new Int8Array(128).fill(-1);
  const alphabet = 'ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789';
  for (let i = 0; i < alphabet.length; i++) sextets[alphabet.charCodeAt(i)] = i;
  sextets[0x2b] = sextets[0x2d] = 62; // "+" "-"
  sextets[0x2f] = sextets[0x5f] = 63; // "/" "_"
  return sextets;
})();

/** Base64 of a prefix and the 43 characters after it: the shortest run that can hold a copy. */
const SHORTEST_COPY = Math.ceil((4 * 47) / 3);

/**
 * Each base64 run that holds, where a starting pattern marks it, "alk_" or "als_" and 43 characters of
 * the token alphabet (a whole token, as maskAgentTokens asks), masked whole: the Basic value's user
 * name or password around a token is as much the credential. The alignment is read from where the
 * pattern is, not from where the run starts, so a copy glued to other characters still decodes.
 * Linear: one pass for the runs, and per run six searches and, from each pattern found, a decode that
 * stops at the first byte outside the token alphabet (at most 58 characters).
 */
function maskBase64Tokens(text: string): string {
  if (!BASE64_TOKEN_STARTS.some((start) => text.includes(start.fixed))) return text;
  return text.replace(BASE64_RUNS, (run) => (run.length >= SHORTEST_COPY && holdsBase64Token(base64Of(run)) ? MARKER : run));
}

function holdsBase64Token(run: string): boolean {
  for (const { fixed, tokenAt, skipBits } of BASE64_TOKEN_STARTS) {
    for (let at = run.indexOf(fixed); at !== -1; at = run.indexOf(fixed, at + 1)) {
      if (tokenFollows(run, at + tokenAt, skipBits)) return true;
    }
  }
  return false;
}

/** Whether the 43 bytes that start `skipBits` into run[from] are all of the token alphabet. */
function tokenFollows(run: string, from: number, skipBits: number): boolean {
  let bits = 0;
  let held = 0;
  let bytes = 0;
  for (let i = from; bytes < 43; i++) {
    if (i >= run.length) return false;
    const sextet = SEXTETS[run.charCodeAt(i)] ?? -1;
    if (sextet === -1) return false;
    if (i === from) {
      bits = sextet & ((1 << (6 - skipBits)) - 1);
      held = 6 - skipBits;
    } else {
      bits = (bits << 6) | sextet;
      held += 6;
    }
    if (held >= 8) {
      held -= 8;
      const byte = bits >> held;
      bits &= (1 << held) - 1;
      const token = (byte >= 0x41 && byte <= 0x5a) || (byte >= 0x61 && byte <= 0x7a) || (byte >= 0x30 && byte <= 0x39) || byte === 0x2d || byte === 0x5f;
      if (!token) return false;
      bytes++;
    }
  }
  return true;
}

/**
 * The query with the value of each pair the forwarded request's strip removes masked, the key kept. The
 * query is split into pairs as removeQueryKeys splits it, and each pair is put to removeQueryKeys itself
 * (outbound-request.ts), not to a copy of its matching: every spelling the strip removes ("KEY",
 * "key[]", "k%65y", after ";", and any it comes to read) is masked, and nothing it leaves. On the query
 * as sent, before the rest of masking, as the strip works on it.
 */
function maskStrippedValues(query: string, keys: readonly string[]): string {
  if (keys.length === 0 || query === '') return query;
  const names = queryKeyNameSet(keys);
  const pieces = query.split(QUERY_PAIR_SEPARATORS);
  for (let i = 0; i < pieces.length; i += 2) {
    const part = pieces[i] as string;
    const eq = part.indexOf('=');
    if (eq !== -1 && eq < part.length - 1 && strippedPair(part, names)) pieces[i] = `${part.slice(0, eq + 1)}${MARKER}`;
  }
  return pieces.join('');
}

/** Whether the strip (removeQueryKeys over `names`) removes this pair (which holds no separator) from a forwarded query. */
function strippedPair(pair: string, names: ReadonlySet<string>): boolean {
  const request = new OutboundRequest('GET', '/', pair);
  request.removeQueryKeys(names);
  return request.query === null;
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

function escapeHidden(text: string): string {
  // Each UTF-16 unit: a tag character is a surrogate pair, shown as both its halves.
  return text.replace(HIDDEN_CHARACTERS, (match) => Array.from({ length: match.length }, (_, i) => `\\u${match.charCodeAt(i).toString(16).padStart(4, '0')}`).join(''));
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
