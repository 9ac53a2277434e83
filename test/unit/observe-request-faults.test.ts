/**
 * A fault in anomaly detection or in its response (suspension, alert, webhook) must not cost a request
 * its metrics, its audit record or its answer: observeRequest runs before the record is written and the
 * answer sent (record-outcome.ts), so a throw escaping it would lose both. Checked here with the real
 * metrics registry, a real detector and a real logger; only the one part under test is made to throw.
 */
import { pino } from 'pino';
import { describe, expect, it } from 'vitest';
import { IsoTime } from '../../src/observability/iso-time.js';
import { createMetrics } from '../../src/observability/metrics.js';
import type { RequestTrace } from '../../src/observability/tracing.js';
import { newRecord } from '../../src/pipeline/run-pipeline.js';
import { observeRequest } from '../../src/pipeline/record-outcome.js';
import type { ProxyRuntime } from '../../src/pipeline/proxy-runtime.js';
import { AnomalyDetector, type AnomalyEvent } from '../../src/policy/anomaly-detector.js';

interface LogLine {
  level: number;
  msg: string;
  request_id?: string;
  err?: { message: string };
}

function runtimeWith(anomalies: AnomalyDetector, respondToAnomaly: (event: AnomalyEvent) => void) {
  const lines: LogLine[] = [];
  const logger = pino({ level: 'info' }, { write: (line: string) => void lines.push(JSON.parse(line) as LogLine) });
  const metrics = createMetrics();
  const runtime = { metrics, logger, anomalies, respondToAnomaly, nowMs: () => Date.now(), isoTime: new IsoTime() } as unknown as ProxyRuntime;
  return { runtime, metrics, lines };
}

function finishedTrace(): { trace: RequestTrace; finished: () => number } {
  let count = 0;
  const trace: RequestTrace = {
    traceId: null,
    step: () => () => undefined,
    upstream: () => ({ end: () => undefined }),
    finish: () => void count++,
  };
  return { trace, finished: () => count };
}

function answeredRecord(runtime: ProxyRuntime) {
  const record = newRecord(runtime, 'GET', '127.0.0.1');
  Object.assign(record, { agent: 'bot', service: 'api', route: '/v1/models', scope: 'models:read', decision: 'allow', status: 200, upstream_status: 200 });
  return record;
}

async function requestsCounted(metrics: ReturnType<typeof createMetrics>): Promise<number> {
  const text = await metrics.registry.metrics();
  const line = text.split('\n').find((l) => l.startsWith('airlock_requests_total{') && l.includes('service="api"') && l.includes('decision="allow"'));
  return line === undefined ? 0 : Number(line.split(' ').at(-1));
}

const detectorSpec = { enabled: true } as unknown as ConstructorParameters<typeof AnomalyDetector>[0];

describe('observeRequest when anomaly detection fails', () => {
  it('a throwing detector is logged with the request id; metrics and the trace are still done', async () => {
    const detector = new AnomalyDetector(detectorSpec);
    Object.defineProperty(detector, 'observe', { value: () => { throw new Error('detector state corrupt'); } });
    const { runtime, metrics, lines } = runtimeWith(detector, () => undefined);
    const record = answeredRecord(runtime);
    const { trace, finished } = finishedTrace();

    expect(() => observeRequest(runtime, record, trace, '/api/v1/models', true)).not.toThrow();

    expect(await requestsCounted(metrics)).toBe(1);
    expect(finished()).toBe(1);
    const logged = lines.filter((line) => line.msg.startsWith('anomaly detection failed'));
    expect(logged).toHaveLength(1);
    expect(logged[0]).toMatchObject({ level: 50, request_id: record.request_id, err: { message: 'detector state corrupt' } });
    // The record is untouched: the request keeps its outcome.
    expect(record).toMatchObject({ decision: 'allow', status: 200, code: null });
  });

  it('a throwing response to an event is caught the same way, and the next request is observed as usual', async () => {
    const detector = new AnomalyDetector(detectorSpec);
    const event = { id: 'an_1', rule: 'new_route', action: 'alert', agent: 'bot', service: 'api', summary: 's', evidence: {}, at: 0 } as unknown as AnomalyEvent;
    let calls = 0;
    Object.defineProperty(detector, 'observe', { value: () => (++calls === 1 ? [event] : []) });
    let responses = 0;
    const { runtime, metrics, lines } = runtimeWith(detector, () => {
      responses++;
      throw new Error('webhook queue full');
    });
    const { trace } = finishedTrace();

    const first = answeredRecord(runtime);
    expect(() => observeRequest(runtime, first, trace, '/api/v1/models', true)).not.toThrow();
    const second = answeredRecord(runtime);
    expect(() => observeRequest(runtime, second, trace, '/api/v1/models', true)).not.toThrow();

    expect(responses).toBe(1);
    expect(calls).toBe(2);
    expect(await requestsCounted(metrics)).toBe(2);
    const logged = lines.filter((line) => line.msg.startsWith('anomaly detection failed'));
    expect(logged.map((line) => line.request_id)).toEqual([first.request_id]);
    expect(logged[0]?.err?.message).toBe('webhook queue full');
  });

  it('with detection switched off the detector is not asked at all', async () => {
    const detector = new AnomalyDetector({ enabled: false } as unknown as ConstructorParameters<typeof AnomalyDetector>[0]);
    let asked = 0;
    Object.defineProperty(detector, 'observe', { value: () => { asked++; return []; } });
    const { runtime, metrics } = runtimeWith(detector, () => undefined);
    observeRequest(runtime, answeredRecord(runtime), finishedTrace().trace, null, false);
    expect(asked).toBe(0);
    expect(await requestsCounted(metrics)).toBe(1);
  });
});
