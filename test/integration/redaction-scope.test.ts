/**
 * Whose secrets a response is scrubbed of (`redact.scope`), and the key shapes Airlock masks without
 * knowing the value (`redact.builtin_patterns`, `redact.rules`).
 *
 * Scope: three services differ only in redact.scope. Each injects the service credential for alice and
 * bob's own credential for bob (a grant override); a fourth service holds a credential of its own. The
 * stand-in upstream leaks whichever keys the test names, raw and base64-encoded. The canaries are shaped
 * like OpenAI keys, so the scope services turn the sk- shape rule off: otherwise it would mask every
 * canary whatever the scope, and the scope would be untestable.
 */
import { request as httpRequest, type IncomingHttpHeaders } from 'node:http';
import { randomBytes } from 'node:crypto';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { generateAgentToken } from '../../src/identity/agent-token.js';
import type { AuditRecord } from '../../src/observability/audit-record.js';
import { assertNoLeak, findLeaks, type Surface } from '../helpers/assert-no-leak.js';
import { canary } from '../helpers/canary.js';
import { startProxy, type ProxyFixture } from '../helpers/start-proxy.js';
import { startUpstream, type Upstream } from '../helpers/start-upstream.js';

const MARKER = '[REDACTED]';

const KEYS = {
  service: canary('scope-svc'),
  bob: canary('scope-bob'),
  other: canary('scope-other'),
  shapes: canary('shapes'),
};
type KeyName = keyof typeof KEYS;

const ALNUM = 'ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789';
function randomFrom(alphabet: string, length: number): string {
  const bytes = randomBytes(length);
  let out = '';
  for (const byte of bytes) out += alphabet[byte % alphabet.length];
  return out;
}

/** Fresh, random instances of the published key formats (unique per run, like every fixture). */
const SHAPED = {
  aws: `AKIA${randomFrom('ABCDEFGHIJKLMNOPQRSTUVWXYZ234567', 16)}`,
  github: `ghp_${randomFrom(ALNUM, 36)}`,
  stripe: `sk_live_${randomFrom(ALNUM, 24)}`,
  slack: `xoxb-${randomFrom('0123456789', 12)}-${randomFrom('0123456789', 13)}-${randomFrom(ALNUM, 24)}`,
  google: `AIza${randomFrom(`${ALNUM}_-`, 35)}`,
  openai: `sk-proj-${randomFrom(`${ALNUM}_-`, 48)}`,
  private_key: [
    '-----BEGIN RSA PRIVATE KEY-----',
    ...Array.from({ length: 6 }, () => randomBytes(48).toString('base64')),
    '-----END RSA PRIVATE KEY-----',
  ].join('\n'),
  internal: `itk_${randomFrom(ALNUM, 32)}`,
} as const;
type ShapeName = keyof typeof SHAPED;
const BUILTIN_SHAPES: ShapeName[] = ['aws', 'github', 'stripe', 'slack', 'google', 'openai', 'private_key'];

/** One line per shape, so each replacement is visible on its own. */
function shapedBody(names: readonly ShapeName[]): string {
  return names.map((name) => `${name}: ${SHAPED[name]}\n`).join('');
}

describe('redaction scope and key shapes', () => {
  const alice = generateAgentToken();
  const bob = generateAgentToken();
  const agentSaw: Surface[] = [];
  /** Responses in which a key is allowed through by definition (scope "request"): kept out of the sweep. */
  const allowedThrough: Surface[] = [];
  let upstream: Upstream;
  let proxy: ProxyFixture;

  interface Seen {
    status: number;
    headers: IncomingHttpHeaders;
    text: string;
    surface: Surface;
  }

  function ask(token: string, path: string): Promise<Seen> {
    const url = `${proxy.url}${path}`;
    return new Promise((resolve, reject) => {
      const req = httpRequest(url, { headers: { authorization: `Bearer ${token}` }, agent: false, timeout: 10_000 }, (res) => {
        const chunks: Buffer[] = [];
        res.on('data', (chunk: Buffer) => chunks.push(chunk));
        res.on('error', reject);
        res.on('end', () => {
          const text = Buffer.concat(chunks).toString('utf8');
          const surface = { name: `response to GET ${path}`, text: `${res.rawHeaders.join('\n')}\n${text}` };
          resolve({ status: res.statusCode ?? 0, headers: res.headers, text, surface });
        });
      });
      req.on('timeout', () => req.destroy(new Error(`${url}: no response within 10 s`)));
      req.on('error', reject);
      req.end();
    });
  }

  async function auditOf(seen: Seen): Promise<AuditRecord> {
    const id = seen.headers['x-airlock-request-id'];
    const deadline = Date.now() + 5000;
    for (;;) {
      const record = proxy.auditRecords().find((r) => r.request_id === id);
      if (record !== undefined) return record;
      if (Date.now() > deadline) throw new Error(`no audit record for request ${String(id)}`);
      await new Promise((resolve) => setTimeout(resolve, 10));
    }
  }

  /** Which of the named keys the response still shows, in any form. */
  function leakedKeys(seen: Seen, names: readonly KeyName[]): KeyName[] {
    return names.filter((name) => findLeaks([KEYS[name]], [seen.surface]).length > 0);
  }

  beforeAll(async () => {
    upstream = await startUpstream((req, res) => {
      const url = new URL(req.url ?? '/', 'http://upstream.invalid');
      let body: string;
      if (url.pathname.endsWith('/v1/leak')) {
        // The upstream knows more keys than the one it was sent (a shared debug endpoint, a log page).
        const names = (url.searchParams.get('keys') ?? '').split(',').filter((n): n is KeyName => n in KEYS);
        body = JSON.stringify({
          authorization: req.headers.authorization ?? null,
          leaked: Object.fromEntries(names.map((n) => [n, { raw: KEYS[n], base64: Buffer.from(`user:${KEYS[n]}`).toString('base64') }])),
        });
      } else if (url.pathname.endsWith('/v1/shapes')) {
        const names = (url.searchParams.get('names') ?? '').split(',') as ShapeName[];
        body = shapedBody(names);
      } else if (url.pathname.endsWith('/v1/text')) {
        body = url.searchParams.get('t') ?? '';
      } else {
        res.writeHead(404).end();
        return;
      }
      res.writeHead(200, { 'content-type': 'text/plain', 'content-length': Buffer.byteLength(body) });
      res.end(body);
    });
    const routes = [{ method: 'GET', path: '/v1/*', scope: 'api' }];
    const scoped = (scope: string): Record<string, unknown> => ({
      upstream: upstream.url,
      credential: { secret: 'env:SERVICE_KEY' },
      redact: { scope, builtin_patterns: { openai: false } },
      routes,
    });
    proxy = await startProxy(
      {
        services: {
          'scope-service': scoped('service'),
          'scope-request': scoped('request'),
          'scope-all': scoped('all'),
          other: { upstream: upstream.url, credential: { secret: 'env:OTHER_KEY' }, routes },
          shapes: { upstream: upstream.url, credential: { secret: 'env:SHAPES_KEY' }, routes },
          'shapes-no-aws': {
            upstream: upstream.url,
            credential: { secret: 'env:SHAPES_KEY' },
            redact: { builtin_patterns: { aws: false }, rules: [{ name: 'internal', prefix: 'itk_', charset: 'A-Za-z0-9', min_length: 20, max_length: 64 }] },
            routes,
          },
        },
        agents: {
          alice: {
            tokens: [alice.hash],
            credentials: ['scope-service', 'scope-request', 'scope-all', 'other', 'shapes', 'shapes-no-aws'].map((service) => ({ service, max_scope: ['api'] })),
          },
          bob: {
            tokens: [bob.hash],
            credentials: ['scope-service', 'scope-request', 'scope-all'].map((service) => ({ service, max_scope: ['api'], credential: { secret: 'env:BOB_KEY' } })),
          },
        },
      },
      { env: { SERVICE_KEY: KEYS.service, BOB_KEY: KEYS.bob, OTHER_KEY: KEYS.other, SHAPES_KEY: KEYS.shapes } },
    );
  });

  afterAll(async () => {
    await proxy?.close();
    await upstream?.close();
  });

  describe('redact.scope', () => {
    it('the grant override is what bob\'s requests carry, the service credential what alice\'s carry', async () => {
      await ask(alice.token, '/scope-service/v1/leak');
      expect(upstream.requests.at(-1)?.header('authorization')).toEqual([`Bearer ${KEYS.service}`]);
      await ask(bob.token, '/scope-service/v1/leak');
      expect(upstream.requests.at(-1)?.header('authorization')).toEqual([`Bearer ${KEYS.bob}`]);
    });

    it('"service": a response to alice that echoes bob\'s key is scrubbed of it too, and the other way round', async () => {
      const toAlice = await ask(alice.token, '/scope-service/v1/leak?keys=bob');
      agentSaw.push(toAlice.surface);
      expect(toAlice.status).toBe(200);
      expect(leakedKeys(toAlice, ['service', 'bob'])).toEqual([]);
      const parsed = JSON.parse(toAlice.text) as { authorization: string; leaked: { bob: { raw: string } } };
      expect(parsed.authorization).toBe(`Bearer ${MARKER}`);
      expect(parsed.leaked.bob.raw).toBe(MARKER);
      expect((await auditOf(toAlice)).redactions).toBe(3);

      const toBob = await ask(bob.token, '/scope-service/v1/leak?keys=service');
      agentSaw.push(toBob.surface);
      expect(leakedKeys(toBob, ['service', 'bob'])).toEqual([]);
      expect((JSON.parse(toBob.text) as { leaked: { service: { raw: string } } }).leaked.service.raw).toBe(MARKER);
    });

    it('"service": a key of a different service is not in scope and passes', async () => {
      const seen = await ask(alice.token, '/scope-service/v1/leak?keys=other');
      allowedThrough.push(seen.surface);
      expect(leakedKeys(seen, ['service'])).toEqual([]);
      expect((JSON.parse(seen.text) as { leaked: { other: { raw: string } } }).leaked.other.raw).toBe(KEYS.other);
    });

    it('"request": only the injected key is removed; bob\'s key in a response to alice passes (the defined behaviour)', async () => {
      const toAlice = await ask(alice.token, '/scope-request/v1/leak?keys=bob');
      // Scope "request" promises the credential of this request only. Bob's key reaching alice is
      // what that setting means; operators who share an upstream between agents use "service".
      allowedThrough.push(toAlice.surface);
      expect(toAlice.status).toBe(200);
      expect(leakedKeys(toAlice, ['service'])).toEqual([]);
      const parsed = JSON.parse(toAlice.text) as { authorization: string; leaked: { bob: { raw: string } } };
      expect(parsed.authorization).toBe(`Bearer ${MARKER}`);
      expect(parsed.leaked.bob.raw).toBe(KEYS.bob);
      expect((await auditOf(toAlice)).redactions).toBe(1);

      // ... and bob's own key is removed from bob's responses, where it is the injected one.
      const toBob = await ask(bob.token, '/scope-request/v1/leak?keys=bob');
      agentSaw.push(toBob.surface);
      expect(leakedKeys(toBob, ['bob'])).toEqual([]);
      expect((JSON.parse(toBob.text) as { leaked: { bob: { raw: string } } }).leaked.bob.raw).toBe(MARKER);
    });

    it('"all": a secret of a different service is removed as well', async () => {
      const seen = await ask(alice.token, '/scope-all/v1/leak?keys=other,bob');
      agentSaw.push(seen.surface);
      expect(seen.status).toBe(200);
      expect(leakedKeys(seen, ['service', 'bob', 'other'])).toEqual([]);
      const parsed = JSON.parse(seen.text) as { leaked: { other: { raw: string }; bob: { raw: string } } };
      expect(parsed.leaked.other.raw).toBe(MARKER);
      expect(parsed.leaked.bob.raw).toBe(MARKER);
      expect((await auditOf(seen)).redactions).toBe(5);
    });
  });

  describe('key shapes', () => {
    it('every built-in shape is masked by default, the text around it untouched', async () => {
      const seen = await ask(alice.token, `/shapes/v1/shapes?names=${BUILTIN_SHAPES.join(',')}`);
      agentSaw.push(seen.surface);
      expect(seen.status).toBe(200);
      expect(seen.text).toBe(BUILTIN_SHAPES.map((name) => `${name}: ${MARKER}\n`).join(''));
      for (const name of BUILTIN_SHAPES) expect(seen.text).not.toContain(SHAPED[name]);
      expect((await auditOf(seen)).redactions).toBe(BUILTIN_SHAPES.length);
    });

    it('with builtin_patterns {aws: false} the AWS key id passes and every other shape is still masked', async () => {
      const seen = await ask(alice.token, `/shapes-no-aws/v1/shapes?names=${BUILTIN_SHAPES.join(',')}`);
      expect(seen.status).toBe(200);
      expect(seen.text).toBe(BUILTIN_SHAPES.map((name) => `${name}: ${name === 'aws' ? SHAPED.aws : MARKER}\n`).join(''));
      allowedThrough.push(seen.surface);
      expect((await auditOf(seen)).redactions).toBe(BUILTIN_SHAPES.length - 1);
    });

    it('a custom rule (itk_ + 20..64 of A-Za-z0-9) masks an itk_ token; without the rule it passes', async () => {
      const withRule = await ask(alice.token, '/shapes-no-aws/v1/shapes?names=internal');
      expect(withRule.text).toBe(`internal: ${MARKER}\n`);
      const withoutRule = await ask(alice.token, '/shapes/v1/shapes?names=internal');
      expect(withoutRule.text).toBe(`internal: ${SHAPED.internal}\n`);
      // Too short for min_length: not a key.
      const short = await ask(alice.token, `/shapes-no-aws/v1/text?t=${encodeURIComponent('ref itk_abc123 done')}`);
      expect(short.text).toBe('ref itk_abc123 done');
    });

    it('word boundary: "task-" and other words ending in "sk-" followed by a long run are not sk- keys', async () => {
      const run = randomFrom(ALNUM, 40);
      const text = `task-${run} mask-${run} risk-${run}_x desk-${run}-y`;
      const seen = await ask(alice.token, `/shapes/v1/text?t=${encodeURIComponent(text)}`);
      expect(seen.text).toBe(text);
      expect((await auditOf(seen)).redactions).toBe(0);
      // The same run after a non-word byte is a key.
      const control = await ask(alice.token, `/shapes/v1/text?t=${encodeURIComponent(`(sk-${run}) task-${run}`)}`);
      expect(control.text).toBe(`(${MARKER}) task-${run}`);
    });
  });

  it('no service credential leaked where it was in scope; nothing in logs or audit', async () => {
    expect(agentSaw.length).toBeGreaterThan(4);
    assertNoLeak([KEYS.service, KEYS.bob], agentSaw);
    assertNoLeak([KEYS.service], allowedThrough);
    assertNoLeak(Object.values(KEYS), [
      { name: 'log', text: proxy.logLines.join('') },
      { name: 'audit', text: proxy.auditText() },
    ]);
    const logAndAudit = proxy.logLines.join('') + proxy.auditText();
    for (const value of Object.values(SHAPED)) expect(logAndAudit).not.toContain(value);
  });
});
