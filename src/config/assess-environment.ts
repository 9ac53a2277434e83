/**
 * What in the process's environment would undo Airlock's guarantees behind its back, refused at
 * start-up with every problem listed (as config problems are). Each is a switch meant for debugging a
 * development machine, harmless there and a leak in front of real credentials:
 *
 * - NODE_TLS_REJECT_UNAUTHORIZED=0: Node skips certificate checks on every TLS connection that does
 *   not ask for them (read at each connect). Airlock's own connections ask (tls-verification.ts);
 *   libraries' (JWKS, webhooks, the OTLP exporter, Redis) would not.
 * - NODE_DEBUG naming undici or fetch: undici's debug log prints each request's target to stderr,
 *   an injected query credential with it, outside the scrubbed log.
 * - DEBUG enabling ioredis (with Redis state): the `debug` package prints each command's arguments to
 *   stderr, the AUTH password of state.url among them. (node-vault is given a silent debug function.)
 * - --tls-keylog in the node flags or NODE_OPTIONS: Node writes every TLS session's keys to a file,
 *   and with them anyone holding a capture of the traffic reads the injected keys.
 */

import { escapeRegExp } from '../redaction/key-patterns.js';

export interface EnvironmentInput {
  readonly env: Readonly<Record<string, string | undefined>>;
  /** node's own flags (process.execArgv), when known. */
  readonly nodeFlags?: readonly string[];
  /** Whether the config keeps shared state in Redis (ioredis is loaded then). */
  readonly usesRedis: boolean;
}

/** Each problem says what it would expose and what to do. Empty: nothing to refuse. */
export function environmentProblems(input: EnvironmentInput): string[] {
  const { env } = input;
  const problems: string[] = [];
  if (env['NODE_TLS_REJECT_UNAUTHORIZED'] === '0') {
    problems.push(
      'NODE_TLS_REJECT_UNAUTHORIZED=0 is set, which turns off certificate checks for TLS connections, and Airlock sends credentials over them and trusts the keys it fetches. ' +
        "Unset it; to trust a private CA, name it: a service's ca:, secrets.vault.ca_file, an OAuth2 client's ca:, or NODE_EXTRA_CA_CERTS.",
    );
  }
  const nodeDebug = env['NODE_DEBUG'];
  if (nodeDebug !== undefined && ['undici', 'fetch'].some((section) => nodeDebugEnables(nodeDebug, section))) {
    problems.push(`NODE_DEBUG=${nodeDebug} turns on undici's debug log, which prints every upstream request target (an injected query credential with it) to stderr, unscrubbed. Remove undici and fetch from NODE_DEBUG.`);
  }
  const debug = env['DEBUG'];
  if (input.usesRedis && debug !== undefined && debugEnables(debug, 'ioredis:redis')) {
    problems.push(`DEBUG=${debug} turns on ioredis's debug log, which prints every Redis command to stderr, the password of state.url in its AUTH with them. Remove ioredis (and *) from DEBUG.`);
  }
  const keylog = [...(input.nodeFlags ?? []), ...(env['NODE_OPTIONS'] ?? '').split(/\s+/)].find((flag) => flag.replaceAll('_', '-').startsWith('--tls-keylog'));
  if (keylog !== undefined) {
    problems.push(`node was started with ${keylog}, which writes the keys of every TLS session to a file: with them, a capture of the traffic reads every credential Airlock injects. Start node without it.`);
  }
  return problems;
}

/**
 * Whether NODE_DEBUG enables `section`, as node's util.debuglog reads it: comma-separated names, taken
 * as written (a space is part of the name), case-insensitive, `*` matching anything.
 */
function nodeDebugEnables(value: string, section: string): boolean {
  return value.split(',').some((name) => wildcardMatches(name, section, 'i'));
}

/**
 * Whether DEBUG enables `namespace`, as the `debug` package reads it: names separated by commas or
 * spaces, `*` matching anything, a leading `-` excluding what it matches (exclusions win).
 */
function debugEnables(value: string, namespace: string): boolean {
  const names = value.split(/[\s,]+/).filter((name) => name !== '');
  if (names.some((name) => name.startsWith('-') && wildcardMatches(name.slice(1), namespace, ''))) return false;
  return names.some((name) => !name.startsWith('-') && wildcardMatches(name, namespace, ''));
}

function wildcardMatches(pattern: string, name: string, flags: string): boolean {
  if (pattern === '') return false;
  const source = pattern.split('*').map(escapeRegExp).join('.*');
  return new RegExp(`^${source}$`, flags).test(name);
}
