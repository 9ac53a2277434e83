/**
 * Secrets spread over server-sent events. An LLM that repeats a key streams it token by token: "sk-ca"
 * in one event's delta, "nary-..." in the next. On the wire the pieces are separated by JSON and SSE
 * framing, so the byte scanner (stream-redactor.ts) never sees the key as one run of bytes.
 *
 * This layer reads text/event-stream events whose data is JSON, follows every string field by its JSON
 * path ("choices.0.delta.content", "delta.text", tool-call arguments ...) across events, and scans the
 * concatenation. Data that is a JSON string is followed as the path ".$"; data that is not JSON is one
 * string, followed as "$data" (a server streaming raw tokens). The same holds for the lines of an
 * NDJSON stream (Ollama's /api/chat, JSON Lines: framing 'lines'), each line a JSON value, the records
 * of a JSON text sequence ('seq') and the elements of a streamed JSON array ('array': Gemini without
 * `alt=sse`), each element followed from its own root.
 *
 * An event is held back while a path ends with a live partial secret of MIN_HOLD or more characters
 * (or a piece of one whose run may go on), so the rest of the secret can still be masked in it; a match
 * is masked in every held event it touches ("[REDACTED]" where it starts, nothing where it continues)
 * and those events are written again with only the masked strings changed (split-events.ts). At most MIN_HOLD - 1 characters of a secret can leave in an event
 * already sent, the same bound the byte scanner keeps at the end of a stream. Lines that are not JSON,
 * and events without data, pass untouched (in order). Events are split (split-events.ts) as WHATWG HTML 9.2.6 splits them
 * (lines end in CRLF, LF or CR; an empty line ends an event; a leading BOM is skipped), and an event
 * that is not finished is held until its end, which is when a client would dispatch it anyway; one that
 * grows past MAX_EVENT_BYTES is let through as it came (the byte scanner has seen it) rather than held
 * without bound. A stream's last event counts even without its terminator.
 */
import type { NeedleSet } from './needle-set.js';
import { EventSplitter, parseEvent, serializeEvent, type EventFraming, type ParsedEvent } from './split-events.js';

export type { EventFraming } from './split-events.js';

const MIN_HOLD = 4;
const MAX_HELD_EVENTS = 256;
const MAX_HELD_BYTES = 1024 * 1024;
/** An event (or line) still open past this many bytes is let through unjoined (see the header). */
const MAX_EVENT_BYTES = 1024 * 1024;
const MAX_PATHS = 256;
const MARKER = '[REDACTED]';
const EMPTY = Buffer.alloc(0);

interface Leaf {
  readonly text: string;
  /** Where the string's token stands in the event's JSON text (split-events.ts `source`); -1 for text data. */
  readonly start: number;
  readonly end: number;
  /** Character ranges to mask, and whether the marker goes there (where a match starts). */
  masks: Array<{ from: number; to: number; marker: boolean }>;
}

interface QueuedEvent extends ParsedEvent {
  readonly leaves: Leaf[];
  emitted: boolean;
}

interface Segment {
  readonly event: QueuedEvent;
  readonly leaf: Leaf;
  /** Absolute character position of the segment's start in the path's stream. */
  readonly at: number;
}

interface PathWindow {
  segments: Segment[];
  /** Absolute position after the last character. */
  end: number;
  /** Matches already masked, as "start:end" absolute positions. */
  handled: Set<string>;
  /**
   * Absolute start of a piece of a secret (needle-set.ts) whose run reaches the end of the text so
   * far, -1 if none: held like a partial secret, so that whether a later delta goes on with the key
   * (a right guess) or not (a wrong one) changes neither the marker nor when events leave (found by
   * review: masked at once, a wrong guess's events left and a right one's were held).
   */
  pieceFrom: number;
  /** Characters at the end still held back (a partial secret or a live piece), computed by #scan when the text changes. */
  live: number;
  /**
   * The text so far holds no head and no end of MIN_HOLD characters that could start a form (what
   * surelyAbsentFrom says), and its last MIN_HOLD - 1 characters: then only those and the new text can
   * hold anything new, as a head that the new text completes starts in them.
   */
  clean: boolean;
  lastChars: string;
}

/** JSON nested deeper than this many containers is not followed (split-events.ts parseEvent). */
const MAX_DEPTH = 64;

export class SseDeltaRedactor {
  readonly #needles: NeedleSet;
  /** Bytes of the event not yet finished, as they came (joined only once it ends). */
  #open: Buffer[] = [];
  #openBytes = 0;
  /** The open event grew past MAX_EVENT_BYTES: its bytes go through as they come until it ends. */
  #oversized = false;
  /** The splitter found the rest of the body is not events (EventSplitter.passing): it goes through. */
  #passing = false;
  #first = true;
  readonly #splitter: EventSplitter;
  readonly #queue: QueuedEvent[] = [];
  #queuedBytes = 0;
  readonly #windows = new Map<string, PathWindow>();
  /** Paths given text since the last flush: compacted once their events are sent (#compact). */
  readonly #touched = new Set<PathWindow>();
  /** Stands for the sent events a compacted path's text came from. */
  readonly #sent: QueuedEvent = { raw: EMPTY, form: 'raw', lines: [], breaks: [], source: '', fields: [], ending: '', bom: '', leaves: [], emitted: true };
  redactions = 0;

  readonly #framing: EventFraming;

  constructor(needles: NeedleSet, framing: EventFraming = 'sse') {
    this.#needles = needles;
    this.#framing = framing;
    this.#splitter = new EventSplitter(framing);
  }

  push(chunk: Buffer): Buffer {
    if (this.#needles.size === 0 || this.#passing) return chunk;
    const out: Buffer[] = [];
    let start = 0;
    for (const end of this.#splitter.ends(chunk)) {
      this.#close(chunk.subarray(start, end), out);
      start = end;
    }
    if (this.#splitter.passing) {
      this.#pass(chunk.subarray(start), out);
      return Buffer.concat(out);
    }
    if (start < chunk.length) this.#keepOpen(chunk.subarray(start), out);
    out.push(this.#flush(false));
    return out.length === 1 ? (out[0] as Buffer) : Buffer.concat(out);
  }

  /**
   * The rest of the body is not events (a streamed array closed, or a body that was not one): what is
   * queued goes out, live partials masked as at a stream's end, then the open bytes and `rest` as they
   * came, and everything after them.
   */
  #pass(rest: Buffer, out: Buffer[]): void {
    this.#passing = true;
    out.push(this.#flush(true));
    if (!this.#oversized) out.push(...this.#open);
    this.#open = [];
    this.#openBytes = 0;
    this.#oversized = false;
    out.push(rest);
  }

  end(): Buffer {
    if (this.#needles.size === 0 || this.#passing) return EMPTY;
    const out: Buffer[] = [];
    // A last event without its terminator still counts (found by review: its text went out unjoined).
    if (this.#openBytes > 0) this.#close(EMPTY, out);
    out.push(this.#flush(true));
    return out.length === 1 ? (out[0] as Buffer) : Buffer.concat(out);
  }

  /** The rest of an open event (`tail`, possibly empty) has come: it is taken in, or let through if oversized. */
  #close(tail: Buffer, out: Buffer[]): void {
    if (this.#oversized) {
      this.#oversized = false;
      // The stream's first event, let through: the next is not the first (found by review: a streamed
      // array's second element was read as a first one, needing a `[`, and passed unjoined).
      this.#first = false;
      out.push(tail);
      return;
    }
    const raw = this.#openBytes === 0 ? Buffer.from(tail) : Buffer.concat([...this.#open, tail]);
    this.#open = [];
    this.#openBytes = 0;
    this.#accept(raw);
  }

  #keepOpen(bytes: Buffer, out: Buffer[]): void {
    if (this.#oversized) {
      out.push(bytes);
      return;
    }
    this.#open.push(Buffer.from(bytes));
    this.#openBytes += bytes.length;
    if (this.#openBytes <= MAX_EVENT_BYTES) return;
    // Held without bound, an event that never ends would cost memory and, rescanned, time: everything
    // queued goes out (live partials masked, as at the end of a stream), then this event as it came.
    out.push(this.#flush(true));
    out.push(...this.#open);
    this.#open = [];
    this.#openBytes = 0;
    this.#oversized = true;
  }

  #accept(raw: Buffer): void {
    const { raw: bytes, form, lines, breaks, source, fields, ending, bom } = parseEvent(raw, this.#framing, this.#first, MAX_DEPTH);
    const event: QueuedEvent = { raw: bytes, form, lines, breaks, source, fields, ending, bom, leaves: [], emitted: false };
    this.#first = false;
    this.#queue.push(event);
    this.#queuedBytes += raw.length;
    if (event.form === 'raw') return;
    if (event.form === 'sse-text') {
      this.#follow('$data', event, { text: event.source, start: -1, end: -1, masks: [] });
      return;
    }
    for (const field of event.fields) this.#follow(field.path, event, { text: field.text, start: field.start, end: field.end, masks: [] });
  }

  #follow(path: string, event: QueuedEvent, leaf: Leaf): void {
    event.leaves.push(leaf);
    this.#append(path, event, leaf);
  }

  #window(path: string): PathWindow {
    let window = this.#windows.get(path);
    if (window !== undefined) {
      // Most recently used last: eviction takes the least recently used.
      this.#windows.delete(path);
      this.#windows.set(path, window);
      return window;
    }
    if (this.#windows.size >= MAX_PATHS) this.#evict();
    window = { segments: [], end: 0, handled: new Set(), pieceFrom: -1, live: 0, clean: true, lastChars: '' };
    this.#windows.set(path, window);
    return window;
  }

  /**
   * Forgets a path to bound memory: the least recently used one holding nothing back, else the least
   * recently used, its held partial masked first (found by review: 256 other paths evicted the half of
   * a key held back, and both halves left; then that a live path went first while idle ones stayed).
   * A key's rest arriving on a path forgotten while live starts a new window and is not joined: only
   * 256 paths live at once reach that.
   */
  #evict(): void {
    for (const [path, window] of this.#windows) {
      if (window.live < MIN_HOLD) {
        this.#windows.delete(path);
        return;
      }
    }
    const [path, window] = this.#windows.entries().next().value as [string, PathWindow];
    this.#maskLivePartial(window);
    this.#windows.delete(path);
  }

  #append(path: string, event: QueuedEvent, leaf: Leaf): void {
    const window = this.#window(path);
    this.#touched.add(window);
    window.segments.push({ event, leaf, at: window.end });
    window.end += leaf.text.length;
    // Keep only what a match reaching into the newest text could still touch.
    const keepFrom = window.end - leaf.text.length - this.#needles.maxLength;
    while (window.segments.length > 1 && (window.segments[1] as Segment).at <= keepFrom) window.segments.shift();
    this.#scan(window, leaf.text);
  }

  #scan(window: PathWindow, added: string): void {
    // Nearly every delta holds nothing of a secret: said from the string, without encoding the path's
    // text to bytes and searching it all again (most of an event's cost when a path's values repeat).
    if (window.clean && this.#surelyAbsent(window, window.lastChars + added)) return;
    const base = (window.segments[0] as Segment).at;
    const text = window.segments.map((s) => s.leaf.text).join('');
    if (this.#surelyAbsent(window, text)) return;
    window.clean = false;
    const bytes = Buffer.from(text, 'utf8');
    const spans: number[] = [];
    const piece = this.#needles.findMatches(bytes, spans, false);
    window.pieceFrom = piece === -1 ? -1 : base + bytes.subarray(0, piece).toString('utf8').length;
    const partialBytes = this.#needles.partialSuffix(bytes);
    const partial = partialBytes === 0 ? 0 : bytes.subarray(bytes.length - partialBytes).toString('utf8').length;
    window.live = window.pieceFrom === -1 ? partial : Math.max(partial, window.end - window.pieceFrom);
    // Overlapping matches are one masked stretch, one redaction (a value and its trimmed form, two
    // secrets that share text): counted apart, the audit record said 2 for one marker.
    const merged = mergeSpans(spans);
    for (let i = 0; i < merged.length; i += 2) {
      const from = base + bytes.subarray(0, merged[i] as number).toString('utf8').length;
      const to = base + bytes.subarray(0, merged[i + 1] as number).toString('utf8').length;
      const key = `${from}:${to}`;
      if (window.handled.has(key)) continue;
      window.handled.add(key);
      if (window.handled.size > 64) window.handled.delete(window.handled.values().next().value as string);
      this.#mask(window, from, to);
    }
  }

  /**
   * Whether `text` (the path's text, or its clean last characters and what was added) surely holds
   * nothing of a secret; then nothing is held back: no head, so no match and no piece, and no end of
   * MIN_HOLD characters or more that could start a form.
   */
  #surelyAbsent(window: PathWindow, text: string): boolean {
    if (!this.#needles.surelyAbsentFrom(text, MIN_HOLD)) return false;
    window.clean = true;
    window.lastChars = text.slice(-(MIN_HOLD - 1));
    window.pieceFrom = -1;
    window.live = 0;
    return true;
  }

  /** Masks [from, to) (absolute) in every held segment it touches. */
  #mask(window: PathWindow, from: number, to: number): void {
    let touched = false;
    let markerPlaced = false;
    for (const segment of window.segments) {
      const segFrom = segment.at;
      const segTo = segment.at + segment.leaf.text.length;
      if (segTo <= from || segFrom >= to) continue;
      if (segment.event.emitted) {
        // Already sent (it held no live partial of MIN_HOLD characters): the marker goes in the next piece.
        continue;
      }
      segment.leaf.masks.push({ from: Math.max(from, segFrom) - segFrom, to: Math.min(to, segTo) - segFrom, marker: !markerPlaced });
      markerPlaced = true;
      touched = true;
    }
    if (touched) this.redactions++;
  }

  /** Masks the partial secret a path still holds back (MIN_HOLD characters or more, not yet sent). */
  #maskLivePartial(window: PathWindow, partial = window.live): void {
    if (partial < MIN_HOLD) return;
    const lastSegment = window.segments[window.segments.length - 1];
    if (lastSegment === undefined || lastSegment.event.emitted) return;
    const key = `${window.end - partial}:${window.end}`;
    if (window.handled.has(key)) return;
    window.handled.add(key);
    this.#mask(window, window.end - partial, window.end);
  }

  #flush(final: boolean): Buffer {
    if (this.#queue.length === 0) return EMPTY;
    let live = false;
    for (const window of this.#windows.values()) {
      const partial = window.live;
      if (partial < MIN_HOLD) continue;
      const lastSegment = window.segments[window.segments.length - 1];
      if (lastSegment === undefined || lastSegment.event.emitted) continue;
      if (final || this.#queue.length > MAX_HELD_EVENTS || this.#queuedBytes > MAX_HELD_BYTES) {
        // Nothing more will come (or too much is held): a live partial is masked, never released.
        this.#maskLivePartial(window, partial);
      } else {
        live = true;
      }
    }
    if (live) return EMPTY;
    const out: Buffer[] = [];
    for (const event of this.#queue) {
      event.emitted = true;
      out.push(this.#render(event));
    }
    this.#queue.length = 0;
    this.#queuedBytes = 0;
    for (const window of this.#touched) this.#compact(window);
    this.#touched.clear();
    return out.length === 1 ? (out[0] as Buffer) : Buffer.concat(out);
  }

  /**
   * A path whose events are all sent keeps only the text a match reaching into later text could touch,
   * not the events (found by review: 255 paths each kept their last event, raw bytes and parsed JSON,
   * 180 MiB after everything had been sent).
   */
  #compact(window: PathWindow): void {
    // A clean path needs only its last characters (PathWindow.clean), a string of its own already.
    // Otherwise a copy, not a slice: V8 keeps a slice's whole parent string alive.
    const text = window.clean ? window.lastChars : window.segments.map((segment) => segment.leaf.text).join('');
    const tail = window.clean ? text : Buffer.from(text.slice(Math.max(0, text.length - this.#needles.maxLength)), 'utf8').toString('utf8');
    window.segments = [{ event: this.#sent, leaf: { text: tail, start: -1, end: -1, masks: [] }, at: window.end - tail.length }];
  }

  #render(event: QueuedEvent): Buffer {
    if (event.form === 'raw' || !event.leaves.some((leaf) => leaf.masks.length > 0)) return event.raw;
    if (event.form === 'sse-text') return serializeEvent(event, masked(event.leaves[0] as Leaf));
    // Only the tokens of masked strings change (json-string-fields.ts says why), in one pass (found by
    // review: splicing each into the whole text took 126 s for 111,111 masked strings in a 1 MB event).
    const parts: string[] = [];
    let from = 0;
    for (const leaf of event.leaves) {
      if (leaf.masks.length === 0) continue;
      parts.push(event.source.slice(from, leaf.start), JSON.stringify(masked(leaf)));
      from = leaf.end;
    }
    parts.push(event.source.slice(from));
    return serializeEvent(event, parts.join(''));
  }
}

/** A leaf's text with its masks applied: the marker where a match starts, nothing where one goes on. */
function masked(leaf: Leaf): string {
  const masks = [...leaf.masks].sort((a, b) => a.from - b.from);
  let text = '';
  let pos = 0;
  for (const mask of masks) {
    if (mask.from > pos) text += leaf.text.slice(pos, mask.from);
    if (mask.marker && mask.to > pos && !text.endsWith(MARKER)) text += MARKER;
    pos = Math.max(pos, mask.to);
  }
  return text + leaf.text.slice(pos);
}

/** [start, end) pairs, sorted and with overlapping ones joined, as a flat array. */
function mergeSpans(spans: readonly number[]): number[] {
  if (spans.length <= 2) return [...spans];
  const pairs: Array<[number, number]> = [];
  for (let i = 0; i < spans.length; i += 2) pairs.push([spans[i] as number, spans[i + 1] as number]);
  pairs.sort((a, b) => a[0] - b[0] || b[1] - a[1]);
  const out: number[] = [];
  for (const [start, end] of pairs) {
    const last = out.length - 1;
    if (last > 0 && start < (out[last] as number)) out[last] = Math.max(out[last] as number, end);
    else out.push(start, end);
  }
  return out;
}
