/** Authorization: Basic base64(user ":" password) (RFC 7617), either half from a template. */
import type { SecretTemplate } from './secret-template.js';
import { InjectionError, type Injector } from './injector.js';

export function createBasicInjector(username: SecretTemplate, password: SecretTemplate): Injector {
  return {
    description: 'basic',
    inject(request, credential) {
      const secret = credential.reveal();
      const user = username.render(secret);
      // RFC 7617 2: the first colon ends the user-id ("a user-id containing a colon character is
      // invalid"), so a key holding one would reach the upstream as another user-id, the rest of it in
      // the password (found by review). Refused, as a header value that cannot be sent is.
      if (user.includes(':')) throw new InjectionError(`the credential ${credential.ref} contains ":", which a Basic user-id cannot hold (RFC 7617 section 2); inject it as the password or fix the value in its store`);
      request.setHeader('authorization', `Basic ${Buffer.from(`${user}:${password.render(secret)}`, 'utf8').toString('base64')}`);
    },
  };
}
