/**
 * Builds the injector a credential spec asks for. Called at start-up; config validation has already
 * checked the spec with `injectorProblems`, which shares these rules.
 */
import type { InjectSpec } from '../config/schema.js';
import { HOP_BY_HOP_HEADERS } from '../upstream/hop-by-hop.js';
import { cgiHeaderName } from '../upstream/outbound-request.js';
import { createBasicInjector } from './basic-injector.js';
import { createBearerInjector } from './bearer-injector.js';
import { createHeaderInjector } from './header-injector.js';
import { headerInjectionFault, type Injector } from './injector.js';
import { createQueryInjector } from './query-injector.js';
import { parseSecretTemplate, type SecretTemplate } from './secret-template.js';

/** Headers the proxy itself controls; a credential there would be overwritten or break framing. */
const RESERVED_TARGETS = new Set(['host', 'content-length', 'content-type', 'x-forwarded-for', 'expect', ...HOP_BY_HOP_HEADERS]);

export function injectorProblems(spec: InjectSpec): Array<{ path: string[]; message: string }> {
  const problems: Array<{ path: string[]; message: string }> = [];
  if (spec === 'bearer') return problems;
  if ('header' in spec) {
    // Read with "_" as "-", as agent copies of the target are removed (outbound-request.ts): Content_Length
    // would otherwise remove the real Content-Length before setting the credential.
    if (RESERVED_TARGETS.has(cgiHeaderName(spec.header.toLowerCase()))) problems.push({ path: ['header'], message: `${spec.header} is managed by the proxy and cannot carry a credential` });
    const template = parseSecretTemplate(spec.value);
    // The template's own text goes into the header as it is: a line break there failed every request
    // with a 503 that blamed the credential (found by review).
    const fault = headerInjectionFault(spec.value.replaceAll('${secret}', ''));
    if (!template.ok) problems.push({ path: ['value'], message: template.problem });
    else if (fault !== null) problems.push({ path: ['value'], message: `the template contains ${fault}; a header value cannot hold it` });
    else if (!template.template.usesSecret) problems.push({ path: ['value'], message: 'the template never uses ${secret}, so the credential would not be sent' });
  } else if ('basic' in spec) {
    const user = parseSecretTemplate(spec.basic.username);
    const password = parseSecretTemplate(spec.basic.password);
    if (!user.ok) problems.push({ path: ['basic', 'username'], message: user.problem });
    // RFC 7617 2: the first colon ends the user-id, so one written into the username splits it.
    else if (spec.basic.username.replaceAll('${secret}', '').includes(':')) problems.push({ path: ['basic', 'username'], message: 'a Basic user-id cannot hold ":" (RFC 7617 section 2); the upstream would read the user-id as ending there' });
    if (!password.ok) problems.push({ path: ['basic', 'password'], message: password.problem });
    if (user.ok && password.ok && !user.template.usesSecret && !password.template.usesSecret) {
      problems.push({ path: ['basic'], message: 'neither username nor password uses ${secret}' });
    }
  }
  return problems;
}

function mustParse(text: string): SecretTemplate {
  const parsed = parseSecretTemplate(text);
  if (!parsed.ok) throw new Error(`invalid template: ${parsed.problem}; config validation should have caught this`);
  return parsed.template;
}

export function buildInjector(spec: InjectSpec): Injector {
  if (spec === 'bearer') return createBearerInjector();
  if ('header' in spec) return createHeaderInjector(spec.header, mustParse(spec.value));
  if ('basic' in spec) return createBasicInjector(mustParse(spec.basic.username), mustParse(spec.basic.password));
  return createQueryInjector(spec.query);
}
