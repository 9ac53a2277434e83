/**
 * Human approval of sensitive calls. An approval is bound to a hash of the agent, method, canonical
 * path, query and body, is single use, and expires.
 *
 * - hold (default): the request waits while a human decides, up to the grant's approval_timeout; an
 *   approval arriving on any replica releases it (the decision is a governance event).
 * - async: the agent gets 202 with the approval id and the console URL, and retries the same request
 *   with `x-airlock-approval: <id>` once it is approved.
 * A denial is 403 approval_denied, a timeout 403 approval_timeout; approver and reason go into the
 * audit record of the request. The approver sees a preview of the query and body, masked then cut
 * (preview-request.ts), made once when the approval is created and kept with it.
 */
import { randomBytes } from 'node:crypto';
import { AirlockError, asAirlockError } from '../errors.js';
import type { ApprovalPreview, ApprovalRecord } from '../state/governance-records.js';
import type { GovernanceState } from '../state/governance-state.js';
import { StateConflictError } from '../state/state-backend.js';
import { createRequestPreviewer, type PreviewOptions, type RequestContent } from './preview-request.js';

/** An approval's id as minted below: "apr_" and 16 base64url characters (12 random bytes). */
export const APPROVAL_ID = /^apr_[A-Za-z0-9_-]{16}$/;
/**
 * A 202's approval id as a response header, named as the request header that redeems it: SDK errors
 * keep the response's headers, not every body member (an SSE error event's, await-approval.ts).
 */
export const APPROVAL_ID_HEADER = 'x-airlock-approval';

export interface ApprovalRequest {
  readonly agent: string;
  readonly service: string;
  readonly route: string;
  readonly scope: string;
  readonly method: string;
  readonly path: string;
  readonly binding: string;
  readonly session: string | null;
  readonly justification: string | null;
  readonly taskId: string | null;
  readonly mode: 'hold' | 'async';
  readonly timeoutMs: number;
  /** What the preview is made from; none: no preview. */
  readonly content?: RequestContent;
  /**
   * Who asked, by the credential presented (a token's hash, or a JWT's issuer and subject): a held
   * approval left open is joined only by the same presenter (found by review: another token of the
   * same agent, or another end user behind one JWT agent, rode an approval given for the first).
   */
  readonly presenter?: string;
}

export interface ApprovalGrant {
  readonly id: string;
  readonly approver: string;
  readonly reason: string;
}

export interface ApprovalBrokerOptions {
  readonly maxPending: number;
  /** One agent's share (found by review: one agent's 1,000 requests left every other agent's approvals refused). */
  readonly maxPendingPerAgent: number;
  /** Where approvers reach the console (admin.public_url, else the bound admin listener), once known. */
  readonly consoleUrl: () => string | null;
  readonly notify: (approval: ApprovalRecord) => void;
  /**
   * approvals.preview_bytes and the secret catalogue's scrub; none: no preview. The preview is made
   * once, when the approval is created, so an approval that outlives a reload keeps the one made under
   * the configuration it was asked under; every output of it passes the catalogue's scrub again then.
   */
  readonly preview?: PreviewOptions;
  readonly now?: () => number;
}

export class ApprovalBroker {
  readonly #state: GovernanceState;
  readonly #options: ApprovalBrokerOptions;
  readonly #now: () => number;
  readonly #preview: (content: RequestContent) => ApprovalPreview | null;
  /** Hold-mode approvals with a request waiting for them in this process, and how many. */
  readonly #waiters = new Map<string, number>();
  /**
   * Who asked for each hold-mode approval this broker made. Kept here only, so that after a reload or
   * on another replica nothing is joined and the request asks anew (fail closed, one more approval).
   */
  readonly #askedBy = new Map<string, string>();

  constructor(state: GovernanceState, options: ApprovalBrokerOptions) {
    this.#state = state;
    this.#options = options;
    this.#now = options.now ?? Date.now;
    this.#preview = createRequestPreviewer(options.preview ?? { bytes: 0, scrub: (text) => text });
  }

  /** Approvals waiting for a decision (of one agent, when named). */
  pendingCount(agent?: string): number {
    const now = this.#now();
    let count = 0;
    for (const a of this.#state.approvals()) if (a.status === 'pending' && a.expiresAt > now && (agent === undefined || a.agent === agent)) count++;
    return count;
  }

  consoleLink(id: string): string | null {
    const base = this.#options.consoleUrl();
    return base === null ? null : `${base.replace(/\/$/, '')}/#approval-${id}`;
  }

  async #create(request: ApprovalRequest): Promise<ApprovalRecord> {
    if (this.pendingCount() >= this.#options.maxPending) {
      throw new AirlockError('rate_limited', `${this.#options.maxPending} approvals are already pending (approvals.max_pending); retry later.`, { headers: { 'retry-after': '30' } });
    }
    if (this.pendingCount(request.agent) >= this.#options.maxPendingPerAgent) {
      throw new AirlockError('rate_limited', `Agent ${request.agent} already has ${this.#options.maxPendingPerAgent} approvals pending (approvals.max_pending_per_agent); retry once some are decided or expire.`, { headers: { 'retry-after': '30' } });
    }
    const now = this.#now();
    const approval: ApprovalRecord = {
      id: `apr_${randomBytes(12).toString('base64url')}`,
      agent: request.agent,
      service: request.service,
      route: request.route,
      scope: request.scope,
      method: request.method,
      path: request.path,
      binding: request.binding,
      session: request.session,
      justification: request.justification,
      taskId: request.taskId,
      mode: request.mode,
      createdAt: now,
      expiresAt: now + request.timeoutMs,
      status: 'pending',
      decidedBy: null,
      reason: null,
      decidedAt: null,
      preview: request.content === undefined ? null : this.#preview(request.content),
    };
    await this.#state.record({ type: 'approval.created', approval });
    if (request.mode === 'hold' && request.presenter !== undefined) {
      // Entries of approvals past their time go as new ones come: at most max_pending stay open.
      for (const id of this.#askedBy.keys()) if ((this.#state.approval(id)?.expiresAt ?? 0) <= now) this.#askedBy.delete(id);
      this.#askedBy.set(approval.id, request.presenter);
    }
    this.#options.notify(approval);
    return approval;
  }

  /**
   * hold mode: waits for the decision; resolves with the approval, consumed. `recheck` is the request's
   * own revocation check (check-revocations.ts), run again on every revocation or session ending while it
   * waits: what it throws ends the wait at once, and is the agent's answer (found by review: a held
   * request outlived its agent's revocation, and went upstream once the agent was restored and an
   * approver said yes).
   */
  async hold(request: ApprovalRequest, signal: AbortSignal, recheck: () => void): Promise<ApprovalGrant> {
    let settle: (result: ApprovalRecord | AirlockError | 'timeout' | 'aborted') => void = () => undefined;
    const outcome = new Promise<ApprovalRecord | AirlockError | 'timeout' | 'aborted'>((resolve) => {
      settle = resolve;
    });
    let approvalId: string | null = null;
    const unsubscribe = this.#state.onEvent((event) => {
      if (event.type === 'approval.decided' && event.id === approvalId) settle(this.#state.approval(event.id) as ApprovalRecord);
      else if (event.type === 'revocation.added' || event.type === 'session.ended') {
        try {
          recheck();
        } catch (error) {
          settle(asAirlockError(error));
        }
      }
    });
    let timer: NodeJS.Timeout | undefined;
    const onAbort = (): void => settle('aborted');
    signal.addEventListener('abort', onAbort, { once: true });
    try {
      const approval = this.#waitingFor(request) ?? (await this.#create(request));
      approvalId = approval.id;
      this.#waiters.set(approval.id, (this.#waiters.get(approval.id) ?? 0) + 1);
      timer = setTimeout(() => settle('timeout'), Math.max(0, approval.expiresAt - this.#now()));
      // A decision may have landed between creation and subscription on another replica.
      const now = this.#state.approval(approval.id);
      if (now !== null && now.status !== 'pending') settle(now);
      const result = await outcome;
      if (result instanceof AirlockError) {
        // Withdrawn already where the revocation applied (governance-state.ts); kept here too for a
        // session that ended, which withdraws nothing by itself.
        await this.#state.record({ type: 'approval.expired', id: approval.id, at: this.#now() }).catch(() => undefined);
        // The revocation's own answer, tied to the approval it ended (the audit record's `approval`).
        throw new AirlockError(result.code, result.detail, {
          cause: result.cause,
          headers: { ...result.headers },
          ...(result.credentialRef === null ? {} : { credentialRef: result.credentialRef }),
          extensions: { ...result.extensions, approval_id: approval.id },
        });
      }
      if (result === 'aborted') {
        // Left open for the same request sent again (#waitingFor): an SDK that gave up waiting retries
        // it, and its approver's decision is not lost (found by an SDK walkthrough: stripe-node times out
        // after 80 s and retries, so each retry asked anew, and an approver approving the first was told
        // it could no longer be decided).
        throw new AirlockError('approval_timeout', `The agent went away while its request waited for approval; ${approval.id} stays open until ${new Date(approval.expiresAt).toISOString()}, and the same request sent again waits for it.`, {
          extensions: { approval_id: approval.id },
        });
      }
      if (result === 'timeout') {
        await this.#state.record({ type: 'approval.expired', id: approval.id, at: this.#now() }).catch(() => undefined);
        throw new AirlockError('approval_timeout', `No approver decided on ${approval.id} within ${Math.round((approval.expiresAt - approval.createdAt) / 1000)} seconds; the request was not sent.`, {
          extensions: { approval_id: approval.id },
        });
      }
      return await this.#redeemDecided(result, request.binding, request.agent);
    } finally {
      if (approvalId !== null) {
        const left = (this.#waiters.get(approvalId) ?? 1) - 1;
        if (left > 0) this.#waiters.set(approvalId, left);
        else this.#waiters.delete(approvalId);
      }
      if (timer !== undefined) clearTimeout(timer);
      signal.removeEventListener('abort', onAbort);
      unsubscribe();
    }
  }

  /**
   * The open hold-mode approval of this exact request (the binding: agent, session, service, method,
   * path, query, body, Content-Type, account headers, upstream and credential) asked by the same
   * presenter through this broker, pending or approved and not yet used, whose first waiter went away:
   * the same request sent again waits for it rather than asking anew. Still one request per approval:
   * it is consumed by whichever waiter redeems it first.
   */
  #waitingFor(request: ApprovalRequest): ApprovalRecord | null {
    const now = this.#now();
    let found: ApprovalRecord | null = null;
    for (const a of this.#state.approvals()) {
      // One with a request still waiting here is that request's: two identical calls at once ask twice.
      if (a.mode !== 'hold' || a.agent !== request.agent || a.binding !== request.binding || a.expiresAt <= now || this.#waiters.has(a.id)) continue;
      if (request.presenter === undefined || this.#askedBy.get(a.id) !== request.presenter) continue;
      if (a.status !== 'pending' && a.status !== 'approved') continue;
      if (found === null || a.createdAt > found.createdAt) found = a;
    }
    return found;
  }

  /** async mode: records the pending approval and answers 202 with where to approve it. */
  async submit(request: ApprovalRequest): Promise<never> {
    const approval = await this.#create(request);
    const link = this.consoleLink(approval.id);
    throw new AirlockError(
      'approval_pending',
      `This call needs a human's approval. Retry the same request with the header x-airlock-approval: ${approval.id} once it is approved (valid until ${new Date(approval.expiresAt).toISOString()}).`,
      { extensions: { approval_id: approval.id, ...(link === null ? {} : { console_url: link }) }, headers: { 'retry-after': '10', [APPROVAL_ID_HEADER]: approval.id } },
    );
  }

  /** The retry of an async-mode request, carrying x-airlock-approval. */
  async redeem(id: string, binding: string, agent: string): Promise<ApprovalGrant> {
    const approval = this.#state.approval(id);
    if (approval === null || approval.agent !== agent) throw new AirlockError('approval_denied', `There is no approval ${id} for this agent.`);
    if (approval.binding !== binding) {
      throw new AirlockError(
        'approval_denied',
        `Approval ${id} was given for a different request (its method, path, query, body, Content-Type or account headers differ, or the service's upstream or credential changed since); an approval is good for the exact request it was asked for.`,
        { extensions: { approval_id: id } },
      );
    }
    // A held request's approval is used by that request alone, as it waits. Were a retry to redeem one,
    // an approval whose waiter went away and whose "expired" could not be written (the state store
    // down) would stay pending, and once approved, go to whoever retried with its id: a request the
    // approver thought was waiting and would go once (found by review).
    if (approval.mode === 'hold') {
      throw new AirlockError('approval_denied', `Approval ${id} was asked for a request that waited for it (approval_mode: hold); it is not redeemed by a retry. Send the request again without x-airlock-approval to ask anew.`, {
        extensions: { approval_id: id },
      });
    }
    if (approval.status === 'pending') {
      if (approval.expiresAt <= this.#now()) throw new AirlockError('approval_timeout', `Approval ${id} expired before anyone decided.`, { extensions: { approval_id: id } });
      throw new AirlockError('approval_pending', `Approval ${id} is still waiting for a human; retry later with the same header.`, { extensions: { approval_id: id }, headers: { 'retry-after': '10', [APPROVAL_ID_HEADER]: id } });
    }
    return this.#redeemDecided(approval, binding, agent);
  }

  async #redeemDecided(approval: ApprovalRecord, binding: string, agent: string): Promise<ApprovalGrant> {
    if (approval.agent !== agent || approval.binding !== binding) throw new AirlockError('approval_denied', `Approval ${approval.id} does not match this request.`, { extensions: { approval_id: approval.id } });
    if (approval.status === 'denied') {
      throw new AirlockError('approval_denied', `${approval.decidedBy ?? 'An approver'} denied the request${approval.reason ? `: ${approval.reason}` : ''}.`, { extensions: { approval_id: approval.id } });
    }
    if (approval.status === 'consumed') throw new AirlockError('approval_denied', `Approval ${approval.id} was already used; an approval is good for one request.`, { extensions: { approval_id: approval.id } });
    if (approval.status !== 'approved' || approval.expiresAt <= this.#now()) {
      // A revocation's withdrawal says so ("expired" alone sent agents' operators looking at clocks),
      // naming what was revoked but not who revoked it: that is the operators' (check-revocations.ts).
      const withdrawn = approval.status === 'expired' && approval.reason !== null && approval.reason.startsWith('withdrawn:');
      const detail = withdrawn ? `Approval ${approval.id} was ${approval.reason as string}; ask anew once access is restored.` : `Approval ${approval.id} expired.`;
      throw new AirlockError('approval_timeout', detail, { extensions: { approval_id: approval.id } });
    }
    // Single use: the state takes the change only from "approved", one at a time (#claimTransition).
    try {
      await this.#state.record({ type: 'approval.consumed', id: approval.id, at: this.#now() });
    } catch (error) {
      if (error instanceof StateConflictError) {
        throw new AirlockError('approval_denied', `Approval ${approval.id} was already used, or is being used, by another request; an approval is good for one request.`, { extensions: { approval_id: approval.id } });
      }
      throw error;
    }
    return { id: approval.id, approver: approval.decidedBy ?? 'unknown', reason: approval.reason ?? '' };
  }

  /** An approver's decision (admin API, CLI, console). */
  async decide(id: string, decision: 'approved' | 'denied', by: string, reason: string): Promise<ApprovalRecord> {
    const approval = this.#state.approval(id);
    if (approval === null) throw new AirlockError('not_found', `There is no approval ${id}.`);
    // Too late, said one way whether the expiry was already recorded or not (found by review: 400 or
    // 403 depending on timing), and saying who decided and what the agent does next.
    const asksAgain = 'the agent sends its request again to ask anew';
    if (approval.status === 'expired' || (approval.status === 'pending' && approval.expiresAt <= this.#now())) {
      const why = approval.reason !== null && approval.reason.startsWith('withdrawn:') ? approval.reason : `it expired at ${new Date(approval.expiresAt).toISOString()} with no decision`;
      throw new AirlockError('invalid_request', `Approval ${id} can no longer be decided: ${why}; ${asksAgain}.`);
    }
    if (approval.status !== 'pending') {
      const decided = approval.decidedBy === null ? '' : ` by ${approval.decidedBy}${approval.decidedAt === null ? '' : ` at ${new Date(approval.decidedAt).toISOString()}`}`;
      throw new AirlockError('invalid_request', `Approval ${id} was already decided${decided}: it is ${approval.status}.`);
    }
    try {
      await this.#state.record({ type: 'approval.decided', id, decision, by, reason, at: this.#now() });
    } catch (error) {
      if (error instanceof StateConflictError) throw new AirlockError('invalid_request', `Approval ${id} was already decided, or is being decided, by another approver.`);
      throw error;
    }
    const decided = this.#state.approval(id) as ApprovalRecord;
    // A revocation that landed while the decision was being written withdrew the approval, and the
    // decision did not take (found by review: the approver was answered 200 as if it had). Not any other
    // status: a held request may have used its approval by now (consumed).
    if (decided.status === 'expired') {
      const why = decided.reason !== null && decided.reason.startsWith('withdrawn:') ? decided.reason : 'it expired';
      throw new AirlockError('invalid_request', `Approval ${id} can no longer be decided: ${why} as the decision was recorded; ${asksAgain}.`);
    }
    return decided;
  }
}
