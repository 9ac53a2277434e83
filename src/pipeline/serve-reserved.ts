/**
 * Airlock's own public endpoints under /_airlock/ on the agent listeners, for load balancers and
 * orchestrators: no token, not audited (a probe every few seconds would drown the audit trail).
 *   /_airlock/health  liveness: the process answers
 *   /_airlock/ready   readiness: the audit log is writable and shared state (Redis) is reachable;
 *                     503 with what is wrong otherwise. Credential stores are reported, not required:
 *                     one failing store makes its services answer 503, not the whole proxy unready.
 * Anyone who reaches an agent listener may ask, without a token: the answers say states and counts
 * ("failing (2)", "redis unreachable"), never a credential reference or an outage's details (found by
 * review: they named env:PROD_STRIPE_LIVE_KEY). Those are on the admin API, behind its tokens.
 */
import type { IncomingMessage, ServerResponse } from 'node:http';
import { AirlockError } from '../errors.js';
import { REQUEST_ID_HEADER } from '../upstream/relay-headers.js';

export const RESERVED_PATH_PREFIX = '/_airlock/';

export function isReservedPath(path: string): boolean {
  return path.startsWith(RESERVED_PATH_PREFIX) || path === '/_airlock';
}

export interface Readiness {
  readonly ready: boolean;
  /** Check name -> its state, as unauthenticated callers may see it (no references, no details). */
  readonly checks: Readonly<Record<string, string>>;
}

export function serveReserved(req: IncomingMessage, res: ServerResponse, path: string, requestId: string, readiness: () => Readiness): void {
  if (path === '/_airlock/ready') {
    if (req.method !== 'GET' && req.method !== 'HEAD') {
      throw new AirlockError('method_not_allowed', '/_airlock/ready answers GET and HEAD.', { headers: { allow: 'GET, HEAD' } });
    }
    const state = readiness();
    const body = JSON.stringify({ status: state.ready ? 'ready' : 'not_ready', checks: state.checks });
    res.writeHead(state.ready ? 200 : 503, { 'content-type': 'application/json', 'content-length': Buffer.byteLength(body), 'cache-control': 'no-store', [REQUEST_ID_HEADER]: requestId });
    res.end(req.method === 'HEAD' ? undefined : body);
    return;
  }
  if (path === '/_airlock/health') {
    if (req.method !== 'GET' && req.method !== 'HEAD') {
      throw new AirlockError('method_not_allowed', '/_airlock/health answers GET and HEAD.', { headers: { allow: 'GET, HEAD' } });
    }
    const body = '{"status":"ok"}';
    res.writeHead(200, { 'content-type': 'application/json', 'content-length': Buffer.byteLength(body), 'cache-control': 'no-store', [REQUEST_ID_HEADER]: requestId });
    res.end(req.method === 'HEAD' ? undefined : body);
    return;
  }
  throw new AirlockError('unknown_service', `There is no Airlock endpoint ${path}; the reserved endpoints are /_airlock/health, /_airlock/ready and /_airlock/sessions.`);
}
