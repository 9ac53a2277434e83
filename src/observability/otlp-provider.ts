/**
 * The OpenTelemetry SDK and its OTLP/HTTP exporter, loaded (dynamic import from tracing.ts) only when
 * traces are exported: together they are several MiB of resident memory an Airlock without tracing
 * never needs.
 */
import { randomUUID } from 'node:crypto';
import { TraceFlags, type Context, type Tracer } from '@opentelemetry/api';
import { ExportResultCode, type ExportResult } from '@opentelemetry/core';
import type { SamplerChoice } from './tracing.js';
import { OTLPTraceExporter } from '@opentelemetry/exporter-trace-otlp-http';
import { resourceFromAttributes } from '@opentelemetry/resources';
import { AlwaysOffSampler, AlwaysOnSampler, BasicTracerProvider, BatchSpanProcessor, ParentBasedSampler, TraceIdRatioBasedSampler, type ReadableSpan, type Sampler, type Span, type SpanExporter, type SpanProcessor } from '@opentelemetry/sdk-trace-base';

export interface OtlpProviderOptions {
  readonly url: string;
  readonly headers: Record<string, string>;
  readonly serviceName: string;
  readonly version: string;
  readonly sampler: SamplerChoice;
  readonly onExportFailure: (spans: number, error: unknown) => void;
}

/** How long a shutdown waits for the last spans to reach the collector (found by review: 11 s on a hung collector, past the listeners' deadline). */
const SHUTDOWN_FLUSH_MS = 3_000;

export interface OtlpProvider {
  readonly tracer: Tracer;
  shutdown(): Promise<void>;
}

/** The SDK's ratio sampler compares a hash of the trace id against ratio x 2^32 - 1: at 1.0 one id in 2^32 is missed. */
function ratioSampler(ratio: number): Sampler {
  if (ratio >= 1) return new AlwaysOnSampler();
  if (ratio <= 0) return new AlwaysOffSampler();
  return new TraceIdRatioBasedSampler(ratio);
}

/**
 * The exporter, with each batch the collector did not take told to `onFailure` (found by the
 * observability walkthrough: ~9,000 spans were dropped with no log line and no metric).
 */
function reportingFailures(exporter: SpanExporter, onFailure: (spans: number, error: unknown) => void, onTaken: (spans: number) => void): SpanExporter {
  return {
    export(spans: ReadableSpan[], done: (result: ExportResult) => void): void {
      onTaken(spans.length);
      exporter.export(spans, function exported(result) {
        if (result.code !== ExportResultCode.SUCCESS) onFailure(spans.length, result.error);
        done(result);
      });
    },
    shutdown: () => exporter.shutdown(),
    forceFlush: () => exporter.forceFlush?.() ?? Promise.resolve(),
  };
}

/** Spans waiting for the collector, at most; past it a span is dropped, and counted (QueueBound). */
const MAX_QUEUED_SPANS = 2_048;
const EXPORT_BATCH = 512;

class ExportQueueFull extends Error {
  override name = 'ExportQueueFull';
}

/**
 * The batch processor's queue, bounded here where the drop can be counted: the SDK's own bound drops
 * spans with only a line on its global diag logger (found by the observability walkthrough: a burst
 * past 2,048 spans lost spans no metric showed). Spans are counted in as they end (sampled ones, which
 * alone the batch processor keeps) and out as the exporter is handed them; the processor's own bound
 * is set above this one, so every drop is decided, and counted, here.
 */
class QueueBound implements SpanProcessor {
  #queued = 0;
  readonly #inner: SpanProcessor;
  readonly #onDrop: (spans: number, error: unknown) => void;

  constructor(inner: SpanProcessor, onDrop: (spans: number, error: unknown) => void) {
    this.#inner = inner;
    this.#onDrop = onDrop;
  }

  /** The exporter's call: `spans` left the queue. */
  exported(spans: number): void {
    this.#queued = Math.max(0, this.#queued - spans);
  }

  onStart(span: Span, parentContext: Context): void {
    this.#inner.onStart(span, parentContext);
  }

  onEnd(span: ReadableSpan): void {
    if ((span.spanContext().traceFlags & TraceFlags.SAMPLED) === 0) return;
    if (this.#queued >= MAX_QUEUED_SPANS) {
      this.#onDrop(1, new ExportQueueFull(`${MAX_QUEUED_SPANS} spans are already waiting for the collector`));
      return;
    }
    this.#queued++;
    this.#inner.onEnd(span);
  }

  forceFlush(): Promise<void> {
    return this.#inner.forceFlush();
  }

  shutdown(): Promise<void> {
    return this.#inner.shutdown();
  }
}

export function startOtlpProvider(options: OtlpProviderOptions): OtlpProvider {
  let bound: QueueBound | null = null;
  const exporter = reportingFailures(new OTLPTraceExporter({ url: options.url, headers: options.headers, timeoutMillis: 5_000 }), options.onExportFailure, (spans) => bound?.exported(spans));
  bound = new QueueBound(
    new BatchSpanProcessor(exporter, { scheduledDelayMillis: 500, maxExportBatchSize: EXPORT_BATCH, maxQueueSize: MAX_QUEUED_SPANS + EXPORT_BATCH, exportTimeoutMillis: 5_000 }),
    options.onExportFailure,
  );
  const provider = new BasicTracerProvider({
    // service.instance.id tells replicas and workers apart (OTel resource semantic conventions); a
    // random one per process, as the conventions suggest when nothing stable names it.
    resource: resourceFromAttributes({ 'service.name': options.serviceName, 'service.version': options.version, 'service.instance.id': randomUUID() }),
    sampler: options.sampler.parentBased ? new ParentBasedSampler({ root: ratioSampler(options.sampler.ratio) }) : ratioSampler(options.sampler.ratio),
    spanProcessors: [bound],
  });
  return {
    tracer: provider.getTracer('airlock', options.version),
    async shutdown() {
      // Bounded: a hung collector must not hold a stopping Airlock past its deadline.
      let timer: NodeJS.Timeout | undefined;
      const gaveUp = new Promise<void>((resolve) => {
        timer = setTimeout(resolve, SHUTDOWN_FLUSH_MS);
        timer.unref();
      });
      const flushed = (async () => {
        await provider.forceFlush().catch(() => undefined);
        await provider.shutdown().catch(() => undefined);
      })();
      await Promise.race([flushed, gaveUp]);
      clearTimeout(timer);
    },
  };
}
