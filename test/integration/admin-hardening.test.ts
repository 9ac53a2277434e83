/**
 * What a review of the admin side found (stop 29), over real sockets:
 * - a change whose body was still arriving when a reload removed its admin token was made all the same:
 *   the token is checked again once the body is in;
 * - the audit record of an admin change kept the raw request target (an absolute-form URL with a token
 *   in its user:password@ part, escapes undecoded): it keeps the canonical path, tokens masked;
 * - a body nested past the stack's depth was a 500 logged as a fault: it is a 400;
 * - the base64 (or hex, or escaped) form of an agent token was accepted in a reason and kept: refused;
 * - a page on a rebound name (DNS rebinding) read /metrics: the listener answers only for its own names.
 */
import { request } from 'node:http';
import { connect } from 'node:net';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { buildConfig } from '../../src/config/load-config.js';
import type { AirlockConfig } from '../../src/config/types.js';
import { generateAgentToken } from '../../src/identity/agent-token.js';
import { assertNoLeak } from '../helpers/assert-no-leak.js';
import { canary } from '../helpers/canary.js';
import { adminClient, eventually, freePort, type AdminClient } from '../helpers/operator.js';
import type { Problem } from '../helpers/send-request.js';
import { startProxy, type ProxyFixture } from '../helpers/start-proxy.js';
import { startUpstream, type Upstream } from '../helpers/start-upstream.js';

describe('admin API hardening', () => {
  const key = canary('admin-hardening');
  const alice = generateAgentToken();
  const bob = generateAgentToken();
  const bot = generateAgentToken();
  let upstream: Upstream;
  let proxy: ProxyFixture;
  let admin: AdminClient;
  let adminPort: number;

  function config(adminTokens: Array<{ name: string; hash: string }>): Record<string, unknown> {
    return {
      admin: { listen: `127.0.0.1:${adminPort}`, tokens: adminTokens, hosts: ['ops.example.com'], public_url: 'https://airlock.example.org/console' },
      services: { api: { upstream: upstream.url, credential: { secret: 'env:HARDENING_KEY' }, routes: [{ method: 'GET', path: '/v1/*', scope: 'api:read' }] } },
      agents: { 'pay-bot': { tokens: [bot.hash], credentials: [{ service: 'api', max_scope: ['*'] }] } },
    };
  }

  function built(input: Record<string, unknown>): AirlockConfig {
    const result = buildConfig({ listen: '127.0.0.1:0', data_dir: proxy.dataDir, ...input }, { baseDir: proxy.dataDir });
    if (result.config === null) throw new Error(JSON.stringify(result.problems));
    return result.config;
  }

  beforeAll(async () => {
    upstream = await startUpstream();
    adminPort = await freePort();
    proxy = await startProxy(config([{ name: 'alice', hash: alice.hash }, { name: 'bob', hash: bob.hash }]), { env: { HARDENING_KEY: key } });
    admin = adminClient(() => proxy.airlock.adminUrl as string, alice.token);
  });

  afterAll(async () => {
    assertNoLeak([key, alice.token, bob.token, bot.token], [
      { name: 'admin answers', text: admin.seen.join('\n') },
      { name: 'logs', text: proxy.logLines.join('') },
      { name: 'audit', text: proxy.auditText() },
    ]);
    await proxy?.close();
    await upstream?.close();
  });

  /** Sends `head` and the first part of a body on a raw socket; returns a function that sends the rest and reads the answer. */
  function startSlowCall(head: string, first: string): Promise<(rest: string) => Promise<string>> {
    const socket = connect(adminPort, '127.0.0.1');
    let answer = '';
    socket.on('data', (chunk: Buffer) => void (answer += chunk.toString('latin1')));
    socket.on('error', () => undefined);
    return new Promise((resolve) => {
      socket.once('connect', () => {
        socket.write(head + first);
        resolve(async (rest) => {
          socket.write(rest);
          await eventually('the answer to the slow call', () => answer.includes('\r\n\r\n') && answer.length > answer.indexOf('\r\n\r\n') + 4, 5_000);
          socket.destroy();
          return answer;
        });
      });
    });
  }

  it('a token removed by a reload while its body was arriving makes no change: 401', async () => {
    const body = JSON.stringify({ reason: 'slow drip' });
    const head = `POST /v1/agents/pay-bot/revoke HTTP/1.1\r\nhost: 127.0.0.1\r\nauthorization: Bearer ${bob.token}\r\ncontent-type: application/json\r\ncontent-length: ${body.length}\r\nconnection: close\r\n\r\n`;
    const finish = await startSlowCall(head, body.slice(0, 5));
    // Let the server read the headers and authenticate them before the reload.
    await eventually('the slow call to be taken', async () => (await admin.call('GET', '/v1/health')).status === 200);
    expect(await proxy.airlock.reload(built(config([{ name: 'alice', hash: alice.hash }])))).toEqual({ ok: true });
    const answer = await finish(body.slice(5));
    expect(answer.split('\r\n')[0]).toBe('HTTP/1.1 401 Unauthorized');
    const revocations = (await admin.call('GET', '/v1/revocations')).json<{ revocations: unknown[] }>().revocations;
    expect(revocations).toEqual([]);
    expect(proxy.auditRecords().some((r) => r.actor === 'bob')).toBe(false);
  });

  it('an absolute-form target with a token in its user part: the record keeps the canonical path, no token', async () => {
    const body = JSON.stringify({ reason: 'absolute form' });
    const head = `POST http://x:${bob.token}@elsewhere.example/v1/agents/pay%2Dbot/revoke HTTP/1.1\r\nhost: 127.0.0.1\r\nauthorization: Bearer ${alice.token}\r\ncontent-type: application/json\r\ncontent-length: ${body.length}\r\nconnection: close\r\n\r\n`;
    const finish = await startSlowCall(head, '');
    const answer = await finish(body);
    expect(answer.split('\r\n')[0]).toBe('HTTP/1.1 200 OK');
    const record = await eventually('the admin change record', () => proxy.auditRecords().find((r) => r.actor === 'alice' && r.reason === 'absolute form'));
    expect(record.path).toBe('/v1/agents/pay-bot/revoke');
    expect((await admin.call('POST', '/v1/agents/pay-bot/restore', { reason: 'test done' })).status).toBe(200);
  });

  it('a body nested too deeply is 400 invalid_request, not a fault', async () => {
    const deep = `{"reason":"x","a":${'['.repeat(30_000)}${']'.repeat(30_000)}}`;
    const nested = await fetch(`${proxy.airlock.adminUrl as string}/v1/agents/pay-bot/revoke`, { method: 'POST', headers: { authorization: `Bearer ${alice.token}`, 'content-type': 'application/json' }, body: deep });
    const problem = (await nested.json()) as Problem;
    expect(nested.status).toBe(400);
    expect(problem.code).toBe('invalid_request');
    expect(problem.detail).toContain('nested too deeply');
    expect(proxy.logLines.some((line) => line.includes('admin request failed'))).toBe(false);
    expect((await admin.call('GET', '/v1/revocations')).json<{ revocations: unknown[] }>().revocations).toEqual([]);
  });

  it.each([
    ['base64', (t: string) => Buffer.from(t).toString('base64')],
    ['hex', (t: string) => Buffer.from(t).toString('hex')],
    ['percent-escaped', (t: string) => encodeURIComponent(t).replace(/_/g, '%5F')],
  ])('a reason holding an agent token %s-encoded is refused, and nothing is kept', async (_name, encode) => {
    const answer = await admin.call('POST', '/v1/agents/pay-bot/revoke', { reason: `leaked: ${encode(bot.token)}` });
    expect(answer.status, answer.text).toBe(400);
    expect(answer.json<Problem>().detail).toContain('agent or session token');
    expect((await admin.call('GET', '/v1/revocations')).json<{ revocations: unknown[] }>().revocations).toEqual([]);
  });

  /** GET `path` on the admin listener with `host` as the Host header; the status. */
  function statusFor(host: string, path: string): Promise<number> {
    return new Promise((resolve, reject) => {
      const call = request({ host: '127.0.0.1', port: adminPort, path, headers: { host } }, (res) => {
        res.resume();
        resolve(res.statusCode ?? 0);
      });
      call.on('error', reject);
      call.end();
    });
  }

  it.each(['evil.attacker.example', 'evil.attacker.example:PORT', 'EVIL.attacker.example.', 'airlock.example.org.evil.example'])('a name that is not Airlock\'s (%s) gets 400 for /metrics and the console', async (name) => {
    const host = name.replace('PORT', String(adminPort));
    expect(await statusFor(host, '/metrics')).toBe(400);
    expect(await statusFor(host, '/')).toBe(400);
  });

  it.each(['127.0.0.1', 'localhost', 'airlock', '[::1]', 'admin.airlock.internal', 'airlock-admin.default.svc.cluster.local', 'ops.example.com', 'airlock.example.org', 'OPS.example.com.'])('%s is answered', async (name) => {
    expect(await statusFor(`${name}:${adminPort}`, '/metrics')).toBe(200);
  });
});
