/**
 * Stage 2c and 5b: the kill switch. Revocations live in the governance state (kept in data_dir, shared
 * through Redis when scaled out) and are looked up in memory on every request, so they take effect on
 * the very next one; streams already flowing are ended by the kill switch (policy/kill-switch.ts).
 */
import { AirlockError, OPERATOR_FINDS_WHY, OperatorReason } from '../errors.js';
import type { Revocation } from '../state/governance-records.js';
import type { GovernanceState } from '../state/governance-state.js';
import type { Principal } from './authenticate-agent.js';

/**
 * Who made a revocation and why are the operators' (admin API GET /v1/revocations, the audit record's
 * reason, the log line), never the refused agent's: the agent an incident is about would read the
 * incident's reason and its responder's name (found by a fresh-user walkthrough). The agent's detail
 * says what happened and what to do, in words fixed here; it does not say who, not even "an operator":
 * the anomaly detector revokes agents too (respond-to-anomaly.ts).
 */
function revokedBecause(what: string, revocation: Revocation): OperatorReason {
  return new OperatorReason(`${what} (by ${revocation.by}${revocation.reason === '' ? '' : `: ${revocation.reason}`})`);
}

export const INVALID_TOKEN = Object.freeze({ 'www-authenticate': 'Bearer realm="airlock", error="invalid_token"' });

/**
 * Shared state (Redis) unreachable past state.stale_after: what this replica knows may be out of date
 * (a revocation elsewhere it did not hear of), so it refuses rather than guess.
 */
export function checkStateFresh(state: GovernanceState, staleAfterMs: number, now: number): void {
  const since = state.unreachableSince;
  if (since !== null && now - since > staleAfterMs) {
    throw new AirlockError('state_unavailable', `Shared state (Redis) has been unreachable for ${Math.round((now - since) / 1000)} s, longer than state.stale_after; requests are refused until it is back, so no revocation is missed.`);
  }
}

/** Lockdown, a revoked agent, a revoked session (or an ancestor of it). */
export function checkPrincipalRevocations(state: GovernanceState, principal: Principal): void {
  const lockdown = state.revocation('all', '*');
  if (lockdown !== null) {
    throw new AirlockError('locked_down', `Airlock is locked down; no request is forwarded until an operator lifts it. ${OPERATOR_FINDS_WHY}`, {
      cause: revokedBecause('Airlock is locked down', lockdown),
    });
  }
  const agent = state.revocation('agent', principal.agent.name);
  if (agent !== null) {
    const name = principal.agent.name;
    throw new AirlockError('unauthenticated', `Agent ${name} was revoked; its tokens and sessions are refused until an operator restores it: ask one to. ${OPERATOR_FINDS_WHY}`, {
      headers: INVALID_TOKEN,
      cause: revokedBecause(`Agent ${name} was revoked`, agent),
    });
  }
  for (let session = principal.session; session !== null; ) {
    const revoked = state.revocation('session', session.id);
    if (revoked !== null) {
      throw new AirlockError('unauthenticated', `Session ${session.id} was revoked, and with it the sessions narrowed from it. ${OPERATOR_FINDS_WHY}`, {
        headers: INVALID_TOKEN,
        cause: revokedBecause(`Session ${session.id} was revoked`, revoked),
      });
    }
    if (session.parent === null) break;
    const parent = state.session(session.parent);
    // A session never outlives the one it was narrowed from (its expiry is capped by the parent's): a
    // parent gone from the state was ended or revoked, so its children end with it. Without this, a
    // child minted while the parent was being revoked (its request body still arriving) lived on.
    if (parent === null) {
      throw new AirlockError('unauthenticated', `Session ${session.id} was narrowed from session ${session.parent}, which has ended or was revoked; its sessions end with it.`, { headers: INVALID_TOKEN });
    }
    session = parent;
  }
}

/**
 * After a wait (a held approval), everything is checked again: the agent, its session and the target
 * may have been revoked meanwhile, and a request must not be forwarded on a decision taken before that.
 */
export function recheckAfterWait(state: GovernanceState, principal: Principal, service: string, credentialRef: string, staleAfterMs: number, now: number): void {
  recheckPrincipalAfterWait(state, principal, staleAfterMs, now);
  checkTargetRevocations(state, service, credentialRef);
}

/** The caller's part of recheckAfterWait: state still fresh, the session not ended, nothing revoked. */
export function recheckPrincipalAfterWait(state: GovernanceState, principal: Principal, staleAfterMs: number, now: number): void {
  // Shared state may have gone away during the wait: what this replica knows could then be out of date.
  checkStateFresh(state, staleAfterMs, now);
  if (principal.session !== null && state.session(principal.session.id) === null) {
    throw new AirlockError('unauthenticated', `Session ${principal.session.id} ended while the request waited; it was not sent.`, { headers: INVALID_TOKEN });
  }
  // A workload JWT past its exp (RFC 7519 4.1.4: it MUST NOT be accepted for processing), or past iat +
  // max_token_age, ends what it authenticated as a session does (found by review: a request held for
  // approval up to approval_timeout outlived a 5-minute CI token and was sent; a mint whose body came
  // after the JWT expired kept a session already over and answered 503 blaming a restore of the agent).
  if (principal.credentialEndsAt !== undefined && principal.credentialEndsAt <= now) {
    throw new AirlockError('unauthenticated', 'The workload JWT this request was made with expired while the request waited; it was not sent. Send it again with a fresh JWT.', { headers: INVALID_TOKEN });
  }
  checkPrincipalRevocations(state, principal);
}

/** A suspended service, a revoked credential reference. */
export function checkTargetRevocations(state: GovernanceState, service: string, credentialRef: string): void {
  const suspended = state.revocation('service', service);
  if (suspended !== null) {
    throw new AirlockError('service_suspended', `Service ${service} is suspended; requests to it are refused until an operator lifts the suspension. ${OPERATOR_FINDS_WHY}`, {
      cause: revokedBecause(`Service ${service} is suspended`, suspended),
    });
  }
  const revoked = state.revocation('credential', credentialRef);
  if (revoked !== null) {
    throw new AirlockError('credential_revoked', `The credential ${credentialRef} is revoked; requests that need it are refused until it is rotated and restored. ${OPERATOR_FINDS_WHY}`, {
      credentialRef,
      cause: revokedBecause(`The credential ${credentialRef} is revoked`, revoked),
    });
  }
}
