/**
 * Splitting a streamed body into events and reading each, for the layer that joins a secret spread over
 * them (sse-delta-redactor.ts): text/event-stream as WHATWG HTML 9.2.6 reads it (lines end in CRLF, LF
 * or CR; an empty line ends an event; the first event loses a leading BOM), or one JSON value per line
 * (NDJSON, JSON Lines, RFC 7464 JSON text sequences); and writing a masked event again with its lines in their order and line breaks.
 */

const LF = 0x0a;
const CR = 0x0d;

/** How events are framed: SSE (a blank line ends each) or one JSON value per line (NDJSON, JSON Lines). */
export type EventFraming = 'sse' | 'lines';

/**
 * How an event is written again once masked: an SSE event with JSON data or with text data (`lines`
 * are its lines, the non-data ones kept), a JSON line (`ending` its line break), or as it came.
 */
export type EventForm = 'sse-json' | 'sse-text' | 'line-json' | 'raw';

/** An event as read: its bytes, its form, and what writing it again needs. */
export interface ParsedEvent {
  readonly raw: Buffer;
  readonly form: EventForm;
  readonly lines: readonly string[];
  /** The holder of the parsed JSON value ({ $: value }), or for 'sse-text' of its text ({ data }). */
  readonly json: { $?: unknown; data?: string };
  /** The line break the event's own lines end in (SSE), or its line's (NDJSON). */
  readonly ending: string;
  /** A leading BOM the stream's first event had, or a JSON text sequence's RS: written back with it. */
  readonly bom: string;
}

/** Where events end in a stream that arrives in chunks; the state a chunk's end leaves is kept. */
export class EventSplitter {
  readonly #framing: EventFraming;
  /** SSE line state across chunks: at the start of a line; a CR ended the last chunk (its LF may follow). */
  #atLineStart = true;
  #crPending = false;
  /** Whether that pending CR was an empty line, ending the event. */
  #crEndsEvent = false;

  constructor(framing: EventFraming) {
    this.#framing = framing;
  }

  /**
   * Offsets in `chunk` just past each event's end: a line's LF for NDJSON; for SSE an empty line, lines
   * ending in CRLF, LF or CR (WHATWG HTML 9.2.6), a CR at a chunk's end decided by the next byte.
   */
  ends(chunk: Buffer): number[] {
    const ends: number[] = [];
    if (this.#framing === 'lines') {
      for (let at = chunk.indexOf(LF); at !== -1; at = chunk.indexOf(LF, at + 1)) ends.push(at + 1);
      return ends;
    }
    for (let i = 0; i < chunk.length; i++) {
      const byte = chunk[i] as number;
      if (this.#crPending) {
        this.#crPending = false;
        if (byte === LF) {
          if (this.#crEndsEvent) ends.push(i + 1);
          continue;
        }
        if (this.#crEndsEvent) ends.push(i);
      }
      if (byte === CR) {
        this.#crEndsEvent = this.#atLineStart;
        this.#atLineStart = true;
        if (i + 1 < chunk.length) {
          if (chunk[i + 1] === LF) i++;
          if (this.#crEndsEvent) ends.push(i + 1);
        } else {
          this.#crPending = true;
        }
      } else if (byte === LF) {
        if (this.#atLineStart) ends.push(i + 1);
        this.#atLineStart = true;
      } else {
        this.#atLineStart = false;
      }
    }
    return ends;
  }
}

/** The event in `raw` (the stream's first when `first`). */
export function parseEvent(raw: Buffer, framing: EventFraming, first: boolean): ParsedEvent {
  return framing === 'lines' ? jsonLine(raw) : sseEvent(raw, first);
}

/** A masked event written again (its JSON holder or text already changed in place). */
export function serializeEvent(event: ParsedEvent): Buffer {
  if (event.form === 'line-json') return Buffer.from(`${event.bom}${JSON.stringify(event.json.$)}${event.ending}`, 'utf8');
  // The event's own lines in their order and line breaks, its data lines replaced where the first stood.
  const data = event.form === 'sse-json' ? [`data: ${JSON.stringify(event.json.$)}`] : (event.json.data ?? '').split('\n').map((line) => `data: ${line}`);
  const lines: string[] = [];
  let placed = false;
  for (const line of event.lines) {
    if (!isDataLine(line)) lines.push(line);
    else if (!placed) {
      lines.push(...data);
      placed = true;
    }
  }
  return Buffer.from(`${event.bom}${lines.join(event.ending)}`, 'utf8');
}

/** A data field's line (WHATWG HTML 9.2.6: "data" alone is the field with an empty value). */
function isDataLine(line: string): boolean {
  return line === 'data' || line.startsWith('data:');
}

/**
 * An SSE event: its data as JSON when it parses (an object, an array or a string), else as text; 'raw'
 * when it has no data line. The stream's first event loses a leading BOM as a client's parser does.
 */
function sseEvent(raw: Buffer, first: boolean): ParsedEvent {
  let text = raw.toString('utf8');
  const bom = first && text.startsWith('\uFEFF') ? '\uFEFF' : '';
  if (bom !== '') text = text.slice(1);
  const lines = text.split(/\r\n|\r|\n/);
  const ending = /\r\n|\r|\n/.exec(text)?.[0] ?? '\n';
  const data = lines.filter(isDataLine).map((l) => (l.startsWith('data: ') ? l.slice(6) : l.slice(5)));
  const base = { raw: Buffer.from(raw), lines, ending, bom };
  if (data.length === 0) return { ...base, form: 'raw', json: {} };
  const joined = data.join('\n');
  const json = parsedJson(joined);
  return json === undefined ? { ...base, form: 'sse-text', json: { data: joined } } : { ...base, form: 'sse-json', json };
}

/**
 * One line of an NDJSON stream: a JSON object, array or string, else passed as it came. A JSON text
 * sequence's record starts with RS (RFC 7464 2.2), kept in `bom` and written back.
 */
function jsonLine(raw: Buffer): ParsedEvent {
  const text = raw.toString('utf8');
  const lead = text.startsWith('\x1e') ? '\x1e' : '';
  const body = text.slice(lead.length).replace(/\r?\n$/, '');
  const json = parsedJson(body);
  return { raw: Buffer.from(raw), form: json === undefined ? 'raw' : 'line-json', lines: [], json: json ?? {}, ending: text.slice(lead.length + body.length), bom: lead };
}

/**
 * `text` parsed into a holder ({ $: value }), when it is a JSON object, array or string (found by
 * review: data that was a JSON string was read as text, quotes and all, and never joined); undefined
 * otherwise.
 */
function parsedJson(text: string): { $: unknown } | undefined {
  const start = text.trimStart();
  if (!start.startsWith('{') && !start.startsWith('[') && !start.startsWith('"')) return undefined;
  try {
    return { $: JSON.parse(text) as unknown };
  } catch {
    return undefined;
  }
}
