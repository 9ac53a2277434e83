/**
 * A JWKS endpoint that answers with far more than a key set (compromised, or a wrong URL pointing at a
 * download): jose buffers the whole answer before parsing it, so Airlock caps what it reads (256 KiB).
 * The JWT is refused (401, as when the endpoint is down), the rest of the huge body is never read, and an
 * agent whose JWKS is sane is unaffected. At the boundary: a valid key set padded with whitespace to
 * exactly 256 KiB is accepted, one byte more is refused (README: "larger than 256 KiB").
 */
import { exportJWK, generateKeyPair, SignJWT, type CryptoKey } from 'jose';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { assertNoLeak } from '../helpers/assert-no-leak.js';
import { canary } from '../helpers/canary.js';
import { sendRequest, type Problem, type SentResponse } from '../helpers/send-request.js';
import { startProxy, type ProxyFixture } from '../helpers/start-proxy.js';
import { echoHandler, startUpstream, type Upstream } from '../helpers/start-upstream.js';

const AUDIENCE = 'airlock';
/** What the oversized endpoints would send in all: 64 MiB, far past the cap. */
const HUGE = 64 * 1024 * 1024;
const PIECE = 64 * 1024;
/** The cap (README, src/identity/jwt-verifier.ts): an answer of this many bytes is read, one more is not. */
const CAP = 256 * 1024;

describe('a JWKS answer larger than a key set', () => {
  const serviceKey = canary('jwks-oversized');
  let signing: { privateKey: CryptoKey; publicKey: CryptoKey };
  let upstream: Upstream;
  let jwks: Upstream;
  let proxy: ProxyFixture;
  /** Bytes each oversized endpoint managed to write before its reader stopped. */
  const written: Record<string, number> = { declared: 0, chunked: 0 };
  const seen: SentResponse[] = [];
  /** The path of every request the JWKS server got: proof that the key set was asked for at all. */
  const asked: string[] = [];

  beforeAll(async () => {
    signing = await generateKeyPair('RS256');
    const published = { ...(await exportJWK(signing.publicKey)), kid: 'k1', alg: 'RS256', use: 'sig' };
    const keySet = JSON.stringify({ keys: [published] });
    /** The key set with whitespace inside the JSON (before its closing brace), `total` bytes in all: still valid. */
    const padded = (total: number): string => `${keySet.slice(0, -1)}${' '.repeat(total - Buffer.byteLength(keySet))}}`;
    jwks = await startUpstream((req, res) => {
      asked.push(req.url ?? '');
      const kind = (req.url ?? '').slice(1);
      if (kind === 'at-cap') {
        // Exactly the cap, its size declared: neither the declared size nor the bytes read are over it.
        const body = padded(CAP);
        JSON.parse(body);
        res.writeHead(200, { 'content-type': 'application/json', 'content-length': Buffer.byteLength(body) });
        res.end(body);
        return;
      }
      if (kind === 'over-cap') {
        // One byte more, chunked (no size declared): only counting what is read can refuse it.
        const body = Buffer.from(padded(CAP + 1));
        JSON.parse(body.toString('utf8'));
        res.writeHead(200, { 'content-type': 'application/json' });
        for (let at = 0; at < body.length; at += PIECE) res.write(body.subarray(at, at + PIECE));
        res.end();
        return;
      }
      if (kind === 'sane') {
        res.writeHead(200, { 'content-type': 'application/json', 'content-length': Buffer.byteLength(keySet) });
        res.end(keySet);
        return;
      }
      // A valid key set followed by padding, as long as the reader keeps reading (bounded by HUGE).
      res.writeHead(200, { 'content-type': 'application/json', ...(kind === 'declared' ? { 'content-length': String(HUGE) } : {}) });
      const pad = Buffer.alloc(PIECE, 0x20);
      res.write(keySet.slice(0, -1));
      const pump = (): void => {
        while (written[kind]! < HUGE) {
          written[kind]! += PIECE;
          if (!res.write(pad)) {
            res.once('drain', pump);
            return;
          }
        }
        res.end();
      };
      res.on('close', () => res.removeAllListeners('drain'));
      pump();
    });
    upstream = await startUpstream(echoHandler);
    const agent = (issuer: string, path: string): Record<string, unknown> => ({
      jwt: { issuer, audience: AUDIENCE, subject: 'ci', jwks_url: `${jwks.url}/${path}`, algorithms: ['RS256'] },
      credentials: [{ service: 'api', max_scope: ['*'] }],
    });
    proxy = await startProxy(
      {
        services: { api: { upstream: upstream.url, credential: { secret: 'env:API_KEY' }, routes: [{ method: 'GET', path: '/v1/*', scope: 'api:read' }] } },
        agents: {
          declared: agent('https://declared.test', 'declared'),
          chunked: agent('https://chunked.test', 'chunked'),
          sane: agent('https://sane.test', 'sane'),
          'at-cap': agent('https://at-cap.test', 'at-cap'),
          'over-cap': agent('https://over-cap.test', 'over-cap'),
        },
      },
      { env: { API_KEY: serviceKey } },
    );
  });

  afterAll(async () => {
    await proxy?.close();
    await upstream?.close();
    await jwks?.close();
  });

  async function present(issuer: string): Promise<SentResponse> {
    const now = Math.floor(Date.now() / 1000);
    const token = await new SignJWT({}).setProtectedHeader({ alg: 'RS256', kid: 'k1' }).setIssuer(issuer).setAudience(AUDIENCE).setSubject('ci').setIssuedAt(now).setExpirationTime(now + 300).sign(signing.privateKey);
    const response = await sendRequest(`${proxy.url}/api/v1/models`, { headers: { authorization: `Bearer ${token}` } });
    seen.push(response);
    return response;
  }

  it.each(['declared', 'chunked'])('a %s oversized answer: the JWT is refused (401) and the body is not read to its end', async (kind) => {
    const response = await present(`https://${kind}.test`);
    expect(response.status, response.text).toBe(401);
    expect(response.json<Problem>().code).toBe('unauthenticated');
    // The key set was asked for: the 401 is the cap's doing, not an endpoint never reached.
    expect(asked).toContain(`/${kind}`);
    // The endpoint stopped far short of what it would send: the proxy read at most the cap plus what the
    // sockets' buffers held (a declared size is refused before any of the body is read).
    expect(written[kind]!).toBeLessThan(HUGE / 4);
  });

  it('a key set padded with whitespace to exactly 256 KiB is accepted (200)', async () => {
    const response = await present('https://at-cap.test');
    expect(response.status, response.text).toBe(200);
    expect(asked).toContain('/at-cap');
  });

  it('the same key set one byte over 256 KiB is refused (401)', async () => {
    const response = await present('https://over-cap.test');
    expect(response.status, response.text).toBe(401);
    expect(response.json<Problem>().code).toBe('unauthenticated');
    expect(asked).toContain('/over-cap');
  });

  it('an agent whose JWKS is a key set is accepted, and nothing reaches answers or records', async () => {
    const response = await present('https://sane.test');
    expect(response.status, response.text).toBe(200);
    expect(asked).toContain('/sane');
    await proxy.waitForAudit(seen.length);
    assertNoLeak([serviceKey], [
      { name: 'answers', text: seen.map((r) => r.text).join('\n') },
      { name: 'log', text: proxy.logLines.join('') },
      { name: 'audit', text: proxy.auditText() },
    ]);
  });
});
