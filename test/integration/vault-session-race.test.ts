/**
 * A 403 for a token that another call has already replaced (found by review): Vault expires the token;
 * a slow read and a fast one both get 403. The fast one logs in again and goes on; the slow one's 403
 * arrives after that, and asking Vault whether "the token" is still good asked about the new one, which
 * is: the slow read was taken for a denial by policy, its credential reported withdrawn and its last
 * good value dropped. Now a 403 for a token no longer in use is retried once with the current one.
 * The real VaultSession against the fake Vault, behind a relay that holds one path's answers 300 ms.
 */
import { once } from 'node:events';
import { createServer, request, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { pino } from 'pino';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { VaultSession } from '../../src/credentials/vault-session.js';
import { assertNoLeak } from '../helpers/assert-no-leak.js';
import { canary } from '../helpers/canary.js';
import { startVaultServer, type VaultServer } from '../support/vault-server.js';

describe('a Vault 403 that arrives after another call logged in again', () => {
  const roleId = canary('race-role');
  const secretId = canary('race-secret-id');
  const slowValue = canary('race-slow');
  const fastValue = canary('race-fast');
  const logLines: string[] = [];
  let vault: VaultServer;
  let relay: Server;
  let session: VaultSession;

  beforeAll(async () => {
    vault = await startVaultServer();
    vault.addAppRole(roleId, secretId, { roleName: 'airlock', policies: ['airlock'] });
    vault.putSecret('secret', 'slow', { value: slowValue });
    vault.putSecret('secret', 'fast', { value: fastValue });
    const target = new URL(vault.url);
    relay = createServer((req, res) => {
      const chunks: Buffer[] = [];
      req.on('data', (chunk: Buffer) => chunks.push(chunk));
      req.on('end', () => {
        const forwarded = request({ host: target.hostname, port: target.port, path: req.url, method: req.method, headers: req.headers }, (answer) => {
          const body: Buffer[] = [];
          answer.on('data', (chunk: Buffer) => body.push(chunk));
          answer.on('end', () => {
            // Vault has answered (for the token it was sent); the answer reaches Airlock late.
            setTimeout(() => {
              res.writeHead(answer.statusCode ?? 502, answer.headers);
              res.end(Buffer.concat(body));
            }, req.url === '/v1/secret/data/slow' ? 300 : 0);
          });
        });
        forwarded.end(Buffer.concat(chunks));
      });
    });
    relay.listen(0, '127.0.0.1');
    await once(relay, 'listening');
    const logger = pino({ level: 'info' }, { write: (line: string) => void logLines.push(line) });
    const values: Record<string, string> = { 'env:ROLE': roleId, 'env:SECRET': secretId };
    session = new VaultSession(
      { address: `http://127.0.0.1:${(relay.address() as AddressInfo).port}`, timeout: 5, rotation_grace: 60, auth: { method: 'approle', role_id: 'env:ROLE', secret_id: 'env:SECRET', mount: 'approle' } } as never,
      (ref) => Promise.resolve(values[ref] as string),
      logger,
    );
  });

  afterAll(async () => {
    await session?.close();
    relay?.close();
    await vault?.close();
    assertNoLeak([roleId, secretId, slowValue, fastValue, ...vault.issuedTokens()], [{ name: 'log', text: logLines.join('') }]);
  });

  const read = (path: string): Promise<unknown> => session.call((client) => client.read(`secret/data/${path}`));

  it('the slow read is retried with the new token and answers, rather than being taken for a denial', async () => {
    await read('fast');
    expect(vault.count('approle-login')).toBe(1);
    vault.expireAllTokens();
    const slow = read('slow').then(
      (answer) => ({ ok: true as const, answer }),
      (error: unknown) => ({ ok: false as const, error }),
    );
    // The slow read has reached Vault (and been refused) before the fast one starts.
    await new Promise((resolve) => setTimeout(resolve, 100));
    await read('fast');
    expect(vault.count('approle-login')).toBe(2);
    const outcome = await slow;
    expect(outcome.ok, outcome.ok ? '' : String((outcome as { error: unknown }).error)).toBe(true);
    expect(JSON.stringify((outcome as { answer: unknown }).answer)).toContain(slowValue);
    // One login for the expiry, not one per refused call.
    expect(vault.count('approle-login')).toBe(2);
  });
});
