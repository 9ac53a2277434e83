/**
 * Stage 2: who is calling. The token is looked up by its SHA-256, so the comparison never touches the
 * token bytes and a config leak gives nothing to present.
 */
import { AirlockError } from '../errors.js';
import { hashAgentToken } from '../identity/agent-token.js';
import { scanForAgentToken } from '../identity/token-carriers.js';
import type { AgentPolicy, Policy } from '../policy/compile-policy.js';

export function authenticateAgent(rawHeaders: readonly string[], policy: Policy): AgentPolicy {
  const scan = scanForAgentToken(rawHeaders);
  switch (scan.kind) {
    case 'none':
      throw new AirlockError('unauthenticated', 'No Airlock agent token was sent. Use your alk_ token as the SDK API key (Authorization: Bearer alk_..., x-api-key, or api-key).', {
        headers: { 'www-authenticate': 'Bearer realm="airlock"' },
      });
    case 'malformed':
      throw new AirlockError('unauthenticated', `The ${scan.header} header holds something that starts like an Airlock token but is not one (alk_ followed by 43 base64url characters). Check for truncation.`, {
        headers: { 'www-authenticate': 'Bearer realm="airlock", error="invalid_token"' },
      });
    case 'conflict':
      throw new AirlockError('unauthenticated', 'The request carries two different Airlock agent tokens; send exactly one.', {
        headers: { 'www-authenticate': 'Bearer realm="airlock", error="invalid_request"' },
      });
    case 'token': {
      const agent = policy.agentByTokenHash.get(hashAgentToken(scan.token));
      if (agent === undefined) {
        throw new AirlockError('unauthenticated', 'The Airlock agent token is not known to this proxy (revoked, mistyped, or its hash is not in the config).', {
          headers: { 'www-authenticate': 'Bearer realm="airlock", error="invalid_token"' },
        });
      }
      return agent;
    }
  }
}
