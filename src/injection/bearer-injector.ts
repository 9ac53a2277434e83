/**
 * Authorization: Bearer <secret> (RFC 6750 2.1). An access_token query parameter, the other way RFC
 * 6750 (2.3) lets a client send a bearer token, is removed: an upstream that reads it would act as
 * whoever the agent named there while the audit names the injected credential (found by review).
 */
import type { Injector } from './injector.js';
import { assertHeaderSafe } from './injector.js';
import { queryKeyNameSet } from '../upstream/outbound-request.js';

const ACCESS_TOKEN_NAMES = queryKeyNameSet(['access_token']);

export function createBearerInjector(): Injector {
  return {
    description: 'bearer',
    inject(request, credential) {
      const secret = credential.reveal();
      assertHeaderSafe(secret, credential);
      request.removeQueryKeys(ACCESS_TOKEN_NAMES);
      request.setHeader('authorization', `Bearer ${secret}`);
    },
  };
}
