/**
 * Stage 2: who is calling. Three kinds of credential, in any of the carrier headers:
 *  - an agent token (alk_), looked up by its SHA-256, so the comparison never touches the token bytes
 *    and a config leak gives nothing to present;
 *  - a task session token (als_), looked up by its hash in the governance state: the session's agent,
 *    narrowed to the session's scopes until it expires or is ended, and only while the credential that
 *    minted it is still accepted and its grants' max_ttl still allows its age (sessionStanding);
 *  - a workload JWT, verified against the agents that accept its issuer (jwt-verifier.ts).
 */
import { AirlockError, OperatorReason } from '../errors.js';
import type { JwtVerifier } from '../identity/jwt-verifier.js';
import { scanForAgentToken, TOKEN_CARRIER_HEADERS } from '../identity/token-carriers.js';
import type { TokenHashes } from '../identity/token-hashes.js';
import type { AgentPolicy, Policy } from '../policy/compile-policy.js';
import type { SessionMinter, SessionRecord } from '../state/governance-records.js';
import type { GovernanceState } from '../state/governance-state.js';

export interface Principal {
  readonly agent: AgentPolicy;
  /** The task session the call is made under, or null for the agent's own token or a JWT. */
  readonly session: SessionRecord | null;
  readonly via: 'token' | 'session' | 'jwt';
  /**
   * The credential presented (its hash, or a JWT's issuer and subject; never the credential): what a
   * session minted by this caller records, and what is checked again after a wait. Absent only for a
   * principal no credential was presented for (`airlock explain`).
   */
  readonly credential?: SessionMinter;
  /** Until when (ms) the credential presented is accepted, when it ends by itself (a JWT's exp): a session it mints ends by then. */
  readonly credentialEndsAt?: number;
}

/**
 * Why a credential was refused, for the operator: it becomes the audit record's reason and the log
 * line's err (run-pipeline.ts refuse), never the caller's detail (an AirlockError's cause is never sent).
 */
export class AuthenticationFailure extends OperatorReason {
  override readonly name = 'AuthenticationFailure';
}

/** The first header that carries API keys and holds something, by name (lower case), or null. */
function keyCarrierSent(rawHeaders: readonly string[]): string | null {
  for (let i = 0; i < rawHeaders.length; i += 2) {
    const name = (rawHeaders[i] as string).toLowerCase();
    if (TOKEN_CARRIER_HEADERS.has(name) && (rawHeaders[i + 1] as string).trim() !== '') return name;
  }
  return null;
}

function refused(detail: string, error: string | null, reason?: string): AirlockError {
  return new AirlockError('unauthenticated', detail, {
    headers: { 'www-authenticate': error === null ? 'Bearer realm="airlock"' : `Bearer realm="airlock", error="${error}"` },
    ...(reason === undefined ? {} : { cause: new AuthenticationFailure(reason) }),
  });
}

/**
 * One detail for every refused JWT. The specific reason (no agent for that issuer, which claim did not
 * match) told an unauthenticated caller whether an issuer is configured and which claims the policy
 * checks in what order (found by review); it goes to the audit record and the log instead.
 */
const JWT_REFUSED =
  'The workload JWT was not accepted (its signature, issuer, audience, lifetime, subject, claims or type do not match an agent). An operator finds the reason in the audit record of this request id.';

/** Synchronous for agent and session tokens; a promise only for a workload JWT (its verification may fetch keys). */
export function authenticateAgent(
  rawHeaders: readonly string[],
  policy: Policy,
  state: GovernanceState,
  jwt: JwtVerifier,
  hashes: TokenHashes,
  now: number,
): Principal | Promise<Principal> {
  const scan = scanForAgentToken(rawHeaders, jwt.enabled);
  switch (scan.kind) {
    case 'none': {
      // Found by the SDK walkthrough: "no token was sent" read wrong to an agent that had sent a key, the
      // provider's own (sk_test_...); the detail names the header, never its value.
      const carrier = keyCarrierSent(rawHeaders);
      throw refused(
        carrier === null
          ? 'No Airlock agent token was sent. Use your alk_ token (or a session token) as the SDK API key (Authorization: Bearer alk_..., x-api-key, or api-key).'
          : `The ${carrier} header holds a key that is not an Airlock token. Use your alk_ token (or a session token) as the SDK API key, not the provider's key: Airlock injects that itself.`,
        carrier === null ? null : 'invalid_token',
      );
    }
    case 'malformed':
      throw refused(`The ${scan.header} header holds something that starts like an Airlock token but is not one (alk_ or als_ followed by 43 base64url characters). Check for truncation.`, 'invalid_token');
    case 'conflict':
      throw refused('The request carries two different Airlock credentials; send exactly one.', 'invalid_request');
    case 'token':
      break;
  }
  if (scan.type === 'agent') {
    const tokenHash = hashes.of(scan.token);
    const agent = policy.agentByTokenHash.get(tokenHash);
    if (agent === undefined) throw refused('The Airlock agent token is not known to this proxy (mistyped, or its hash is not in the config).', 'invalid_token');
    return { agent, session: null, via: 'token', credential: { kind: 'token', tokenHash } };
  }
  if (scan.type === 'session') {
    const session = state.sessionByTokenHash(hashes.of(scan.token));
    const agent = session === null ? undefined : policy.agentByName.get(session.agent);
    if (session === null || agent === undefined) {
      throw refused('The session token is not valid: it expired, was ended or revoked, or never existed. Mint a new one with POST /_airlock/sessions.', 'invalid_token');
    }
    const lapsed = sessionStanding(session, agent, policy, state, now);
    if (lapsed !== null) throw refused(lapsed, 'invalid_token');
    return { agent, session, via: 'session', credential: { kind: 'session', session: session.id } };
  }
  return authenticateJwt(scan.token, policy, jwt);
}

async function authenticateJwt(token: string, policy: Policy, jwt: JwtVerifier): Promise<Principal> {
  const verdict = await jwt.verify(token);
  const agent = verdict.agent === null ? undefined : policy.agentByName.get(verdict.agent);
  if (agent === undefined || verdict.issuer === null) throw refused(JWT_REFUSED, 'invalid_token', `workload JWT refused: ${verdict.reason}`);
  const credential: SessionMinter = {
    kind: 'jwt',
    issuer: verdict.issuer,
    subject: verdict.subject,
    ...(agent.jwtRules === null ? {} : { rules: agent.jwtRules }),
    ...(verdict.key === null ? {} : { key: verdict.key }),
  };
  return { agent, session: null, via: 'jwt', credential, ...(verdict.expiresAt === null ? {} : { credentialEndsAt: verdict.expiresAt }) };
}

/** Whether the agent named still accepts this credential under `policy` (its token listed, its JWT issuer and subject). */
function accepts(policy: Policy, agent: string, minter: SessionMinter): boolean {
  switch (minter.kind) {
    case 'token':
      return policy.agentByTokenHash.get(minter.tokenHash)?.name === agent;
    case 'jwt': {
      const spec = policy.agentSpecs.get(agent)?.jwt;
      if (spec === undefined || spec.issuer !== minter.issuer || (spec.subject !== undefined && spec.subject !== minter.subject)) return false;
      if (minter.rules === undefined) return true;
      const current = policy.agentByName.get(agent);
      if (current === undefined) return false;
      // Minted by an earlier version: its digest held the keys' PEM text.
      if (minter.rules === current.jwtRulesWithKeys) return true;
      // The rules as they were, and the key that verified the JWT still listed (or the JWKS verified it).
      return minter.rules === current.jwtRules && (minter.key === undefined || current.jwtKeys.has(minter.key));
    }
    case 'session':
      // A child's standing is its parent's, walked by sessionStanding.
      return true;
    default:
      // Shared state is written by other replicas (and anyone with access to Redis): a minter this
      // version does not know is refused, not trusted.
      return false;
  }
}

/** Sessions walked up from a child (as run-pipeline.ts sessionChain): attenuation is never this deep. */
const MAX_CHAIN = 32;

/**
 * Null while the session (and each session it was narrowed from) stands under `policy`; otherwise why
 * not, for the caller (who holds the session). Two rules, found by review:
 *  - the credential that minted it is still one of its agent's: a leaked token rotated out of the config
 *    ends the sessions it minted, across restarts (they are kept in the state file or Redis);
 *  - it is not older than the smallest max_ttl its grants now have: lowering max_ttl shortens the
 *    sessions minted under the old one.
 * Sessions minted before records carried `mintedBy` are not checked for the first rule: they keep
 * working until they expire (at most the max_ttl of the version that minted them).
 */
export function sessionStanding(session: SessionRecord, agent: AgentPolicy, policy: Policy, state: GovernanceState, now: number): string | null {
  let current: SessionRecord | null = session;
  for (let depth = 0; current !== null && depth < MAX_CHAIN; depth++) {
    const minter = current.mintedBy;
    if (minter !== undefined && !accepts(policy, agent.name, minter)) {
      return `Session ${current.id} was minted with a credential agent ${agent.name} no longer accepts (an agent token removed from the config, changed JWT rules: issuer, subject, audience or claims, or the key that verified the JWT removed), so its sessions ended with it. Mint a new session with a current credential.`;
    }
    let maxTtl = Infinity;
    for (const service of Object.keys(current.scopes)) {
      const grant = agent.grants.get(service);
      if (grant !== undefined && grant.config.max_ttl < maxTtl) maxTtl = grant.config.max_ttl;
    }
    if (current.createdAt + maxTtl * 1000 <= now) {
      return `Session ${current.id} is older than the max_ttl of ${maxTtl} seconds its grants now allow; mint a new one with POST /_airlock/sessions.`;
    }
    // A parent gone from the state is checkPrincipalRevocations' to refuse (check-revocations.ts).
    current = current.parent === null ? null : state.session(current.parent);
  }
  return null;
}

/**
 * The caller again, under `policy` (the configuration in force now): after a wait (a held approval) a
 * reload may have removed the agent or the token it called with, or ended what its session stands on.
 * Returns the principal bound to the current policy's agent, or throws 401.
 */
export function authenticateAgain(principal: Principal, policy: Policy, state: GovernanceState, now: number): Principal {
  const name = principal.agent.name;
  const agent = policy.agentByName.get(name);
  if (agent === undefined) {
    throw refused(`Agent ${name} was removed from the configuration while the request waited; it was not sent.`, 'invalid_token');
  }
  if (principal.session !== null) {
    const session = state.session(principal.session.id);
    if (session === null) throw refused(`Session ${principal.session.id} ended while the request waited; it was not sent.`, 'invalid_token');
    const lapsed = sessionStanding(session, agent, policy, state, now);
    if (lapsed !== null) throw refused(`The configuration changed while the request waited, and it was not sent: ${lapsed}`, 'invalid_token');
  } else if (principal.credential !== undefined && !accepts(policy, name, principal.credential)) {
    throw refused(`Agent ${name} no longer accepts the credential this request was made with: the configuration changed while the request waited. It was not sent.`, 'invalid_token');
  }
  return agent === principal.agent ? principal : { ...principal, agent };
}
