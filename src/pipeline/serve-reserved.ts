/**
 * Airlock's own endpoints under /_airlock/ on the agent listeners. Only the liveness probe exists so far;
 * it needs no token and is not audited (a probe every few seconds would drown the audit trail).
 */
import type { IncomingMessage, ServerResponse } from 'node:http';
import { AirlockError } from '../errors.js';
import { REQUEST_ID_HEADER } from '../upstream/relay-headers.js';

export const RESERVED_PATH_PREFIX = '/_airlock/';

export function isReservedPath(path: string): boolean {
  return path.startsWith(RESERVED_PATH_PREFIX) || path === '/_airlock';
}

export function serveReserved(req: IncomingMessage, res: ServerResponse, path: string, requestId: string): void {
  if (path === '/_airlock/health') {
    if (req.method !== 'GET' && req.method !== 'HEAD') {
      throw new AirlockError('method_not_allowed', '/_airlock/health answers GET and HEAD.', { headers: { allow: 'GET, HEAD' } });
    }
    const body = '{"status":"ok"}';
    res.writeHead(200, { 'content-type': 'application/json', 'content-length': Buffer.byteLength(body), 'cache-control': 'no-store', [REQUEST_ID_HEADER]: requestId });
    res.end(req.method === 'HEAD' ? undefined : body);
    return;
  }
  throw new AirlockError('unknown_service', `There is no Airlock endpoint ${path}; the reserved endpoints are /_airlock/health.`);
}
