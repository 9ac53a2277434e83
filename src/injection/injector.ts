/**
 * How a credential goes onto the upstream request. One method; one kind per file (bearer, header,
 * basic, query), built once per service or grant at start-up by build-injector.ts.
 *
 * `inject` runs last, after hop-by-hop and agent-credential headers were stripped; it removes every
 * agent copy of its own target (any case, repeats, encoded query keys) and then sets the credential.
 */
import type { Credential } from '../credentials/credential.js';
import type { OutboundRequest } from '../upstream/outbound-request.js';

export interface Injector {
  /** For explain and audit: "bearer", "header x-api-key", "basic", "query key". */
  readonly description: string;
  inject(request: OutboundRequest, credential: Credential): void;
}

/**
 * RFC 9110 5.5: field values are visible ASCII, SP, HTAB and obs-text; no other control character. One
 * that slipped into a stored value (an escape sequence or a DEL typed at the hidden `secrets set`
 * prompt) would make undici refuse the request, which the agent saw as 502 upstream_unreachable.
 */
export function assertHeaderSafe(value: string, credential: Credential): void {
  if (/[\0\r\n]/.test(value)) {
    throw new InjectionError(`the credential ${credential.ref} contains a line break or NUL and cannot be sent in a header`);
  }
  if (/[\x01-\x08\x0b\x0c\x0e-\x1f\x7f]/.test(value)) {
    throw new InjectionError(`the credential ${credential.ref} contains a control character (such as ESC or DEL) and cannot be sent in a header; fix the value in its store`);
  }
}

export class InjectionError extends Error {
  override name = 'InjectionError';
}
