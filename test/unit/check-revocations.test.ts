/**
 * A session never outlives the one it was narrowed from, so a session whose parent is gone from the
 * governance state (ended or revoked) is refused wherever it is used (src/pipeline/check-revocations.ts).
 * Here the state is loaded from a file that holds the child but not its parent, as a replica could find
 * it; the real state and the real check.
 */
import { rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { AirlockError, operatorReason } from '../../src/errors.js';
import type { Principal } from '../../src/pipeline/authenticate-agent.js';
import { checkPrincipalRevocations, checkTargetRevocations } from '../../src/pipeline/check-revocations.js';
import type { AgentPolicy } from '../../src/policy/compile-policy.js';
import { FileStateBackend } from '../../src/state/file-backend.js';
import type { Revocation, RevocationKind, SessionRecord } from '../../src/state/governance-records.js';
import { GovernanceState } from '../../src/state/governance-state.js';
import { tempDir } from '../helpers/start-proxy.js';

function session(id: string, parent: string | null): SessionRecord {
  const now = Date.now();
  return { id, tokenHash: `sha256:${id.padEnd(64, '0').slice(0, 64)}`, agent: 'bot', parent, scopes: { api: ['read'] }, justification: 'test', taskId: null, createdAt: now, expiresAt: now + 600_000 };
}

/** Every state opened here and its directory: closed and removed once the file is done. */
const opened: Array<{ dir: string; state: GovernanceState }> = [];
afterAll(async () => {
  for (const { dir, state } of opened) {
    await state.close();
    rmSync(dir, { recursive: true, force: true });
  }
});

async function stateWith(sessions: SessionRecord[]): Promise<GovernanceState> {
  const dir = tempDir('check-revocations-');
  const file = join(dir, 'state.jsonl');
  writeFileSync(file, sessions.map((s) => `${JSON.stringify({ type: 'session.created', session: s })}\n`).join(''));
  const state = new GovernanceState(new FileStateBackend(file));
  opened.push({ dir, state });
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

/**
 * Who revoked and why are the operators': the refused agent gets a fixed detail, and the error carries
 * both as its OperatorReason (the audit record's reason and the log line; found by a fresh-user
 * walkthrough, where the agent read "(by alice: ...)"). A stub state holding one revocation at a time.
 */
describe('a refusal for a revocation', () => {
  const by = 'alice-on-call';
  const reason = 'suspected prompt injection, ticket 4711';
  const child = session('ses_child', 'ses_parent');
  const parent = session('ses_parent', null);

  function stateHolding(kind: RevocationKind, target: string): GovernanceState {
    const revocation: Revocation = { kind, target, reason, by, at: 0 };
    const sessions = new Map([child, parent].map((s) => [s.id, s]));
    return {
      revocation: (k: RevocationKind, t: string) => (k === kind && t === target ? revocation : null),
      session: (id: string) => sessions.get(id) ?? null,
    } as unknown as GovernanceState;
  }

  function refusalOf(check: () => void): AirlockError {
    try {
      check();
    } catch (error) {
      expect(error).toBeInstanceOf(AirlockError);
      return error as AirlockError;
    }
    throw new Error('not refused');
  }

  const principal: Principal = { agent, session: child, via: 'session' };
  it.each([
    { kind: 'all' as const, target: '*', code: 'locked_down', check: (state: GovernanceState) => checkPrincipalRevocations(state, principal), says: 'Airlock is locked down; no request is forwarded until an operator lifts it.' },
    { kind: 'agent' as const, target: 'bot', code: 'unauthenticated', check: (state: GovernanceState) => checkPrincipalRevocations(state, principal), says: 'Agent bot was revoked; its tokens and sessions are refused until an operator restores it: ask one to.' },
    { kind: 'session' as const, target: 'ses_child', code: 'unauthenticated', check: (state: GovernanceState) => checkPrincipalRevocations(state, principal), says: 'Session ses_child was revoked, and with it the sessions narrowed from it.' },
    { kind: 'session' as const, target: 'ses_parent', code: 'unauthenticated', check: (state: GovernanceState) => checkPrincipalRevocations(state, principal), says: 'Session ses_parent was revoked, and with it the sessions narrowed from it.' },
    { kind: 'service' as const, target: 'api', code: 'service_suspended', check: (state: GovernanceState) => checkTargetRevocations(state, 'api', 'env:API_KEY'), says: 'Service api is suspended; requests to it are refused until an operator lifts the suspension.' },
    { kind: 'credential' as const, target: 'env:API_KEY', code: 'credential_revoked', check: (state: GovernanceState) => checkTargetRevocations(state, 'api', 'env:API_KEY'), says: 'The credential env:API_KEY is revoked; requests that need it are refused until it is rotated and restored.' },
  ])('$kind $target: the agent reads what happened, not who or why; the operator reason has both', ({ kind, target, code, check, says }) => {
    const refusal = refusalOf(() => check(stateHolding(kind, target)));
    expect(refusal.code).toBe(code);
    expect(refusal.detail).toBe(`${says} An operator finds why in the audit record and the proxy log under this request id.`);
    expect(refusal.detail).not.toContain(by);
    expect(refusal.detail).not.toContain(reason);
    expect(operatorReason(refusal)).toContain(`(by ${by}: ${reason})`);
  });
});
