/**
 * The OpenTelemetry SDK and its OTLP/HTTP exporter, loaded (dynamic import from tracing.ts) only when
 * traces are exported: together they are several MiB of resident memory an Airlock without tracing
 * never needs.
 */
import type { Tracer } from '@opentelemetry/api';
import type { SamplerChoice } from './tracing.js';
import { OTLPTraceExporter } from '@opentelemetry/exporter-trace-otlp-http';
import { resourceFromAttributes } from '@opentelemetry/resources';
import { AlwaysOffSampler, AlwaysOnSampler, BasicTracerProvider, BatchSpanProcessor, ParentBasedSampler, TraceIdRatioBasedSampler, type Sampler } from '@opentelemetry/sdk-trace-base';

export interface OtlpProviderOptions {
  readonly url: string;
  readonly headers: Record<string, string>;
  readonly serviceName: string;
  readonly version: string;
  readonly sampler: SamplerChoice;
}

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

export function startOtlpProvider(options: OtlpProviderOptions): OtlpProvider {
  const exporter = new OTLPTraceExporter({ url: options.url, headers: options.headers });
  const provider = new BasicTracerProvider({
    resource: resourceFromAttributes({ 'service.name': options.serviceName, 'service.version': options.version }),
    sampler: options.sampler.parentBased ? new ParentBasedSampler({ root: ratioSampler(options.sampler.ratio) }) : ratioSampler(options.sampler.ratio),
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
