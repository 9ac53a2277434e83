/**
 * A session never outlives the one it was narrowed from, so a session whose parent is gone from the
 * governance state (ended or revoked) is refused wherever it is used (src/pipeline/check-revocations.ts).
 * Here the state is loaded from a file that holds the child but not its parent, as a replica could find
 * it; the real state and the real check.
 */
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { AirlockError } from '../../src/errors.js';
import type { Principal } from '../../src/pipeline/authenticate-agent.js';
import { checkPrincipalRevocations } from '../../src/pipeline/check-revocations.js';
import type { AgentPolicy } from '../../src/policy/compile-policy.js';
import { FileStateBackend } from '../../src/state/file-backend.js';
import type { SessionRecord } from '../../src/state/governance-records.js';
import { GovernanceState } from '../../src/state/governance-state.js';
import { tempDir } from '../helpers/start-proxy.js';

function session(id: string, parent: string | null): SessionRecord {
  const now = Date.now();
  return { id, tokenHash: `sha256:${id.padEnd(64, '0').slice(0, 64)}`, agent: 'bot', parent, scopes: { api: ['read'] }, justification: 'test', taskId: null, createdAt: now, expiresAt: now + 600_000 };
}

async function stateWith(sessions: SessionRecord[]): Promise<GovernanceState> {
  const file = join(tempDir('check-revocations-'), 'state.jsonl');
  writeFileSync(file, sessions.map((s) => `${JSON.stringify({ type: 'session.created', session: s })}\n`).join(''));
  const state = new GovernanceState(new FileStateBackend(file));
  await state.start();
  return state;
}

const agent = { name: 'bot' } as unknown as AgentPolicy;

describe('a session whose parent is gone', () => {
  it('is refused (401), naming the parent, while its parent present lets it through', async () => {
    const child = session('ses_child', 'ses_parent');
    const orphaned = await stateWith([child]);
    expect(orphaned.session('ses_child')).not.toBeNull();
    const principal: Principal = { agent, session: child, via: 'session' };
    let refusal: unknown = null;
    try {
      checkPrincipalRevocations(orphaned, principal);
    } catch (error) {
      refusal = error;
    }
    expect(refusal).toBeInstanceOf(AirlockError);
    expect((refusal as AirlockError).code).toBe('unauthenticated');
    expect((refusal as AirlockError).detail).toContain('narrowed from session ses_parent, which has ended or was revoked');

    const whole = await stateWith([session('ses_parent', null), child]);
    expect(() => checkPrincipalRevocations(whole, principal)).not.toThrow();
  });
});
