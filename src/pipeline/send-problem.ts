/**
 * Writing an AirlockError to the agent as RFC 9457 problem+json, on a response object or, for
 * connections node refuses to parse (and CONNECT), straight onto the socket.
 */
import type { ServerResponse } from 'node:http';
import { STATUS_CODES } from 'node:http';
import { problemBody, type AirlockError } from '../errors.js';
import { REQUEST_ID_HEADER } from '../upstream/relay-headers.js';

/** With a charset: @octokit/request reads bodies as text only for json, text/* or an explicit utf-8 charset. */
export const PROBLEM_CONTENT_TYPE = 'application/problem+json; charset=utf-8';

export function sendProblem(res: ServerResponse, error: AirlockError, requestId: string, closeConnection: boolean): void {
  if (res.headersSent || res.destroyed) {
    res.destroy();
    return;
  }
  const body = JSON.stringify(problemBody(error, requestId));
  const headers: Record<string, string | number> = {
    'content-type': PROBLEM_CONTENT_TYPE,
    'content-length': Buffer.byteLength(body),
    'cache-control': 'no-store',
    [REQUEST_ID_HEADER]: requestId,
    ...error.headers,
  };
  if (closeConnection) headers['connection'] = 'close';
  res.writeHead(error.status, headers);
  res.end(body);
}

/** A complete HTTP/1.1 response for a socket without a parsed request; the connection is closed after. */
export function rawProblemResponse(error: AirlockError, requestId: string): string {
  const body = JSON.stringify(problemBody(error, requestId));
  const extra = Object.entries(error.headers).map(([name, value]) => `${name}: ${value}\r\n`).join('');
  return (
    `HTTP/1.1 ${error.status} ${STATUS_CODES[error.status] ?? ''}\r\n` +
    `content-type: ${PROBLEM_CONTENT_TYPE}\r\n` +
    `content-length: ${Buffer.byteLength(body)}\r\n` +
    `cache-control: no-store\r\n` +
    `${REQUEST_ID_HEADER}: ${requestId}\r\n${extra}` +
    'connection: close\r\n\r\n' +
    body
  );
}
