/**
 * A key echoed without its published prefix: an upstream that parses `sk-proj-<body>` and reports
 * `<body>` (a key id in an error, say) shows no form of the whole value, yet the body is all of the
 * key's secret. Found by review: it reached the agent unmasked. The body as text, JSON-escaped and
 * percent-encoded is masked, in a whole body and streamed as SSE, and so is a JWT's signature alone
 * (the body alone base64- or hex-encoded is not: README, Pieces).
 */
import { randomBytes } from 'node:crypto';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { generateAgentToken } from '../../src/identity/agent-token.js';
import { assertNoLeak } from '../helpers/assert-no-leak.js';
import { startProxy, type ProxyFixture } from '../helpers/start-proxy.js';
import { startUpstream, type Upstream } from '../helpers/start-upstream.js';

const PROJECT_KEY = `sk-proj-${randomBytes(24).toString('base64url')}`;
const BODY = PROJECT_KEY.slice('sk-proj-'.length);
const JWT_HEAD = `${Buffer.from('{"alg":"HS256","typ":"JWT"}').toString('base64url')}.${Buffer.from('{"sub":"svc-body-echo"}').toString('base64url')}`;
const JWT_SIGNATURE = randomBytes(32).toString('base64url');
const JWT = `${JWT_HEAD}.${JWT_SIGNATURE}`;

const ECHOES: ReadonlyArray<[string, (body: string) => string]> = [
  ['plain', (body) => body],
  ['JSON-escaped', (body) => JSON.stringify(body).slice(1, -1)],
  ['percent-encoded', (body) => encodeURIComponent(body)],
];

describe('a key echoed without its published prefix', () => {
  const bot = generateAgentToken();
  const seen: string[] = [];
  let upstream: Upstream;
  let proxy: ProxyFixture;

  beforeAll(async () => {
    upstream = await startUpstream((req, res, recorded) => {
      const url = new URL(req.url ?? '/', 'http://upstream');
      const injected = (recorded.header('authorization')[0] ?? '').replace(/^Bearer /, '');
      const secretPart = injected.startsWith('sk-proj-') ? injected.slice('sk-proj-'.length) : injected.slice(injected.lastIndexOf('.') + 1);
      const echo = ECHOES.find(([name]) => name === url.searchParams.get('form'))?.[1] ?? ((body: string) => body);
      const text = `key ${echo(secretPart)} is disabled`;
      if (url.pathname.endsWith('/stream')) {
        res.writeHead(200, { 'content-type': 'text/event-stream' });
        res.write(`data: ${JSON.stringify({ message: text.slice(0, 20) })}\n\n`);
        res.end(`data: ${JSON.stringify({ message: text.slice(20) })}\n\ndata: [DONE]\n\n`);
        return;
      }
      const body = JSON.stringify({ error: { message: text } });
      res.writeHead(401, { 'content-type': 'application/json', 'content-length': Buffer.byteLength(body) });
      res.end(body);
    });
    const service = (secret: string): Record<string, unknown> => ({
      upstream: upstream.url,
      credential: { secret, inject: 'bearer' },
      routes: [
        { method: 'GET', path: '/v1/models', scope: 'models:read' },
        { method: 'GET', path: '/v1/stream', scope: 'models:read' },
      ],
    });
    proxy = await startProxy(
      {
        services: { openai: service('env:PROJECT_KEY'), partner: service('env:PARTNER_JWT') },
        agents: { bot: { tokens: [bot.hash], credentials: [{ service: 'openai', max_scope: ['*'] }, { service: 'partner', max_scope: ['*'] }] } },
      },
      { env: { PROJECT_KEY, PARTNER_JWT: JWT } },
    );
  });

  afterAll(async () => {
    await proxy?.close();
    await upstream?.close();
  });

  async function get(path: string): Promise<string> {
    const response = await fetch(`${proxy.url}${path}`, { headers: { authorization: `Bearer ${bot.token}` } });
    const text = await response.text();
    seen.push(text);
    return text;
  }

  it.each(ECHOES.map(([name, echo]) => [name, echo]))('masks the body of an sk-proj- key echoed %s', async (name, echo) => {
    const text = await get(`/openai/v1/models?form=${name}`);
    expect(text).toContain('is disabled');
    expect(text).not.toContain(echo(BODY));
    expect(text).toContain('[REDACTED');
  });

  it('masks the body split across two SSE events', async () => {
    const text = await get('/openai/v1/stream');
    expect(text).toContain('[DONE]');
    expect(text.replace(/data: |\n|"|\{|\}|message:/g, '')).not.toContain(BODY.slice(0, 12));
  });

  it("masks a JWT's signature echoed alone", async () => {
    const text = await get('/partner/v1/models');
    expect(text).not.toContain(JWT_SIGNATURE);
    expect(text).toContain('[REDACTED');
  });

  it('leaves nothing of either secret anywhere', async () => {
    assertNoLeak([PROJECT_KEY, BODY, JWT, JWT_SIGNATURE], [
      { name: 'agent', text: seen.join('\n') },
      { name: 'logs', text: proxy.logLines.join('\n') },
      { name: 'audit', text: await proxy.auditText() },
    ]);
  });
});
