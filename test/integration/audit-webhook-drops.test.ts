/**
 * The audit webhook's copy is bounded (1,000 records waiting); when a webhook that stalls lets it
 * overflow, the oldest records are dropped from the copy, and that is no longer silent: each drop is
 * counted (airlock_audit_webhook_dropped_total, through the log's drop hook), and said in one warning per
 * episode, with a total when the webhook catches up. The records are all in the file.
 */
import { join } from 'node:path';
import { Agent, request } from 'undici';
import { pino, type Logger } from 'pino';
import { afterEach, describe, expect, it } from 'vitest';
import { generateAgentToken } from '../../src/identity/agent-token.js';
import { AuditLog } from '../../src/observability/audit-log.js';
import type { AuditRecord } from '../../src/observability/audit-record.js';
import { IsoTime } from '../../src/observability/iso-time.js';
import { createMetrics } from '../../src/observability/metrics.js';
import { newRecord } from '../../src/pipeline/run-pipeline.js';
import { SecretCatalog } from '../../src/redaction/secret-catalog.js';
import { assertNoLeak } from '../helpers/assert-no-leak.js';
import { canary } from '../helpers/canary.js';
import { eventually } from '../helpers/operator.js';
import { startProxy, tempDir, type ProxyFixture } from '../helpers/start-proxy.js';
import { startUpstream, type Upstream } from '../helpers/start-upstream.js';

/** A webhook that takes each POST and answers none until released (then answers every one, and the rest at once). */
async function stallingWebhook(): Promise<{ upstream: Upstream; release(): void; records(): number }> {
  let release: () => void = () => undefined;
  const released = new Promise<void>((resolve) => (release = resolve));
  const upstream = await startUpstream(async (_req, res) => {
    await released;
    res.writeHead(204);
    res.end();
  });
  return { upstream, release, records: () => upstream.requests.reduce((n, r) => n + (JSON.parse(r.body.toString('utf8')) as unknown[]).length, 0) };
}

function record(path: string): AuditRecord {
  const r = newRecord({ nowMs: Date.now, isoTime: new IsoTime() }, 'GET', '127.0.0.1');
  r.path = path;
  return r;
}

/** An audit log copying to `webhook`, wired as the composition root wires it (app.ts): the drop hook feeds the counter. */
function webhookAuditLog(webhook: string, metrics: ReturnType<typeof createMetrics>, logger: Logger | null): AuditLog {
  return new AuditLog({
    file: join(tempDir('audit-webhook-drops-'), 'audit.jsonl'),
    secrets: new SecretCatalog(),
    onFailure: 'refuse',
    maxBytes: 0,
    keep: 0,
    webhook,
    logger,
    onWebhookDrop: (count) => metrics.auditWebhookDropped.inc(count),
  });
}

function warnings(lines: readonly string[], start: string): Array<Record<string, unknown>> {
  return lines.map((l) => JSON.parse(l) as Record<string, unknown>).filter((l) => String(l['msg']).startsWith(start));
}

const BEHIND = 'the audit webhook is 1000 records behind';
const CAUGHT_UP = 'the audit webhook caught up';

describe('an audit webhook that stalls', () => {
  const closers: Array<() => Promise<void>> = [];

  afterEach(async () => {
    for (const close of closers.splice(0).reverse()) await close();
  });

  it('counts every record dropped from the copy, warns once per episode, and totals it when the webhook catches up', async () => {
    const webhook = await stallingWebhook();
    closers.push(() => webhook.upstream.close());
    const lines: string[] = [];
    const metrics = createMetrics();
    const log = webhookAuditLog(`${webhook.upstream.url}/sink`, metrics, pino({ level: 'info' }, { write: (line: string) => void lines.push(line) }));
    await log.open();
    closers.push(() => log.close());
    // Released before the log closes (closers run last first): close waits for the copy to be shipped.
    closers.push(async () => webhook.release());
    const dropped = async (): Promise<number> => (await metrics.auditWebhookDropped.get()).values[0]?.value ?? 0;

    // One write of 1,300: 300 are dropped at once, then the first 100 of the 1,000 left go out (and stall).
    await Promise.all(Array.from({ length: 1300 }, (_, i) => log.append(record(`/first/${i}`))));
    await eventually('the first batch at the webhook', () => webhook.upstream.server.listening && webhook.upstream.requests.length === 1);
    expect(await dropped()).toBe(300);
    // More while it is still stalled (900 waiting): 50 more dropped and counted, not said again.
    await Promise.all(Array.from({ length: 150 }, (_, i) => log.append(record(`/second/${i}`))));
    expect(await dropped()).toBe(350);
    expect(warnings(lines, BEHIND)).toHaveLength(1);
    expect(warnings(lines, BEHIND)[0]?.['records']).toBe(300);
    expect(warnings(lines, CAUGHT_UP)).toEqual([]);

    webhook.release();
    await eventually('the webhook caught up', () => warnings(lines, CAUGHT_UP).length === 1);
    expect(warnings(lines, CAUGHT_UP)[0]?.['records']).toBe(350);
    expect(webhook.records()).toBe(1450 - 350);
    expect(await metrics.registry.metrics()).toContain('airlock_audit_webhook_dropped_total 350');

    // A later overflow is a new episode, said again.
    await Promise.all(Array.from({ length: 1150 }, (_, i) => log.append(record(`/third/${i}`))));
    await eventually('the second episode said', () => warnings(lines, BEHIND).length === 2);
  });

  // Found by review: only queue overflow was counted; a batch the webhook refused or never got is just
  // as missing from its copy.
  it('counts the records of batches the webhook refuses or never gets', async () => {
    const refusing = await startUpstream((_req, res) => {
      res.writeHead(503);
      res.end();
    });
    closers.push(() => refusing.close());
    for (const webhook of [`${refusing.url}/sink`, 'http://127.0.0.1:9/sink']) {
      const metrics = createMetrics();
      const log = webhookAuditLog(webhook, metrics, null);
      await log.open();
      await Promise.all(Array.from({ length: 250 }, (_, i) => log.append(record(`/lost/${i}`))));
      await log.close();
      expect((await metrics.auditWebhookDropped.get()).values[0]?.value, webhook).toBe(250);
    }
  });

  it('says so from a running proxy whose audit.webhook stalls, and exposes the counter', async () => {
    const key = canary('webhook-drop-key');
    const agent = generateAgentToken();
    const admin = generateAgentToken();
    const webhook = await stallingWebhook();
    closers.push(() => webhook.upstream.close());
    const upstream = await startUpstream();
    closers.push(() => upstream.close());
    const proxy: ProxyFixture = await startProxy(
      {
        audit: { webhook: `${webhook.upstream.url}/sink` },
        admin: { listen: '127.0.0.1:0', tokens: [admin.hash] },
        services: { echo: { upstream: upstream.url, credential: { secret: 'env:DROP_KEY', inject: 'bearer' }, routes: [{ method: 'GET', path: '/v1/*', scope: 'read' }] } },
        agents: { 'drop-bot': { tokens: [agent.hash], credentials: [{ service: 'echo', max_scope: ['read'] }] } },
        anomalies: { enabled: false },
      },
      { env: { DROP_KEY: key } },
    );
    closers.push(async () => {
      webhook.release();
      await proxy.close();
    });
    const dispatcher = new Agent({ connections: 8 });
    closers.push(() => dispatcher.close());
    let sent = 0;
    const worker = async (): Promise<void> => {
      while (sent < 1300) {
        sent += 1;
        const response = await request(`${proxy.url}/echo/v1/n/${sent}`, { dispatcher, headers: { authorization: `Bearer ${agent.token}` } });
        await response.body.dump();
      }
    };
    await Promise.all(Array.from({ length: 8 }, worker));
    await proxy.waitForAudit(1300);
    const said = await eventually('the drop said in the log', () => {
      const found = warnings(proxy.logLines, BEHIND);
      return found.length > 0 ? found : undefined;
    });
    expect(said).toHaveLength(1);
    expect(said[0]?.['level']).toBe('warn');
    const metricsText = await (await request(`${proxy.airlock.adminUrl as string}/metrics`)).body.text();
    const dropped = Number(/^airlock_audit_webhook_dropped_total (\d+)/m.exec(metricsText)?.[1] ?? 0);
    expect(dropped).toBeGreaterThan(0);
    assertNoLeak([key, agent.token, admin.token], [
      { name: 'logs', text: proxy.logLines.join('') },
      { name: 'webhook bodies', text: webhook.upstream.requests.map((r) => r.body.toString('utf8')).join('\n') },
    ]);
  });
});
