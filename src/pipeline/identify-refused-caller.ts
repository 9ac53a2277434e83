/**
 * Stage 1b, on a refusal only: who sent a request whose target stage 1 refused as probing (a path
 * servers read differently: errors.ts AirlockError.probing), which it does before anyone is
 * authenticated. Found by review: such a 400 named no agent, so the anomaly rule denial_burst never
 * counted it, and an agent probing with non-canonical paths (`..`, `//`, `%2e%2e`, `;`) went unseen
 * however often it tried. A refused shape (two Content-Type headers, a coded body) is not named: it
 * is not counted either.
 *
 * The caller is read as stage 2 would read it: a known agent token, a live session that still stands, or
 * a workload JWT that verifies; not revoked, nor locked down, with shared state fresh enough to say so.
 * Anything less leaves the request unnamed and its refusal uncounted, as before. The answer is the
 * refusal already decided, whoever the caller turns out to be: this names the caller for the record and
 * the detector, and is never itself a reason to answer otherwise (no 401 for a bad token, no 503).
 */
import { AirlockError } from '../errors.js';
import { authenticateAgent, type Principal } from './authenticate-agent.js';
import { checkPrincipalRevocations, checkStateFresh } from './check-revocations.js';
import type { ProxyRuntime } from './proxy-runtime.js';

/** Synchronous for agent and session tokens (the refusal waits for no promise); a promise for a workload JWT. */
export function identifyRefusedCaller(runtime: ProxyRuntime, rawHeaders: readonly string[], requestId: string): Principal | null | Promise<Principal | null> {
  let authenticated: Principal | Promise<Principal>;
  try {
    authenticated = authenticateAgent(rawHeaders, runtime.policy, runtime.state, runtime.jwt, runtime.tokenHashes, runtime.nowMs());
  } catch (error) {
    return unnamed(runtime, error, requestId);
  }
  if (authenticated instanceof Promise) {
    return authenticated.then(
      function standingJwtCaller(principal) {
        return standing(runtime, principal, requestId);
      },
      function refusedJwtCaller(error: unknown) {
        return unnamed(runtime, error, requestId);
      },
    );
  }
  return standing(runtime, authenticated, requestId);
}

/** The principal, unless the pipeline would refuse it at stage 2 for its revocation or stale state. */
function standing(runtime: ProxyRuntime, principal: Principal, requestId: string): Principal | null {
  try {
    checkStateFresh(runtime.state, runtime.limits.stateStaleAfterMs, runtime.nowMs());
    // A revoked agent's requests are its revocation at work, not probing (record-outcome.ts says the same
    // of its 401s): left unnamed, they raise no event for a suspension already in force.
    checkPrincipalRevocations(runtime.state, principal);
    return principal;
  } catch (error) {
    return unnamed(runtime, error, requestId);
  }
}

/**
 * A caller stage 2 would refuse is simply not named. Anything else is a bug, logged, and the request
 * still gets the refusal it was given rather than a 500.
 */
function unnamed(runtime: ProxyRuntime, error: unknown, requestId: string): null {
  if (!(error instanceof AirlockError)) runtime.logger.error({ request_id: requestId, err: error }, 'naming the caller of a refused request failed; it is answered and audited as refused, with no agent');
  return null;
}
