/**
 * OpenTelemetry traces. The request path speaks @opentelemetry/api only; the SDK and the OTLP/HTTP
 * exporter (otlp-provider.ts, loaded on demand) are built when telemetry.otlp (or
 * OTEL_EXPORTER_OTLP_ENDPOINT) asks for them, as an
 * instance handed to the runtime: no global provider, no global context manager (spans are parented
 * explicitly), so tests run many proxies side by side and a disabled Airlock pays for nothing but a
 * traceparent parse.
 *
 * Per request: a SERVER span named "{method} {http.route}" (HTTP semantic conventions), a
 * "credential.resolve" child when the credential is fetched from its store (not for a cached value:
 * a span per cache hit timed nothing and was a third of the spans exported), and a CLIENT span per
 * upstream attempt. The agent's W3C traceparent is
 * continued and the client span's context is what the upstream receives, so one trace shows the agent,
 * the proxy hop and the upstream call. Attributes are an allowlist: method, canonical path (never the
 * query), route template, status, and airlock.* decisions; no header value and no credential, ever (the
 * paths, which come from the request, pass the secret catalogue's scrub, as log lines and audit do).
 * When tracing is off, the agent's traceparent passes through untouched; when on, the agent's tracestate
 * is dropped, never exported (parentOf says why).
 */
import { ROOT_CONTEXT, SpanKind, SpanStatusCode, trace, type Attributes, type Context, type Span, type TextMapGetter, type Tracer } from '@opentelemetry/api';
import { W3CTraceContextPropagator } from '@opentelemetry/core';
import type { IncomingMessage } from 'node:http';
import type { TelemetrySpec } from '../config/schema.js';
import type { DeepReadonly } from '../config/types.js';
import type { OutboundRequest } from '../upstream/outbound-request.js';
import type { UpstreamTarget } from '../upstream/upstream-target.js';
import type { AuditRecord } from './audit-record.js';

export interface UpstreamSpan {
  end(status: number | null, error: string | null): void;
}

export interface RequestTrace {
  /** The W3C trace id of this request (ours, or the agent's when tracing is off), for audit and logs. */
  readonly traceId: string | null;
  /**
   * Times an internal step (credential resolution) that began at `startedAt` (performance.now()):
   * opened once the step is known to wait, so a step answered at once costs no span. Returns its end.
   */
  step(name: string, attributes: Attributes, startedAt: number): (error: string | null) => void;
  /** A CLIENT span for one upstream attempt; puts its context on the outbound request. */
  upstream(outbound: OutboundRequest, target: UpstreamTarget, service: string): UpstreamSpan;
  /** Ends the SERVER span with the request's outcome. */
  finish(record: AuditRecord, httpRoute: string | null): void;
}

export interface Tracing {
  readonly enabled: boolean;
  begin(req: IncomingMessage): RequestTrace;
  shutdown(): Promise<void>;
}

const TRACEPARENT = /^[0-9a-f]{2}-([0-9a-f]{32})-[0-9a-f]{16}-[0-9a-f]{2}$/;

const headerGetter: TextMapGetter<IncomingMessage['headers']> = {
  keys: (carrier) => Object.keys(carrier),
  get: (carrier, key) => carrier[key],
};

function traceIdOf(headers: IncomingMessage['headers']): string | null {
  const value = headers['traceparent'];
  const match = typeof value === 'string' ? TRACEPARENT.exec(value.trim()) : null;
  return match === null || /^0+$/.test(match[1] as string) ? null : (match[1] as string);
}

const NOOP_UPSTREAM: UpstreamSpan = { end() {} };

const NOOP_END = (): void => undefined;
/** Tracing off and no traceparent from the agent: one shared object, nothing allocated per request. */
const UNTRACED: RequestTrace = { traceId: null, step: () => NOOP_END, upstream: () => NOOP_UPSTREAM, finish: NOOP_END };

function disabledTrace(req: IncomingMessage): RequestTrace {
  const traceId = traceIdOf(req.headers);
  return traceId === null ? UNTRACED : { ...UNTRACED, traceId };
}

export interface TracingOptions {
  readonly telemetry: DeepReadonly<TelemetrySpec>;
  readonly env: Readonly<Record<string, string | undefined>>;
  readonly version: string;
  /** An OTEL_* variable Airlock cannot use: said once, and its default taken (the OpenTelemetry SDK's rule). */
  readonly onEnvProblem?: (message: string) => void;
  /**
   * The secret backstop for what comes from the request: a path the request guard refused for holding a
   * managed key is still the server span's url.path (the catalogue's scrub, as for logs and audit).
   */
  readonly scrub: (text: string) => string;
  /** A batch of spans the collector did not take (down, refusing, too slow): they are dropped. */
  readonly onExportFailure?: (spans: number, error: unknown) => void;
}

/** Which traces are sampled: `ratio` of new ones; `parentBased`: a sampled or unsampled parent is followed. */
export interface SamplerChoice {
  readonly parentBased: boolean;
  readonly ratio: number;
}

const SAMPLERS: Readonly<Record<string, (arg: () => number) => SamplerChoice>> = {
  always_on: () => ({ parentBased: false, ratio: 1 }),
  always_off: () => ({ parentBased: false, ratio: 0 }),
  traceidratio: (arg) => ({ parentBased: false, ratio: arg() }),
  parentbased_always_on: () => ({ parentBased: true, ratio: 1 }),
  parentbased_always_off: () => ({ parentBased: true, ratio: 0 }),
  parentbased_traceidratio: (arg) => ({ parentBased: true, ratio: arg() }),
};

/**
 * telemetry.sampling when the config sets it (parent-based); else OTEL_TRACES_SAMPLER and
 * OTEL_TRACES_SAMPLER_ARG as the OpenTelemetry SDK environment specification defines them, with Airlock's
 * earlier default kept when OTEL_TRACES_SAMPLER is absent: parent-based, at OTEL_TRACES_SAMPLER_ARG or 1.0.
 * A value it cannot use (jaeger_remote, xray, a typo; a ratio outside 0-1) is reported and its default taken,
 * as the specification asks, rather than sampling nothing in silence.
 */
export function chooseSampler(telemetry: DeepReadonly<TelemetrySpec>, env: TracingOptions['env'], report: (message: string) => void): SamplerChoice {
  if (telemetry.sampling !== undefined) return { parentBased: true, ratio: telemetry.sampling };
  const arg = (): number => {
    const text = env['OTEL_TRACES_SAMPLER_ARG']?.trim();
    if (text === undefined || text === '') return 1;
    const ratio = Number(text);
    if (Number.isFinite(ratio) && ratio >= 0 && ratio <= 1) return ratio;
    // The value is not repeated: for other samplers (jaeger_remote) it holds an endpoint that may carry credentials.
    report('OTEL_TRACES_SAMPLER_ARG is not a ratio from 0 to 1; sampling every new trace (1.0). Set it to a number such as 0.1, or set telemetry.sampling.');
    return 1;
  };
  const name = env['OTEL_TRACES_SAMPLER']?.trim().toLowerCase() ?? '';
  if (name === '') return SAMPLERS['parentbased_traceidratio']!(arg);
  const sampler = SAMPLERS[name];
  if (sampler !== undefined) return sampler(arg);
  // The specification's default; OTEL_TRACES_SAMPLER_ARG belongs to the sampler named, not to this one.
  report(`OTEL_TRACES_SAMPLER=${JSON.stringify(name)} is not one Airlock implements (${Object.keys(SAMPLERS).join(', ')}); using parentbased_always_on.`);
  return SAMPLERS['parentbased_always_on']!(arg);
}

/**
 * OTEL_EXPORTER_OTLP_HEADERS: `name=value` pairs, percent-encoded. A pair that does not decode is
 * skipped and said, naming the variable and the pair's place but not its value, which may be a
 * collector's credential (found by the observability walkthrough: start-up failed with "URI malformed").
 */
function parseHeaderList(text: string | undefined, report: (message: string) => void): Record<string, string> {
  const out: Record<string, string> = {};
  for (const [index, pair] of (text ?? '').split(',').entries()) {
    const eq = pair.indexOf('=');
    if (eq <= 0) continue;
    try {
      out[decodeURIComponent(pair.slice(0, eq).trim())] = decodeURIComponent(pair.slice(eq + 1).trim());
    } catch {
      report(`OTEL_EXPORTER_OTLP_HEADERS: pair ${index + 1} is not valid percent-encoding (a "%" must start %XX); it was skipped. Encode "%" in a value as %25.`);
    }
  }
  return out;
}

/** Builds tracing from config, or from the standard OTEL_* variables, or a disabled one. */
export async function createTracing(options: TracingOptions): Promise<Tracing> {
  const { telemetry, env } = options;
  // OpenTelemetry booleans and enum values are case-insensitive ("TRUE", " None ").
  const disabled = env['OTEL_SDK_DISABLED']?.trim().toLowerCase() === 'true' || env['OTEL_TRACES_EXPORTER']?.trim().toLowerCase() === 'none';
  const url =
    telemetry.otlp !== undefined
      ? `${telemetry.otlp.endpoint.replace(/\/$/, '')}/v1/traces`
      : (env['OTEL_EXPORTER_OTLP_TRACES_ENDPOINT'] ?? (env['OTEL_EXPORTER_OTLP_ENDPOINT'] === undefined ? undefined : `${env['OTEL_EXPORTER_OTLP_ENDPOINT'].replace(/\/$/, '')}/v1/traces`));
  if (disabled || url === undefined) {
    return { enabled: false, begin: disabledTrace, shutdown: async () => undefined };
  }
  const sampler = chooseSampler(telemetry, env, options.onEnvProblem ?? (() => undefined));
  const { startOtlpProvider } = await import('./otlp-provider.js');
  const provider = startOtlpProvider({
    url,
    headers: { ...parseHeaderList(env['OTEL_EXPORTER_OTLP_HEADERS'], options.onEnvProblem ?? (() => undefined)), ...(telemetry.otlp?.headers ?? {}) },
    serviceName: telemetry.service_name ?? env['OTEL_SERVICE_NAME'] ?? 'airlock',
    version: options.version,
    sampler,
    onExportFailure: options.onExportFailure ?? (() => undefined),
  });
  const propagator = new W3CTraceContextPropagator();
  return {
    enabled: true,
    begin(req) {
      return new LiveTrace(provider.tracer, propagator, req, options.scrub);
    },
    shutdown: () => provider.shutdown(),
  };
}

/**
 * The agent's trace context, continued by its trace id, span id and flags only. Its `tracestate` is
 * dropped: the SDK copies a parent's trace state onto every child span and the OTLP exporter sends it
 * as it came, so whatever a caller wrote there (a managed secret, its own alk_ token, before Airlock has
 * even authenticated it) would reach the collector unscrubbed (DESIGN.md invariant 1; spans are
 * observed by allowlist, style 8). Its values are the caller's free text (W3C Trace Context 3.3.1.3.2:
 * printable ASCII but "," and "="), so no shape check can vouch for them. The upstream, which sees our
 * CLIENT span as its parent, gets no agent trace state either (it is carried by that span's context).
 *
 * The sampled flag is honoured for every caller, authenticated or not: the sampler decides when the
 * span starts, before authentication has run, and parent-based sampling is what telemetry.sampling
 * promises. What a caller gains by setting it is bounded: a span per request it makes, holding only the
 * allowlisted attributes, and the BatchSpanProcessor's fixed queue drops spans rather than grow.
 */
function parentOf(propagator: W3CTraceContextPropagator, req: IncomingMessage): Context {
  const extracted = trace.getSpanContext(propagator.extract(ROOT_CONTEXT, req.headers, headerGetter));
  if (extracted === undefined) return ROOT_CONTEXT;
  return trace.setSpanContext(ROOT_CONTEXT, { traceId: extracted.traceId, spanId: extracted.spanId, traceFlags: extracted.traceFlags, isRemote: true });
}

class LiveTrace implements RequestTrace {
  readonly #tracer: Tracer;
  readonly #propagator: W3CTraceContextPropagator;
  readonly #span: Span;
  readonly #context: Context;
  readonly #scrub: (text: string) => string;
  readonly traceId: string | null;

  constructor(tracer: Tracer, propagator: W3CTraceContextPropagator, req: IncomingMessage, scrub: (text: string) => string) {
    this.#tracer = tracer;
    this.#propagator = propagator;
    this.#scrub = scrub;
    const parent = parentOf(propagator, req);
    this.#span = tracer.startSpan(
      req.method ?? 'HTTP',
      {
        kind: SpanKind.SERVER,
        attributes: {
          'http.request.method': req.method ?? '',
          'url.scheme': 'http',
          'network.protocol.version': req.httpVersion,
          // The peer; client.address becomes the agent's address behind trusted_proxies at finish.
          'network.peer.address': req.socket.remoteAddress ?? '',
          'client.address': req.socket.remoteAddress ?? '',
          'server.port': req.socket.localPort ?? 0,
        },
      },
      parent,
    );
    this.#context = trace.setSpan(parent, this.#span);
    const spanContext = this.#span.spanContext();
    this.traceId = trace.isSpanContextValid(spanContext) ? spanContext.traceId : traceIdOf(req.headers);
  }

  /** A scrubber that fails leaves the text out, not the span or the request it belongs to. */
  #scrubbed(text: string): string {
    try {
      return this.#scrub(text);
    } catch {
      return '[REDACTED]';
    }
  }

  step(name: string, attributes: Attributes, startedAt: number): (error: string | null) => void {
    // The SDK's Span._getTime reads a number not above performance.now() as performance time and puts
    // it on the span's clock. The end is given the same way: a span whose start was given would end
    // on Date.now(), whole milliseconds, and a sub-millisecond fetch would last 0 or 1 ms.
    const span = this.#tracer.startSpan(name, { kind: SpanKind.INTERNAL, attributes, startTime: startedAt }, this.#context);
    return function endStep(error) {
      if (error !== null) span.setStatus({ code: SpanStatusCode.ERROR, message: error });
      span.end(performance.now());
    };
  }

  upstream(outbound: OutboundRequest, target: UpstreamTarget, service: string): UpstreamSpan {
    const span = this.#tracer.startSpan(
      outbound.method,
      {
        kind: SpanKind.CLIENT,
        attributes: {
          'http.request.method': outbound.method,
          'server.address': target.hostname,
          'server.port': target.port,
          // url.full without the query: query values may be credentials (query injection).
          'url.full': this.#scrubbed(`${target.origin}${outbound.path}`),
          'airlock.service': service,
        },
      },
      this.#context,
    );
    // The upstream sees our client span as its parent, never the agent's own trace headers.
    outbound.removeHeader('traceparent');
    outbound.removeHeader('tracestate');
    const carrier: Record<string, string> = {};
    this.#propagator.inject(trace.setSpan(this.#context, span), carrier, { set: (c, k, v) => void (c[k] = v) });
    for (const [name, value] of Object.entries(carrier)) outbound.setHeader(name, value);
    return {
      end(status, error) {
        if (status !== null) span.setAttribute('http.response.status_code', status);
        if (error !== null) {
          span.setAttribute('error.type', error);
          span.setStatus({ code: SpanStatusCode.ERROR, message: error });
        } else if (status !== null && status >= 400) {
          span.setAttribute('error.type', String(status));
          span.setStatus({ code: SpanStatusCode.ERROR });
        }
        span.end();
      },
    };
  }

  finish(record: AuditRecord, httpRoute: string | null): void {
    const span = this.#span;
    if (record.client !== null) span.setAttribute('client.address', record.client);
    if (httpRoute !== null) {
      span.updateName(`${record.method ?? 'HTTP'} ${httpRoute}`);
      span.setAttribute('http.route', httpRoute);
    }
    const attributes: Attributes = {
      'url.path': this.#scrubbed(record.path ?? ''),
      'airlock.request_id': record.request_id,
      'airlock.decision': record.decision,
      'airlock.redactions': record.redactions,
    };
    if (record.status !== null) attributes['http.response.status_code'] = record.status;
    if (record.agent !== null) attributes['airlock.agent'] = record.agent;
    if (record.service !== null) attributes['airlock.service'] = record.service;
    if (record.route !== null) attributes['airlock.route'] = record.route;
    if (record.scope !== null) attributes['airlock.scope'] = record.scope;
    if (record.code !== null) attributes['airlock.code'] = record.code;
    if (record.session !== null) attributes['airlock.session'] = record.session;
    if (record.approval !== null) attributes['airlock.approval'] = record.approval;
    // `airlock.incomplete` marks any response cut short (the agent's hang-ups too).
    if (record.incomplete) attributes['airlock.incomplete'] = true;
    if (record.upstream_status !== null) attributes['airlock.upstream_status'] = record.upstream_status;
    span.setAttributes(attributes);
    // A server span is an error for 5xx (HTTP semantic conventions; 4xx are the client's), and for a
    // response that failed after its status went out (a body cut by upstream_timeout under a 200):
    // found by the observability walkthrough, such spans were UNSET while metrics and audit said
    // upstream_timeout.
    const failedLate = record.code !== null && record.upstream_status !== null && record.upstream_status < 400;
    if ((record.status ?? 0) >= 500 || record.status === null || failedLate) {
      span.setAttribute('error.type', record.code ?? (record.status === null ? 'client_closed' : String(record.status)));
      span.setStatus({ code: SpanStatusCode.ERROR, message: record.code ?? undefined });
    }
    span.end();
  }
}
