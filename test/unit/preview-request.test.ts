/**
 * The approval preview (policy/preview-request.ts): what an approver is shown of a held request's query
 * and body. Masked first (managed secrets through the catalogue's scrub, key shapes, Airlock tokens,
 * JWS), cut after, on a character boundary, so a secret across the cut leaves nothing; text only for
 * text; null when preview_bytes is 0 and for records written before previews existed. The config key's
 * bounds too. A long body is masked in a window past the cut (PREVIEW_MASK_MARGIN), never so that the
 * window's end, where a secret may be cut in two, can come into view.
 */
import { randomBytes } from 'node:crypto';
import { rmSync } from 'node:fs';
import { afterAll, describe, expect, it } from 'vitest';
import { buildConfig } from '../../src/config/load-config.js';
import { Credential } from '../../src/credentials/credential.js';
import { generateAgentToken, generateSessionToken } from '../../src/identity/agent-token.js';
import { createRequestPreviewer, PREVIEW_MASK_MARGIN, previewOf, previewView, type RequestContent } from '../../src/policy/preview-request.js';
import { customRule } from '../../src/redaction/key-patterns.js';
import { SecretCatalog } from '../../src/redaction/secret-catalog.js';
import type { ApprovalPreview, ApprovalRecord } from '../../src/state/governance-records.js';
import { OutboundRequest } from '../../src/upstream/outbound-request.js';
import { findLeaks } from '../helpers/assert-no-leak.js';
import { canary, plainCanary } from '../helpers/canary.js';
import { tempDir } from '../helpers/start-proxy.js';

const json = 'application/json';

function content(body: string | Buffer | null, contentType: string | null = json, query: string | null = null, extra: Partial<Pick<RequestContent, 'shapes' | 'strippedQueryKeys' | 'headers'>> = {}): RequestContent {
  return { query, contentType, headers: extra.headers ?? [], body: body === null ? null : Buffer.isBuffer(body) ? body : Buffer.from(body, 'utf8'), shapes: extra.shapes ?? [], strippedQueryKeys: extra.strippedQueryKeys ?? [] };
}

function previewer(bytes = 2048, catalog = new SecretCatalog()): ReturnType<typeof createRequestPreviewer> {
  return createRequestPreviewer({ bytes, scrub: (text) => catalog.scrub(text) });
}

describe('what the approver sees', () => {
  it('a JSON body and a query: amounts shown; key-shaped values, the agent token and a JWS masked', () => {
    const note = canary('note');
    const apiKey = canary('query-key');
    const agent = generateAgentToken().token;
    const session = generateSessionToken().token;
    const jws = 'eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJib3QifQ.c2lnbmF0dXJlLW9mLXRoZS10b2tlbg';
    const body = JSON.stringify({ amount: 5000, currency: 'usd', note, token: agent, session, identity: jws });
    const preview = previewer()(content(body, 'application/json; charset=utf-8', `confirm=true&api_key=${apiKey}`));
    expect(preview).toEqual({
      query: 'confirm=true&api_key=[REDACTED]',
      contentType: 'application/json; charset=utf-8',
      headers: {},
      bodyBytes: Buffer.byteLength(body),
      body: '{"amount":5000,"currency":"usd","note":"[REDACTED]","token":"alk_[REDACTED]","session":"als_[REDACTED]","identity":"eyJ[REDACTED]"}',
      truncated: false,
    });
  });

  it('a value the catalogue knows (no key shape) is masked, in its encodings too', () => {
    const catalog = new SecretCatalog();
    const value = plainCanary('managed');
    catalog.remember(new Credential('oauth2:crm#client_id', value));
    const preview = previewer(2048, catalog)(content(`{"client":"${value}","b64":"${Buffer.from(value).toString('base64')}"}`, json, `id=${value}`));
    expect(preview?.body).toMatch(/^\{"client":"\[REDACTED\]","b64":"\[REDACTED\][A-Za-z0-9+/=]{0,3}"\}$/);
    expect(preview?.query).toBe('id=[REDACTED]');
    expect(findLeaks([value], [{ name: 'preview', text: JSON.stringify(preview) }])).toEqual([]);
  });

  // Found by the owner's review: the text read through its escapes was kept whole when it revealed a
  // token, and a managed value sent fully \u-escaped (masked as sent) came back as a mixed form.
  it('a managed value sent fully \\u-escaped stays masked beside an escaped token', () => {
    // A scrub that knows the value as written and fully \u-escaped, not the mixed form reading the
    // unreserved escapes makes of it: what is masked as sent must stay masked, whichever text is kept.
    const value = `${plainCanary('escaped')}/+=`;
    const escaped = [...value].map((c) => `\\u${c.charCodeAt(0).toString(16).padStart(4, '0')}`).join('');
    const scrub = (text: string): string => text.replaceAll(value, '[REDACTED]').replaceAll(escaped, '[REDACTED]');
    const token = generateAgentToken().token;
    const preview = createRequestPreviewer({ bytes: 4096, scrub })(content(`{"k":"${escaped}","t":"%61${token.slice(1)}"}`, json));
    expect(preview?.body).toBe('{"k":"[REDACTED]","t":"alk_[REDACTED]"}');
  });

  it('a key spelled with escapes of unreserved characters is masked (%73k-..., \\u0073k-...)', () => {
    const key = canary('escaped');
    const percent = `%73${key.slice(1)}`;
    const unicode = `\\u0073${key.slice(1)}`;
    const preview = previewer()(content(`{"a":"${unicode}","b":1}`, json, `k=${percent}&confirm=true`));
    expect(preview?.query).toBe('k=[REDACTED]&confirm=true');
    expect(preview?.body).toBe('{"a":"[REDACTED]","b":1}');
    // Escapes of anything else stay as sent: reading them could change what the approver takes for the structure.
    expect(previewer()(content('{"note":"a\\u0022,\\u0022amount\\u0022:1"}'))?.body).toBe('{"note":"a\\u0022,\\u0022amount\\u0022:1"}');
    expect(previewer()(content(null, null, 'note=x%26amount%3D1'))?.query).toBe('note=x%26amount%3D1');
  });

  it("the service's own key shapes are masked besides the built-in ones", () => {
    const shapes = [customRule('acme', 'acme_', 'a-z0-9', 16, 64)];
    const preview = previewer()(content('{"k":"acme_0123456789abcdef0123"}', json, null, { shapes }));
    expect(preview?.body).toBe('{"k":"[REDACTED]"}');
  });

  it('control and bidi characters are shown escaped, so a terminal or chat shows what the text says', () => {
    const preview = previewer()(content('{"to":"alice\u202e0005\u202c","x":"\u001b[2J"}\n'));
    expect(preview?.body).toBe('{"to":"alice\\u202e0005\\u202c","x":"\\u001b[2J"}\n');
    // The word joiner, invisible operators and the BOM / zero-width no-break space too (the set the CLI shares).
    expect(previewer()(content('a\u2060b\u2063c\u2065d\ufeffe', 'text/plain'))?.body).toBe('a\\u2060b\\u2063c\\u2065d\\ufeffe');
    // Found by review: blank-looking and tag characters (a tag is two UTF-16 units, both shown).
    expect(previewer()(content('soft\u00adhy \u3164 tag\u{e0041}!', 'text/plain'))?.body).toBe('soft\\u00adhy \\u3164 tag\\udb40\\udc41!');
  });

  // Found by review: the hex of an agent token in a bound header reached the preview (the request guard
  // looks for the token as it is; the preview masked it raw, escaped and in base64).
  it("a token's hex copy, in either case, in the query, a bound header and the body: masked with its run", () => {
    const agent = generateAgentToken().token;
    const session = generateSessionToken().token;
    const hex = Buffer.from(agent).toString('hex');
    const upper = Buffer.from(session).toString('hex').toUpperCase();
    const preview = previewer()(content(`{"memo":"x${upper}y","n":1}`, json, `ref=${hex}&n=1`, { headers: [['stripe-account', `acct_${hex}`]] })) as ApprovalPreview;
    expect(preview.query).toBe('ref=[REDACTED]&n=1');
    expect(preview.headers['stripe-account']).toBe('acct_[REDACTED]');
    expect(preview.body).toBe('{"memo":"x[REDACTED]y","n":1}');
    // Hex that decodes to no token is left as it is.
    const digest = 'ab'.repeat(64);
    expect((previewer()(content(null, null, `sha=${digest}&p=616c6b5f`)) as ApprovalPreview).query).toBe(`sha=${digest}&p=616c6b5f`);
    expect(findLeaks([agent, session], [{ name: 'preview', text: JSON.stringify(preview) }])).toEqual([]);
  });

  // Found by review: the approval is bound to whose account it acts on (approvals.bind_headers), but the
  // approver was not shown it, so approving a refund did not say on which Stripe account.
  it('the bound headers the request carries: each as sent, masked, cut, hidden characters shown, a repeated name joined', () => {
    const leaked = canary('account-header');
    const agent = generateAgentToken().token;
    const catalog = new SecretCatalog();
    catalog.remember(new Credential('env:ACCOUNT_KEY', leaked));
    const preview = previewer(2048, catalog)(
      content('{"amount":5000}', json, null, {
        headers: [
          ['stripe-account', 'acct_1LIVE'],
          ['stripe_account', 'acct_2OTHER'],
          ['openai-organization', `org-${leaked}`],
          ['openai-project', `Bearer ${agent}`],
          ['stripe-context', `ctx\u202e${'x'.repeat(300)}`],
          ['stripe-account', 'acct_3AGAIN'],
          ['__proto__', 'p'],
        ],
      }),
    );
    const headers = (preview as ApprovalPreview).headers;
    expect(headers['stripe-account']).toBe('acct_1LIVE, acct_3AGAIN');
    expect(headers['stripe_account']).toBe('acct_2OTHER');
    expect(headers['openai-organization']).toBe('org-[REDACTED]');
    expect(headers['openai-project']).toBe('Bearer alk_[REDACTED]');
    expect(headers['stripe-context']?.startsWith('ctx\\u202exxx')).toBe(true);
    expect(headers['stripe-context']?.endsWith('x...')).toBe(true);
    expect(Array.from(headers['stripe-context'] as string).length).toBe(128 + 3);
    expect(Object.getOwnPropertyNames(headers)).toContain('__proto__');
    expect(previewView({ id: 'apr_y', agent: 'a', service: 's', route: '/r', scope: 's:w', method: 'POST', path: '/r', binding: 'b', session: null, justification: null, taskId: null, mode: 'hold', createdAt: 0, expiresAt: 1, status: 'pending', decidedBy: null, reason: null, decidedAt: null, preview })).toMatchObject({ headers: { 'stripe-account': 'acct_1LIVE, acct_3AGAIN' } });
    expect(findLeaks([leaked, agent], [{ name: 'preview', text: JSON.stringify(preview) }])).toEqual([]);
  });
});

describe("a token's base64 copy", () => {
  it('an HTTP Basic value of a token, in each place a Basic value puts it, either alphabet, padded or not: masked whole', () => {
    for (const [label, around] of [
      ['alone', (t: string) => t],
      ['user:token', (t: string) => `user:${t}`],
      [':token', (t: string) => `:${t}`],
      ['token:', (t: string) => `${t}:`],
    ] as const) {
      const token = generateAgentToken().token;
      const value = Buffer.from(around(token));
      for (const encoded of [value.toString('base64'), value.toString('base64').replace(/=+$/, ''), value.toString('base64url')]) {
        const body = JSON.stringify({ amount: 5000, auth: `Basic ${encoded}` });
        const preview = previewer()(content(body, json, `auth=${encodeURIComponent(encoded)}&confirm=true`));
        expect(preview?.body, `${label} ${encoded}`).toBe('{"amount":5000,"auth":"Basic [REDACTED]"}');
        expect(preview?.query, `${label} ${encoded}`).toBe('auth=[REDACTED]&confirm=true');
        expect(findLeaks([token], [{ name: 'preview', text: JSON.stringify(preview) }])).toEqual([]);
      }
    }
  });

  it('whatever bytes come before and after the token, at each alignment: no form of it left', () => {
    for (let i = 0; i < 60; i++) {
      const token = (i % 2 === 0 ? generateAgentToken() : generateSessionToken()).token;
      const value = Buffer.concat([randomBytes(i % 6), Buffer.from(token), randomBytes(i % 4)]);
      const encoded = i % 3 === 0 ? value.toString('base64url') : value.toString('base64');
      const preview = previewer()(content(`{"v":"${encoded}"}`, json, `v=${encodeURIComponent(encoded)}`));
      expect(preview?.body, encoded).toBe('{"v":"[REDACTED]"}');
      expect(preview?.query, encoded).toBe('v=[REDACTED]');
    }
  });

  it('a session token, and a copy glued to other characters: masked', () => {
    const session = generateSessionToken().token;
    const token = generateAgentToken().token;
    const body = `{"s":"${Buffer.from(session).toString('base64url')}","g":"xyz${Buffer.from(token).toString('base64')}"}`;
    const preview = previewer()(content(body));
    expect(preview?.body).toBe('{"s":"[REDACTED]","g":"[REDACTED]"}');
    expect(findLeaks([token, session], [{ name: 'preview', text: JSON.stringify(preview) }])).toEqual([]);
  });

  it('"+" and "/" escaped as a query escapes them (%2B, %2F) or as JSON may ("\\/"): the run is still one, masked whole', () => {
    // A user name whose base64 is "+/+/", then the token; and a token ending in "o" followed by a byte
    // over 0xef, whose base64 carries the token's last bits in a "/": split there, no piece holds it whole.
    let token = generateAgentToken().token;
    while (!token.endsWith('o')) token = generateAgentToken().token;
    for (const value of [Buffer.concat([Buffer.from([0xfb, 0xff, 0xbf]), Buffer.from(`:${token}`)]), Buffer.concat([Buffer.from(token), Buffer.from([0xff, 0xff, 0xff])])]) {
      const encoded = value.toString('base64');
      expect(encoded).toContain('/');
      const preview = previewer()(content(`{"auth":"Basic ${encoded.replaceAll('/', '\\/')}"}`, json, `auth=${encodeURIComponent(encoded)}&confirm=true`));
      expect(preview?.body).toBe('{"auth":"Basic [REDACTED]"}');
      expect(preview?.query).toBe('auth=[REDACTED]&confirm=true');
      expect(findLeaks([token], [{ name: 'preview', text: JSON.stringify(preview) }])).toEqual([]);
    }
  });

  it('base64 that holds no whole token is shown: a short alk_, another text, the patterns alone', () => {
    const short = Buffer.from('alk_short').toString('base64');
    const other = Buffer.from(`user:${'p'.repeat(60)}`).toString('base64');
    const body = `{"a":"${short}","b":"${other}","c":"YWxrX Fsa1 hbGtf ${'YWxrX'.repeat(20)}"}`;
    expect(previewer(8192)(content(body))?.body).toBe(body);
  });

  it('a copy across the cut leaves nothing of it', () => {
    const token = generateAgentToken().token;
    const encoded = Buffer.from(`user:${token}`).toString('base64');
    const head = `{"pad":"${'x'.repeat(70)}","auth":"Basic `;
    expect(head.length).toBeLessThan(100);
    const preview = previewer(100)(content(`${head}${encoded}","amount":5000}`));
    expect(preview).toMatchObject({ body: head, truncated: true });
    for (let n = 4; n <= encoded.length; n++) expect(preview?.body).not.toContain(encoded.slice(0, n));
  });
});

describe("the values of the service's stripped query keys", () => {
  /** The query as the forwarded request sends it, stripped of `keys` (outbound-request.ts). */
  function forwarded(query: string, keys: readonly string[]): string | null {
    const request = new OutboundRequest('GET', '/x', query);
    for (const key of keys) request.removeQueryKey(key);
    return request.query;
  }

  it('masked, key kept, in every spelling the strip removes; other pairs as sent', () => {
    const value = plainCanary('stripped');
    const keys = ['api_key', 'Sig'];
    const query = `confirm=true&api_key=${value}&API_KEY=${value};api%5Fkey[]=${value}&Api_Key%5B0%5D=${value}&sig=${value}&note=api_key&api_key&sig=&signature=1`;
    const preview = previewer()(content(null, null, query, { strippedQueryKeys: keys }));
    expect(preview?.query).toBe('confirm=true&api_key=[REDACTED]&API_KEY=[REDACTED];api%5Fkey[]=[REDACTED]&Api_Key%5B0%5D=[REDACTED]&sig=[REDACTED]&note=api_key&api_key&sig=&signature=1');
    expect(findLeaks([value], [{ name: 'preview', text: JSON.stringify(preview) }])).toEqual([]);
    // The pairs masked are the pairs the forwarded request loses, and no other.
    expect(forwarded(query, keys)).toBe('confirm=true&note=api_key&signature=1');
    expect(forwarded(preview?.query as string, keys)).toBe('confirm=true&note=api_key&signature=1');
  });

  it('the spellings PHP and Rack read as the key are masked too, as the strip removes them', () => {
    const value = plainCanary('stripped-php');
    const query = `a=1&api.key=${value}&[api_key]=${value}&%20api_key=${value}&api_key%00x=${value}&+api_key=${value}&api[key=${value}&apikey=kept`;
    const preview = previewer()(content(null, null, query, { strippedQueryKeys: ['api_key'] }));
    expect(preview?.query).toBe('a=1&api.key=[REDACTED]&[api_key]=[REDACTED]&%20api_key=[REDACTED]&api_key%00x=[REDACTED]&+api_key=[REDACTED]&api[key=[REDACTED]&apikey=kept');
    expect(findLeaks([value], [{ name: 'preview', text: JSON.stringify(preview) }])).toEqual([]);
    expect(forwarded(query, ['api_key'])).toBe('a=1&apikey=kept');
  });

  it('no stripped keys: the query as sent', () => {
    expect(previewer()(content(null, null, 'api_key=visible&confirm=true'))?.query).toBe('api_key=visible&confirm=true');
  });
});

describe('scrub first, cut after', () => {
  it('a body longer than preview_bytes is cut there, and a key across the cut leaves no front part', () => {
    const key = canary('across');
    const head = '{"pad":"' + 'x'.repeat(75) + '","key":"';
    const body = `${head}${key}","amount":5000}`;
    // The cut (100 bytes) falls inside the key, 8 bytes into it.
    expect(head.length).toBeLessThan(100);
    expect(head.length + key.length).toBeGreaterThan(100);
    const preview = previewer(100)(content(body));
    expect(preview).toMatchObject({ bodyBytes: Buffer.byteLength(body), truncated: true });
    expect(preview?.body).toBe(head);
    for (let n = 3; n <= key.length; n++) expect(preview?.body).not.toContain(key.slice(0, n));
  });

  it('a cut never splits a character, nor a "[REDACTED]" marker', () => {
    const body = 'é'.repeat(60); // 120 bytes
    const preview = previewer(51)(content(body, 'text/plain'));
    expect(preview?.body).toBe('é'.repeat(25));
    expect(preview?.truncated).toBe(true);
    const emoji = previewer(6)(content('ab😀cd', 'text/plain'));
    expect(emoji?.body).toBe('ab😀');
    const marked = previewer(12)(content(`ab ${canary('marker')} cd`, 'text/plain'));
    expect(marked?.body).toBe('ab ');
  });

  it('the query is cut at 512 characters and the content type at 128, after masking', () => {
    const key = canary('long-query');
    const query = `${'q'.repeat(400)}&k=${key}`;
    const preview = previewer()(content(null, `text/plain; x=${'y'.repeat(200)}`, query));
    expect(preview?.query).toBe(`${'q'.repeat(400)}&k=[REDACTED]`);
    expect(previewer()(content(null, null, `${'q'.repeat(508)}&k=${key}`))?.query).toBe(`${'q'.repeat(508)}&k=...`);
    expect(preview?.contentType).toBe(`text/plain; x=${'y'.repeat(114)}...`);
  });
});

describe('a long body: masked in a window past the cut, not whole', () => {
  const MiB = 1024 * 1024;
  /** `head`, then "x" up to `length` characters. */
  const padded = (head: string, length: number): string => head + 'x'.repeat(length - head.length);
  const prefixesOf = (secret: string, from = 8): string[] => Array.from({ length: secret.length - from + 1 }, (_, i) => secret.slice(0, from + i));

  it('1 MiB with a key at its start: the key masked, the rest cut, truncated', () => {
    const key = canary('huge-start');
    const body = padded(`{"key":"${key}","pad":"`, MiB);
    const preview = previewer(100)(content(body));
    expect(preview).toEqual({ query: null, contentType: json, headers: {}, bodyBytes: MiB, body: padded('{"key":"[REDACTED]","pad":"', 100), truncated: true });
  });

  it('1 MiB with a key across the cut: no front part of it shown', () => {
    const key = canary('huge-across');
    const head = `${padded('{"pad":"', 88)}","k":"`;
    expect(head.length).toBeLessThan(100);
    expect(head.length + key.length).toBeGreaterThan(100);
    const preview = previewer(100)(content(padded(`${head}${key}","more":"`, MiB)));
    expect(preview).toMatchObject({ bodyBytes: MiB, body: head, truncated: true });
    for (let n = 3; n <= key.length; n++) expect(preview?.body).not.toContain(key.slice(0, n));
  });

  /**
   * Four values the catalogue masks (over 8000 characters each, masked to 10) and a space after each
   * fill the window of a 100-byte preview but its last 24 characters: masked, the window is under 100
   * bytes, so masking alone would bring its end into view, where a value can be cut in two. `tail`
   * gets the 24 characters' room.
   */
  function afterMaskedValues(tail: (room: number) => string): { catalog: SecretCatalog; body: string; bulk: string; end: number } {
    const end = 100 + PREVIEW_MASK_MARGIN;
    const catalog = new SecretCatalog();
    const bulk = padded(plainCanary('bulk'), (end - 24) / 4 - 1);
    catalog.remember(new Credential('vault:secret/bulk#v', bulk));
    const head = `${bulk} `.repeat(4);
    expect(end - head.length).toBe(24);
    return { catalog, body: head + tail(end - head.length), bulk, end };
  }

  it('masking that shrinks a window under preview_bytes: the text past the window still counts, truncated', () => {
    const { catalog, body, bulk, end } = afterMaskedValues((room) => 'x'.repeat(room + 200));
    expect(body.length).toBe(end + 200);
    const preview = previewer(100, catalog)(content(body));
    expect(preview).toEqual({ query: null, contentType: json, headers: {}, bodyBytes: body.length, body: padded('[REDACTED] '.repeat(4), 100), truncated: true });
    expect(findLeaks([bulk], [{ name: 'preview', text: JSON.stringify(preview) }])).toEqual([]);
  });

  it("a token across the window's end, after masked values brought it into view: masked whole, not shown in part", () => {
    // Cut 19 characters in (alk_ and 15), an agent token is no token (43 after alk_): only the whole body shows it is one.
    const token = generateAgentToken().token;
    const { catalog, body } = afterMaskedValues((room) => `${'x'.repeat(room - 20)} ${token} and so on`);
    const preview = previewer(100, catalog)(content(body));
    expect(preview).toEqual({ query: null, contentType: json, headers: {}, bodyBytes: body.length, body: `${'[REDACTED] '.repeat(4)}xxxx alk_[REDACTED] and so on`, truncated: false });
    for (const part of prefixesOf(token.slice(4), 4)) expect(preview?.body).not.toContain(part);
  });

  it("a token's base64 copy across the window's end, after masked values brought it into view: masked whole, not shown in part", () => {
    const token = generateAgentToken().token;
    const encoded = Buffer.from(`user:${token}`).toString('base64');
    const { catalog, body } = afterMaskedValues((room) => `${'x'.repeat(room - 20)} Basic ${encoded} and so on`);
    const preview = previewer(100, catalog)(content(body));
    expect(preview).toEqual({ query: null, contentType: json, headers: {}, bodyBytes: body.length, body: `${'[REDACTED] '.repeat(4)}xxxx Basic [REDACTED] and so on`, truncated: false });
    for (const part of prefixesOf(encoded, 4)) expect(preview?.body).not.toContain(part);
  });

  it('a body longer than the window whose whole masked text fits: shown whole, not truncated', () => {
    const { catalog, body, end } = afterMaskedValues((room) => 'x'.repeat(room + 10));
    expect(body.length).toBe(end + 10);
    const preview = previewer(100, catalog)(content(body));
    expect(preview).toMatchObject({ body: `${'[REDACTED] '.repeat(4)}${'x'.repeat(34)}`, truncated: false });
  });
});

describe('text or not', () => {
  const png = Buffer.concat([Buffer.from([0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a]), Buffer.alloc(100, 0xff)]);

  it.each([
    ['application/json', '{"a":1}', true],
    ['application/vnd.api+json', '{"a":1}', true],
    ['text/csv', 'a,b\n1,2', true],
    ['application/x-www-form-urlencoded', 'amount=5000&currency=usd', true],
    ['application/xml', '<a>1</a>', true],
    ['application/soap+xml', '<a>1</a>', true],
    ['application/octet-stream', 'hello', false],
    ['multipart/form-data; boundary=x', '--x\r\n', false],
    ['image/png', png, false],
    ['application/json', png, false],
    [null, 'plain words', true],
    [null, png, false],
    [null, 'nul\u0000inside', false],
  ] as const)('%s %#: text %s', (type, body, text) => {
    const preview = previewer()(content(body, type));
    const bytes = Buffer.isBuffer(body) ? body.length : Buffer.byteLength(body);
    expect(preview).toMatchObject({ contentType: type, bodyBytes: bytes, truncated: false });
    expect(preview?.body).toBe(text ? body : null);
  });

  it('no body: body null, 0 bytes; a query alone is still shown', () => {
    expect(previewer()(content(null, null, 'confirm=true'))).toEqual({ query: 'confirm=true', contentType: null, headers: {}, bodyBytes: 0, body: null, truncated: false });
  });
});

describe('no preview', () => {
  it('preview_bytes 0: null', () => {
    expect(previewer(0)(content('{"amount":5000}', json, 'confirm=true'))).toBeNull();
  });

  it('a scrub that fails: null, never the unchecked text', () => {
    const failing = createRequestPreviewer({ bytes: 2048, scrub: () => { throw new Error('broken'); } });
    expect(failing(content('{"amount":5000}'))).toBeNull();
  });

  it('a record written by an earlier version (no preview field), or a malformed one: null', () => {
    const record = { id: 'apr_x', agent: 'a', service: 's', route: '/r', scope: 's:w', method: 'POST', path: '/r', binding: 'b', session: null, justification: null, taskId: null, mode: 'hold', createdAt: 0, expiresAt: 1, status: 'pending', decidedBy: null, reason: null, decidedAt: null } satisfies ApprovalRecord;
    expect(previewOf(record)).toBeNull();
    expect(previewView(record)).toBeNull();
    expect(previewView({ ...record, preview: 'text' as never })).toBeNull();
    // Made before the bound headers were shown: none.
    const earlier = { query: 'q=1', contentType: null, bodyBytes: 2, body: '{}', truncated: false };
    expect(previewView({ ...record, preview: earlier as never })).toEqual({ query: 'q=1', content_type: null, headers: {}, body_bytes: 2, body: '{}', truncated: false });
    // Kept in shared state, which may hold anything: strings only.
    expect(previewView({ ...record, preview: { ...earlier, headers: { 'stripe-account': 'acct_1', odd: 7, list: ['x'] } } as never })).toMatchObject({ headers: { 'stripe-account': 'acct_1' } });
    expect(previewView({ ...record, preview: { ...earlier, headers: ['stripe-account'] } as never })).toMatchObject({ headers: {} });
  });
});

describe('approvals.preview_bytes', () => {
  const baseDir = tempDir('airlock-preview-config-');
  afterAll(() => rmSync(baseDir, { recursive: true, force: true }));
  const minimal = (approvals: Record<string, unknown> | undefined): unknown => ({ ...(approvals === undefined ? {} : { approvals }), services: {}, agents: {} });

  it('defaults to 2048; 0 is allowed; negative, fractional or over 65536 is refused', () => {
    expect(buildConfig(minimal(undefined), { baseDir }).config?.approvals.preview_bytes).toBe(2048);
    expect(buildConfig(minimal({ webhook: 'https://hooks.example.com/x' }), { baseDir }).config?.approvals.preview_bytes).toBe(2048);
    expect(buildConfig(minimal({ preview_bytes: 0 }), { baseDir }).config?.approvals.preview_bytes).toBe(0);
    for (const bad of [-1, 1.5, 65537]) {
      const loaded = buildConfig(minimal({ preview_bytes: bad }), { baseDir });
      expect(loaded.config).toBeNull();
      expect(loaded.problems.map((p) => p.path.join('.'))).toContain('approvals.preview_bytes');
    }
  });
});
