/**
 * An in-process OTLP/HTTP trace receiver (a stand-in for an OpenTelemetry collector) on 127.0.0.1,
 * port 0, for tests of Airlock's span export.
 *
 *   POST /v1/traces   Content-Type: application/json (OTLP/HTTP JSON encoding of ExportTraceServiceRequest:
 *                     resourceSpans[].scopeSpans[].spans[], trace and span ids as hex strings, kind as a
 *                     number, attributes as [{key, value: {stringValue|intValue|boolValue|doubleValue|...}}]).
 *                     Content-Encoding: gzip is accepted. Answers 200 `{}` (a full success, no partialSuccess).
 *   anything else     POST /v1/traces with another content type: 415; other paths or methods: 404. Those
 *                     requests are counted in `rejected`, so a test can tell "nothing exported" from
 *                     "exported in a form this receiver does not read".
 *
 * Every accepted body is kept raw (`bodies`, for leak checks) and decoded into flat spans (`spans`).
 * Request headers are kept too (`requests`), so a test can check the collector headers Airlock sends.
 */
import { once } from 'node:events';
import { createServer, type IncomingHttpHeaders, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { gunzipSync } from 'node:zlib';

/** OTLP SpanKind numbers (opentelemetry/proto/trace/v1/trace.proto). */
export const SPAN_KIND = { UNSPECIFIED: 0, INTERNAL: 1, SERVER: 2, CLIENT: 3, PRODUCER: 4, CONSUMER: 5 } as const;

/** OTLP Status.code numbers. */
export const STATUS_CODE = { UNSET: 0, OK: 1, ERROR: 2 } as const;

export type AttributeValue = string | number | boolean | null | AttributeValue[] | { [key: string]: AttributeValue };

export interface ReceivedSpan {
  readonly traceId: string;
  readonly spanId: string;
  /** '' when the span is a root span. */
  readonly parentSpanId: string;
  readonly name: string;
  readonly kind: number;
  readonly attributes: Readonly<Record<string, AttributeValue>>;
  readonly status: { readonly code: number; readonly message?: string };
  readonly resource: Readonly<Record<string, AttributeValue>>;
  readonly scope: string;
  readonly startTimeUnixNano: string;
  readonly endTimeUnixNano: string;
  /** W3C trace flags as exported (bit 0: sampled). */
  readonly flags: number | undefined;
}

export interface ReceivedExport {
  readonly headers: IncomingHttpHeaders;
  readonly contentType: string;
  readonly body: string;
}

export interface OtlpReceiver {
  /** http://127.0.0.1:PORT, to be given as telemetry.otlp.endpoint (the exporter appends /v1/traces). */
  readonly url: string;
  readonly spans: ReceivedSpan[];
  /** Raw bodies of every accepted export, decoded from gzip when compressed. */
  readonly bodies: string[];
  readonly requests: ReceivedExport[];
  /** Requests refused (wrong path, method or content type): "<method> <path> <content-type>". */
  readonly rejected: string[];
  /** Resolves with every span that satisfies the predicate once at least one does; rejects after timeoutMs. */
  waitForSpans(predicate: (span: ReceivedSpan) => boolean, timeoutMs?: number, atLeast?: number): Promise<ReceivedSpan[]>;
  /** Forgets everything received so far. */
  reset(): void;
  close(): Promise<void>;
}

interface OtlpKeyValue {
  key: string;
  value?: OtlpAnyValue;
}

interface OtlpAnyValue {
  stringValue?: string;
  boolValue?: boolean;
  intValue?: number | string;
  doubleValue?: number;
  arrayValue?: { values?: OtlpAnyValue[] };
  kvlistValue?: { values?: OtlpKeyValue[] };
  bytesValue?: string;
}

interface OtlpSpan {
  traceId: string;
  spanId: string;
  parentSpanId?: string;
  name: string;
  kind?: number;
  attributes?: OtlpKeyValue[];
  status?: { code?: number; message?: string };
  startTimeUnixNano?: string | number;
  endTimeUnixNano?: string | number;
  flags?: number;
}

interface ExportTraceServiceRequest {
  resourceSpans?: Array<{
    resource?: { attributes?: OtlpKeyValue[] };
    scopeSpans?: Array<{ scope?: { name?: string }; spans?: OtlpSpan[] }>;
  }>;
}

function anyValue(value: OtlpAnyValue | undefined): AttributeValue {
  if (value === undefined) return null;
  if (value.stringValue !== undefined) return value.stringValue;
  if (value.boolValue !== undefined) return value.boolValue;
  // int64 is a number or, per the proto3 JSON mapping, a decimal string.
  if (value.intValue !== undefined) return Number(value.intValue);
  if (value.doubleValue !== undefined) return value.doubleValue;
  if (value.bytesValue !== undefined) return value.bytesValue;
  if (value.arrayValue !== undefined) return (value.arrayValue.values ?? []).map(anyValue);
  if (value.kvlistValue !== undefined) return attributesOf(value.kvlistValue.values);
  return null;
}

function attributesOf(list: OtlpKeyValue[] | undefined): Record<string, AttributeValue> {
  const out: Record<string, AttributeValue> = {};
  for (const { key, value } of list ?? []) out[key] = anyValue(value);
  return out;
}

/** Flattens an ExportTraceServiceRequest (JSON encoding) into one entry per span. */
export function decodeTraces(request: ExportTraceServiceRequest): ReceivedSpan[] {
  const spans: ReceivedSpan[] = [];
  for (const resourceSpans of request.resourceSpans ?? []) {
    const resource = attributesOf(resourceSpans.resource?.attributes);
    for (const scopeSpans of resourceSpans.scopeSpans ?? []) {
      for (const span of scopeSpans.spans ?? []) {
        spans.push({
          traceId: span.traceId,
          spanId: span.spanId,
          parentSpanId: span.parentSpanId ?? '',
          name: span.name,
          kind: span.kind ?? SPAN_KIND.UNSPECIFIED,
          attributes: attributesOf(span.attributes),
          status: { code: span.status?.code ?? STATUS_CODE.UNSET, ...(span.status?.message === undefined ? {} : { message: span.status.message }) },
          resource,
          scope: scopeSpans.scope?.name ?? '',
          startTimeUnixNano: String(span.startTimeUnixNano ?? ''),
          endTimeUnixNano: String(span.endTimeUnixNano ?? ''),
          flags: span.flags,
        });
      }
    }
  }
  return spans;
}

export async function startOtlpReceiver(): Promise<OtlpReceiver> {
  const spans: ReceivedSpan[] = [];
  const bodies: string[] = [];
  const requests: ReceivedExport[] = [];
  const rejected: string[] = [];
  const waiters = new Set<() => void>();

  const server: Server = createServer((req, res) => {
    const chunks: Buffer[] = [];
    req.on('data', (chunk: Buffer) => chunks.push(chunk));
    req.on('end', () => {
      const contentType = String(req.headers['content-type'] ?? '');
      const path = (req.url ?? '').split('?')[0];
      if (req.method !== 'POST' || path !== '/v1/traces') {
        rejected.push(`${req.method ?? ''} ${req.url ?? ''} ${contentType}`);
        res.writeHead(404, { 'content-type': 'application/json' }).end('{}');
        return;
      }
      if (!/^application\/json\b/i.test(contentType)) {
        rejected.push(`${req.method} ${req.url ?? ''} ${contentType}`);
        res.writeHead(415, { 'content-type': 'application/json' }).end('{"code":3,"message":"this receiver reads the JSON encoding only"}');
        return;
      }
      let raw = Buffer.concat(chunks);
      let parsed: ExportTraceServiceRequest;
      try {
        if (/gzip/i.test(String(req.headers['content-encoding'] ?? ''))) raw = gunzipSync(raw);
        parsed = JSON.parse(raw.toString('utf8')) as ExportTraceServiceRequest;
      } catch (error) {
        rejected.push(`${req.method} ${req.url ?? ''} ${contentType} (undecodable: ${(error as Error).message})`);
        res.writeHead(400, { 'content-type': 'application/json' }).end('{"code":3,"message":"not an ExportTraceServiceRequest"}');
        return;
      }
      const text = raw.toString('utf8');
      bodies.push(text);
      requests.push({ headers: req.headers, contentType, body: text });
      spans.push(...decodeTraces(parsed));
      res.writeHead(200, { 'content-type': 'application/json' }).end('{}');
      for (const wake of [...waiters]) wake();
    });
  });
  server.listen(0, '127.0.0.1');
  await once(server, 'listening');
  const port = (server.address() as AddressInfo).port;

  return {
    url: `http://127.0.0.1:${port}`,
    spans,
    bodies,
    requests,
    rejected,
    waitForSpans(predicate, timeoutMs = 5_000, atLeast = 1) {
      return new Promise<ReceivedSpan[]>((resolve, reject) => {
        const check = (): boolean => {
          const matching = spans.filter(predicate);
          if (matching.length < atLeast) return false;
          finish();
          resolve(matching);
          return true;
        };
        const timer = setTimeout(() => {
          finish();
          const names = spans.map((s) => `${s.name}(${s.traceId.slice(0, 8)})`).join(', ') || 'none';
          reject(new Error(`no ${atLeast} matching span(s) within ${timeoutMs} ms; received: ${names}; rejected: ${rejected.join('; ') || 'none'}`));
        }, timeoutMs);
        function finish(): void {
          clearTimeout(timer);
          waiters.delete(wake);
        }
        function wake(): void {
          check();
        }
        if (!check()) waiters.add(wake);
      });
    },
    reset() {
      spans.length = 0;
      bodies.length = 0;
      requests.length = 0;
      rejected.length = 0;
    },
    async close() {
      server.closeAllConnections();
      await new Promise<void>((resolve) => server.close(() => resolve()));
    },
  };
}
