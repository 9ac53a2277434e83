/** A named header with a template value, e.g. {header: x-api-key, value: "${secret}"}. */
import type { SecretTemplate } from './secret-template.js';
import type { Injector } from './injector.js';
import { assertHeaderSafe } from './injector.js';

export function createHeaderInjector(headerName: string, template: SecretTemplate): Injector {
  const name = headerName.toLowerCase();
  return {
    description: `header ${name}`,
    inject(request, credential) {
      const value = template.render(credential.reveal());
      assertHeaderSafe(value, credential);
      request.setHeader(name, value);
    },
  };
}
