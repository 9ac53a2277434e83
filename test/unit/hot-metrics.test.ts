/**
 * The request-path metrics (hot-metrics.ts) must scrape exactly as prom-client's own Counter and
 * Histogram would for the same observations: the same series, values, HELP and TYPE lines, in the
 * Prometheus text format and in the JSON the cluster aggregation sums.
 */
import { AggregatorRegistry, Counter, Histogram, Registry, type RegistryContentType } from 'prom-client';
import { describe, expect, it } from 'vitest';
import { HotCounter, HotHistogram } from '../../src/observability/hot-metrics.js';

const BUCKETS = [0.001, 0.01, 0.1, 1];

/** Each line with its labels in name order: the format leaves label order free. */
function normalized(text: string): string[] {
  return text
    .split('\n')
    .filter((line) => line !== '')
    .map((line) => line.replace(/\{([^}]*)\}/, (_, inner: string) => `{${inner.split(',').sort().join(',')}}`))
    .sort();
}

function observeAll(count: { labels(...v: string[]): { inc(): void } }, histogram: { labels(...v: string[]): { observe(x: number): void } }): void {
  const samples: Array<[string, string, number]> = [
    ['api', '/v1/a', 0.0004],
    ['api', '/v1/a', 0.001],
    ['api', '/v1/a', 0.05],
    ['api', '/v1/b', 3],
    ['crm', '/v1/"quoted"\\path', 0.2],
  ];
  for (const [service, route, seconds] of samples) {
    count.labels(service, route).inc();
    histogram.labels(service, route).observe(seconds);
  }
}

describe('hot metrics', () => {
  it('scrape as prom-client would: text and cluster JSON', async () => {
    const ours = new Registry<RegistryContentType>();
    const theirs = new Registry<RegistryContentType>();
    const options = { name: 'x_requests_total', help: 'Requests.', labelNames: ['service', 'route'] };
    const histogramOptions = { name: 'x_duration_seconds', help: 'Duration.', labelNames: ['service', 'route'], buckets: BUCKETS };
    observeAll(new HotCounter({ ...options, registers: [ours] }), new HotHistogram({ ...histogramOptions, registers: [ours] }));
    observeAll(new Counter({ ...options, registers: [theirs] }), new Histogram({ ...histogramOptions, registers: [theirs] }));

    const text = await ours.metrics();
    expect(text).toContain('x_duration_seconds_bucket{');
    expect(normalized(text)).toEqual(normalized(await theirs.metrics()));

    // Two workers' registries summed, as /metrics under `workers` does.
    const json = await ours.getMetricsAsJSON();
    const summed = AggregatorRegistry.aggregate([json, json]);
    const expected = AggregatorRegistry.aggregate([await theirs.getMetricsAsJSON(), await theirs.getMetricsAsJSON()]);
    expect(normalized(await summed.metrics())).toEqual(normalized(await expected.metrics()));
    expect(await summed.metrics()).toMatch(/x_requests_total\{[^}]*route="\/v1\/a"[^}]*\} 6/);

    // The OpenMetrics format (the registry renames counters in place, so last).
    ours.setContentType(Registry.OPENMETRICS_CONTENT_TYPE);
    theirs.setContentType(Registry.OPENMETRICS_CONTENT_TYPE);
    expect(normalized(await ours.metrics())).toEqual(normalized(await theirs.metrics()));
  });

  it('a registry reset zeroes the series, and children bound before it keep counting', async () => {
    const registry = new Registry();
    const counter = new HotCounter({ name: 'z_total', help: 'z', labelNames: ['a'], registers: [registry] });
    const histogram = new HotHistogram({ name: 'z_seconds', help: 'z', labelNames: ['a'], buckets: BUCKETS, registers: [registry] });
    const count = counter.labels('x');
    const duration = histogram.labels('x');
    count.inc();
    duration.observe(0.5);
    registry.resetMetrics();
    expect(await registry.metrics()).toMatch(/z_total\{a="x"\} 0/);
    count.inc();
    duration.observe(0.5);
    const text = await registry.metrics();
    expect(text).toMatch(/z_total\{a="x"\} 1/);
    expect(text).toMatch(/z_seconds_count\{a="x"\} 1/);
  });

  it('refuses label values that do not match the label names', () => {
    const counter = new HotCounter({ name: 'y_total', help: 'y', labelNames: ['a', 'b'], registers: [] });
    expect(() => counter.labels('only-one')).toThrow(/expected 2 label values/);
  });
});
