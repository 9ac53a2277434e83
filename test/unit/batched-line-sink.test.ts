/**
 * The log sink of `airlock serve` (batched-line-sink.ts): lines logged within the window (WINDOW_MS)
 * of the first pending one reach the stream in one write, in order; flush() writes what is pending at
 * once. The clock is vitest's fake one, so a stalled CI machine cannot end the window early.
 */
import { afterEach, beforeEach, describe, expect, it, vi } from 'vitest';
import { BatchedLineSink, WINDOW_MS } from '../../src/observability/batched-line-sink.js';

beforeEach(() => {
  vi.useFakeTimers({ toFake: ['setTimeout', 'clearTimeout'] });
});
afterEach(() => {
  vi.useRealTimers();
});

describe('BatchedLineSink', () => {
  it('joins the lines logged within the window into one write, in order, when the window ends', () => {
    const writes: string[] = [];
    const sink = new BatchedLineSink({ write: (text: string) => writes.push(text) });
    sink.write('one\n');
    vi.advanceTimersByTime(WINDOW_MS - 1);
    sink.write('two\n');
    sink.write('three\n');
    // Nothing is written before the window of the first line ends...
    expect(writes).toEqual([]);
    // ...and all of it together when it does.
    vi.advanceTimersByTime(1);
    expect(writes).toEqual(['one\ntwo\nthree\n']);
    // A later line opens a window of its own.
    sink.write('four\n');
    vi.advanceTimersByTime(WINDOW_MS);
    expect(writes).toEqual(['one\ntwo\nthree\n', 'four\n']);
  });

  it('flush() writes at once, and the window then writes nothing more', () => {
    const writes: string[] = [];
    const sink = new BatchedLineSink({ write: (text: string) => writes.push(text) });
    sink.write('a\n');
    sink.flush();
    expect(writes).toEqual(['a\n']);
    vi.advanceTimersByTime(WINDOW_MS * 3);
    expect(writes).toEqual(['a\n']);
  });
});
