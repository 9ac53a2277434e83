/**
 * The counter and histograms every request touches, kept as plain numbers per label set and read by
 * the registry through the same `get()` result prom-client's own metrics give (so /metrics, the
 * OpenMetrics format and the cluster aggregation treat them alike).
 *
 * Why not prom-client's Counter and Histogram here: a child from their `labels()` only binds the label
 * object, and every inc/observe still validates the labels and hashes them (sorting the names, joining
 * strings); three times per request that was ~4% of the proxy's busy CPU (npm run profile). Here a
 * child is found once per label set (a Map lookup by the caller) and an observation is a bucket search
 * and three additions.
 */
import type { Metric, Registry, RegistryContentType } from 'prom-client';

interface MetricValue {
  readonly labels: Record<string, string | number>;
  readonly value: number;
  readonly metricName?: string;
}

interface MetricJson {
  readonly name: string;
  readonly help: string;
  readonly type: 'counter' | 'histogram';
  readonly values: MetricValue[];
  readonly aggregator: 'sum';
}

interface HotMetricOptions {
  readonly name: string;
  readonly help: string;
  readonly labelNames: readonly string[];
  readonly registers: ReadonlyArray<Registry<RegistryContentType>>;
}

function labelsOf(names: readonly string[], values: readonly string[]): Record<string, string> {
  if (values.length !== names.length) throw new Error(`expected ${names.length} label values (${names.join(', ')}), got ${values.length}`);
  const labels: Record<string, string> = {};
  names.forEach((name, i) => {
    labels[name] = values[i] as string;
  });
  return labels;
}

abstract class HotMetric<Child> {
  readonly name: string;
  readonly help: string;
  readonly aggregator = 'sum' as const;
  readonly #labelNames: readonly string[];
  protected readonly series = new Map<string, { labels: Record<string, string>; child: Child }>();

  constructor(options: HotMetricOptions) {
    this.name = options.name;
    this.help = options.help;
    this.#labelNames = options.labelNames;
    // The registry asks only for name, get() and reset(); prom-client's own type lists more.
    for (const registry of options.registers) registry.registerMetric(this as unknown as Metric);
  }

  /** The child for these label values (in labelNames order), created on first use. */
  labels(...values: string[]): Child {
    const key = values.join('\u0000');
    const known = this.series.get(key);
    if (known !== undefined) return known.child;
    const child = this.newChild();
    this.series.set(key, { labels: labelsOf(this.#labelNames, values), child });
    return child;
  }

  /**
   * Zeroes every series in place (the registry's resetMetrics()). Unlike prom-client, which drops the
   * series, children handed out stay valid: callers keep them bound.
   */
  reset(): void {
    for (const { child } of this.series.values()) this.zero(child);
  }

  protected abstract newChild(): Child;
  protected abstract zero(child: Child): void;
}

export interface CounterChild {
  inc(by?: number): void;
}

export class HotCounter extends HotMetric<CounterChild & { value: number }> {
  readonly type = 'counter' as const;

  protected newChild(): CounterChild & { value: number } {
    return {
      value: 0,
      inc(by = 1) {
        this.value += by;
      },
    };
  }

  protected zero(child: CounterChild & { value: number }): void {
    child.value = 0;
  }

  async get(): Promise<MetricJson> {
    const values = [...this.series.values()].map(({ labels, child }) => ({ labels, value: child.value }));
    return { name: this.name, help: this.help, type: this.type, values, aggregator: this.aggregator };
  }
}

export interface HistogramChild {
  observe(value: number): void;
}

interface HistogramSeries extends HistogramChild {
  /** Per bucket (not cumulative); the last slot counts values above every bound. */
  readonly counts: Float64Array;
  sum: number;
  count: number;
}

export class HotHistogram extends HotMetric<HistogramSeries> {
  readonly type = 'histogram' as const;
  readonly #bounds: readonly number[];

  constructor(options: HotMetricOptions & { readonly buckets: readonly number[] }) {
    super(options);
    this.#bounds = [...options.buckets].sort((a, b) => a - b);
  }

  protected newChild(): HistogramSeries {
    const bounds = this.#bounds;
    return {
      counts: new Float64Array(bounds.length + 1),
      sum: 0,
      count: 0,
      observe(value) {
        if (!Number.isFinite(value)) return;
        let bucket = 0;
        while (bucket < bounds.length && value > (bounds[bucket] as number)) bucket++;
        this.counts[bucket] = (this.counts[bucket] as number) + 1;
        this.sum += value;
        this.count++;
      },
    };
  }

  protected zero(child: HistogramSeries): void {
    child.counts.fill(0);
    child.sum = 0;
    child.count = 0;
  }

  /** prom-client's histogram layout: cumulative `_bucket` per bound and `+Inf`, then `_sum` and `_count`. */
  async get(): Promise<MetricJson> {
    const values: MetricValue[] = [];
    for (const { labels, child } of this.series.values()) {
      let cumulative = 0;
      this.#bounds.forEach((bound, i) => {
        cumulative += child.counts[i] as number;
        values.push({ labels: { ...labels, le: bound }, value: cumulative, metricName: `${this.name}_bucket` });
      });
      values.push({ labels: { ...labels, le: '+Inf' }, value: child.count, metricName: `${this.name}_bucket` });
      values.push({ labels, value: child.sum, metricName: `${this.name}_sum` });
      values.push({ labels, value: child.count, metricName: `${this.name}_count` });
    }
    return { name: this.name, help: this.help, type: this.type, values, aggregator: this.aggregator };
  }
}
