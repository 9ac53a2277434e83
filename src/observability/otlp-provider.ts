/**
 * The OpenTelemetry SDK and its OTLP/HTTP exporter, loaded (dynamic import from tracing.ts) only when
 * traces are exported: together they are several MiB of resident memory an Airlock without tracing
 * never needs.
 */
import type { Tracer } from '@opentelemetry/api';
import { OTLPTraceExporter } from '@opentelemetry/exporter-trace-otlp-http';
import { resourceFromAttributes } from '@opentelemetry/resources';
import { BasicTracerProvider, BatchSpanProcessor, ParentBasedSampler, TraceIdRatioBasedSampler } from '@opentelemetry/sdk-trace-base';

export interface OtlpProviderOptions {
  readonly url: string;
  readonly headers: Record<string, string>;
  readonly serviceName: string;
  readonly version: string;
  /** Share of new traces (parent-based: a sampled parent is always followed). */
  readonly ratio: number;
}

export interface OtlpProvider {
  readonly tracer: Tracer;
  shutdown(): Promise<void>;
}

export function startOtlpProvider(options: OtlpProviderOptions): OtlpProvider {
  const exporter = new OTLPTraceExporter({ url: options.url, headers: options.headers });
  const provider = new BasicTracerProvider({
    resource: resourceFromAttributes({ 'service.name': options.serviceName, 'service.version': options.version }),
    sampler: new ParentBasedSampler({ root: new TraceIdRatioBasedSampler(options.ratio) }),
    spanProcessors: [new BatchSpanProcessor(exporter, { scheduledDelayMillis: 500, maxExportBatchSize: 512 })],
  });
  return {
    tracer: provider.getTracer('airlock', options.version),
    async shutdown() {
      await provider.forceFlush().catch(() => undefined);
      await provider.shutdown().catch(() => undefined);
    },
  };
}
