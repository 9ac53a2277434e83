/**
 * The admin API, on its own listener (admin.listen; keep it on loopback or a private network). JSON in
 * and out; errors are the same RFC 9457 problems as on the agent side. Every call needs an admin token.
 * Nothing it returns holds a secret value: credentials are described by reference, state and
 * generation only, and every response body passes through the secret catalogue's scrubber as a backstop.
 *
 *   GET  /v1/health                      liveness and the state of the audit log and credentials
 *   GET  /v1/credentials                 per reference: fresh/stale/expired, generation, age, failures
 *   POST /v1/credentials/refresh         {"ref": "vault:secret/stripe#api_key"}: fetch again now (rotation)
 */
import { randomUUID } from 'node:crypto';
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import type { Logger } from 'pino';
import type { CredentialBroker } from '../credentials/credential-broker.js';
import { parseSecretRef } from '../credentials/secret-ref.js';
import { AirlockError, asAirlockError } from '../errors.js';
import type { AuditLog } from '../observability/audit-log.js';
import { sendProblem } from '../pipeline/send-problem.js';
import type { SecretCatalog } from '../redaction/secret-catalog.js';
import { REQUEST_ID_HEADER } from '../upstream/relay-headers.js';
import { authenticateAdmin } from './authenticate-admin.js';

export interface AdminContext {
  readonly tokenHashes: ReadonlySet<string>;
  readonly broker: CredentialBroker;
  readonly audit: AuditLog;
  readonly catalog: SecretCatalog;
  readonly logger: Logger;
}

const MAX_BODY = 64 * 1024;

async function readJson(req: IncomingMessage): Promise<Record<string, unknown>> {
  const chunks: Buffer[] = [];
  let size = 0;
  for await (const chunk of req) {
    size += (chunk as Buffer).length;
    if (size > MAX_BODY) throw new AirlockError('payload_too_large', `Admin request bodies are limited to ${MAX_BODY} bytes.`);
    chunks.push(chunk as Buffer);
  }
  if (size === 0) return {};
  try {
    const parsed: unknown = JSON.parse(Buffer.concat(chunks).toString('utf8'));
    if (parsed !== null && typeof parsed === 'object' && !Array.isArray(parsed)) return parsed as Record<string, unknown>;
  } catch {
    // fall through
  }
  throw new AirlockError('invalid_request', 'The admin API takes a JSON object as its request body.');
}

function sendJson(res: ServerResponse, status: number, body: unknown, requestId: string, catalog: SecretCatalog): void {
  const text = catalog.scrub(JSON.stringify(body));
  res.writeHead(status, { 'content-type': 'application/json; charset=utf-8', 'content-length': Buffer.byteLength(text), 'cache-control': 'no-store', [REQUEST_ID_HEADER]: requestId });
  res.end(text);
}

async function route(context: AdminContext, req: IncomingMessage, res: ServerResponse, requestId: string): Promise<void> {
  const path = (req.url ?? '/').split('?')[0];
  const method = req.method ?? 'GET';
  if (path === '/v1/health' && method === 'GET') {
    const credentials = context.broker.status();
    return sendJson(
      res,
      200,
      {
        status: context.audit.healthy ? 'ok' : 'degraded',
        audit: context.audit.healthy ? 'writable' : 'failing',
        credentials: { total: credentials.length, failing: credentials.filter((c) => c.failing).length, expired: credentials.filter((c) => c.state === 'expired').length },
      },
      requestId,
      context.catalog,
    );
  }
  if (path === '/v1/credentials' && method === 'GET') return sendJson(res, 200, { credentials: context.broker.status() }, requestId, context.catalog);
  if (path === '/v1/credentials/refresh' && method === 'POST') {
    const body = await readJson(req);
    const ref = body['ref'];
    if (typeof ref !== 'string' || !parseSecretRef(ref).ok) throw new AirlockError('invalid_request', 'Send {"ref": "<secret reference>"}, e.g. {"ref": "vault:secret/stripe#api_key"}.');
    const before = context.broker.status().find((s) => s.ref === ref)?.generation ?? null;
    const credential = await context.broker.refresh(ref);
    context.logger.info({ credential: ref, generation: credential.generation, previous_generation: before }, 'credential refreshed by an admin');
    return sendJson(res, 200, { ref, generation: credential.generation, previous_generation: before, changed: credential.generation !== before || before === null }, requestId, context.catalog);
  }
  throw new AirlockError('unknown_service', `No admin endpoint ${method} ${path}; see GET /v1/health, GET /v1/credentials, POST /v1/credentials/refresh.`);
}

export function createAdminServer(context: AdminContext): Server {
  return createServer({ requireHostHeader: true, headersTimeout: 10_000, requestTimeout: 30_000 }, function handleAdminRequest(req, res) {
    const requestId = randomUUID();
    Promise.resolve()
      .then(() => authenticateAdmin(req.headers, context.tokenHashes))
      .then(() => route(context, req, res, requestId))
      .catch((error: unknown) => {
        const failure = asAirlockError(error);
        if (failure.code === 'internal_error') context.logger.error({ err: error, request_id: requestId }, 'admin request failed');
        sendProblem(res, failure, requestId, !req.complete);
      });
  });
}
