/**
 * /metrics with `workers` above 1: every worker answers for the whole cluster.
 *
 * node:cluster hands each admin connection to one worker, so a scrape of that worker's own registry
 * would see a different, partial count each time. The worker that gets the scrape asks the primary,
 * which collects every worker's registry through prom-client's AggregatorRegistry and sums them
 * (gauges that report shared state, the same on every worker, take the max: see metrics.ts).
 */
import cluster, { type Worker } from 'node:cluster';
import { AggregatorRegistry, type Registry } from 'prom-client';

const MESSAGE = 'airlock:cluster-metrics';
/** prom-client gives up on a worker after 5 s; the asking worker falls back a little later. */
const ANSWER_TIMEOUT_MS = 6_000;

/** The worker's link to the primary (main.ts builds it from process.send / process.on('message')). */
export interface PrimaryChannel {
  send(message: unknown): void;
  onMessage(listener: (message: unknown) => void): () => void;
}

interface MetricsMessage {
  type: typeof MESSAGE;
  id: number;
  text?: string;
  error?: string;
}

function isMetricsMessage(message: unknown): message is MetricsMessage {
  return typeof message === 'object' && message !== null && (message as { type?: unknown }).type === MESSAGE;
}

/** In the primary: answers every worker's request with the aggregated metrics. Returns how to stop. */
export function serveClusterMetrics(): () => void {
  const aggregator = new AggregatorRegistry();
  const onMessage = (worker: Worker, message: unknown): void => {
    if (!isMetricsMessage(message)) return;
    // The worker may have exited during the aggregation (up to its timeout): with a callback, a send on
    // the closed channel reports to it instead of emitting 'error' on the Worker, which ended the primary.
    const reply = (answer: MetricsMessage): void => {
      if (worker.isConnected()) worker.send(answer, () => undefined);
    };
    aggregator.clusterMetrics().then(
      (text) => reply({ type: MESSAGE, id: message.id, text }),
      (error: Error) => reply({ type: MESSAGE, id: message.id, error: error.message }),
    );
  };
  cluster.on('message', onMessage);
  return () => cluster.off('message', onMessage);
}

/**
 * In a worker: offers `registry` to the primary's aggregation and returns the function /metrics calls.
 * When the primary does not answer, the worker's own metrics are served with a comment saying so.
 */
export function clusterMetricsText(registry: Registry, primary: PrimaryChannel): () => Promise<string> {
  AggregatorRegistry.setRegistries([registry]);
  // Constructing one registers prom-client's worker-side listener that reports `registry` to the primary.
  new AggregatorRegistry();
  let next = 0;
  const waiting = new Map<number, (answer: MetricsMessage) => void>();
  primary.onMessage((message) => {
    if (isMetricsMessage(message)) waiting.get(message.id)?.(message);
  });
  return async () => {
    const id = next++;
    const answer = await new Promise<MetricsMessage | null>((resolve) => {
      const timer = setTimeout(() => resolve(null), ANSWER_TIMEOUT_MS);
      waiting.set(id, (message) => {
        clearTimeout(timer);
        resolve(message);
      });
      primary.send({ type: MESSAGE, id });
    }).finally(() => waiting.delete(id));
    if (answer?.text !== undefined) return answer.text;
    const why = answer?.error ?? 'no answer from the primary in time';
    return `# airlock: this worker's metrics only (cluster aggregation failed: ${why.replace(/\s+/g, ' ')})\n${await registry.metrics()}`;
  };
}
