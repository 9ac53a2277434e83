/**
 * Stage 7b: the credential goes on, last, after every agent copy of its target was removed.
 */
import type { Credential } from '../credentials/credential.js';
import { AirlockError } from '../errors.js';
import { InjectionError } from '../injection/injector.js';
import type { CredentialPlan } from '../policy/compile-policy.js';
import type { OutboundRequest } from '../upstream/outbound-request.js';

export function injectCredential(outbound: OutboundRequest, plan: CredentialPlan, credential: Credential): void {
  try {
    plan.injector.inject(outbound, credential);
  } catch (error) {
    if (error instanceof InjectionError) throw new AirlockError('credential_unavailable', `The credential ${plan.ref} cannot be injected: ${error.message}.`);
    throw error;
  }
}
