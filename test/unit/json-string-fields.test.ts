/**
 * The walk that finds a JSON text's string values and their tokens (json-string-fields.ts), and the
 * event reader and writer built on it (split-events.ts): a masked event is written again by replacing
 * string tokens alone, so what the walk finds must be exactly the strings JSON.parse reads, each at the
 * place it stands, and an event written back with its own data must be the bytes it came as.
 */
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { EARLIER, jsonStringFields } from '../../src/redaction/json-string-fields.js';
import { parseEvent, serializeEvent } from '../../src/redaction/split-events.js';

const isObject = (value: unknown): value is Record<string, unknown> => value !== null && typeof value === 'object' && !Array.isArray(value);

/** An object's stream members, as the walk names them (json-string-fields.ts STREAM_KEYS). */
function streamsOf(value: Record<string, unknown>): string[] {
  return Object.entries(value)
    .filter(([key, item]) => ['index', 'output_index', 'content_index'].includes(key) && typeof item === 'number' && /^\d+$/.test(String(item)))
    .map(([key, item]) => `${key}=${String(item)}`);
}

/** The string values of a parsed JSON value with their paths, as the walk names them. */
function stringsOf(value: unknown, path: string, out: string[]): string[] {
  if (typeof value === 'string') out.push(`${path}=${value}`);
  else if (Array.isArray(value)) {
    value.forEach((item, index) => {
      if (!isObject(item)) return void stringsOf(item, `${path}.${index}`, out);
      const streams = streamsOf(item);
      stringsOf(item, `${path}.#${(streams.length > 0 ? streams : [`index=${index}`]).join('#')}`, out);
    });
  } else if (isObject(value)) {
    const streams = path === '.$' ? streamsOf(value) : [];
    const named = streams.length > 0 ? `.$#${streams.join('#')}` : path;
    for (const [key, item] of Object.entries(value)) stringsOf(item, `${named}.${key}`, out);
  }
  return out;
}

const RUNS = Number(process.env['FC_RUNS'] ?? 300);

describe('JSON string fields', () => {
  it.each([
    ['"a"', [['.$', 'a', 0, 3]]],
    ['{"k":"v","n":[1,"x",{"z":"\\u0041\\"b"}]}', [['.$.k', 'v', 5, 8], ['.$.n.1', 'x', 16, 19], ['.$.n.#index=2.z', 'A"b', 25, 36]]],
    ['{ "a" : 12345678901234567890 , "b":"\\\\" }', [['.$.b', '\\', 35, 39]]],
    ['{"d":"x","d":"y"}', [[`.$.d${EARLIER}`, 'x', 5, 8], ['.$.d', 'y', 13, 16]]],
    ['{"c":{"t":"a"},"e":"z","c":{"t":"b","t":"c"}}', [[`.$.c${EARLIER}.t`, 'a', 10, 13], ['.$.e', 'z', 19, 22], [`.$.c.t${EARLIER}`, 'b', 32, 35], ['.$.c.t', 'c', 40, 43]]],
    ['[[],{},"",true,null]', [['.$.2', '', 7, 9]]],
    // Objects that name their stream are followed by that name, wherever the number stands in them.
    ['{"c":[{"index":1,"d":"a"},{"d":"b","index":0}]}', [['.$.c.#index=1.d', 'a', 21, 24], ['.$.c.#index=0.d', 'b', 31, 34]]],
    ['{"c":[{"index":0,"t":[{"f":"x","index":2}]}]}', [['.$.c.#index=0.t.#index=2.f', 'x', 27, 30]]],
    ['{"type":"d","output_index":3,"content_index":0,"delta":"x"}', [['.$#output_index=3#content_index=0.type', 'd', 8, 11], ['.$#output_index=3#content_index=0.delta', 'x', 55, 58]]],
    // Not a whole number: followed by its place in the array, as the stream of that place.
    ['{"c":[{"index":1.5,"d":"a"},{"index":"1","d":"b"},{"index":-1,"d":"c"}]}', [['.$.c.#index=0.d', 'a', 23, 26], ['.$.c.#index=1.index', '1', 37, 40], ['.$.c.#index=1.d', 'b', 45, 48], ['.$.c.#index=2.d', 'c', 66, 69]]],
  ])('%s', (text, expected) => {
    const fields = jsonStringFields(text, 64);
    expect(fields?.map((f) => [f.path, f.text, f.start, f.end])).toEqual(expected);
  });

  // Found by review: every value of a repeated key was followed on one path, so an earlier value a
  // client never reads sat between two halves of a key in the joined text.
  it('a key given twice: the strings JSON.parse keeps at their paths, the others apart', () => {
    // Up to 24 members: objects of more than 16 find their repeated keys another way.
    const member = fc.tuple(fc.constantFrom('a', 'b', 'c', 'd', 'e', 'f', 'g', 'h', 'i', 'j', 'k', 'l', 'm', 'n', 'o', 'p', 'q', 'r', 's', 't'), fc.oneof(fc.string({ maxLength: 4 }), fc.constant(null)));
    const object = fc.oneof(fc.array(member, { maxLength: 6 }), fc.array(member, { minLength: 17, maxLength: 24 })).map((members) => `{${members.map(([key, value]) => `${JSON.stringify(key)}:${JSON.stringify(value)}`).join(',')}}`);
    fc.assert(
      fc.property(fc.array(fc.oneof(object, object.map((inner) => `{"a":${inner},"a":${inner}}`)), { maxLength: 3 }), (objects) => {
        const text = `[${objects.join(',')}]`;
        const fields = jsonStringFields(text, 64) ?? [];
        const kept = fields.filter((f) => !f.path.includes(EARLIER)).map((f) => `${f.path}=${f.text}`);
        expect(kept.sort()).toEqual(stringsOf(JSON.parse(text), '.$', []).sort());
        for (const field of fields) expect(JSON.parse(text.slice(field.start, field.end))).toBe(field.text);
      }),
      { numRuns: RUNS },
    );
  });

  it('stops at the depth asked: deeper JSON gives null, not a stack overflow', () => {
    expect(jsonStringFields(`${'['.repeat(64)}"x"${']'.repeat(64)}`, 64)).toHaveLength(1);
    expect(jsonStringFields(`${'['.repeat(65)}"x"${']'.repeat(65)}`, 64)).toBeNull();
    expect(jsonStringFields(`${'['.repeat(200_000)}${']'.repeat(200_000)}`, 64)).toBeNull();
  });

  it('any JSON, in any spacing: the strings JSON.parse reads, each token where it stands', () => {
    fc.assert(
      fc.property(fc.jsonValue(), fc.constantFrom(undefined, 1, '\t', ' \r\n'), (value, space) => {
        const text = JSON.stringify(value, null, space);
        const fields = jsonStringFields(text, 1000) ?? [];
        for (const field of fields) expect(JSON.parse(text.slice(field.start, field.end))).toBe(field.text);
        // fc.jsonValue has no duplicate keys: the same strings at the same paths as the parsed value.
        expect(fields.map((f) => `${f.path}=${f.text}`).sort()).toEqual(stringsOf(JSON.parse(text), '.$', []).sort());
      }),
      { numRuns: RUNS },
    );
  });
});

describe('events written again', () => {
  const line = fc.oneof(
    fc.constantFrom('', 'data', 'data:', ': ping', 'event: token', 'id: 7', 'retry: 10'),
    fc.string({ maxLength: 12 }).map((text) => `data: ${text.replace(/[\r\n]/g, ' ')}`),
    fc.string({ maxLength: 12 }).map((text) => `data:${text.replace(/[\r\n]/g, ' ')}`),
    fc.jsonValue({ maxDepth: 2 }).map((value) => `data: ${JSON.stringify(value)}`),
  );

  it('an SSE event with its own data is the bytes it came as, BOM, fields and line breaks included', () => {
    fc.assert(
      fc.property(fc.array(fc.tuple(line, fc.constantFrom('\n', '\r\n', '\r')), { maxLength: 8 }), fc.boolean(), (lines, bom) => {
        const raw = Buffer.from(`${bom ? '\uFEFF' : ''}${lines.map(([text, end]) => text + end).join('')}`, 'utf8');
        const event = parseEvent(raw, 'sse', true, 64);
        if (event.form === 'raw') return;
        expect(serializeEvent(event, event.source).equals(raw)).toBe(true);
      }),
      { numRuns: RUNS },
    );
  });

  it('a JSON line with its own data is the bytes it came as, RS and line break included', () => {
    fc.assert(
      fc.property(fc.jsonValue(), fc.constantFrom('', '\x1e'), fc.constantFrom('', '\n', '\r\n'), fc.constantFrom(undefined, 1), (value, rs, end, space) => {
        const raw = Buffer.from(`${rs}${JSON.stringify(value, null, space)?.replace(/\n/g, ' ') ?? 'null'}${end}`, 'utf8');
        const event = parseEvent(raw, 'lines', false, 64);
        if (event.form === 'raw') return;
        expect(serializeEvent(event, event.source).equals(raw)).toBe(true);
      }),
      { numRuns: RUNS },
    );
  });

  it('text data masked over a line break drops the data line left over, and nothing else', () => {
    const event = parseEvent(Buffer.from('event: t\ndata: ab\ndata: cd\nid: 1\n\n'), 'sse', false, 64);
    expect(event.form).toBe('sse-text');
    expect(serializeEvent(event, 'a[REDACTED]d').toString()).toBe('event: t\ndata: a[REDACTED]d\nid: 1\n\n');
  });
});
