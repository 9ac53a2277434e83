/**
 * Authorization: Bearer <secret> (RFC 6750 2.1). An access_token query parameter, the other way RFC
 * 6750 (2.3) lets a client send a bearer token, is removed: an upstream that reads it would act as
 * whoever the agent named there while the audit names the injected credential (found by review).
 */
import type { Injector } from './injector.js';
import { assertHeaderSafe } from './injector.js';

export function createBearerInjector(): Injector {
  return {
    description: 'bearer',
    inject(request, credential) {
      const secret = credential.reveal();
      assertHeaderSafe(secret, credential);
      request.removeQueryKey('access_token');
      request.setHeader('authorization', `Bearer ${secret}`);
    },
  };
}
