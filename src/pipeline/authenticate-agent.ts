/**
 * Stage 2: who is calling. Three kinds of credential, in any of the carrier headers:
 *  - an agent token (alk_), looked up by its SHA-256, so the comparison never touches the token bytes
 *    and a config leak gives nothing to present;
 *  - a task session token (als_), looked up by its hash in the governance state: the session's agent,
 *    narrowed to the session's scopes until it expires or is ended;
 *  - a workload JWT, verified against the agents that accept its issuer (jwt-verifier.ts).
 */
import { AirlockError } from '../errors.js';
import type { JwtVerifier } from '../identity/jwt-verifier.js';
import { scanForAgentToken } from '../identity/token-carriers.js';
import type { TokenHashes } from '../identity/token-hashes.js';
import type { AgentPolicy, Policy } from '../policy/compile-policy.js';
import type { SessionRecord } from '../state/governance-records.js';
import type { GovernanceState } from '../state/governance-state.js';

export interface Principal {
  readonly agent: AgentPolicy;
  /** The task session the call is made under, or null for the agent's own token or a JWT. */
  readonly session: SessionRecord | null;
  readonly via: 'token' | 'session' | 'jwt';
}

function refused(detail: string, error: string | null): AirlockError {
  return new AirlockError('unauthenticated', detail, { headers: { 'www-authenticate': error === null ? 'Bearer realm="airlock"' : `Bearer realm="airlock", error="${error}"` } });
}

/** Synchronous for agent and session tokens; a promise only for a workload JWT (its verification may fetch keys). */
export function authenticateAgent(rawHeaders: readonly string[], policy: Policy, state: GovernanceState, jwt: JwtVerifier, hashes: TokenHashes): Principal | Promise<Principal> {
  const scan = scanForAgentToken(rawHeaders, jwt.enabled);
  switch (scan.kind) {
    case 'none':
      throw refused('No Airlock agent token was sent. Use your alk_ token (or a session token) as the SDK API key (Authorization: Bearer alk_..., x-api-key, or api-key).', null);
    case 'malformed':
      throw refused(`The ${scan.header} header holds something that starts like an Airlock token but is not one (alk_ or als_ followed by 43 base64url characters). Check for truncation.`, 'invalid_token');
    case 'conflict':
      throw refused('The request carries two different Airlock credentials; send exactly one.', 'invalid_request');
    case 'token':
      break;
  }
  if (scan.type === 'agent') {
    const agent = policy.agentByTokenHash.get(hashes.of(scan.token));
    if (agent === undefined) throw refused('The Airlock agent token is not known to this proxy (mistyped, or its hash is not in the config).', 'invalid_token');
    return { agent, session: null, via: 'token' };
  }
  if (scan.type === 'session') {
    const session = state.sessionByTokenHash(hashes.of(scan.token));
    const agent = session === null ? undefined : policy.agentByName.get(session.agent);
    if (session === null || agent === undefined) {
      throw refused('The session token is not valid: it expired, was ended or revoked, or never existed. Mint a new one with POST /_airlock/sessions.', 'invalid_token');
    }
    return { agent, session, via: 'session' };
  }
  return authenticateJwt(scan.token, policy, jwt);
}

async function authenticateJwt(token: string, policy: Policy, jwt: JwtVerifier): Promise<Principal> {
  const verdict = await jwt.verify(token);
  const agent = verdict.agent === null ? undefined : policy.agentByName.get(verdict.agent);
  if (agent === undefined) throw refused(`The workload JWT was not accepted: ${verdict.reason}.`, 'invalid_token');
  return { agent, session: null, via: 'jwt' };
}
