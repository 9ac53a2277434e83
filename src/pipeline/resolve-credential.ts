/**
 * Stage 6: the real credential for this request, from its source. A secret that is missing, empty, too
 * short to redact reliably or not well-formed text is a 503, never "Bearer undefined" and never a
 * request sent without it.
 */
import type { Credential } from '../credentials/credential.js';
import type { CredentialBroker } from '../credentials/credential-broker.js';
import { AirlockError } from '../errors.js';
import type { CredentialPlan } from '../policy/compile-policy.js';
import { MIN_SECRET_LENGTH } from '../redaction/secret-catalog.js';

/** Synchronous for a cached credential; a promise only when the store must be asked. */
export function resolveCredential(broker: CredentialBroker, plan: CredentialPlan): Credential | Promise<Credential> {
  let found: Credential | Promise<Credential>;
  try {
    found = broker.resolve(plan.ref);
  } catch (error) {
    throw unreadable(plan, error);
  }
  if (found instanceof Promise) {
    return found.then(
      (credential) => usableCredential(plan, credential),
      (error: unknown) => {
        throw unreadable(plan, error);
      },
    );
  }
  return usableCredential(plan, found);
}

function unreadable(plan: CredentialPlan, error: unknown): AirlockError {
  if (error instanceof AirlockError) return error;
  return new AirlockError('credential_unavailable', `The credential ${plan.ref} could not be read from its source; the request was not sent. See the proxy log.`, { cause: error });
}

/**
 * The one test of whether a value may be injected, shared with the retry_on refetch in
 * forward-with-rotation.ts: a value the redaction catalogue will not register (under MIN_SECRET_LENGTH,
 * or with an unpaired surrogate) would be sent upstream and then echoed back unmasked (invariant 1).
 */
export function usableCredential(plan: CredentialPlan, credential: Credential): Credential {
  if (credential.length < MIN_SECRET_LENGTH) {
    throw new AirlockError('credential_unavailable', `The credential ${plan.ref} is shorter than ${MIN_SECRET_LENGTH} characters; Airlock refuses secrets it cannot reliably redact. Set the real value.`);
  }
  if (!credential.wellFormed) {
    throw new AirlockError('credential_unavailable', `The credential ${plan.ref} is not well-formed text (it holds an unpaired UTF-16 surrogate, such as a JSON "\\ud800" escape), so Airlock can neither send nor redact it. Fix the value in its store.`);
  }
  return credential;
}
