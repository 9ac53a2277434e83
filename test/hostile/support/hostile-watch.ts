/**
 * What every hostile case must leave behind, checked the same way in every attack-class file:
 *  - the process stays up and raises no unhandled rejection or uncaught exception (the proxy runs in
 *    the test's own process, so a crash or a stray rejection lands here);
 *  - the event loop stays responsive: p99 delay under 250 ms over the whole file (perf_hooks histogram);
 *    the bound catches a loop blocked by the attack (a synchronous scan of hostile input runs for
 *    seconds), not the scheduling noise of a 2-core machine running other test files beside it (100 ms
 *    failed at 105.6 ms once, while the machine also built another checkout)
 *  - a refusal is a clear RFC 9457 problem (application/problem+json, with type, title, status, detail
 *    and Airlock's `error` code), carries a request id, and has an audit record with that id;
 *  - no canary, in any encoding, in responses, logs or audit (assert-no-leak).
 *
 * Usage: `const watch = hostileWatch()` at the top of a describe, `watch.start()` in beforeAll,
 * `watch.assertHealthy()` in a final test (or afterAll).
 */
import { monitorEventLoopDelay, type IntervalHistogram } from 'node:perf_hooks';
import { expect } from 'vitest';
import type { AuditRecord } from '../../../src/observability/audit-record.js';
import type { ProxyFixture } from '../../helpers/start-proxy.js';

export const PROBLEM_JSON = /^application\/problem\+json\s*(;|$)/;

export interface HostileWatch {
  start(): void;
  /** Stops watching and asserts: no unhandled rejection or uncaught exception, event-loop p99 < 250 ms. */
  assertHealthy(): { p99Ms: number; maxMs: number };
  readonly failures: readonly unknown[];
}

export function hostileWatch(): HostileWatch {
  const failures: unknown[] = [];
  let histogram: IntervalHistogram | null = null;
  const onRejection = (reason: unknown): void => void failures.push(reason);
  const onException = (error: unknown): void => void failures.push(error);
  return {
    failures,
    start() {
      process.on('unhandledRejection', onRejection);
      process.on('uncaughtException', onException);
      histogram = monitorEventLoopDelay({ resolution: 10 });
      histogram.enable();
    },
    assertHealthy() {
      process.off('unhandledRejection', onRejection);
      process.off('uncaughtException', onException);
      histogram?.disable();
      const p99Ms = (histogram?.percentile(99) ?? 0) / 1e6;
      const maxMs = (histogram?.max ?? 0) / 1e6;
      expect(failures.map((f) => String((f as Error)?.stack ?? f))).toEqual([]);
      expect(p99Ms, `event-loop delay p99 ${p99Ms.toFixed(1)} ms (max ${maxMs.toFixed(1)} ms)`).toBeLessThan(250);
      return { p99Ms, maxMs };
    },
  };
}

export interface ProblemShape {
  readonly type: string;
  readonly title: string;
  readonly status: number;
  readonly detail: string;
  readonly code: string;
  readonly request_id: string;
  /** The same, shaped like the OpenAI/Anthropic error member so SDKs surface Airlock's message. */
  readonly error: { readonly type: string; readonly code: string; readonly message: string };
}

/**
 * Asserts an RFC 9457 problem answer with the given status and Airlock error code; returns the problem.
 * `contentType` and `body` come from whatever client sent the request (raw socket or undici).
 */
export function expectProblem(answer: { status: number; contentType: string | undefined; body: string }, status: number, code: string): ProblemShape {
  expect(answer.status, answer.body).toBe(status);
  expect(answer.contentType ?? '').toMatch(PROBLEM_JSON);
  const problem = JSON.parse(answer.body) as ProblemShape;
  expect(problem.status).toBe(status);
  expect(problem.code).toBe(code);
  expect(problem.error.code).toBe(code);
  expect(problem.request_id).toMatch(/\S/);
  expect(typeof problem.title).toBe('string');
  expect(problem.detail.length).toBeGreaterThan(10);
  return problem;
}

/** Waits (bounded) for the audit record of one request id, and returns it. */
export async function auditRecordOf(proxy: ProxyFixture, requestId: string, timeoutMs = 5000): Promise<AuditRecord> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const found = proxy.auditRecords().find((r) => r.request_id === requestId);
    if (found !== undefined) return found;
    if (Date.now() > deadline) throw new Error(`no audit record for request ${requestId} within ${timeoutMs} ms`);
    await new Promise((resolve) => setTimeout(resolve, 10));
  }
}
