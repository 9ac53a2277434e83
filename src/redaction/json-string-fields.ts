/**
 * The string values of a JSON text, each with its JSON path and where its token stands in the text, so
 * that a masked event can be written again by replacing those tokens alone. Parsing the event and
 * writing it with JSON.stringify changed what the client reads beyond the mask: numbers past double
 * precision lost digits (an id of 12345678901234567890 came out as 12345678901234567000), integer-like
 * keys moved ahead of the others (ECMA-262 OrdinaryOwnPropertyKeys), a duplicate key's first value
 * vanished, and escapes and spacing were rewritten.
 *
 * The text must already have parsed with JSON.parse: this walk assumes valid JSON (RFC 8259) and only
 * tracks where values start and end.
 */

export interface JsonStringField {
  /** ".$" for the top-level value, then ".key" and ".index" per step (as sse-delta-redactor.ts follows paths). */
  readonly path: string;
  /** The decoded string. */
  readonly text: string;
  /** The token, quotes included: [start, end) in the JSON text. */
  readonly start: number;
  readonly end: number;
}

const QUOTE = 0x22;
const BACKSLASH = 0x5c;

interface Container {
  readonly path: string;
  readonly array: boolean;
  /** The element's index (arrays) or the member's key (objects) the next value is found at. */
  index: number;
  key: string;
  /** In an object, whether the next string is a member's name. */
  expectingKey: boolean;
  /** In an object: each member's key and the first of `fields` its value gave (a repeated key is re-pathed at the close). */
  members: Array<{ key: string; from: number }>;
  /** The first of `fields` found inside this container. */
  readonly from: number;
  /** In an object, whether the member whose value comes next is one of STREAM_KEYS (looked up once per key). */
  streamKey: boolean;
  /** In an object: the values of its STREAM_KEYS members that are whole numbers, as `key=value` (see STREAM_KEYS); null until one. */
  streams: string[] | null;
}

/**
 * Members that say which of several streams interleaved in one event stream an object continues:
 * OpenAI's `choices[].index` (n > 1) and `tool_calls[].index` (parallel tool calls), Gemini's
 * `candidates[].index`, Anthropic's content block `index`, the Responses API's `output_index` and
 * `content_index`. An object holding one is followed on a path named by its value rather than by its
 * place in its array (or as the event's top-level value): found by review, two choices streamed chunk by
 * chunk both sat at `choices.0`, their texts were joined into one, and a key one of them spelled out
 * 3 characters at a time was never whole in what was scanned, while the SDK put it back together.
 */
const STREAM_KEYS: ReadonlySet<string> = new Set(['index', 'output_index', 'content_index']);
const NUMBER_CHARS = '0123456789.eE+-';
const OPEN_BRACE = 0x7b;
const CLOSE_BRACE = 0x7d;
const OPEN_BRACKET = 0x5b;
const CLOSE_BRACKET = 0x5d;
const COMMA = 0x2c;
const MINUS = 0x2d;
const DIGIT_0 = 0x30;
const DIGIT_9 = 0x39;

interface MutableField {
  path: string;
  readonly text: string;
  readonly start: number;
  readonly end: number;
}

/** Where the string token starting at `start` (its opening quote) ends, just past its closing quote. */
function stringEnd(text: string, start: number): number {
  for (let i = start + 1; i < text.length; i++) {
    const code = text.charCodeAt(i);
    if (code === BACKSLASH) i++;
    else if (code === QUOTE) return i + 1;
  }
  return text.length;
}

function decode(token: string): string {
  return token.includes('\\') ? (JSON.parse(token) as string) : token.slice(1, -1);
}

/** Up to this many members, an object's repeated keys are found by comparing each pair. */
const PAIRWISE_MAX = 16;

/** Marks the path of a value a later member of the same key replaces (see EARLIER). */
export const EARLIER = '\u0000earlier';

/**
 * A key given twice in an object: JSON.parse, Python's json, Go's encoding/json and Jackson keep the
 * last value, so the last one's strings keep the member's path, and the strings of the values before it
 * go on the path with EARLIER after the key (followed too, apart). Found by review: following every
 * value on one path put `"content":" "` between two halves of a key, in the joined text but not in
 * what a client read, and neither half was masked.
 */
function repathRepeatedKeys(container: Container, fields: MutableField[]): void {
  const { members } = container;
  // Objects in events have a few members: comparing each pair costs less than a Map built per object,
  // up to a bound (an upstream's object of 100,000 members would take billions of comparisons).
  const lastIndex = members.length > PAIRWISE_MAX ? new Map(members.map((member, index) => [member.key, index])) : null;
  for (let index = 0; index < members.length - 1; index++) {
    const member = members[index] as { key: string; from: number };
    let replaced = lastIndex !== null && lastIndex.get(member.key) !== index;
    for (let later = index + 1; lastIndex === null && later < members.length && !replaced; later++) replaced = (members[later] as { key: string }).key === member.key;
    if (!replaced) continue;
    const to = (members[index + 1] as { from: number }).from;
    const memberPath = `${container.path}.${member.key}`;
    for (let f = member.from; f < to; f++) {
      const field = fields[f] as MutableField;
      field.path = `${memberPath}${EARLIER}${field.path.slice(memberPath.length)}`;
    }
  }
}

/**
 * An object that names its stream (STREAM_KEYS), as an array's element or as the top-level value: its
 * strings are followed on a path named by those values in place of its position (`choices.#index=1`).
 */
function repathByStream(closed: Container, parent: Container | undefined, fields: MutableField[]): void {
  if (parent !== undefined && !parent.array) return;
  // An element without a stream member is its position's stream: Gemini leaves a zero `index` out, so
  // one candidate's chunks come with and without it (found by review: followed on two paths, a key split
  // between them was never whole in either, and the client joined it back).
  if (parent === undefined && closed.streams === null) return;
  const stream = closed.streams === null ? `index=${(parent as Container).index}` : closed.streams.join('#');
  const named = parent === undefined ? `.$#${stream}` : `${parent.path}.#${stream}`;
  for (let f = closed.from; f < fields.length; f++) {
    const field = fields[f] as MutableField;
    if (field.path.startsWith(closed.path)) field.path = `${named}${field.path.slice(closed.path.length)}`;
  }
}

/**
 * The string values of `text` (valid JSON) in document order, or null when it nests deeper than
 * `maxDepth` (the caller lets such an event pass as it came).
 */
export function jsonStringFields(text: string, maxDepth: number): JsonStringField[] | null {
  const fields: MutableField[] = [];
  const stack: Container[] = [];
  // The innermost open container (stack's last), kept apart: read for every character of the walk.
  let top: Container | undefined;
  for (let i = 0; i < text.length; i++) {
    const code = text.charCodeAt(i);
    if (code === QUOTE) {
      const end = stringEnd(text, i);
      const token = text.slice(i, end);
      if (top !== undefined && top.expectingKey) {
        top.key = decode(token);
        top.expectingKey = false;
        top.streamKey = STREAM_KEYS.has(top.key);
        top.members.push({ key: top.key, from: fields.length });
      } else {
        fields.push({ path: pathAt(top), text: decode(token), start: i, end });
      }
      i = end - 1;
    } else if (code === OPEN_BRACE || code === OPEN_BRACKET) {
      if (stack.length >= maxDepth) return null;
      const array = code === OPEN_BRACKET;
      top = { path: pathAt(top), array, index: 0, key: '', expectingKey: !array, members: [], from: fields.length, streamKey: false, streams: null };
      stack.push(top);
    } else if (code === CLOSE_BRACE || code === CLOSE_BRACKET) {
      const closed = stack.pop() as Container;
      top = stack[stack.length - 1];
      if (!closed.array) {
        repathRepeatedKeys(closed, fields);
        repathByStream(closed, top, fields);
      }
    } else if (code === COMMA) {
      const container = top as Container;
      if (container.array) container.index++;
      else container.expectingKey = true;
    } else if (top !== undefined && top.streamKey && !top.expectingKey && (code === MINUS || (code >= DIGIT_0 && code <= DIGIT_9))) {
      // Whitespace, ':', and the characters of numbers, true, false and null pass; a whole number that
      // is the value of a STREAM_KEYS member is kept (the whole token read: sign, fraction, exponent).
      let end = i + 1;
      while (end < text.length && NUMBER_CHARS.includes(text[end] as string)) end++;
      const token = text.slice(i, end);
      if (/^\d+$/.test(token)) (top.streams ??= []).push(`${top.key}=${token}`);
      i = end - 1;
    }
  }
  return fields;
}

/** The path of a value found now: ".$" at the top level, else its container's path and its index or key. */
function pathAt(top: Container | undefined): string {
  if (top === undefined) return '.$';
  return top.array ? `${top.path}.${top.index}` : `${top.path}.${top.key}`;
}
