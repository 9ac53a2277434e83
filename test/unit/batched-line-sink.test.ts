/**
 * The log sink of `airlock serve` (batched-line-sink.ts): lines logged within the window (WINDOW_MS)
 * of the first pending one reach the stream in one write, in order; flush() writes what is pending at
 * once. The tests use a longer window, so that a slow machine cannot end it between two turns.
 */
import { describe, expect, it } from 'vitest';
import { BatchedLineSink } from '../../src/observability/batched-line-sink.js';
import { eventually } from '../helpers/operator.js';

const WINDOW_MS = 200;
const nextTurn = (): Promise<void> => new Promise((resolve) => setImmediate(resolve));

describe('BatchedLineSink', () => {
  it('joins the lines of several turns into one write, in order, within the window', async () => {
    const writes: string[] = [];
    const sink = new BatchedLineSink({ write: (text: string) => writes.push(text) }, WINDOW_MS);
    sink.write('one\n');
    await nextTurn();
    sink.write('two\n');
    await nextTurn();
    sink.write('three\n');
    // Nothing is written at the end of the turn a line was logged in...
    expect(writes).toEqual([]);
    // ...and all of it together once the window ends.
    await eventually(`one write within ${WINDOW_MS} ms`, () => (writes.length > 0 ? writes : undefined));
    expect(writes).toEqual(['one\ntwo\nthree\n']);
  });

  it('flush() writes at once, and the window then writes nothing more', async () => {
    const writes: string[] = [];
    const sink = new BatchedLineSink({ write: (text: string) => writes.push(text) }, WINDOW_MS);
    sink.write('a\n');
    sink.flush();
    expect(writes).toEqual(['a\n']);
    await new Promise((resolve) => setTimeout(resolve, WINDOW_MS * 3));
    expect(writes).toEqual(['a\n']);
  });
});
