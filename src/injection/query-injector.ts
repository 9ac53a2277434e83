/**
 * A query parameter, e.g. {query: key}. Every agent copy of the key is removed first, whatever its
 * case or percent-encoding and whichever separator precedes it (outbound-request.ts).
 */
import type { Injector } from './injector.js';

export function createQueryInjector(key: string): Injector {
  return {
    description: `query ${key}`,
    inject(request, credential) {
      request.removeQueryKey(key);
      request.appendQueryParam(key, credential.reveal());
    },
  };
}
