/**
 * Secrets spread over server-sent events. An LLM that repeats a key streams it token by token: "sk-ca"
 * in one event's delta, "nary-..." in the next. On the wire the pieces are separated by JSON and SSE
 * framing, so the byte scanner (stream-redactor.ts) never sees the key as one run of bytes.
 *
 * This layer reads text/event-stream events whose data is JSON, follows every string field by its JSON
 * path ("choices.0.delta.content", "delta.text", tool-call arguments ...) across events, and scans the
 * concatenation. An event whose data is plain text is one string, followed across events as the path
 * "$data" (a server streaming raw tokens). The same holds for the lines of an NDJSON stream (Ollama's
 * /api/chat, JSON Lines: framing 'lines'), each line a JSON value. An event is held back while a path ends with a live partial secret of MIN_HOLD or
 * more characters, so the rest of the secret can still be masked in it; a match is masked in every held
 * event it touches ("[REDACTED]" where it starts, nothing where it continues) and those events are
 * re-serialized. At most MIN_HOLD - 1 characters of a secret can leave in an event already sent, the
 * same bound the byte scanner keeps at the end of a stream. Lines that are not JSON, and events
 * without data, pass untouched (in order). Incomplete events are held until their blank line, which is when a client would
 * dispatch them anyway (WHATWG HTML 9.2.6).
 */
import type { NeedleSet } from './needle-set.js';

const MIN_HOLD = 4;
const MAX_HELD_EVENTS = 256;
const MAX_HELD_BYTES = 1024 * 1024;
const MAX_PATHS = 256;
const MARKER = '[REDACTED]';
const EMPTY = Buffer.alloc(0);

interface Leaf {
  readonly holder: Record<string, unknown> | unknown[];
  readonly key: string | number;
  readonly text: string;
  /** Character ranges to mask, and whether the marker goes there (where a match starts). */
  masks: Array<{ from: number; to: number; marker: boolean }>;
}

/** How events are framed: SSE (a blank line ends each) or one JSON value per line (NDJSON, JSON Lines). */
export type EventFraming = 'sse' | 'lines';

/**
 * How an event is written again once masked: an SSE event with JSON data or with text data (`lines`
 * are its lines, the non-data ones kept), a JSON line (`ending` its line break), or as it came.
 */
type EventForm = 'sse-json' | 'sse-text' | 'line-json' | 'raw';

interface QueuedEvent {
  readonly raw: Buffer;
  readonly form: EventForm;
  readonly lines: readonly string[];
  /** The parsed JSON value, or for 'sse-text' the holder of its one leaf ({ data }). */
  readonly json: unknown;
  readonly ending: string;
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
}

function findTerminator(data: Buffer, from: number, framing: EventFraming): { at: number; length: number } | null {
  if (framing === 'lines') {
    const at = data.indexOf(0x0a, from);
    return at === -1 ? null : { at, length: 1 };
  }
  for (let i = from; i < data.length; i++) {
    const c = data[i];
    if (c === 0x0a && data[i + 1] === 0x0a) return { at: i, length: 2 };
    if (c === 0x0d) {
      if (data[i + 1] === 0x0a && data[i + 2] === 0x0d && data[i + 3] === 0x0a) return { at: i, length: 4 };
      if (data[i + 1] === 0x0d) return { at: i, length: 2 };
      if (data[i + 1] === 0x0a && data[i + 2] === 0x0a) return { at: i, length: 3 };
    }
  }
  return null;
}

function collectLeaves(value: unknown, path: string, out: Array<{ path: string; leaf: Leaf }>): void {
  if (Array.isArray(value)) {
    value.forEach((item, index) => {
      if (typeof item === 'string') out.push({ path: `${path}.${index}`, leaf: { holder: value, key: index, text: item, masks: [] } });
      else collectLeaves(item, `${path}.${index}`, out);
    });
  } else if (value !== null && typeof value === 'object') {
    for (const [key, item] of Object.entries(value as Record<string, unknown>)) {
      if (typeof item === 'string') out.push({ path: `${path}.${key}`, leaf: { holder: value as Record<string, unknown>, key, text: item, masks: [] } });
      else collectLeaves(item, `${path}.${key}`, out);
    }
  }
}

export class SseDeltaRedactor {
  readonly #needles: NeedleSet;
  #partial: Buffer = EMPTY;
  readonly #queue: QueuedEvent[] = [];
  #queuedBytes = 0;
  readonly #windows = new Map<string, PathWindow>();
  redactions = 0;

  readonly #framing: EventFraming;

  constructor(needles: NeedleSet, framing: EventFraming = 'sse') {
    this.#needles = needles;
    this.#framing = framing;
  }

  push(chunk: Buffer): Buffer {
    if (this.#needles.size === 0) return chunk;
    const data = this.#partial.length === 0 ? chunk : Buffer.concat([this.#partial, chunk]);
    let start = 0;
    for (let found = findTerminator(data, 0, this.#framing); found !== null; found = findTerminator(data, start, this.#framing)) {
      const end = found.at + found.length;
      this.#accept(data.subarray(start, end));
      start = end;
    }
    this.#partial = start === data.length ? EMPTY : Buffer.from(data.subarray(start));
    return this.#flush(false);
  }

  end(): Buffer {
    if (this.#needles.size === 0) return EMPTY;
    const tail = this.#partial;
    this.#partial = EMPTY;
    const out = this.#flush(true);
    return tail.length === 0 ? out : Buffer.concat([out, tail]);
  }

  #accept(raw: Buffer): void {
    const event = this.#framing === 'lines' ? jsonLine(raw) : sseEvent(raw);
    this.#queue.push(event);
    this.#queuedBytes += raw.length;
    if (event.form === 'raw') return;
    const leaves: Array<{ path: string; leaf: Leaf }> = [];
    if (event.form === 'sse-text') leaves.push({ path: '$data', leaf: { holder: event.json as Record<string, unknown>, key: 'data', text: (event.json as { data: string }).data, masks: [] } });
    else collectLeaves(event.json, '$', leaves);
    for (const { path, leaf } of leaves) {
      event.leaves.push(leaf);
      this.#append(path, event, leaf);
    }
  }

  #window(path: string): PathWindow {
    let window = this.#windows.get(path);
    if (window === undefined) {
      if (this.#windows.size >= MAX_PATHS) {
        // The oldest path is forgotten to bound memory; a partial secret it still holds back is masked
        // first, or the next flush would release it (found by review: 256 other paths in one event
        // evicted the half of a key held back, and both halves left).
        const oldest = this.#windows.keys().next().value as string;
        this.#maskLivePartial(this.#windows.get(oldest) as PathWindow);
        this.#windows.delete(oldest);
      }
      window = { segments: [], end: 0, handled: new Set(), pieceFrom: -1 };
      this.#windows.set(path, window);
    }
    return window;
  }

  #append(path: string, event: QueuedEvent, leaf: Leaf): void {
    const window = this.#window(path);
    window.segments.push({ event, leaf, at: window.end });
    window.end += leaf.text.length;
    // Keep only what a match reaching into the newest text could still touch.
    const keepFrom = window.end - leaf.text.length - this.#needles.maxLength;
    while (window.segments.length > 1 && (window.segments[1] as Segment).at <= keepFrom) window.segments.shift();
    this.#scan(window);
  }

  #scan(window: PathWindow): void {
    const base = (window.segments[0] as Segment).at;
    const text = window.segments.map((s) => s.leaf.text).join('');
    const bytes = Buffer.from(text, 'utf8');
    const spans: number[] = [];
    const piece = this.#needles.findMatches(bytes, spans, false);
    window.pieceFrom = piece === -1 ? -1 : base + bytes.subarray(0, piece).toString('utf8').length;
    for (let i = 0; i < spans.length; i += 2) {
      const from = base + bytes.subarray(0, spans[i] as number).toString('utf8').length;
      const to = base + bytes.subarray(0, spans[i + 1] as number).toString('utf8').length;
      const key = `${from}:${to}`;
      if (window.handled.has(key)) continue;
      window.handled.add(key);
      if (window.handled.size > 64) window.handled.delete(window.handled.values().next().value as string);
      this.#mask(window, from, to);
    }
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
  #maskLivePartial(window: PathWindow, partial = this.#livePartial(window)): void {
    if (partial < MIN_HOLD) return;
    const lastSegment = window.segments[window.segments.length - 1];
    if (lastSegment === undefined || lastSegment.event.emitted) return;
    const key = `${window.end - partial}:${window.end}`;
    if (window.handled.has(key)) return;
    window.handled.add(key);
    this.#mask(window, window.end - partial, window.end);
  }

  /** Characters at the end of a path's stream that could still begin a secret, or go on with a piece of one. */
  #livePartial(window: PathWindow): number {
    const text = window.segments.map((s) => s.leaf.text).join('');
    const bytes = Buffer.from(text, 'utf8');
    const partialBytes = this.#needles.partialSuffix(bytes);
    const partial = partialBytes === 0 ? 0 : bytes.subarray(bytes.length - partialBytes).toString('utf8').length;
    return window.pieceFrom === -1 ? partial : Math.max(partial, window.end - window.pieceFrom);
  }

  #flush(final: boolean): Buffer {
    if (this.#queue.length === 0) return EMPTY;
    let live = false;
    for (const window of this.#windows.values()) {
      const partial = this.#livePartial(window);
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
    return out.length === 1 ? (out[0] as Buffer) : Buffer.concat(out);
  }

  #render(event: QueuedEvent): Buffer {
    if (event.form === 'raw' || !event.leaves.some((leaf) => leaf.masks.length > 0)) return event.raw;
    for (const leaf of event.leaves) {
      if (leaf.masks.length === 0) continue;
      const masks = [...leaf.masks].sort((a, b) => a.from - b.from);
      let text = '';
      let pos = 0;
      for (const mask of masks) {
        if (mask.from > pos) text += leaf.text.slice(pos, mask.from);
        if (mask.marker && mask.to > pos && !text.endsWith(MARKER)) text += MARKER;
        pos = Math.max(pos, mask.to);
      }
      text += leaf.text.slice(pos);
      (leaf.holder as Record<string | number, unknown>)[leaf.key] = text;
    }
    if (event.form === 'line-json') return Buffer.from(`${JSON.stringify(event.json)}${event.ending}`, 'utf8');
    const others = event.lines.filter((line) => line !== '' && !line.startsWith('data:'));
    const data = event.form === 'sse-json' ? [`data: ${JSON.stringify(event.json)}`] : (event.json as { data: string }).data.split('\n').map((line) => `data: ${line}`);
    return Buffer.from(`${[...others, ...data].join('\n')}\n\n`, 'utf8');
  }
}

/** An SSE event: its data as JSON when it parses, else as text; 'raw' when it has no data line. */
function sseEvent(raw: Buffer): QueuedEvent {
  const text = raw.toString('utf8');
  const lines = text.split(/\r\n|\r|\n/);
  const data = lines.filter((l) => l.startsWith('data:')).map((l) => (l.startsWith('data: ') ? l.slice(6) : l.slice(5)));
  const base = { raw: Buffer.from(raw), lines, ending: '', leaves: [], emitted: false };
  if (data.length === 0) return { ...base, form: 'raw', json: null };
  const joined = data.join('\n');
  const json = parsedJson(joined);
  return json === undefined ? { ...base, form: 'sse-text', json: { data: joined } } : { ...base, form: 'sse-json', json };
}

/** One line of an NDJSON stream: a JSON object or array, else passed as it came. */
function jsonLine(raw: Buffer): QueuedEvent {
  const text = raw.toString('utf8');
  const body = text.replace(/\r?\n$/, '');
  const json = parsedJson(body);
  return { raw: Buffer.from(raw), form: json === undefined ? 'raw' : 'line-json', lines: [], json: json ?? null, ending: text.slice(body.length), leaves: [], emitted: false };
}

/** `text` parsed, when it is a JSON object or array; undefined otherwise. */
function parsedJson(text: string): unknown {
  const start = text.trimStart();
  if (!start.startsWith('{') && !start.startsWith('[')) return undefined;
  try {
    return JSON.parse(text) as unknown;
  } catch {
    return undefined;
  }
}
