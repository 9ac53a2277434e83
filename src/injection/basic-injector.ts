/** Authorization: Basic base64(user ":" password) (RFC 7617), either half from a template. */
import type { SecretTemplate } from './secret-template.js';
import type { Injector } from './injector.js';

export function createBasicInjector(username: SecretTemplate, password: SecretTemplate): Injector {
  return {
    description: 'basic',
    inject(request, credential) {
      const secret = credential.reveal();
      const pair = `${username.render(secret)}:${password.render(secret)}`;
      request.setHeader('authorization', `Basic ${Buffer.from(pair, 'utf8').toString('base64')}`);
    },
  };
}
