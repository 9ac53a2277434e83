/**
 * An upstream that echoes input into response header NAMES (`x-<hex of the key>: 1`), in the head and
 * in the trailers (invariant 1; found by review): a name cannot carry the "[REDACTED]" marker (RFC 9110
 * 5.1: a token), so the header is dropped, and the others are relayed as sent.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { generateAgentToken } from '../../src/identity/agent-token.js';
import { findLeaks } from '../helpers/assert-no-leak.js';
import { canary } from '../helpers/canary.js';
import { eventually } from '../helpers/operator.js';
import { rawRequest } from '../helpers/raw-http.js';
import { startProxy, type ProxyFixture } from '../helpers/start-proxy.js';
import { hostileWatch } from './support/hostile-watch.js';
import { startUpstream, type Upstream } from '../helpers/start-upstream.js';

describe('a secret echoed into a response header name', () => {
  const watch = hostileWatch();
  const key = canary('header-name');
  const agent = generateAgentToken();
  let upstream: Upstream;
  let proxy: ProxyFixture;

  beforeAll(async () => {
    upstream = await startUpstream((req, res) => {
      const hex = Buffer.from(String(req.headers.authorization ?? '').replace(/^Bearer /, ''), 'utf8').toString('hex');
      if (req.url === '/trailer') {
        res.writeHead(200, { 'content-type': 'text/plain', trailer: `x-t-${hex}, x-t-kept` });
        res.write('body ');
        res.addTrailers({ [`x-t-${hex}`]: '1', 'x-t-kept': 'yes' });
        res.end('end');
        return;
      }
      res.writeHead(200, [['content-type', 'text/plain'], [`x-${hex}`, '1'], ['x-kept', 'yes']]);
      res.end('ok');
    });
    proxy = await startProxy(
      {
        services: {
          echo: { upstream: upstream.url, credential: { secret: 'env:ECHO_KEY', inject: 'bearer' }, routes: [{ method: 'GET', path: '/*', scope: 'read' }] },
        },
        agents: { bot: { tokens: [agent.hash], credentials: [{ service: 'echo', max_scope: ['read'] }] } },
      },
      { env: { ECHO_KEY: key } },
    );
    watch.start();
  });

  afterAll(async () => {
    await proxy.close();
    await upstream.close();
  });

  for (const path of ['/head', '/trailer']) {
    it(`${path}: the header named with the key is dropped, the rest relayed`, async () => {
      const response = await rawRequest(proxy.url, `GET /echo${path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\nAuthorization: Bearer ${agent.token}\r\nTE: trailers\r\n\r\n`);
      expect(response.status).toBe(200);
      expect(response.raw).toContain(path === '/head' ? 'x-kept: yes' : 'x-t-kept: yes');
      const requestId = response.headers['x-airlock-request-id']?.[0];
      const record = await eventually('the audit record', () => proxy.auditRecords().find((r) => r.request_id === requestId));
      expect(record.path).toBe(`/echo${path}`);
      expect(record.redactions).toBeGreaterThanOrEqual(1);
      expect(
        findLeaks(
          [key],
          [
            { name: 'response', text: response.raw },
            { name: 'logs', text: proxy.logLines.join('\n') },
            { name: 'audit', text: proxy.auditText() },
          ],
        ),
      ).toEqual([]);
    });
  }

  it('the proxy stayed healthy (no unhandled rejection or uncaught exception, event loop responsive)', () => {
    watch.assertHealthy();
  });
});
