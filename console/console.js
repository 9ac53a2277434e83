/*
 * The Airlock console: a plain script over the admin API, no framework and no build step.
 *
 * Served with `default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'`, so there is
 * no inline script or style anywhere, and everything the API returns is rendered with textContent and
 * createElement, never as markup: an agent name, path or reason cannot inject anything into the page.
 * The API returns no secret values (credentials are described by reference and generation, sessions
 * without their tokens, approvals with a preview of the request's query and body in which Airlock
 * masked secrets, key shapes and tokens before cutting it) and nothing here adds one.
 *
 * The admin token is asked for once and kept in sessionStorage (this tab only) until "Forget token".
 * Lists refresh every 2 s and on demand; rows are keyed, so a reason being typed survives a refresh.
 * The audit feed is server-sent events read with fetch(), because EventSource cannot send the
 * Authorization header the admin API needs.
 */
'use strict';

(function airlockConsole() {
  const TOKEN_KEY = 'airlock.admin-token';
  const REFRESH_MS = 2000;
  const AUDIT_MAX = 100;
  const HISTORY_MAX = 100;
  /** An SSE line longer than this is not an audit record; the feed reconnects rather than buffer forever. */
  const MAX_SSE_BUFFER = 1024 * 1024;

  const byId = (id) => /** @type {HTMLElement} */ (document.getElementById(id));
  const ui = {
    status: byId('status'),
    login: byId('login'),
    loginForm: /** @type {HTMLFormElement} */ (byId('login-form')),
    tokenInput: /** @type {HTMLInputElement} */ (byId('token')),
    app: byId('app'),
    toolbar: byId('toolbar'),
    health: byId('health'),
    updated: byId('updated'),
    refresh: byId('refresh'),
    forget: byId('forget'),
    lockdown: byId('lockdown'),
    approvalsCount: byId('approvals-count'),
    approvalsEmpty: byId('approvals-empty'),
    approvalsTable: byId('approvals-table'),
    approvalsBody: byId('approvals-body'),
    history: /** @type {HTMLDetailsElement} */ (byId('approvals-history')),
    historyCount: byId('history-count'),
    historyBody: byId('history-body'),
    agentsEmpty: byId('agents-empty'),
    agentsBody: byId('agents-body'),
    sessionsEmpty: byId('sessions-empty'),
    sessionsBody: byId('sessions-body'),
    revocationsEmpty: byId('revocations-empty'),
    revocationsBody: byId('revocations-body'),
    revokeForm: /** @type {HTMLFormElement} */ (byId('revoke-form')),
    revokeKind: /** @type {HTMLSelectElement} */ (byId('revoke-kind')),
    revokeTarget: /** @type {HTMLInputElement} */ (byId('revoke-target')),
    revokeTargets: byId('revoke-targets'),
    revokeReason: /** @type {HTMLInputElement} */ (byId('revoke-reason')),
    revokeConfirmWrap: byId('revoke-confirm-wrap'),
    revokeConfirm: /** @type {HTMLInputElement} */ (byId('revoke-confirm')),
    revokeSubmit: /** @type {HTMLButtonElement} */ (byId('revoke-submit')),
    credentialsEmpty: byId('credentials-empty'),
    credentialsBody: byId('credentials-body'),
    auditState: byId('audit-state'),
    auditBody: byId('audit-body'),
  };

  /** @type {string | null} */
  let token = null;
  /** Bumped on sign-in and sign-out: answers to an older sign-in are dropped. */
  let epoch = 0;
  let refreshTimer = 0;
  /** @type {Promise<void> | null} */
  let refreshing = null;
  let refreshAgain = false;
  let refreshErrorShown = false;
  /** @type {AbortController | null} */
  let auditAbort = null;
  /** request_id of each record in the feed, so no record is shown twice. */
  const auditSeen = new Set();
  /** The hash (#approval-<id>) already scrolled to. */
  let revealed = '';
  /** Services and credential references seen, for the kill-switch form's suggestions. */
  let known = { services: /** @type {string[]} */ ([]), credentials: /** @type {string[]} */ ([]) };
  /** Per-row references to the cells and controls that updates touch. */
  const parts = new WeakMap();

  // ---- small DOM helpers (text only, never markup) ----

  /**
   * @param {string} tag
   * @param {Record<string, unknown>} [props] attributes; `text` sets textContent, `className` the class
   * @param {...(Node | string | null)} children strings become text nodes
   */
  function el(tag, props, ...children) {
    const node = document.createElement(tag);
    for (const [key, value] of Object.entries(props ?? {})) {
      if (value === undefined || value === null || value === false) continue;
      if (key === 'text') node.textContent = String(value);
      else if (key === 'className') node.className = String(value);
      else node.setAttribute(key, value === true ? '' : String(value));
    }
    for (const child of children) if (child !== null) node.append(child);
    return node;
  }

  /** @param {Node} node @param {unknown} text */
  function setText(node, text) {
    const value = text === null || text === undefined ? '' : String(text);
    if (node.textContent !== value) node.textContent = value;
  }

  /** @param {HTMLElement} node @param {boolean} hidden */
  function setHidden(node, hidden) {
    if (node.hidden !== hidden) node.hidden = hidden;
  }

  /** @param {string} message @param {'info' | 'ok' | 'error'} [kind] */
  function say(message, kind = 'info') {
    ui.status.textContent = message;
    ui.status.className = `status ${kind}`;
  }

  /**
   * Keyed reconciliation: existing rows are updated in place (so an input being typed into keeps its
   * value and focus), new ones created, gone ones removed; a row moves only when the order changed.
   * @template T
   * @param {HTMLElement} tbody
   * @param {readonly T[]} items
   * @param {(item: T) => string} keyOf
   * @param {(item: T) => HTMLElement} create
   * @param {(row: HTMLElement, item: T) => void} update
   */
  function syncRows(tbody, items, keyOf, create, update) {
    /** @type {Map<string, HTMLElement>} */
    const existing = new Map();
    for (const row of Array.from(tbody.children)) existing.set(/** @type {HTMLElement} */ (row).dataset['key'] ?? '', /** @type {HTMLElement} */ (row));
    const keep = new Set();
    items.forEach((item, index) => {
      const key = keyOf(item);
      keep.add(key);
      let row = existing.get(key);
      if (row === undefined) {
        row = create(item);
        row.dataset['key'] = key;
      }
      update(row, item);
      const at = tbody.children[index];
      if (at !== row) tbody.insertBefore(row, at ?? null);
    });
    for (const [key, row] of existing) if (!keep.has(key)) row.remove();
  }

  // ---- formatting ----

  /** @param {string | null} iso */
  function clock(iso) {
    if (!iso) return '';
    const date = new Date(iso);
    return Number.isNaN(date.getTime()) ? iso : date.toLocaleTimeString();
  }

  /** @param {number} seconds */
  function duration(seconds) {
    const s = Math.max(0, Math.round(seconds));
    if (s < 60) return `${s} s`;
    if (s < 3600) return `${Math.floor(s / 60)} min ${s % 60} s`;
    if (s < 86400) return `${Math.floor(s / 3600)} h ${Math.floor((s % 3600) / 60)} min`;
    return `${Math.floor(s / 86400)} d ${Math.floor((s % 86400) / 3600)} h`;
  }

  /** @param {string | null} iso */
  function untilText(iso) {
    if (!iso) return '';
    const ms = new Date(iso).getTime() - Date.now();
    if (Number.isNaN(ms)) return iso;
    return ms <= 0 ? `expired (${clock(iso)})` : `in ${duration(ms / 1000)} (${clock(iso)})`;
  }

  /** @param {HTMLElement} cell @param {string | null} iso @param {string} text */
  function setTime(cell, iso, text) {
    let time = cell.firstElementChild;
    if (!time || time.tagName !== 'TIME') {
      cell.textContent = '';
      time = cell.appendChild(el('time'));
    }
    if (iso) {
      if (time.getAttribute('datetime') !== iso) {
        time.setAttribute('datetime', iso);
        time.setAttribute('title', iso);
      }
    } else {
      time.removeAttribute('datetime');
      time.removeAttribute('title');
    }
    setText(time, text);
  }

  /** @param {Record<string, readonly string[]>} scopes */
  function scopesText(scopes) {
    return Object.entries(scopes ?? {})
      .map(([service, list]) => `${service}: ${list.join(', ')}`)
      .join('; ');
  }

  /** Characters of the query and body shown before the preview is opened. */
  const PREVIEW_START = 80;

  /** The text on one line, cut to its first `max` characters (code points) with an ellipsis. @param {string} text @param {number} [max] */
  function startOf(text, max = PREVIEW_START) {
    const chars = Array.from(text.replace(/\s+/g, ' ').trim());
    return chars.length > max ? `${chars.slice(0, max).join('')}…` : chars.join('');
  }

  /**
   * An approval's preview of its request (the admin API's `preview`: masked by Airlock before it was
   * cut): one compact line per part ("headers: stripe-account: acct_1", "body: 2,048 bytes
   * application/json {"amount": …"), and a toggle
   * that shows the query and body whole. A button with aria-expanded, not <details>, so that the
   * history's own <details> keeps the one summary. Null when there is nothing to show (no preview asked,
   * an approval from an earlier version, or a call without query and body).
   * @param {any} preview
   * @returns {HTMLElement | null}
   */
  function previewBlock(preview) {
    if (!preview || typeof preview !== 'object') return null;
    const query = typeof preview.query === 'string' ? preview.query : null;
    const body = typeof preview.body === 'string' ? preview.body : null;
    const bytes = typeof preview.body_bytes === 'number' ? preview.body_bytes : 0;
    const type = typeof preview.content_type === 'string' ? ` ${preview.content_type}` : '';
    // The bound headers (approvals.bind_headers): whose account the call acts on, each value masked and cut by Airlock.
    const headers = preview.headers && typeof preview.headers === 'object' && !Array.isArray(preview.headers) ? Object.entries(preview.headers).filter(([, value]) => typeof value === 'string') : [];
    if (query === null && bytes === 0 && headers.length === 0) return null;
    const lines = el('div', { className: 'preview-lines mono' });
    if (query !== null) lines.append(el('div', { text: `query: ${startOf(query)}` }));
    if (headers.length > 0) lines.append(el('div', { 'data-testid': 'approval-preview-headers', text: `headers: ${headers.map(([name, value]) => `${name}: ${value}`).join('; ')}` }));
    if (bytes > 0) lines.append(el('div', { text: `body: ${bytes.toLocaleString('en-US')} bytes${type}${body === null ? ' (not text, not shown)' : `  ${startOf(body)}`}` }));
    const block = el('div', { className: 'preview', 'data-testid': 'approval-preview' }, lines);
    if (query === null && body === null) return block;
    const full = el('div', { className: 'preview-full', hidden: true });
    if (query !== null) full.append(el('div', { className: 'muted', text: 'Query' }), el('pre', { className: 'mono', 'data-testid': 'approval-preview-query', text: query }));
    if (body !== null) {
      const label = preview.truncated === true ? `Body (the first part of ${bytes.toLocaleString('en-US')} bytes)` : 'Body';
      full.append(el('div', { className: 'muted', text: label }), el('pre', { className: 'mono', 'data-testid': 'approval-preview-body', text: body }));
    }
    const toggle = /** @type {HTMLButtonElement} */ (el('button', { type: 'button', className: 'preview-toggle', 'aria-expanded': 'false', 'data-testid': 'approval-preview-toggle', text: 'Show query and body' }));
    toggle.addEventListener('click', () => {
      const open = full.hidden;
      full.hidden = !open;
      toggle.setAttribute('aria-expanded', String(open));
      toggle.textContent = open ? 'Hide query and body' : 'Show query and body';
    });
    block.append(toggle, full);
    return block;
  }

  // ---- the admin API ----

  class ApiError extends Error {
    /** @param {number} status @param {string} message @param {string | null} code */
    constructor(status, message, code) {
      super(message);
      this.status = status;
      this.code = code;
    }
  }

  /** The problem+json `detail`, or a plain description of the failure. @param {Response} response */
  async function problemOf(response) {
    let detail = `The admin API answered ${response.status} ${response.statusText}.`;
    let code = null;
    try {
      const body = JSON.parse(await response.text());
      if (body && typeof body.detail === 'string' && body.detail !== '') detail = body.detail;
      if (body && typeof body.code === 'string') code = body.code;
    } catch {
      // not JSON: keep the plain description
    }
    return new ApiError(response.status, detail, code);
  }

  /** @param {string} method @param {string} path @param {unknown} [body] */
  async function api(method, path, body) {
    const started = epoch;
    /** @type {Record<string, string>} */
    const headers = { authorization: `Bearer ${token ?? ''}`, accept: 'application/json' };
    /** @type {RequestInit} */
    const init = { method, headers, cache: 'no-store', credentials: 'omit', redirect: 'error' };
    if (body !== undefined) {
      headers['content-type'] = 'application/json';
      init.body = JSON.stringify(body);
    }
    let response;
    try {
      response = await fetch(path, init);
    } catch {
      throw new ApiError(0, 'The admin API cannot be reached; is Airlock running?', null);
    }
    if (!response.ok) throw await problemOf(response);
    const json = await response.json();
    if (started !== epoch) throw new ApiError(0, 'signed out', 'stale');
    return json;
  }

  /** Shows an API failure; a refused token signs out. @param {unknown} error */
  function fail(error) {
    if (error instanceof ApiError && error.code === 'stale') return;
    if (error instanceof ApiError && error.status === 401) {
      signOut(`The admin token was refused: ${error.message}`, 'error');
      return;
    }
    say(error instanceof Error ? error.message : String(error), 'error');
  }

  // ---- signing in and out ----

  function readStoredToken() {
    try {
      return sessionStorage.getItem(TOKEN_KEY);
    } catch {
      return null;
    }
  }

  /** @param {string | null} value */
  function storeToken(value) {
    try {
      if (value === null) sessionStorage.removeItem(TOKEN_KEY);
      else sessionStorage.setItem(TOKEN_KEY, value);
    } catch {
      // storage disabled: the token lives in this page only
    }
  }

  /** @param {string} candidate */
  async function signIn(candidate) {
    epoch += 1;
    token = candidate;
    say('Checking the admin token…');
    try {
      await api('GET', '/v1/health');
    } catch (error) {
      if (error instanceof ApiError && error.code === 'stale') return;
      const message = error instanceof ApiError && error.status === 401 ? `The admin token was refused: ${error.message}` : error instanceof Error ? error.message : String(error);
      signOut(message, 'error');
      return;
    }
    storeToken(candidate);
    ui.tokenInput.value = '';
    setHidden(ui.login, true);
    setHidden(ui.app, false);
    setHidden(ui.toolbar, false);
    say('Signed in.', 'ok');
    void startAudit();
    await refresh();
  }

  /** @param {string} [message] @param {'info' | 'ok' | 'error'} [kind] */
  function signOut(message, kind = 'info') {
    epoch += 1;
    token = null;
    storeToken(null);
    window.clearTimeout(refreshTimer);
    stopAudit();
    clearData();
    setHidden(ui.app, true);
    setHidden(ui.toolbar, true);
    setHidden(ui.login, false);
    ui.tokenInput.value = '';
    ui.tokenInput.focus();
    if (message !== undefined) say(message, kind);
  }

  function clearData() {
    for (const body of [ui.approvalsBody, ui.historyBody, ui.agentsBody, ui.sessionsBody, ui.revocationsBody, ui.credentialsBody, ui.auditBody]) body.textContent = '';
    ui.revokeTargets.textContent = '';
    for (const node of [ui.health, ui.updated, ui.approvalsCount, ui.historyCount, ui.auditState]) node.textContent = '';
    setHidden(ui.lockdown, true);
    setHidden(ui.approvalsTable, true);
    ui.history.open = false;
    auditSeen.clear();
    known = { services: [], credentials: [] };
    revealed = '';
  }

  // ---- refreshing the lists ----

  function refresh() {
    if (token === null) return Promise.resolve();
    if (refreshing !== null) {
      refreshAgain = true;
      return refreshing;
    }
    window.clearTimeout(refreshTimer);
    const started = epoch;
    refreshing = (async () => {
      try {
        const [health, approvals, agents, sessions, revocations, credentials] = await Promise.all([
          api('GET', '/v1/health'),
          api('GET', '/v1/approvals'),
          api('GET', '/v1/agents'),
          api('GET', '/v1/sessions'),
          api('GET', '/v1/revocations'),
          api('GET', '/v1/credentials'),
        ]);
        if (started !== epoch) return;
        renderHealth(health);
        renderApprovals(approvals.approvals ?? []);
        renderAgents(agents.agents ?? []);
        renderSessions(sessions.sessions ?? []);
        renderRevocations(revocations.revocations ?? []);
        renderCredentials(credentials.credentials ?? []);
        updateKnown(agents.agents ?? [], credentials.credentials ?? []);
        setText(ui.updated, `Updated ${new Date().toLocaleTimeString()}`);
        if (refreshErrorShown) {
          refreshErrorShown = false;
          say('Connected again.', 'ok');
        }
        revealHash();
      } catch (error) {
        if (started !== epoch) return;
        if (!(error instanceof ApiError && error.status === 401)) refreshErrorShown = true;
        fail(error);
      } finally {
        refreshing = null;
        if (token !== null && started === epoch) {
          const again = refreshAgain;
          refreshAgain = false;
          refreshTimer = window.setTimeout(() => void refresh(), again ? 0 : REFRESH_MS);
        }
      }
    })();
    return refreshing;
  }

  function renderHealth(health) {
    const c = health.credentials ?? { total: 0, failing: 0, expired: 0 };
    const pieces = [
      `status ${health.status}`,
      `audit ${health.audit}`,
      `${health.approvals_pending} pending`,
      `${health.sessions_active} sessions`,
      `credentials ${c.total - c.failing}/${c.total} ok`,
    ];
    setText(ui.health, pieces.join(' · '));
    ui.health.className = health.status === 'ok' ? 'ok' : 'warn';
    setHidden(ui.lockdown, health.lockdown !== true);
  }

  // ---- approvals ----

  function renderApprovals(list) {
    const pending = list.filter((a) => a.status === 'pending');
    const decided = list.filter((a) => a.status !== 'pending').reverse().slice(0, HISTORY_MAX);
    syncRows(ui.approvalsBody, pending, (a) => a.id, createApprovalRow, updateApprovalRow);
    setHidden(ui.approvalsTable, pending.length === 0);
    setHidden(ui.approvalsEmpty, pending.length !== 0);
    setText(ui.approvalsCount, pending.length === 0 ? '' : `(${pending.length} waiting)`);
    syncRows(ui.historyBody, decided, (a) => a.id, createHistoryRow, updateHistoryRow);
    setText(ui.historyCount, `(${decided.length})`);
  }

  function createApprovalRow(a) {
    const describedBy = `approval-${a.id}-request`;
    const cells = {
      agent: el('th', { scope: 'row' }),
      service: el('td'),
      request: el('span', { id: describedBy }),
      scope: el('td'),
      justification: el('td'),
      task: el('td'),
      session: el('td', { className: 'mono' }),
      expires: el('td'),
    };
    const reason = /** @type {HTMLInputElement} */ (
      el('input', { type: 'text', maxlength: 1000, autocomplete: 'off', placeholder: 'Reason (optional)', 'aria-label': 'Reason for the decision', 'aria-describedby': describedBy, 'data-testid': 'approval-reason' })
    );
    const approve = /** @type {HTMLButtonElement} */ (el('button', { type: 'button', className: 'approve', 'aria-describedby': describedBy, 'data-testid': 'approval-approve', text: 'Approve' }));
    const deny = /** @type {HTMLButtonElement} */ (el('button', { type: 'button', className: 'danger', 'aria-describedby': describedBy, 'data-testid': 'approval-deny', text: 'Deny' }));
    approve.addEventListener('click', () => void decide(a, 'approve', reason, [approve, deny]));
    deny.addEventListener('click', () => void decide(a, 'deny', reason, [approve, deny]));
    const row = el('tr', { id: `approval-${a.id}`, 'data-testid': 'approval-row', 'data-approval-id': a.id });
    // The preview never changes once the approval exists: built here, so an opened one stays open.
    const { agent, service, request, ...rest } = cells;
    row.append(agent, service, el('td', { className: 'mono' }, request, previewBlock(a.preview)), ...Object.values(rest), el('td', { className: 'actions' }, reason, approve, deny));
    parts.set(row, cells);
    return row;
  }

  function updateApprovalRow(row, a) {
    const cells = parts.get(row);
    setText(cells.agent, a.agent);
    setText(cells.service, a.service);
    setText(cells.request, `${a.method} ${a.path}`);
    setText(cells.scope, a.scope);
    setText(cells.justification, a.justification ?? '—');
    setText(cells.task, a.task_id ?? '—');
    setText(cells.session, a.session ?? '—');
    setTime(cells.expires, a.expires_at, untilText(a.expires_at));
  }

  /**
   * @param {{id: string, agent: string, method: string, path: string}} a
   * @param {'approve' | 'deny'} action
   * @param {HTMLInputElement} reason
   * @param {HTMLButtonElement[]} buttons
   */
  async function decide(a, action, reason, buttons) {
    for (const button of buttons) button.disabled = true;
    try {
      await api('POST', `/v1/approvals/${encodeURIComponent(a.id)}/${action}`, { reason: reason.value.trim() });
      say(`${action === 'approve' ? 'Approved' : 'Denied'} ${a.method} ${a.path} for ${a.agent}.`, 'ok');
    } catch (error) {
      fail(error);
    } finally {
      for (const button of buttons) button.disabled = false;
    }
    await refresh();
  }

  function createHistoryRow(a) {
    const cells = {
      outcome: el('td'),
      agent: el('th', { scope: 'row' }),
      request: el('span'),
      scope: el('td'),
      by: el('td'),
      reason: el('td'),
      decided: el('td'),
      asked: el('td'),
    };
    const row = el('tr', { id: `approval-${a.id}`, 'data-testid': 'history-row', 'data-approval-id': a.id });
    const { outcome, agent, request, ...rest } = cells;
    row.append(outcome, agent, el('td', { className: 'mono' }, request, previewBlock(a.preview)), ...Object.values(rest));
    parts.set(row, cells);
    return row;
  }

  function updateHistoryRow(row, a) {
    const cells = parts.get(row);
    setText(cells.outcome, a.status);
    cells.outcome.className = `outcome-${a.status}`;
    setText(cells.agent, a.agent);
    setText(cells.request, `${a.method} ${a.path}`);
    setText(cells.scope, a.scope);
    setText(cells.by, a.decided_by ?? '—');
    setText(cells.reason, a.reason ?? '');
    setTime(cells.decided, a.decided_at, clock(a.decided_at) || '—');
    setTime(cells.asked, a.created_at, clock(a.created_at));
  }

  /** A link to /#approval-<id> (the webhook's console URL) scrolls to that approval once it is shown. */
  function revealHash() {
    const hash = window.location.hash;
    if (!/^#approval-[A-Za-z0-9_-]+$/.test(hash) || hash === revealed) return;
    const row = document.getElementById(hash.slice(1));
    if (row === null) return;
    revealed = hash;
    const details = row.closest('details');
    if (details !== null) details.open = true;
    for (const other of Array.from(document.querySelectorAll('tr.targeted'))) other.classList.remove('targeted');
    row.classList.add('targeted');
    row.scrollIntoView({ block: 'center' });
    const input = row.querySelector('input');
    if (input !== null) input.focus({ preventScroll: true });
  }

  // ---- agents ----

  /**
   * A Revoke button that opens an inline reason field with Confirm and Cancel (no prompt()).
   * @param {string} prefix data-testid prefix
   * @param {string} label accessible label of the reason field
   * @param {(reason: string) => Promise<boolean>} onConfirm
   */
  function inlineRevoke(prefix, label, onConfirm) {
    const open = /** @type {HTMLButtonElement} */ (el('button', { type: 'button', className: 'danger', 'data-testid': `${prefix}-revoke`, text: 'Revoke' }));
    const reason = /** @type {HTMLInputElement} */ (el('input', { type: 'text', maxlength: 1000, autocomplete: 'off', placeholder: 'Reason', 'aria-label': label, 'data-testid': `${prefix}-revoke-reason` }));
    const confirm = /** @type {HTMLButtonElement} */ (el('button', { type: 'button', className: 'danger', 'data-testid': `${prefix}-revoke-confirm`, text: 'Confirm revoke' }));
    const cancel = /** @type {HTMLButtonElement} */ (el('button', { type: 'button', 'data-testid': `${prefix}-revoke-cancel`, text: 'Cancel' }));
    const panel = el('span', { className: 'inline-confirm', hidden: true }, reason, confirm, cancel);
    const close = () => {
      panel.hidden = true;
      open.hidden = false;
      reason.value = '';
    };
    open.addEventListener('click', () => {
      panel.hidden = false;
      open.hidden = true;
      reason.focus();
    });
    cancel.addEventListener('click', () => {
      close();
      open.focus();
    });
    confirm.addEventListener('click', async () => {
      confirm.disabled = true;
      try {
        if (await onConfirm(reason.value.trim())) close();
      } finally {
        confirm.disabled = false;
      }
    });
    reason.addEventListener('keydown', (event) => {
      if (event.key === 'Enter') confirm.click();
      else if (event.key === 'Escape') cancel.click();
    });
    return { open, panel, isOpen: () => !panel.hidden, close };
  }

  /** @param {string} method @param {string} path @param {unknown} body @param {string} done */
  async function change(method, path, body, done) {
    try {
      await api(method, path, body);
      say(done, 'ok');
      void refresh();
      return true;
    } catch (error) {
      fail(error);
      return false;
    }
  }

  function renderAgents(list) {
    syncRows(ui.agentsBody, list, (a) => a.name, createAgentRow, updateAgentRow);
    setHidden(ui.agentsEmpty, list.length !== 0);
  }

  function createAgentRow(agent) {
    const name = agent.name;
    const revoke = inlineRevoke('agent', `Reason for revoking agent ${name}`, (reason) =>
      change('POST', `/v1/agents/${encodeURIComponent(name)}/revoke`, { reason }, `Revoked agent ${name}: its tokens and sessions are refused from now on.`),
    );
    const restore = /** @type {HTMLButtonElement} */ (el('button', { type: 'button', 'data-testid': 'agent-restore', text: 'Restore', hidden: true }));
    restore.addEventListener('click', async () => {
      restore.disabled = true;
      await change('POST', `/v1/agents/${encodeURIComponent(name)}/restore`, {}, `Restored agent ${name}.`);
      restore.disabled = false;
    });
    const cells = {
      name: el('th', { scope: 'row', text: name }),
      status: el('td', { 'data-testid': 'agent-status' }),
      grants: el('td'),
      sessions: el('td', { 'data-testid': 'agent-sessions' }),
    };
    const row = el('tr', { 'data-testid': 'agent-row', 'data-agent': name });
    row.append(...Object.values(cells), el('td', { className: 'actions' }, revoke.open, revoke.panel, restore));
    parts.set(row, { ...cells, revoke, restore, grantsKey: '' });
    return row;
  }

  function updateAgentRow(row, agent) {
    const p = parts.get(row);
    const revoked = agent.status === 'revoked';
    setText(p.status, revoked && agent.revoked ? `revoked by ${agent.revoked.by}${agent.revoked.reason ? `: ${agent.revoked.reason}` : ''}` : agent.status);
    p.status.className = revoked ? 'state-bad' : 'state-ok';
    setText(p.sessions, agent.sessions);
    const grantsKey = JSON.stringify(agent.grants);
    if (grantsKey !== p.grantsKey) {
      p.grantsKey = grantsKey;
      p.grants.textContent = '';
      const ul = el('ul', { className: 'plain' });
      for (const grant of agent.grants ?? []) {
        const flags = [];
        if (grant.require_session) flags.push('session only');
        if (grant.require_approval) flags.push(`approval (${grant.approval_mode})`);
        if (grant.credential) flags.push(`credential ${grant.credential}`);
        ul.append(el('li', { text: `${grant.service}: ${(grant.scopes ?? []).join(', ')}${flags.length ? ` — ${flags.join(', ')}` : ''}` }));
      }
      p.grants.append(ul);
    }
    setHidden(p.restore, !revoked);
    if (revoked) {
      if (p.revoke.isOpen()) p.revoke.close();
      setHidden(p.revoke.open, true);
    } else {
      setHidden(p.revoke.open, p.revoke.isOpen());
    }
  }

  // ---- sessions ----

  function renderSessions(list) {
    syncRows(ui.sessionsBody, list, (s) => s.id, createSessionRow, updateSessionRow);
    setHidden(ui.sessionsEmpty, list.length !== 0);
  }

  function createSessionRow(session) {
    const id = session.id;
    const revoke = inlineRevoke('session', `Reason for revoking session ${id}`, (reason) =>
      change('POST', `/v1/sessions/${encodeURIComponent(id)}/revoke`, { reason }, `Revoked session ${id}.`),
    );
    const cells = {
      id: el('th', { scope: 'row', className: 'mono' }),
      agent: el('td'),
      scopes: el('td'),
      justification: el('td'),
      task: el('td'),
      expires: el('td'),
    };
    const row = el('tr', { 'data-testid': 'session-row', 'data-session': id });
    row.append(...Object.values(cells), el('td', { className: 'actions' }, revoke.open, revoke.panel));
    parts.set(row, cells);
    return row;
  }

  function updateSessionRow(row, session) {
    const cells = parts.get(row);
    setText(cells.id, session.parent ? `${session.id} (from ${session.parent})` : session.id);
    setText(cells.agent, session.agent);
    setText(cells.scopes, scopesText(session.scopes));
    setText(cells.justification, session.justification);
    setText(cells.task, session.task_id ?? '—');
    setTime(cells.expires, session.expires_at, untilText(session.expires_at));
  }

  // ---- revocations and the kill switch ----

  const KIND_LABELS = { agent: 'agent', session: 'session', credential: 'credential', service: 'service suspended', all: 'lockdown' };

  /**
   * Kinds the admin API refuses to lift (POST /v1/revocations/lift answers 400): revoking a session ends
   * it and the sessions narrowed from it, so there is nothing to bring back. Such rows say so instead of
   * offering a Lift that can only fail.
   */
  const NOT_LIFTABLE = { session: 'Ended for good: a revoked session cannot be restored; the agent mints a new one.' };

  function renderRevocations(list) {
    syncRows(ui.revocationsBody, list, (r) => `${r.kind}\n${r.target}`, createRevocationRow, updateRevocationRow);
    setHidden(ui.revocationsEmpty, list.length !== 0);
  }

  function createRevocationRow(r) {
    const final = Object.hasOwn(NOT_LIFTABLE, r.kind) ? NOT_LIFTABLE[r.kind] : null;
    const action = final !== null ? el('span', { className: 'muted', 'data-testid': 'revocation-final', text: final }) : liftButton(r);
    const cells = {
      kind: el('td', { text: KIND_LABELS[r.kind] ?? r.kind }),
      target: el('th', { scope: 'row', className: 'mono', text: r.target }),
      by: el('td'),
      reason: el('td'),
      at: el('td'),
    };
    const row = el('tr', { 'data-testid': 'revocation-row', 'data-kind': r.kind, 'data-target': r.target });
    row.append(...Object.values(cells), el('td', { className: 'actions' }, action));
    parts.set(row, cells);
    return row;
  }

  function liftButton(r) {
    const lift = /** @type {HTMLButtonElement} */ (el('button', { type: 'button', 'data-testid': 'revocation-lift', text: r.kind === 'all' ? 'Lift lockdown' : 'Lift' }));
    lift.addEventListener('click', async () => {
      lift.disabled = true;
      await change('POST', '/v1/revocations/lift', { kind: r.kind, target: r.target }, r.kind === 'all' ? 'Lifted the lockdown.' : `Lifted the revocation of ${r.kind} ${r.target}.`);
      lift.disabled = false;
    });
    return lift;
  }

  function updateRevocationRow(row, r) {
    const cells = parts.get(row);
    setText(cells.by, r.by);
    setText(cells.reason, r.reason);
    setTime(cells.at, r.at, clock(r.at));
  }

  function updateKnown(agents, credentials) {
    const services = new Set();
    const refs = new Set();
    for (const agent of agents) {
      for (const grant of agent.grants ?? []) {
        services.add(grant.service);
        if (grant.credential) refs.add(grant.credential);
      }
    }
    for (const c of credentials) refs.add(c.ref);
    const next = { services: [...services].sort(), credentials: [...refs].sort() };
    if (JSON.stringify(next) === JSON.stringify(known)) return;
    known = next;
    renderTargetSuggestions();
  }

  function renderTargetSuggestions() {
    const kind = ui.revokeKind.value;
    const values = kind === 'service' ? known.services : kind === 'credential' ? known.credentials : [];
    ui.revokeTargets.textContent = '';
    for (const value of values) ui.revokeTargets.append(el('option', { value }));
  }

  const KIND_FORM = {
    service: { button: 'Suspend service', placeholder: 'service name, e.g. stripe' },
    credential: { button: 'Revoke credential', placeholder: 'reference, e.g. vault:secret/stripe#api_key' },
    all: { button: 'Lock everything down', placeholder: 'everything' },
  };

  function onKindChange() {
    const kind = /** @type {'service' | 'credential' | 'all'} */ (ui.revokeKind.value);
    const form = KIND_FORM[kind] ?? KIND_FORM.service;
    ui.revokeSubmit.textContent = form.button;
    ui.revokeTarget.placeholder = form.placeholder;
    ui.revokeTarget.disabled = kind === 'all';
    if (kind === 'all') ui.revokeTarget.value = '';
    setHidden(ui.revokeConfirmWrap, kind !== 'all');
    ui.revokeConfirm.checked = false;
    renderTargetSuggestions();
  }

  async function onRevokeSubmit(event) {
    event.preventDefault();
    const kind = ui.revokeKind.value;
    const target = kind === 'all' ? '*' : ui.revokeTarget.value.trim();
    const reason = ui.revokeReason.value.trim();
    if (target === '') {
      say(kind === 'service' ? 'Name the service to suspend.' : 'Give the credential reference to revoke.', 'error');
      ui.revokeTarget.focus();
      return;
    }
    if (kind === 'all' && !ui.revokeConfirm.checked) {
      say('Tick the confirmation to lock everything down.', 'error');
      ui.revokeConfirm.focus();
      return;
    }
    const done = kind === 'all' ? 'Locked everything down: every agent request is refused.' : kind === 'service' ? `Suspended service ${target}.` : `Revoked credential ${target}.`;
    ui.revokeSubmit.disabled = true;
    const ok = await change('POST', '/v1/revocations', { kind, target, reason }, done);
    ui.revokeSubmit.disabled = false;
    if (ok) {
      ui.revokeTarget.value = '';
      ui.revokeReason.value = '';
      ui.revokeConfirm.checked = false;
    }
  }

  // ---- credentials ----

  function renderCredentials(list) {
    syncRows(ui.credentialsBody, list, (c) => c.ref, createCredentialRow, updateCredentialRow);
    setHidden(ui.credentialsEmpty, list.length !== 0);
  }

  function createCredentialRow(c) {
    const cells = {
      ref: el('th', { scope: 'row', className: 'mono', text: c.ref }),
      state: el('td'),
      generation: el('td', { className: 'mono' }),
      age: el('td'),
      failing: el('td'),
    };
    const row = el('tr', { 'data-testid': 'credential-row', 'data-ref': c.ref });
    row.append(...Object.values(cells));
    parts.set(row, cells);
    return row;
  }

  function updateCredentialRow(row, c) {
    const cells = parts.get(row);
    setText(cells.state, c.state);
    cells.state.className = c.state === 'fresh' ? 'state-ok' : c.state === 'stale' ? 'state-warn' : 'state-bad';
    setText(cells.generation, c.generation ?? '—');
    setText(cells.age, typeof c.age_seconds === 'number' ? duration(c.age_seconds) : '—');
    setText(cells.failing, c.failing ? `yes (${c.consecutive_failures} in a row)` : 'no');
    cells.failing.className = c.failing ? 'state-bad' : '';
  }

  // ---- the live audit feed ----

  /** @param {string} text */
  function setAuditState(text) {
    setText(ui.auditState, text);
  }

  function stopAudit() {
    if (auditAbort !== null) auditAbort.abort();
    auditAbort = null;
  }

  /** @param {number} ms @param {AbortSignal} signal */
  function pause(ms, signal) {
    return new Promise((resolve) => {
      const onAbort = () => {
        window.clearTimeout(timer);
        resolve(undefined);
      };
      const timer = window.setTimeout(() => {
        signal.removeEventListener('abort', onAbort);
        resolve(undefined);
      }, ms);
      signal.addEventListener('abort', onAbort, { once: true });
    });
  }

  async function startAudit() {
    stopAudit();
    const controller = new AbortController();
    auditAbort = controller;
    const { signal } = controller;
    let backoff = 1000;
    while (!signal.aborted && token !== null) {
      setAuditState('(connecting…)');
      try {
        const response = await fetch('/v1/audit/stream?replay=50', {
          headers: { authorization: `Bearer ${token}`, accept: 'text/event-stream' },
          cache: 'no-store',
          credentials: 'omit',
          signal,
        });
        if (!response.ok) {
          const problem = await problemOf(response);
          if (problem.status === 401) {
            if (!signal.aborted) fail(problem);
            return;
          }
          throw problem;
        }
        if (response.body === null) throw new Error('the audit stream has no body');
        setAuditState('(live)');
        backoff = 1000;
        await readServerSentEvents(response.body, onServerSentEvent);
        if (signal.aborted) return;
        setAuditState('(stream ended; reconnecting…)');
      } catch (error) {
        if (signal.aborted) return;
        setAuditState(`(disconnected: ${error instanceof Error ? error.message : String(error)}; retrying)`);
      }
      await pause(backoff, signal);
      backoff = Math.min(backoff * 2, 15000);
    }
  }

  /**
   * The event-stream format (WHATWG HTML 9.2.6): lines end in CRLF, LF or CR; a blank line dispatches
   * the event; `event:` names it, `data:` lines are joined with LF, `:` starts a comment.
   * @param {ReadableStream<Uint8Array>} body
   * @param {(type: string, data: string) => void} onEvent
   */
  async function readServerSentEvents(body, onEvent) {
    const reader = body.getReader();
    const decoder = new TextDecoder();
    let buffer = '';
    let type = '';
    /** @type {string[]} */
    let data = [];
    try {
      for (;;) {
        const { value, done } = await reader.read();
        if (done) return;
        buffer += decoder.decode(value, { stream: true });
        for (;;) {
          const end = buffer.search(/[\r\n]/);
          if (end < 0) break;
          // A CR at the very end may be the first half of a CRLF: wait for the next chunk.
          if (buffer[end] === '\r' && end === buffer.length - 1) break;
          const line = buffer.slice(0, end);
          buffer = buffer.slice(end + (buffer[end] === '\r' && buffer[end + 1] === '\n' ? 2 : 1));
          if (line === '') {
            if (data.length > 0) onEvent(type === '' ? 'message' : type, data.join('\n'));
            type = '';
            data = [];
            continue;
          }
          if (line.startsWith(':')) continue;
          const colon = line.indexOf(':');
          const field = colon < 0 ? line : line.slice(0, colon);
          let value = colon < 0 ? '' : line.slice(colon + 1);
          if (value.startsWith(' ')) value = value.slice(1);
          if (field === 'event') type = value;
          else if (field === 'data') data.push(value);
        }
        if (buffer.length > MAX_SSE_BUFFER) throw new Error('an audit event was too large');
      }
    } finally {
      reader.cancel().catch(() => undefined);
    }
  }

  /** @param {string} type @param {string} data */
  function onServerSentEvent(type, data) {
    if (type !== 'audit') return;
    let record;
    try {
      record = JSON.parse(data);
    } catch {
      return;
    }
    if (record === null || typeof record !== 'object') return;
    const id = typeof record.request_id === 'string' ? record.request_id : '';
    if (id !== '') {
      if (auditSeen.has(id)) return;
      auditSeen.add(id);
    }
    // Newest first by `time`, which is when the request started: a slow request's record is written
    // when it ends, after records of requests that started later, so it goes below them, not on top.
    // Equal times keep arrival order (the later arrival above).
    const row = auditRow(record);
    const when = auditTimeOf(record);
    parts.set(row, { when });
    let before = ui.auditBody.firstElementChild;
    while (before !== null && parts.get(before).when > when) before = before.nextElementSibling;
    ui.auditBody.insertBefore(row, before);
    while (ui.auditBody.children.length > AUDIT_MAX) {
      const last = /** @type {HTMLElement} */ (ui.auditBody.lastElementChild);
      auditSeen.delete(last.dataset['requestId'] ?? '');
      last.remove();
    }
  }

  /** A record's time in ms; one without a readable time (none is written so) goes on top, as it arrived. */
  function auditTimeOf(record) {
    const ms = typeof record.time === 'string' ? Date.parse(record.time) : Number.NaN;
    return Number.isNaN(ms) ? Number.POSITIVE_INFINITY : ms;
  }

  /** Characters of a record's reason shown in the feed; a longer reason is cut, whole in its title. */
  const REASON_START = 120;

  /**
   * The Path cell. A record without a path is not an agent's request but an event: an anomaly
   * (`anomaly:<rule>`, the evidence in `reason`) or Airlock's own start, reload or stop (`airlock:start`…,
   * what happened in `reason`). It shows the route and the start of the reason, so these rows say what
   * they are rather than "—".
   */
  function auditPathCell(record) {
    const path = typeof record.path === 'string' && record.path !== '' ? record.path : null;
    const route = typeof record.route === 'string' && record.route !== '' ? record.route : null;
    if (path !== null || route === null) return el('td', { className: 'mono', 'data-testid': 'audit-path', text: path ?? '—' });
    const cell = el('td', { 'data-testid': 'audit-path' }, el('span', { className: route.startsWith('anomaly:') ? 'mono state-warn' : 'mono', 'data-testid': 'audit-route', text: route }));
    const reason = typeof record.reason === 'string' ? record.reason.trim() : '';
    if (reason !== '') {
      const shown = startOf(reason, REASON_START);
      cell.append(' ', el('span', { className: 'muted', 'data-testid': 'audit-reason', title: shown === reason ? null : reason, text: shown }));
    }
    return cell;
  }

  function auditRow(record) {
    const text = (value) => (value === null || value === undefined || value === '' ? '—' : String(value));
    const time = el('td');
    setTime(time, typeof record.time === 'string' ? record.time : null, clock(typeof record.time === 'string' ? record.time : null));
    const decision = el('td', { text: text(record.decision), className: record.decision === 'deny' ? 'state-bad' : 'state-ok' });
    const by = record.approver ?? record.actor;
    return el(
      'tr',
      { 'data-testid': 'audit-row', 'data-request-id': text(record.request_id) },
      time,
      el('td', { text: text(record.agent) }),
      el('td', { text: text(record.method) }),
      auditPathCell(record),
      decision,
      el('td', { text: text(record.code) }),
      el('td', { text: text(record.status) }),
      el('td', { text: by ? String(by) : '' }),
    );
  }

  // ---- wiring ----

  ui.loginForm.addEventListener('submit', (event) => {
    event.preventDefault();
    const candidate = ui.tokenInput.value.trim();
    if (candidate === '') {
      say('Enter an admin token.', 'error');
      return;
    }
    void signIn(candidate);
  });
  ui.forget.addEventListener('click', () => signOut('The admin token was forgotten.', 'info'));
  ui.refresh.addEventListener('click', () => void refresh());
  ui.revokeKind.addEventListener('change', onKindChange);
  ui.revokeForm.addEventListener('submit', (event) => void onRevokeSubmit(event));
  window.addEventListener('hashchange', () => {
    revealed = '';
    revealHash();
  });
  window.addEventListener('pagehide', stopAudit);

  onKindChange();
  const stored = readStoredToken();
  if (stored !== null && stored !== '') void signIn(stored);
  else ui.tokenInput.focus();
})();
