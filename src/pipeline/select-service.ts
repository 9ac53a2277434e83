/**
 * Stage 3: which service the request is for. A service's own listener decides alone; on the shared
 * listener a Host header listed under a service's `hosts` selects it, else the path prefix does (and
 * is removed). The upstream origin comes from the selected service's config, never from the request.
 */
import { AirlockError } from '../errors.js';
import type { Policy, ServicePolicy } from '../policy/compile-policy.js';

/** What a listener serves: every service (prefix or Host), or one service by name (its own listen). */
export type ListenerBinding = { readonly kind: 'shared' } | { readonly kind: 'service'; readonly name: string };

export interface SelectedService {
  readonly service: ServicePolicy;
  /** The path the service's routes are matched against (prefix removed). */
  readonly path: string;
  /** What the agent put in front of service paths: the prefix, or "" (own listener, host). */
  readonly agentPrefix: string;
}

/** RFC 9112 3.2: exactly one Host; compared case-insensitively without its port. */
function hostOf(rawHeaders: readonly string[]): string | null {
  let host: string | null = null;
  for (let i = 0; i < rawHeaders.length; i += 2) {
    if ((rawHeaders[i] as string).toLowerCase() !== 'host') continue;
    if (host !== null) throw new AirlockError('invalid_request', 'The request has more than one Host header (RFC 9112 3.2); send exactly one.');
    host = (rawHeaders[i + 1] as string).trim().toLowerCase();
  }
  if (host === null) return null;
  if (host.startsWith('[')) return host.slice(0, host.indexOf(']') + 1);
  const colon = host.lastIndexOf(':');
  return colon === -1 ? host : host.slice(0, colon);
}

export function selectService(policy: Policy, binding: ListenerBinding, rawHeaders: readonly string[], path: string): SelectedService {
  const host = hostOf(rawHeaders);
  if (binding.kind === 'service') {
    const own = policy.serviceByName.get(binding.name);
    if (own === undefined) throw new AirlockError('unknown_service', `This listener's service ${binding.name} is no longer configured.`);
    return { service: own, path, agentPrefix: '' };
  }
  if (host !== null && policy.serviceByHost.size > 0) {
    const byHost = policy.serviceByHost.get(host);
    if (byHost !== undefined) return { service: byHost, path, agentPrefix: '' };
  }
  for (const service of policy.services) {
    const prefix = service.prefix;
    if (path === prefix) return { service, path: '/', agentPrefix: prefix };
    if (path.startsWith(prefix) && path.charCodeAt(prefix.length) === 0x2f) {
      return { service, path: path.slice(prefix.length), agentPrefix: prefix };
    }
  }
  const known = policy.services.map((s) => s.prefix).join(', ');
  throw new AirlockError('unknown_service', `No service is configured for this path. Known prefixes: ${known === '' ? '(none)' : known}. Set your SDK base URL to http://<airlock>/<service prefix>/...`);
}
