/**
 * ConnectionGate (upstream/connection-gate.ts): a service's requests with its upstream at once; the rest
 * wait in arrival order, and one that gives up (its deadline, its agent gone) leaves no trace.
 */
import { describe, expect, it } from 'vitest';
import { ConnectionGate, type GateWaiter } from '../../src/upstream/connection-gate.js';

function waiter(name: string, admitted: string[]): GateWaiter {
  return { admit: () => void admitted.push(name) };
}

const turn = (): Promise<void> => new Promise((resolve) => queueMicrotask(resolve));

describe('ConnectionGate', () => {
  it('lets in up to its slots at once; the rest wait, and each slot given back goes to the first waiting', async () => {
    const gate = new ConnectionGate(2);
    expect(gate.tryEnter()).toBe(true);
    expect(gate.tryEnter()).toBe(true);
    expect(gate.tryEnter()).toBe(false);
    const admitted: string[] = [];
    for (const name of ['a', 'b', 'c']) gate.wait(waiter(name, admitted));
    gate.leave();
    await turn();
    expect(admitted).toEqual(['a']);
    gate.leave();
    gate.leave();
    await turn();
    expect(admitted).toEqual(['a', 'b', 'c']);
    expect(gate.waiting).toBe(0);
    // b and c give theirs back: two free again, a third is refused.
    gate.leave();
    gate.leave();
    expect(gate.tryEnter()).toBe(true);
    expect(gate.tryEnter()).toBe(true);
    expect(gate.tryEnter()).toBe(false);
  });

  it('a waiter that gives up is not let in, and takes no slot', async () => {
    const gate = new ConnectionGate(1);
    expect(gate.tryEnter()).toBe(true);
    const admitted: string[] = [];
    const gone = waiter('gone', admitted);
    gate.wait(gone);
    gate.wait(waiter('next', admitted));
    expect(gate.cancel(gone)).toBe(true);
    expect(gate.cancel(gone)).toBe(false);
    gate.leave();
    await turn();
    expect(admitted).toEqual(['next']);
  });

  it('a newcomer does not pass those waiting, even at the moment a slot comes back', async () => {
    const gate = new ConnectionGate(1);
    expect(gate.tryEnter()).toBe(true);
    const admitted: string[] = [];
    gate.wait(waiter('first', admitted));
    gate.leave();
    // The slot is the first waiter's, though it is let in only in the next microtask.
    expect(gate.tryEnter()).toBe(false);
    await turn();
    expect(admitted).toEqual(['first']);
  });
});
