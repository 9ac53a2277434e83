/**
 * A query parameter, e.g. {query: key}. Every agent copy of the key is removed first, whatever its
 * case or percent-encoding and whichever separator precedes it (outbound-request.ts).
 */
import { queryKeyNameSet } from '../upstream/outbound-request.js';
import type { Injector } from './injector.js';

export function createQueryInjector(key: string): Injector {
  const names = queryKeyNameSet([key]);
  return {
    description: `query ${key}`,
    inject(request, credential) {
      request.removeQueryKeys(names);
      request.appendQueryParam(key, credential.reveal());
    },
  };
}
