/**
 * A revocation kept on disk by a process that stopped during a state-store outage is replayed at the
 * next start, unless an operator lifted it since (found by review: the replay revived it on every
 * replica, a stale `all` would have locked the whole fleet down). Last writer wins by time, with a lift
 * winning only when it is more than LIFT_MARGIN_MS later (the two times may come from two replicas'
 * clocks); closer, the revocation stands (fail closed). Real files, the real embedded backend.
 */
import { existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import type { GovernanceEvent } from '../../src/state/governance-records.js';
import { FileStateBackend } from '../../src/state/file-backend.js';
import { GovernanceState, LIFT_MARGIN_MS } from '../../src/state/governance-state.js';
import { UnsavedRestrictionFiles } from '../../src/state/unsaved-restriction-files.js';

const dirs: string[] = [];
afterAll(() => {
  for (const dir of dirs) rmSync(dir, { recursive: true, force: true });
});

function revoke(at: number): GovernanceEvent {
  return { type: 'revocation.added', revocation: { kind: 'agent', target: 'bot', reason: `incident at ${at}`, by: 'ops', at } };
}

/** A data_dir whose store holds `stored` and whose unsaved-restrictions file holds `kept`; started. */
async function startWith(stored: readonly GovernanceEvent[], kept: readonly GovernanceEvent[]): Promise<{ state: GovernanceState; dir: string }> {
  const dir = mkdtempSync(join(tmpdir(), 'replay-'));
  dirs.push(dir);
  writeFileSync(join(dir, 'state.jsonl'), stored.map((e) => `${JSON.stringify(e)}\n`).join(''));
  mkdirSync(join(dir, 'unsaved-restrictions'), { mode: 0o700 });
  writeFileSync(join(dir, 'unsaved-restrictions', 'main.jsonl'), kept.map((e) => `${JSON.stringify(e)}\n`).join(''), { mode: 0o600 });
  const files = new UnsavedRestrictionFiles({ dir: join(dir, 'unsaved-restrictions'), owner: 'main', liveOwners: new Set(), logger: null });
  const state = new GovernanceState(new FileStateBackend(join(dir, 'state.jsonl')), () => 10_000, null, files);
  await state.start();
  return { state, dir };
}

describe('replaying kept revocations against later lifts', () => {
  const lift = (at: number): GovernanceEvent => ({ type: 'revocation.lifted', kind: 'agent', target: 'bot', by: 'ops', at });

  it('a revocation lifted after it was made is not revived, nor written back to the store', async () => {
    const { state, dir } = await startWith([revoke(1_000), lift(1_001 + LIFT_MARGIN_MS)], [revoke(1_000)]);
    expect(state.revocation('agent', 'bot')).toBeNull();
    await state.close();
    const stored = readFileSync(join(dir, 'state.jsonl'), 'utf8').split('\n').filter((line) => line !== '').map((line) => JSON.parse(line) as GovernanceEvent);
    expect(stored.filter((e) => e.type === 'revocation.added')).toEqual([]);
    expect(existsSync(join(dir, 'unsaved-restrictions', 'main.jsonl'))).toBe(false);
  });

  it('a revocation made after the last lift is enforced and written', async () => {
    const { state, dir } = await startWith([revoke(1_000), lift(2_000)], [revoke(3_000)]);
    expect(state.revocation('agent', 'bot')).toMatchObject({ at: 3_000 });
    await state.close();
    expect(readFileSync(join(dir, 'state.jsonl'), 'utf8')).toContain('"at":3000');
  });

  it('a lift at the same millisecond does not undo it (fail closed)', async () => {
    const { state } = await startWith([revoke(1_000), lift(2_000)], [revoke(2_000)]);
    expect(state.revocation('agent', 'bot')).toMatchObject({ at: 2_000 });
    await state.close();
  });

  it('nor does a lift up to LIFT_MARGIN_MS later: a replica whose clock is that far behind could have revoked after it', async () => {
    const { state } = await startWith([revoke(1_000), lift(2_000 + LIFT_MARGIN_MS)], [revoke(2_000)]);
    expect(state.revocation('agent', 'bot')).toMatchObject({ at: 2_000 });
    await state.close();
  });

  it('a worker relaying a revocation lifted since is not heard (adopt)', async () => {
    const liftAt = 8_000;
    const { state } = await startWith([revoke(1_000), lift(liftAt)], []);
    state.adopt(revoke(liftAt - LIFT_MARGIN_MS - 1));
    expect(state.revocation('agent', 'bot')).toBeNull();
    state.adopt(revoke(liftAt - LIFT_MARGIN_MS));
    expect(state.revocation('agent', 'bot')).toMatchObject({ at: liftAt - LIFT_MARGIN_MS });
    await state.close();
  });
});
