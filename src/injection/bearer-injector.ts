/** Authorization: Bearer <secret> (RFC 6750 2.1). */
import type { Injector } from './injector.js';
import { assertHeaderSafe } from './injector.js';

export function createBearerInjector(): Injector {
  return {
    description: 'bearer',
    inject(request, credential) {
      const secret = credential.reveal();
      assertHeaderSafe(secret, credential);
      request.setHeader('authorization', `Bearer ${secret}`);
    },
  };
}
