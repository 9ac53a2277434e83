/**
 * A request from the moment it is sent upstream until its answer is done, as the kill switch sees it
 * (kill-switch.ts). When what it runs under is revoked, or its session or workload JWT ends, while nothing of the
 * answer has reached the agent, the agent gets the refusal its next request would get (401 for a
 * revoked agent or ended session, 503 for a suspended service or revoked credential), audited with
 * that code; the upstream request is aborted, and its answer never sent. Between an answer held for
 * retry_on and its retry, the retry is not sent and the agent gets the refusal once the credential's
 * refetch is back. Once the answer's headers are out, the only signal left is to cut the response
 * (RFC 9112 9.6 leaves no other).
 */
import type { ServerResponse } from 'node:http';
import { AirlockError, asAirlockError, operatorReason } from '../errors.js';
import type { LiveExchange } from '../policy/kill-switch.js';
import type { Principal } from './authenticate-agent.js';
import { INVALID_TOKEN, recheckAfterWait } from './check-revocations.js';
import type { ExchangeSlot, Interruptible } from './forward-request.js';
import type { ProxyRuntime } from './proxy-runtime.js';

/** A class, not an object of closures: one is made per forwarded request. */
export class TrackedExchange implements LiveExchange, ExchangeSlot {
  readonly agent: string;
  readonly sessions: readonly string[];
  readonly service: string;
  readonly credential: string;
  readonly res: ServerResponse;
  readonly endsInMs: number | null;
  /** The relay sending the request now (forward-request.ts), null between a refused send and its retry. */
  relay: Interruptible | null = null;
  refusal: AirlockError | null = null;
  /** Why a response already under way was cut (its record's reason; the agent had its status already). */
  cutReason: string | null = null;
  readonly #runtime: ProxyRuntime;
  readonly #principal: Principal;
  /** The workload JWT ends first (endsInMs is its end, not the session's). */
  readonly #endsWithJwt: boolean;
  /** Ended by its clock (expire), not by a revocation. */
  #expired = false;

  constructor(runtime: ProxyRuntime, principal: Principal, sessions: readonly string[], service: string, credential: string, res: ServerResponse) {
    this.#runtime = runtime;
    this.#principal = principal;
    this.agent = principal.agent.name;
    this.sessions = sessions;
    this.service = service;
    this.credential = credential;
    this.res = res;
    // A session's end, or the workload JWT's (its exp, or iat + max_token_age; RFC 7519 4.1.4), whichever
    // comes first: a stream begun under either is cut when it ends, as a new request would be refused.
    const endsAt = Math.min(principal.session?.expiresAt ?? Infinity, principal.credentialEndsAt ?? Infinity);
    this.endsInMs = endsAt === Infinity ? null : endsAt - runtime.nowMs();
    this.#endsWithJwt = principal.credentialEndsAt !== undefined && principal.credentialEndsAt === endsAt;
  }

  expire(): void {
    this.#expired = true;
    this.interrupt();
  }

  interrupt(failure?: AirlockError): void {
    if (this.res.headersSent) {
      // Said in the record (found by an ops walkthrough: a stream cut by a revocation read as one the
      // agent hung up on).
      // The operator's reason (who revoked it, and why) where the refusal carries one, as a refused
      // request's record has it (found by review: the agent-facing text said to look in the record).
      const refusal = this.#refusal();
      this.cutReason = `cut while its answer was being sent: ${operatorReason(refusal) ?? refusal.detail.replace(' while the request waited for its upstream; its answer was not passed on.', '.')}`;
      this.res.destroy();
      return;
    }
    const relay = this.relay;
    // Between an answer held for retry_on and its retry (the credential fetched again): the retry, or the
    // relay of the held answer, takes the refusal instead once the fetch is back (forward-with-rotation.ts).
    // It was a connection reset (found by review).
    if (relay === null) this.refusal ??= failure ?? this.#refusal();
    else relay.interrupt(failure ?? this.#refusal());
  }

  /** What the next request would be told; a session that ended by its clock is not yet gone from state. */
  #refusal(): AirlockError {
    const runtime = this.#runtime;
    // Said here rather than by the recheck, whose words are for a request not yet sent.
    const jwtEnd = this.#principal.credentialEndsAt;
    if ((this.#expired && this.#endsWithJwt) || (jwtEnd !== undefined && jwtEnd <= runtime.nowMs())) {
      return new AirlockError('unauthenticated', 'The workload JWT this request was made with expired while the request waited for its upstream; its answer was not passed on. Send it again with a fresh JWT.', { headers: INVALID_TOKEN });
    }
    try {
      recheckAfterWait(runtime.state, this.#principal, this.service, this.credential, runtime.limits.stateStaleAfterMs, runtime.nowMs());
    } catch (error) {
      return asAirlockError(error);
    }
    const session = this.#principal.session;
    const what = session === null ? `What agent ${this.agent}'s request ran under was revoked` : `Session ${session.id} ended`;
    return new AirlockError('unauthenticated', `${what} while the request waited for its upstream; its answer was not passed on.`, { headers: INVALID_TOKEN });
  }
}
