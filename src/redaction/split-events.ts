/**
 * Splitting a streamed body into events and reading each, for the layer that joins a secret spread over
 * them (sse-delta-redactor.ts): text/event-stream as WHATWG HTML 9.2.6 reads it (lines end in CRLF, LF
 * or CR; an empty line ends an event; the first event loses a leading BOM), one JSON value per line
 * (NDJSON, JSON Lines), the records of a JSON text sequence (RFC 7464, over one line or several), or the
 * elements of one streamed JSON array (json-value-splitter.ts); and writing a masked event again byte
 * for byte as it came but for the data it was given: its lines, fields and line breaks where they were.
 */
import { JsonValueSplitter } from './json-value-splitter.js';
import { jsonStringFields, type JsonStringField } from './json-string-fields.js';

const LF = 0x0a;
const CR = 0x0d;

/**
 * How events are framed: SSE (a blank line ends each), one JSON value per line (NDJSON, JSON Lines), JSON
 * text sequence records ('seq'), or the elements of a streamed JSON array ('array').
 */
export type EventFraming = 'sse' | 'lines' | 'seq' | 'array';

/**
 * What an event's data is: JSON (an SSE event's data, or a line), text (an SSE event whose data is not
 * JSON), or nothing to follow ('raw': no data line, not JSON, or JSON nested too deep to walk).
 */
export type EventForm = 'sse-json' | 'sse-text' | 'line-json' | 'raw';

/** An event as read: its bytes, its form, and what writing it again needs. */
export interface ParsedEvent {
  readonly raw: Buffer;
  readonly form: EventForm;
  /** An SSE event's lines, and the line break after each but the last (breaks.length = lines.length - 1). */
  readonly lines: readonly string[];
  readonly breaks: readonly string[];
  /** The data: an SSE event's data lines joined by LF (WHATWG), or a line's JSON text. */
  readonly source: string;
  /** The string values of JSON data, with where each stands in `source`; empty for other forms. */
  readonly fields: readonly JsonStringField[];
  /** A JSON line's line break. */
  readonly ending: string;
  /**
   * What is written before the data: a leading BOM the stream's first event had, a JSON text sequence's
   * RS, or an array element's `[` or comma and the spaces around it.
   */
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

  readonly #values: JsonValueSplitter | null;

  constructor(framing: EventFraming) {
    this.#framing = framing;
    this.#values = framing === 'seq' || framing === 'array' ? new JsonValueSplitter(framing) : null;
  }

  /** The rest of the body is not made of events to follow (json-value-splitter.ts): let it through. */
  get passing(): boolean {
    return this.#values?.passing ?? false;
  }

  /**
   * Offsets in `chunk` just past each event's end: a line's LF for NDJSON; a record's or an element's
   * end (json-value-splitter.ts); for SSE an empty line, lines ending in CRLF, LF or CR (WHATWG HTML
   * 9.2.6), a CR at a chunk's end decided by the next byte.
   */
  ends(chunk: Buffer): number[] {
    if (this.#values !== null) return this.#values.ends(chunk);
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

/**
 * The event in `raw` (the stream's first when `first`); JSON nested deeper than `maxDepth` containers is
 * 'raw', left to the byte scanner (found by review: a recursive walk of 200,000 nested arrays overflowed
 * the stack and cut the stream).
 */
export function parseEvent(raw: Buffer, framing: EventFraming, first: boolean, maxDepth: number): ParsedEvent {
  const event = framing === 'sse' ? sseEvent(raw, first) : framing === 'array' ? arrayElement(raw) : jsonLine(raw);
  if (event.form !== 'sse-json' && event.form !== 'line-json') return event;
  const fields = jsonStringFields(event.source, maxDepth);
  // Written out, not spread: one object shape for every event, made once per event on the stream's path.
  const { raw: bytes, lines, breaks, source, ending, bom } = event;
  return fields === null ? { raw: bytes, form: 'raw', lines, breaks, source, fields: event.fields, ending, bom } : { raw: bytes, form: event.form, lines, breaks, source, fields, ending, bom };
}

/**
 * The event written again with `data` in place of its data (`source` with masks applied): a JSON line's
 * RS, BOM and line break around it; an SSE event's lines and line breaks as they were, each data line
 * given the next line of `data` after its own "data:" or "data: ". A mask never adds a line break, nor
 * removes one from JSON data (a string token holds none), so every byte outside the masks is as it came,
 * but for bytes that are not UTF-8: decoded, they come out as U+FFFD, as a client's decoder (WHATWG
 * Encoding, which EventSource and fetch use) reads them anyway. Where a mask spans a line break of text
 * data, the data lines left over are dropped.
 */
export function serializeEvent(event: ParsedEvent, data: string): Buffer {
  if (event.form === 'line-json') return Buffer.from(`${event.bom}${data}${event.ending}`, 'utf8');
  const values = data.split('\n');
  let next = 0;
  const kept: Array<[line: string, lineBreak: string]> = [];
  for (const [index, line] of event.lines.entries()) {
    const lineBreak = event.breaks[index] ?? '';
    if (!isDataLine(line)) {
      kept.push([line, lineBreak]);
      continue;
    }
    const value = values[next++];
    if (value === undefined) {
      // A dropped last line leaves the line before it unterminated, as the event's last line was.
      if (lineBreak === '' && kept.length > 0) (kept[kept.length - 1] as [string, string])[1] = '';
      continue;
    }
    kept.push([line === 'data' && value === '' ? line : `${line.startsWith('data: ') ? 'data: ' : 'data:'}${value}`, lineBreak]);
  }
  return Buffer.from(`${event.bom}${kept.map(([line, lineBreak]) => line + lineBreak).join('')}`, 'utf8');
}

/** A data field's line (WHATWG HTML 9.2.6: "data" alone is the field with an empty value). */
function isDataLine(line: string): boolean {
  return line === 'data' || line.startsWith('data:');
}

const LINE_BREAK = /\r\n|\r|\n/g;

/**
 * An SSE event: its data as JSON when it parses (an object, an array or a string), else as text; 'raw'
 * when it has no data line. The stream's first event loses a leading BOM as a client's parser does.
 */
function sseEvent(raw: Buffer, first: boolean): ParsedEvent {
  let text = raw.toString('utf8');
  const bom = first && text.startsWith('\uFEFF') ? '\uFEFF' : '';
  if (bom !== '') text = text.slice(1);
  // Most servers end lines in LF alone: split without the regular expression then.
  const cr = text.includes('\r');
  const lines = cr ? text.split(LINE_BREAK) : text.split('\n');
  const breaks = cr ? (text.match(LINE_BREAK) ?? []) : new Array<string>(lines.length - 1).fill('\n');
  // One pass, one string per event (an event is most often a single data line): no arrays built.
  let source: string | null = null;
  for (const line of lines) {
    if (!isDataLine(line)) continue;
    const value = line.startsWith('data: ') ? line.slice(6) : line.slice(5);
    source = source === null ? value : `${source}\n${value}`;
  }
  const form = source === null ? 'raw' : isJson(source) ? 'sse-json' : 'sse-text';
  return { raw: Buffer.from(raw), form, lines, breaks, source: source ?? '', fields: [], ending: '', bom };
}

/**
 * One line of an NDJSON stream: a JSON object, array or string, else passed as it came. A JSON text
 * sequence's record starts with RS (RFC 7464 2.2), kept in `bom` and written back.
 */
function jsonLine(raw: Buffer): ParsedEvent {
  const text = raw.toString('utf8');
  const lead = text.startsWith('\x1e') ? '\x1e' : '';
  const source = text.slice(lead.length).replace(/\r?\n$/, '');
  return { raw: Buffer.from(raw), form: isJson(source) ? 'line-json' : 'raw', lines: [], breaks: [], source, fields: [], ending: text.slice(lead.length + source.length), bom: lead };
}

/**
 * Before an array's first element, its `[` (and a BOM the body may open with); before the others, their
 * comma; spaces around either. The splitter (json-value-splitter.ts) has found the element's end, so
 * one `[` or comma is all a lead can hold.
 */
const ELEMENT_LEAD = /^\uFEFF?[ \t\r\n]*[[,][ \t\r\n]*/;

/**
 * One element of a streamed JSON array, with what came before it (`[` or a comma) kept in `bom`; the
 * splitter ends an element where its value closes, so nothing of the array follows it.
 */
function arrayElement(raw: Buffer): ParsedEvent {
  const text = raw.toString('utf8');
  const lead = ELEMENT_LEAD.exec(text)?.[0] ?? '';
  const source = text.slice(lead.length);
  return { raw: Buffer.from(raw), form: lead !== '' && isJson(source) ? 'line-json' : 'raw', lines: [], breaks: [], source, fields: [], ending: '', bom: lead };
}

/** JSON's leading whitespace (RFC 8259 2), then what opens an object, an array or a string. */
const JSON_START = /^[ \t\n\r]*([{["])/;

/**
 * Whether `text` is a JSON object, array or string (found by review: data that was a JSON string was
 * read as text, quotes and all, and never joined); numbers and literals are followed as text.
 */
function isJson(text: string): boolean {
  const first = JSON_START.exec(text)?.[1];
  if (first === undefined) return false;
  try {
    JSON.parse(text);
    return true;
  } catch {
    return false;
  }
}
