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

/** Any control character but HTAB (RFC 9110 5.5: field values are visible ASCII, SP, HTAB and obs-text). */
const NOT_IN_A_FIELD_VALUE = /[\0-\x08\x0a-\x1f\x7f]/;

/**
 * What keeps a value out of a header, or null: a line break or NUL (which would split or end the
 * field), or another control character, such as an escape sequence or a DEL typed at the hidden
 * `secrets set` prompt (undici refuses those, which the agent saw as 502 upstream_unreachable). One
 * test on the common path; the kind is told apart only for the message. Shared by injection and by
 * `secrets set`, which refuses such a value before it is stored.
 */
export function headerValueFault(value: string): 'a line break or NUL' | 'a control character (such as ESC or DEL)' | null {
  if (!NOT_IN_A_FIELD_VALUE.test(value)) return null;
  return /[\0\r\n]/.test(value) ? 'a line break or NUL' : 'a control character (such as ESC or DEL)';
}

/** A control character (as above), or anything past ASCII: one test on the common path. */
const NOT_SENT_IN_A_HEADER = /[\0-\x08\x0a-\x1f\x7f-\uffff]/;

/**
 * Beyond headerValueFault, a value to be injected into a header must be ASCII: a character past it
 * goes out as raw bytes (undici writes é as the one byte 0xE9, and refuses what is past U+00FF with a
 * 502), and redaction looks for a secret's UTF-8 forms, so an upstream echoing the header reached the
 * agent unmasked (found by review). RFC 9110 5.5: new field values are ASCII; obs-text is legacy.
 * Query and Basic injection encode the UTF-8 bytes and are not held to this.
 */
export function headerInjectionFault(value: string): string | null {
  if (!NOT_SENT_IN_A_HEADER.test(value)) return null;
  return headerValueFault(value) ?? 'a character outside ASCII (such as é), which a header would carry as raw bytes that redaction does not look for';
}

export function assertHeaderSafe(value: string, credential: Credential): void {
  const fault = headerInjectionFault(value);
  if (fault !== null) throw new InjectionError(`the credential ${credential.ref} contains ${fault} and cannot be sent in a header; fix the value in its store`);
}

export class InjectionError extends Error {
  override name = 'InjectionError';
}
