/**
 * A refused upload is answered at once and the rest of its body read and thrown away (send-problem.ts,
 * the lingering drain). When the client stalls mid-body past `limits.request_timeout`, node reports the
 * request as timed out: the connection must then just close. Before, the listener answered that
 * timeout too, so the client read a second response (408) after its 401 and the audit log held a
 * second record for one request.
 */
import { connect } from 'node:net';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startProxy, type ProxyFixture } from '../helpers/start-proxy.js';
import { startUpstream, type Upstream } from '../helpers/start-upstream.js';

/** Sends `head` and part of a body, then nothing; everything read until the proxy closes (or 6 s). */
function stallAfterRefusal(url: string, head: string): Promise<{ got: string; closed: boolean }> {
  const { hostname, port } = new URL(url);
  return new Promise((resolve) => {
    const socket = connect(Number(port), hostname);
    let got = '';
    socket.on('connect', () => socket.write(`${head}${'x'.repeat(1000)}`));
    socket.on('data', (chunk: Buffer) => (got += chunk.toString('latin1')));
    socket.on('error', () => undefined);
    socket.on('close', () => {
      clearTimeout(timer);
      resolve({ got, closed: true });
    });
    const timer = setTimeout(() => {
      socket.destroy();
      resolve({ got, closed: false });
    }, 6000);
  });
}

describe('a refused upload whose client stalls past limits.request_timeout', () => {
  let upstream: Upstream;
  let proxy: ProxyFixture;
  beforeAll(async () => {
    upstream = await startUpstream();
    proxy = await startProxy({
      limits: { request_timeout: 1, headers_timeout: 1 },
      services: { svc: { upstream: upstream.url, credential: { secret: 'env:K', inject: 'bearer' }, routes: [{ method: 'POST', path: '/upload', scope: 'all' }] } },
      agents: {},
    }, { env: { K: 'k-drain-timeout-0123456789' } });
  });
  afterAll(async () => {
    await proxy?.close();
    await upstream?.close();
  });

  it('gets one answer, its 401, and then the connection closes; one audit record', async () => {
    const before = proxy.auditRecords().length;
    const { got, closed } = await stallAfterRefusal(proxy.url, 'POST /svc/upload HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/octet-stream\r\nContent-Length: 100000\r\n\r\n');
    expect(got).toMatch(/^HTTP\/1\.1 401 /);
    expect(got.match(/HTTP\/1\.[01] \d{3}/g), got).toHaveLength(1);
    expect(closed).toBe(true);
    await new Promise((r) => setTimeout(r, 200));
    const records = proxy.auditRecords().slice(before);
    expect(records.map((r) => [r.code, r.status])).toEqual([['unauthenticated', 401]]);
    expect(upstream.requests).toHaveLength(0);
  });
});
