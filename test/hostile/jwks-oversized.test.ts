/**
 * A JWKS endpoint that answers with far more than a key set (compromised, or a wrong URL pointing at a
 * download): jose buffers the whole answer before parsing it, so Airlock caps what it reads (256 KiB).
 * The JWT is refused (401, as when the endpoint is down), the rest of the huge body is never read, and an
 * agent whose JWKS is sane is unaffected.
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

describe('a JWKS answer larger than a key set', () => {
  const serviceKey = canary('jwks-oversized');
  let signing: { privateKey: CryptoKey; publicKey: CryptoKey };
  let upstream: Upstream;
  let jwks: Upstream;
  let proxy: ProxyFixture;
  /** Bytes each oversized endpoint managed to write before its reader stopped. */
  const written: Record<string, number> = { declared: 0, chunked: 0 };
  const seen: SentResponse[] = [];

  beforeAll(async () => {
    signing = await generateKeyPair('RS256');
    const published = { ...(await exportJWK(signing.publicKey)), kid: 'k1', alg: 'RS256', use: 'sig' };
    const keySet = JSON.stringify({ keys: [published] });
    jwks = await startUpstream((req, res) => {
      const kind = (req.url ?? '').slice(1);
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
        agents: { declared: agent('https://declared.test', 'declared'), chunked: agent('https://chunked.test', 'chunked'), sane: agent('https://sane.test', 'sane') },
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
    // The endpoint stopped far short of what it would send: the proxy read at most the cap plus what the
    // sockets' buffers held (a declared size is refused before any of the body is read).
    expect(written[kind]!).toBeLessThan(HUGE / 4);
  });

  it('an agent whose JWKS is a key set is accepted, and nothing reaches answers or records', async () => {
    const response = await present('https://sane.test');
    expect(response.status, response.text).toBe(200);
    await proxy.waitForAudit(3);
    assertNoLeak([serviceKey], [
      { name: 'answers', text: seen.map((r) => r.text).join('\n') },
      { name: 'log', text: proxy.logLines.join('') },
      { name: 'audit', text: proxy.auditText() },
    ]);
  });
});
