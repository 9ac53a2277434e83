/**
 * The console, driven in real headless Chromium (Debian's `chromium`, installed by .ci/run) through
 * playwright-core: an operator signs in with an admin token, approves or denies a held agent request,
 * revokes and restores an agent, and watches the live audit feed. The page is served with a strict CSP
 * (no inline script or style), so any CSP violation shows up as a console error and fails the test;
 * and no canary credential ever appears in the page.
 */
import { existsSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { chromium, type BrowserContext, type Page } from 'playwright-core';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { generateAgentToken } from '../../src/identity/agent-token.js';
import { assertNoLeak } from '../helpers/assert-no-leak.js';
import { canary } from '../helpers/canary.js';
import { startProxy, type ProxyFixture } from '../helpers/start-proxy.js';
import { okHandler, startUpstream, type Upstream } from '../helpers/start-upstream.js';

const CHROMIUM = '/usr/bin/chromium';
const haveChromium = existsSync(CHROMIUM);
if (!haveChromium) {
  console.warn(
    `\n*** SKIPPING test/integration/console.test.ts: ${CHROMIUM} is missing. Install the Debian package \`chromium\` ` +
      '(apt-get install chromium; .ci/run does this) to run the console tests in headless Chromium. ***\n',
  );
}

/** How long any single wait in the browser may take. */
const WAIT_MS = 6_000;
const CHARGES_PATH = '/things/v1/charges';

interface OpenedPage {
  readonly page: Page;
  /** Console errors and uncaught page errors (a CSP violation is reported as a console error). */
  readonly errors: string[];
}

describe.skipIf(!haveChromium)('console in headless Chromium', () => {
  const key = canary('console-key');
  const admin = generateAgentToken();
  const payBot = generateAgentToken();
  const readBot = generateAgentToken();
  let upstream: Upstream;
  let proxy: ProxyFixture;
  let adminUrl: string;
  let profileDir: string;
  let context: BrowserContext;

  beforeAll(async () => {
    upstream = await startUpstream();
    proxy = await startProxy(
      {
        services: {
          things: {
            upstream: upstream.url,
            credential: { secret: 'env:THINGS_KEY' },
            routes: [
              { method: 'POST', path: '/v1/charges', scope: 'charges:write' },
              { method: 'GET', path: '/v1/things/:id', scope: 'things:read' },
            ],
          },
        },
        agents: {
          'pay-bot': {
            tokens: [payBot.hash],
            credentials: [{ service: 'things', max_scope: ['charges:write'], require_approval: true, approval_mode: 'hold', approval_timeout: 20 }],
          },
          'read-bot': { tokens: [readBot.hash], credentials: [{ service: 'things', max_scope: ['things:read'] }] },
        },
        admin: { listen: '127.0.0.1:0', tokens: [{ name: 'alice', hash: admin.hash }] },
      },
      { env: { THINGS_KEY: key } },
    );
    adminUrl = proxy.airlock.adminUrl as string;
    profileDir = mkdtempSync(join(tmpdir(), 'airlock-chromium-'));
    // playwright refuses --user-data-dir among the arguments; a persistent context is the same thing: a
    // fresh profile in a temporary directory.
    context = await chromium.launchPersistentContext(profileDir, {
      executablePath: CHROMIUM,
      headless: true,
      args: ['--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run', '--disable-background-networking', '--disable-component-update', '--disable-sync'],
      // Chromium's first start on two busy cores took over 15 s once (a CI flake); this hook allows 60.
      timeout: 45_000,
    });
    context.setDefaultTimeout(WAIT_MS);
  }, 60_000);

  afterAll(async () => {
    // The browser first, so the audit stream's connection is gone when the proxy drains.
    await context?.close();
    // A browser that failed to start may still be writing its profile for a moment.
    if (profileDir !== undefined) rmSync(profileDir, { recursive: true, force: true, maxRetries: 10, retryDelay: 200 });
    await proxy?.close();
    await upstream?.close();
  });

  async function openPage(path = '/', base = adminUrl): Promise<OpenedPage> {
    const page = await context.newPage();
    const errors: string[] = [];
    page.on('console', (message) => {
      if (message.type() === 'error') errors.push(`console: ${message.text()}`);
    });
    page.on('pageerror', (error) => errors.push(`pageerror: ${error.message}`));
    const response = await page.goto(`${base}${path}`, { waitUntil: 'load' });
    expect(response?.status()).toBe(200);
    return { page, errors };
  }

  async function signIn(page: Page, token = admin.token): Promise<void> {
    await page.getByTestId('token-input').fill(token);
    await page.getByTestId('token-submit').click();
    await page.getByTestId('app').waitFor({ state: 'visible' });
    await page.getByTestId('agent-row').first().waitFor({ state: 'visible' });
  }

  async function assertNoCanary(page: Page): Promise<void> {
    assertNoLeak([key], [{ name: 'console page HTML', text: await page.content() }]);
  }

  async function statusText(page: Page): Promise<string> {
    return (await page.getByTestId('status').textContent()) ?? '';
  }

  /** Starts a held request in the background; it settles when an approver decides (or it times out). */
  function heldCharge(body: string): Promise<{ status: number; json: Record<string, unknown> }> {
    return fetch(`${proxy.url}${CHARGES_PATH}`, {
      method: 'POST',
      headers: { authorization: `Bearer ${payBot.token}`, 'content-type': 'application/json' },
      body,
      signal: AbortSignal.timeout(25_000),
    }).then(async (response) => ({ status: response.status, json: (await response.json()) as Record<string, unknown> }));
  }

  async function readThing(id: string): Promise<Response> {
    return fetch(`${proxy.url}/things/v1/things/${id}`, { headers: { authorization: `Bearer ${readBot.token}` }, signal: AbortSignal.timeout(5_000) });
  }

  it('is served with a strict CSP and no inline script, style or event handler', async () => {
    const response = await fetch(`${adminUrl}/`);
    expect(response.status).toBe(200);
    const csp = response.headers.get('content-security-policy') ?? '';
    expect(csp).toContain("default-src 'none'");
    expect(csp).toContain("script-src 'self'");
    expect(csp).toContain("style-src 'self'");
    const html = await response.text();
    const scripts = [...html.matchAll(/<script\b([^>]*)>([\s\S]*?)<\/script>/gi)];
    expect(scripts.map((m) => [(m[1] ?? '').trim(), (m[2] ?? '').trim()])).toEqual([['src="/console.js" defer', '']]);
    expect(html).not.toMatch(/<style\b/i);
    expect(html).not.toMatch(/\sstyle=/i);
    expect(html).not.toMatch(/\son[a-z]+=/i);
    // The script never writes API data as markup.
    const script = readFileSync(new URL('../../console/console.js', import.meta.url), 'utf8');
    expect(script).not.toMatch(/innerHTML|outerHTML|insertAdjacentHTML|document\.write/);
  });

  it('approves a held request with a click: the request completes and the audit names alice and the reason', async () => {
    const { page, errors } = await openPage();
    await signIn(page);
    const seenBefore = upstream.requests.length;
    const held = heldCharge('{"amount":4200}');
    held.catch(() => undefined);

    const row = page.getByTestId('approval-row').filter({ hasText: CHARGES_PATH });
    await row.waitFor({ state: 'visible' });
    expect(await row.textContent()).toContain('pay-bot');
    const id = (await row.getAttribute('data-approval-id')) as string;
    expect(id).toMatch(/^apr_/);
    expect(await row.getAttribute('id')).toBe(`approval-${id}`);
    await assertNoCanary(page);

    await row.getByTestId('approval-reason').fill('ticket OPS-7 checked');
    await row.getByTestId('approval-approve').click();

    const outcome = await held;
    expect(outcome.status).toBe(200);
    expect(outcome.json).toEqual({ ok: true });
    const seen = upstream.requests.slice(seenBefore).filter((r) => r.target === '/v1/charges');
    expect(seen).toHaveLength(1);
    expect(seen[0]?.body.toString('utf8')).toBe('{"amount":4200}');
    expect(seen[0]?.header('authorization')).toEqual([`Bearer ${key}`]);

    await page.locator(`#approval-${id}`).and(page.getByTestId('approval-row')).waitFor({ state: 'detached' });
    expect(await statusText(page)).toContain('Approved');
    await page.getByTestId('approvals-history').locator('summary').click();
    const decided = page.getByTestId('history-row').and(page.locator(`#approval-${id}`));
    await decided.waitFor({ state: 'visible' });
    expect(await decided.textContent()).toContain('ticket OPS-7 checked');

    const deadline = Date.now() + WAIT_MS;
    let record = proxy.auditRecords().find((r) => r.approval === id && r.path === CHARGES_PATH && r.actor === null);
    while (record === undefined && Date.now() < deadline) {
      await new Promise((resolve) => setTimeout(resolve, 25));
      record = proxy.auditRecords().find((r) => r.approval === id && r.path === CHARGES_PATH && r.actor === null);
    }
    expect(record).toMatchObject({ agent: 'pay-bot', decision: 'allow', status: 200, upstream_status: 200, approver: 'alice', approval_reason: 'ticket OPS-7 checked' });

    await assertNoCanary(page);
    expect(errors).toEqual([]);
    await page.close();
  });

  it('denies a held request with a click: it ends with 403 approval_denied; a /#approval-<id> link scrolls to it', async () => {
    const seenBefore = upstream.requests.length;
    const held = heldCharge('{"amount":99}');
    held.catch(() => undefined);

    // The webhook's link: wait for the approval through the API, then open the console at its anchor.
    let id: string | undefined;
    const deadline = Date.now() + WAIT_MS;
    while (id === undefined && Date.now() < deadline) {
      const list = (await (await fetch(`${adminUrl}/v1/approvals?status=pending`, { headers: { authorization: `Bearer ${admin.token}` } })).json()) as { approvals: Array<{ id: string }> };
      id = list.approvals[0]?.id;
      if (id === undefined) await new Promise((resolve) => setTimeout(resolve, 25));
    }
    expect(id).toBeDefined();

    const { page, errors } = await openPage(`/#approval-${id}`);
    await signIn(page);
    const row = page.locator(`#approval-${id}`);
    await row.waitFor({ state: 'visible' });
    await page.locator(`#approval-${id}.targeted`).waitFor({ state: 'visible' });

    await row.getByTestId('approval-reason').fill('not during the freeze');
    await row.getByTestId('approval-deny').click();

    const outcome = await held;
    expect(outcome.status).toBe(403);
    expect(outcome.json['code']).toBe('approval_denied');
    expect(String(outcome.json['detail'])).toContain('not during the freeze');
    expect(upstream.requests.length).toBe(seenBefore);
    await row.and(page.getByTestId('approval-row')).waitFor({ state: 'detached' });
    expect(await statusText(page)).toContain('Denied');

    await assertNoCanary(page);
    expect(errors).toEqual([]);
    await page.close();
  });

  it('revoking an agent makes its next request fail with 401; Restore brings it back', async () => {
    expect((await readThing('before')).status).toBe(200);
    const { page, errors } = await openPage();
    await signIn(page);
    const row = page.locator('tr[data-agent="read-bot"]');
    await row.waitFor({ state: 'visible' });
    expect(await row.getByTestId('agent-status').textContent()).toBe('active');

    // The reason is shown back as text: markup in it stays inert.
    const reason = 'leaked in a log <b data-testid="injected">bold</b>';
    await row.getByTestId('agent-revoke').click();
    await row.getByTestId('agent-revoke-reason').fill(reason);
    await row.getByTestId('agent-revoke-confirm').click();
    await row.locator('[data-testid="agent-status"]', { hasText: 'revoked' }).waitFor({ state: 'visible' });
    expect(await row.getByTestId('agent-status').textContent()).toBe(`revoked by alice: ${reason}`);
    expect(await page.getByTestId('injected').count()).toBe(0);
    await page.locator('tr[data-testid="revocation-row"][data-kind="agent"][data-target="read-bot"]').waitFor({ state: 'visible' });

    const refused = await readThing('while-revoked');
    expect(refused.status).toBe(401);
    expect(((await refused.json()) as Record<string, unknown>)['code']).toBe('unauthenticated');

    await row.getByTestId('agent-restore').click();
    await row.locator('[data-testid="agent-status"]', { hasText: /^active$/ }).waitFor({ state: 'visible' });
    expect((await readThing('after')).status).toBe(200);

    await assertNoCanary(page);
    expect(errors).toEqual([]);
    await page.close();
  });

  it('the live audit feed shows a request made after the page opened', async () => {
    const { page, errors } = await openPage();
    await signIn(page);
    await page.getByTestId('audit-state').filter({ hasText: '(live)' }).waitFor({ state: 'visible' });

    const response = await readThing('feed-check-42');
    expect(response.status).toBe(200);
    const requestId = response.headers.get('x-airlock-request-id') as string;
    expect(requestId).toBeTruthy();
    const row = page.locator(`tr[data-testid="audit-row"][data-request-id="${requestId}"]`);
    await row.waitFor({ state: 'visible' });
    const text = (await row.textContent()) ?? '';
    for (const expected of ['read-bot', 'GET', '/things/v1/things/feed-check-42', 'allow', '200']) expect(text).toContain(expected);

    await assertNoCanary(page);
    expect(errors).toEqual([]);
    await page.close();
  });

  it("shows a held request's query, account header and body, masked, collapsed to a line and whole on demand, pending and decided", async () => {
    const noteKey = canary('console-note');
    const body = JSON.stringify({ amount: 5000, currency: 'usd', note: noteKey, token: payBot.token });
    const held = fetch(`${proxy.url}${CHARGES_PATH}?confirm=true&api_key=${noteKey}`, {
      method: 'POST',
      headers: { authorization: `Bearer ${payBot.token}`, 'content-type': 'application/json', 'stripe-account': 'acct_CONSOLE7' },
      body,
      signal: AbortSignal.timeout(25_000),
    });
    held.catch(() => undefined);
    const { page, errors } = await openPage();
    await signIn(page);
    const row = page.getByTestId('approval-row').filter({ hasText: 'confirm=true' });
    await row.waitFor({ state: 'visible' });
    const id = (await row.getAttribute('data-approval-id')) as string;
    const preview = row.getByTestId('approval-preview');
    const line = (await preview.textContent()) ?? '';
    expect(line).toContain('query: confirm=true&api_key=[REDACTED]');
    // Whose account it acts on (approvals.bind_headers), as the approval is bound to it.
    expect(await row.getByTestId('approval-preview-headers').textContent()).toBe('headers: stripe-account: acct_CONSOLE7');
    expect(line).toContain(`body: ${Buffer.byteLength(body)} bytes application/json  {"amount":5000,"currency":"usd","note":"[REDACTED]"`);
    expect(await row.getByTestId('approval-preview-body').isHidden()).toBe(true);
    await row.getByTestId('approval-preview-toggle').click();
    expect(await row.getByTestId('approval-preview-toggle').getAttribute('aria-expanded')).toBe('true');
    expect(await row.getByTestId('approval-preview-query').textContent()).toBe('confirm=true&api_key=[REDACTED]');
    expect(await row.getByTestId('approval-preview-body').textContent()).toBe('{"amount":5000,"currency":"usd","note":"[REDACTED]","token":"alk_[REDACTED]"}');
    // Opened, it stays open across the 2 s refresh (the row is kept, not rebuilt): refreshes run one after
    // another, so the second answer to come means the first was rendered.
    for (let i = 0; i < 2; i++) await page.waitForResponse((response) => response.url().endsWith('/v1/approvals'));
    expect(await row.getByTestId('approval-preview-body').isVisible()).toBe(true);
    assertNoLeak([key, noteKey, payBot.token], [{ name: 'console page HTML', text: await page.content() }]);

    await row.getByTestId('approval-deny').click();
    expect((await held).status).toBe(403);
    await page.getByTestId('approvals-history').locator('summary').click();
    const decided = page.getByTestId('history-row').and(page.locator(`#approval-${id}`));
    await decided.waitFor({ state: 'visible' });
    expect(await decided.getByTestId('approval-preview').textContent()).toContain('"amount":5000');
    assertNoLeak([key, noteKey, payBot.token], [{ name: 'console page HTML', text: await page.content() }]);
    expect(errors).toEqual([]);
    await page.close();
  });

  it('a wrong admin token shows an error and no data', async () => {
    const { page, errors } = await openPage();
    await page.getByTestId('token-input').fill(generateAgentToken().token);
    await page.getByTestId('token-submit').click();
    await page.getByTestId('status').filter({ hasText: 'refused' }).waitFor({ state: 'visible' });
    expect(await statusText(page)).toContain('admin.tokens');
    expect(await page.getByTestId('app').isHidden()).toBe(true);
    expect(await page.getByTestId('login').isVisible()).toBe(true);
    expect(await page.locator('#app tbody tr').count()).toBe(0);
    expect(await page.getByTestId('token-input').inputValue()).toBe('');
    // Chromium reports the refused call itself as "Failed to load resource: … 401"; nothing else.
    expect(errors.filter((e) => !/Failed to load resource: the server responded with a status of 401/.test(e))).toEqual([]);

    // The right token then works in the same tab, and "Forget token" signs out again.
    await signIn(page);
    await page.getByTestId('forget-token').click();
    await page.getByTestId('login').waitFor({ state: 'visible' });
    expect(await page.locator('#app tbody tr').count()).toBe(0);
    await assertNoCanary(page);
    await page.close();
  });

  describe('with an Airlock of its own: a slow upstream, anomaly alerts, task sessions', () => {
    const reader = generateAgentToken();
    const prober = generateAgentToken();
    /** Requests to /v1/things/slow wait for the test to let them through. */
    const slowRequests: Array<() => void> = [];
    let slowArrived: () => void = () => undefined;
    let ownUpstream: Upstream;
    let own: ProxyFixture;
    let ownAdminUrl: string;

    beforeAll(async () => {
      ownUpstream = await startUpstream((req, res, recorded) => {
        if (recorded.target !== '/v1/things/slow') return okHandler(req, res);
        slowRequests.push(() => okHandler(req, res));
        slowArrived();
      });
      own = await startProxy(
        {
          services: {
            things: { upstream: ownUpstream.url, credential: { secret: 'env:THINGS_KEY' }, routes: [{ method: 'GET', path: '/v1/things/:id', scope: 'things:read' }] },
          },
          agents: {
            'read-bot': { tokens: [reader.hash], credentials: [{ service: 'things', max_scope: ['things:read'], max_ttl: 600 }] },
            'probe-bot': { tokens: [prober.hash], credentials: [{ service: 'things', max_scope: ['things:read'] }] },
          },
          admin: { listen: '127.0.0.1:0', tokens: [{ name: 'alice', hash: admin.hash }] },
          // Three denials in a minute raise an alert (not a suspension), so the feed gets an anomaly record.
          anomalies: { denial_burst: { count: 3, window: 60, action: 'alert' } },
        },
        { env: { THINGS_KEY: key } },
      );
      ownAdminUrl = own.airlock.adminUrl as string;
    });

    afterAll(async () => {
      for (const release of slowRequests.splice(0)) release();
      await own?.close();
      await ownUpstream?.close();
    });

    function ownRead(id: string, token = reader.token): Promise<Response> {
      return fetch(`${own.url}/things/v1/things/${id}`, { headers: { authorization: `Bearer ${token}` }, signal: AbortSignal.timeout(10_000) });
    }

    /** The request ids of the feed's rows, top to bottom, and the times they show (datetime). */
    async function feedRows(page: Page): Promise<Array<{ id: string; time: string }>> {
      return page.getByTestId('audit-row').evaluateAll((rows) =>
        rows.map((row) => ({ id: row.getAttribute('data-request-id') ?? '', time: row.querySelector('time')?.getAttribute('datetime') ?? '' })),
      );
    }

    it("orders the live feed newest first by the records' time, not by when they were written", async () => {
      const { page, errors } = await openPage('/', ownAdminUrl);
      await signIn(page);
      await page.getByTestId('audit-state').filter({ hasText: '(live)' }).waitFor({ state: 'visible' });

      // A slow request starts first and is written last; a quick one starts after it and is written first.
      const arrived = new Promise<void>((resolve) => (slowArrived = resolve));
      const slow = ownRead('slow');
      await arrived;
      await new Promise((resolve) => setTimeout(resolve, 20));
      const quick = await ownRead('quick');
      expect(quick.status).toBe(200);
      const quickId = quick.headers.get('x-airlock-request-id') as string;
      await page.locator(`tr[data-testid="audit-row"][data-request-id="${quickId}"]`).waitFor({ state: 'visible' });

      for (const release of slowRequests.splice(0)) release();
      const slowResponse = await slow;
      expect(slowResponse.status).toBe(200);
      const slowId = slowResponse.headers.get('x-airlock-request-id') as string;
      await page.locator(`tr[data-testid="audit-row"][data-request-id="${slowId}"]`).waitFor({ state: 'visible' });

      const records = own.auditRecords();
      const slowRecord = records.find((r) => r.request_id === slowId);
      const quickRecord = records.find((r) => r.request_id === quickId);
      // What makes the case: written after, yet started before.
      expect(records.indexOf(slowRecord as (typeof records)[number])).toBeGreaterThan(records.indexOf(quickRecord as (typeof records)[number]));
      expect(Date.parse(slowRecord?.time as string)).toBeLessThan(Date.parse(quickRecord?.time as string));

      const rows = await feedRows(page);
      const ids = rows.map((row) => row.id);
      expect(ids.indexOf(quickId)).toBeGreaterThanOrEqual(0);
      expect(ids.indexOf(quickId)).toBeLessThan(ids.indexOf(slowId));
      // The whole feed (replayed records included) reads newest first.
      const times = rows.map((row) => Date.parse(row.time));
      expect(times).toEqual([...times].sort((a, b) => b - a));

      await assertNoCanary(page);
      expect(errors).toEqual([]);
      await page.close();
    });

    it("shows an anomaly's rule and evidence and Airlock's start and reload in the feed, where a request shows its path", async () => {
      const { page, errors } = await openPage('/', ownAdminUrl);
      await signIn(page);
      await page.getByTestId('audit-state').filter({ hasText: '(live)' }).waitFor({ state: 'visible' });

      // The start record is replayed (the feed opens with the last 50 records).
      const start = page.getByTestId('audit-row').filter({ has: page.getByTestId('audit-route').filter({ hasText: /^airlock:start$/ }) });
      await start.waitFor({ state: 'visible' });
      expect(await start.getByTestId('audit-reason').textContent()).toMatch(/^Airlock .* started on http:\/\/127\.0\.0\.1:\d+$/);
      expect(await start.locator('td').last().textContent()).toBe('airlock');

      // Three routes it has no grant for: a denial burst, raised as an alert.
      for (const id of ['a', 'b', 'c']) expect((await fetch(`${own.url}/things/v1/other/${id}`, { headers: { authorization: `Bearer ${prober.token}` } })).status).toBe(403);
      const anomaly = page.getByTestId('audit-row').filter({ has: page.getByTestId('audit-route').filter({ hasText: /^anomaly:denial_burst$/ }) });
      await anomaly.waitFor({ state: 'visible' });
      const record = own.auditRecords().find((r) => r.route === 'anomaly:denial_burst');
      expect(record?.path).toBeNull();
      const reason = record?.reason as string;
      expect(reason).toBeTruthy();
      const shown = (await anomaly.getByTestId('audit-reason').textContent()) ?? '';
      expect(shown.length).toBeLessThanOrEqual(121);
      expect(reason.startsWith(shown.replace(/…$/, ''))).toBe(true);
      const anomalyText = (await anomaly.textContent()) ?? '';
      for (const expected of ['probe-bot', 'anomaly:denial_burst', 'anomaly-detector']) expect(anomalyText).toContain(expected);

      expect(await own.airlock.reload(own.config)).toEqual({ ok: true });
      const reload = page.getByTestId('audit-row').filter({ has: page.getByTestId('audit-route').filter({ hasText: /^airlock:reload$/ }) });
      await reload.waitFor({ state: 'visible' });
      expect(await reload.getByTestId('audit-reason').textContent()).toContain('configuration reloaded');

      // A request's row still shows its path, and no route or reason.
      const denied = page.getByTestId('audit-row').filter({ hasText: '/things/v1/other/c' });
      await denied.waitFor({ state: 'visible' });
      expect(await denied.getByTestId('audit-path').textContent()).toBe('/things/v1/other/c');
      expect(await denied.getByTestId('audit-route').count()).toBe(0);

      await assertNoCanary(page);
      expect(errors).toEqual([]);
      await page.close();
    });

    it('a revoked session is shown as ended for good, with no Lift; an agent revocation keeps its Lift', async () => {
      const minted = await fetch(`${own.url}/_airlock/sessions`, {
        method: 'POST',
        headers: { authorization: `Bearer ${reader.token}`, 'content-type': 'application/json' },
        body: JSON.stringify({ scopes: { things: ['things:read'] }, ttl_seconds: 300, justification: 'console check' }),
      });
      expect(minted.status).toBe(201);
      const sessionId = ((await minted.json()) as { session_id: string }).session_id;

      const { page, errors } = await openPage('/', ownAdminUrl);
      await signIn(page);
      const session = page.locator(`tr[data-testid="session-row"][data-session="${sessionId}"]`);
      await session.waitFor({ state: 'visible' });
      await session.getByTestId('session-revoke').click();
      await session.getByTestId('session-revoke-reason').fill('task done');
      await session.getByTestId('session-revoke-confirm').click();

      const revoked = page.locator(`tr[data-testid="revocation-row"][data-kind="session"][data-target="${sessionId}"]`);
      await revoked.waitFor({ state: 'visible' });
      expect(await revoked.getByTestId('revocation-lift').count()).toBe(0);
      expect(await revoked.getByTestId('revocation-final').textContent()).toContain('Ended for good');
      // Which is what the admin API says of lifting it.
      const lift = await fetch(`${ownAdminUrl}/v1/revocations/lift`, {
        method: 'POST',
        headers: { authorization: `Bearer ${admin.token}`, 'content-type': 'application/json' },
        body: JSON.stringify({ kind: 'session', target: sessionId }),
      });
      expect(lift.status).toBe(400);

      // Kinds that can be lifted still offer it.
      const agent = page.locator('tr[data-agent="probe-bot"]');
      await agent.getByTestId('agent-revoke').click();
      await agent.getByTestId('agent-revoke-confirm').click();
      const agentRevocation = page.locator('tr[data-testid="revocation-row"][data-kind="agent"][data-target="probe-bot"]');
      await agentRevocation.waitFor({ state: 'visible' });
      expect(await agentRevocation.getByTestId('revocation-final').count()).toBe(0);
      await agentRevocation.getByTestId('revocation-lift').click();
      await agentRevocation.waitFor({ state: 'detached' });
      expect(await statusText(page)).toContain('Lifted the revocation of agent probe-bot');

      await assertNoCanary(page);
      expect(errors).toEqual([]);
      await page.close();
    });
  });
});
