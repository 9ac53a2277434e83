/**
 * Webhook announcements (approvals, anomalies) carry what agents sent: their text passes the secret
 * catalogue's scrub before it leaves, and is not sent at all when the scrub fails
 * (src/observability/post-webhook.ts). A real receiver on loopback, the real catalogue.
 */
import { once } from 'node:events';
import { createServer, type IncomingMessage, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import { pino } from 'pino';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { Credential } from '../../src/credentials/credential.js';
import { postWebhook } from '../../src/observability/post-webhook.js';
import { SecretCatalog } from '../../src/redaction/secret-catalog.js';
import { assertNoLeak } from '../helpers/assert-no-leak.js';
import { canary } from '../helpers/canary.js';

const clientId = canary('webhook-client-id');
const received: string[] = [];
let url = '';
const server = createServer((req: IncomingMessage, res: ServerResponse) => {
  const chunks: Buffer[] = [];
  req.on('data', (chunk: Buffer) => chunks.push(chunk));
  req.on('end', () => {
    received.push(Buffer.concat(chunks).toString('utf8'));
    res.end();
  });
});

beforeAll(async () => {
  server.listen(0, '127.0.0.1');
  await once(server, 'listening');
  url = `http://127.0.0.1:${(server.address() as AddressInfo).port}/hook`;
});
afterAll(() => new Promise<void>((resolve) => server.close(() => resolve())));

async function until(condition: () => boolean): Promise<void> {
  for (let i = 0; i < 200 && !condition(); i++) await new Promise((resolve) => setTimeout(resolve, 10));
}

describe('a webhook announcement', () => {
  it('is scrubbed of every secret the catalogue knows, in any form, before it is posted', async () => {
    const catalog = new SecretCatalog();
    catalog.remember(new Credential('env:CRM_CLIENT_ID', clientId));
    const logger = pino({ base: undefined }, { write: () => undefined });
    const before = received.length;
    const body = { type: 'airlock.approval.pending', path: `/crm/v1/clients/${clientId}`, justification: `for ${encodeURIComponent(clientId)} and ${Buffer.from(clientId).toString('base64')}` };
    postWebhook(url, body, (text) => catalog.scrub(text), logger, 'approval test');
    await until(() => received.length > before);
    const posted = received.at(-1) as string;
    expect(JSON.parse(posted)).toMatchObject({ type: 'airlock.approval.pending', path: '/crm/v1/clients/[REDACTED]' });
    assertNoLeak([clientId], [{ name: 'webhook body', text: posted }]);
  });

  it('is not sent when its text cannot be checked, and the log says so', async () => {
    const lines: string[] = [];
    const logger = pino({ base: undefined }, { write: (line: string) => void lines.push(line) });
    const before = received.length;
    postWebhook(url, { text: 'anything' }, () => { throw new Error('scrubber fault (injected by the test)'); }, logger, 'anomaly test');
    await new Promise((resolve) => setTimeout(resolve, 200));
    expect(received.length).toBe(before);
    expect(lines.map((line) => JSON.parse(line) as { msg: string; webhook: string })).toEqual([expect.objectContaining({ msg: 'webhook not sent: its text could not be checked for secrets', webhook: 'anomaly test' })]);
  });
});
