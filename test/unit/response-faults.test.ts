/**
 * A fault in Airlock's own handling of a response (a redactor that throws: a bug, or memory exhausted)
 * fails closed and is named for what it is: 502 unscannable_response while nothing was sent, the
 * response cut when something was. Before, whatever the writer threw inside undici's callbacks came back
 * as the request's error and read as 502 upstream_unreachable ("Could not get a response from the
 * upstream"), sending an operator to look at a healthy upstream; and a throw in the gzip decoder's
 * 'data' listener escaped every handler.
 *
 * The fault is the one thing not real here: a matcher that throws when it meets the bytes FAULT (no
 * input makes the real one throw). Everything around it is: stage 8 (forwardRequest) with undici's Pool
 * to a node:http upstream, and stage 9 writing to a node:http response that a real client reads.
 */
import { once } from 'node:events';
import { createServer, request as httpRequest, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import { gzipSync } from 'node:zlib';
import { Pool } from 'undici';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { formatProblem } from '../../src/config/config-problem.js';
import { buildConfig } from '../../src/config/load-config.js';
import { AirlockError } from '../../src/errors.js';
import { generateAgentToken } from '../../src/identity/agent-token.js';
import { forwardRequest, type ForwardResult } from '../../src/pipeline/forward-request.js';
import { sendProblem } from '../../src/pipeline/send-problem.js';
import { compilePolicy, type ServicePolicy } from '../../src/policy/compile-policy.js';
import { NeedleSet } from '../../src/redaction/needle-set.js';
import { RedactionMatcher } from '../../src/redaction/redaction-matcher.js';
import { formsOf } from '../../src/redaction/secret-forms.js';
import { OutboundRequest } from '../../src/upstream/outbound-request.js';
import { ConnectionGate } from '../../src/upstream/connection-gate.js';
import { assertNoLeak } from '../helpers/assert-no-leak.js';
import { canary } from '../helpers/canary.js';
import { startUpstream, type Upstream } from '../helpers/start-upstream.js';

const FAULT = Buffer.from('FAULT');

/** The real matcher, except that scanning bytes that contain FAULT throws, as a redactor bug would. */
class FaultyMatcher extends RedactionMatcher {
  override scan(data: Buffer, before: number, final: boolean, out: number[], maskPartialAtEnd = true): number {
    if (data.includes(FAULT)) throw new Error('redactor fault (injected by the test)');
    return super.scan(data, before, final, out, maskPartialAtEnd);
  }

  // Header values are checked as text first; send FAULT on to the byte scan.
  override clearOfText(text: string, encoding: 'utf8' | 'latin1'): boolean {
    return !text.includes('FAULT') && super.clearOfText(text, encoding);
  }
}

interface AgentAnswer {
  readonly status: number;
  readonly body: string;
  /** False when the connection was cut before the response was whole. */
  readonly complete: boolean;
}

/** GET through the stage under test, as an agent would see it. */
function agentGet(port: number, path: string): Promise<AgentAnswer> {
  return new Promise((resolve, reject) => {
    const req = httpRequest({ host: '127.0.0.1', port, path, agent: false }, (res) => {
      const chunks: Buffer[] = [];
      res.on('data', (chunk: Buffer) => chunks.push(chunk));
      res.on('end', () => resolve({ status: res.statusCode ?? 0, body: Buffer.concat(chunks).toString('utf8'), complete: res.complete }));
      res.on('error', () => resolve({ status: res.statusCode ?? 0, body: Buffer.concat(chunks).toString('utf8'), complete: false }));
    });
    req.on('error', reject);
    req.end();
  });
}

describe('a fault in Airlock’s own response handling', () => {
  const secret = canary('response-fault');
  let upstream: Upstream;
  let pool: Pool;
  let service: ServicePolicy;
  let front: Server;
  let port: number;
  /** What forwardRequest settled with, per path. */
  const outcomes = new Map<string, ForwardResult | AirlockError>();

  beforeAll(async () => {
    upstream = await startUpstream((req, res) => {
      const path = req.url ?? '';
      if (path === '/buffered') {
        const body = `{"note":"FAULT","key":"${secret}"}`;
        res.writeHead(200, { 'content-type': 'application/json', 'content-length': Buffer.byteLength(body) });
        res.end(body);
      } else if (path === '/stream-first') {
        res.writeHead(200, { 'content-type': 'text/plain' });
        res.end(`FAULT ${secret}`);
      } else if (path === '/stream-later') {
        res.writeHead(200, { 'content-type': 'text/plain' });
        res.write('clean first chunk\n');
        setTimeout(() => res.end(`FAULT ${secret}`), 50);
      } else if (path === '/gzip-later') {
        res.writeHead(200, { 'content-type': 'text/plain', 'content-encoding': 'gzip' });
        res.write(gzipSync('clean first member\n'));
        setTimeout(() => res.end(gzipSync(`FAULT ${secret}`)), 50);
      } else if (path === '/trailer') {
        res.writeHead(200, { 'content-type': 'text/plain', trailer: 'x-debug' });
        res.write('clean body\n');
        res.addTrailers({ 'x-debug': `FAULT ${secret}` });
        setTimeout(() => res.end(), 50);
      } else if (path === '/header') {
        res.writeHead(200, { 'content-type': 'text/plain', 'x-debug': `FAULT ${secret}`, 'content-length': '2' });
        res.end('ok');
      } else {
        res.writeHead(404).end();
      }
    });
    const agent = generateAgentToken();
    const built = buildConfig(
      {
        listen: '127.0.0.1:0',
        data_dir: '/tmp',
        services: { api: { upstream: upstream.url, credential: { secret: 'env:UNUSED' }, routes: [{ method: 'GET', path: '/*', scope: 'api:read' }] } },
        agents: { bot: { tokens: [agent.hash], credentials: [{ service: 'api', max_scope: ['*'] }] } },
      },
      { baseDir: '/tmp' },
    );
    if (built.config === null) throw new Error(built.problems.map((p) => formatProblem(p, null)).join('\n'));
    service = compilePolicy(built.config).serviceByName.get('api') as ServicePolicy;
    pool = new Pool(upstream.url, { connections: 4 });
    const gate = new ConnectionGate(4);
    const matcher = new FaultyMatcher(new NeedleSet(formsOf(secret)), []);
    front = createServer((req: IncomingMessage, res: ServerResponse) => {
      const path = req.url ?? '/';
      forwardRequest({ dispatcher: pool, gate, outbound: new OutboundRequest('GET', path, null), body: null, res, requestId: 'req-fault', service, agentPrefix: '', matcher, capture: new Set(), exchange: { relay: null, refusal: null }, span: { end() {} } }).then(
        (result) => outcomes.set(path, result),
        (error: AirlockError) => {
          outcomes.set(path, error);
          // As run-pipeline answers a refusal: only possible while nothing was sent.
          if (!res.headersSent) sendProblem(res, error, 'req-fault', false, (text) => text);
        },
      );
    });
    front.listen(0, '127.0.0.1');
    await once(front, 'listening');
    port = (front.address() as AddressInfo).port;
  });

  afterAll(async () => {
    front?.close();
    await pool?.close();
    await upstream?.close();
  });

  function expectUnscannable(outcome: ForwardResult | AirlockError | undefined): AirlockError {
    const error = outcome instanceof AirlockError ? outcome : outcome?.failure;
    expect(error).toBeInstanceOf(AirlockError);
    expect(error?.code).toBe('unscannable_response');
    expect(error?.detail).toContain('fault in Airlock');
    return error as AirlockError;
  }

  it.each([
    ['a buffered body (Content-Length)', '/buffered'],
    ["a streamed body's first chunk", '/stream-first'],
    ['a response header', '/header'],
  ])('in %s, before anything was sent: a whole 502 unscannable_response problem', async (_what, path) => {
    const answer = await agentGet(port, path);
    expect(answer.status).toBe(502);
    expect(answer.complete).toBe(true);
    expect(JSON.parse(answer.body)).toMatchObject({ type: 'tag:airlock.dev,2026:problem:unscannable_response', status: 502 });
    expect(outcomes.get(path)).toBeInstanceOf(AirlockError);
    expectUnscannable(outcomes.get(path));
    assertNoLeak([secret], [{ name: `agent ${path}`, text: answer.body }]);
  });

  it.each([
    ['an identity body', '/stream-later', 'clean first chunk\n'],
    ['a gzip body (the decoder’s data listener)', '/gzip-later', 'clean first member\n'],
    ['the trailers, scanned at the end of a streamed body', '/trailer', 'clean body\n'],
  ])('in %s after its first bytes went out: the response is cut, the outcome names our fault', async (_what, path, first) => {
    const answer = await agentGet(port, path);
    expect(answer.status).toBe(200);
    expect(answer.complete).toBe(false);
    expect(answer.body).toBe(first);
    await expect.poll(() => outcomes.get(path)).toBeDefined();
    const outcome = outcomes.get(path) as ForwardResult;
    expect(outcome).not.toBeInstanceOf(AirlockError);
    expect(outcome.complete).toBe(false);
    expectUnscannable(outcome);
    assertNoLeak([secret], [{ name: `agent ${path}`, text: answer.body }]);
  });

  it('leaves the pool and the next request untouched', async () => {
    const answer = await agentGet(port, '/missing');
    expect(answer.status).toBe(404);
    expect(answer.complete).toBe(true);
  });
});
