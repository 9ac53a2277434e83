/**
 * Config validation, table-driven: buildConfig (object -> problems or a frozen config) and parseConfigText
 * (YAML text -> the same, with line and column). Every cross-field rule of validate-config.ts is planted
 * alone in an otherwise clean config, and the test asserts the exact list of problems that comes back.
 */
import { generateKeyPairSync } from 'node:crypto';
import { mkdirSync, rmSync, writeFileSync } from 'node:fs';
import { availableParallelism } from 'node:os';
import { join, resolve } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { workerCount } from '../../src/config/worker-count.js';
import { formatPath } from '../../src/config/config-problem.js';
import { buildConfig, parseConfigText, type LoadedConfig } from '../../src/config/load-config.js';
import { assertNoLeak } from '../helpers/assert-no-leak.js';
import { generateAgentToken } from '../../src/identity/agent-token.js';
import { tempDir } from '../helpers/start-proxy.js';
import { FIXED_CA_PEM } from '../helpers/test-certificates.js';

const baseDir = tempDir('airlock-config-');
afterAll(() => rmSync(baseDir, { recursive: true, force: true }));

const HASH_A = generateAgentToken().hash;
const HASH_B = generateAgentToken().hash;
const HASH_C = generateAgentToken().hash;

type Obj = Record<string, unknown>;

function service(extra: Obj = {}): Obj {
  return {
    upstream: 'https://api.example.com',
    credential: { secret: 'env:API_KEY' },
    routes: [{ method: 'GET', path: '/v1/items', scope: 'items:read' }],
    ...extra,
  };
}

function agent(tokens: string[], credentials: Obj[] = []): Obj {
  return { tokens, credentials };
}

function build(input: unknown): LoadedConfig {
  return buildConfig(input, { baseDir });
}

interface Expected {
  severity: 'error' | 'warning';
  path: string;
  message: RegExp;
  strict?: true;
}

/** Problems as {severity, path as written, message}, for comparing with a table row. */
function shown(loaded: LoadedConfig): Array<{ severity: string; path: string; message: string; strict?: boolean }> {
  return loaded.problems.map((p) => ({ severity: p.severity, path: formatPath(p.path), message: p.message, ...(p.strict === undefined ? {} : { strict: p.strict }) }));
}

function expectProblems(loaded: LoadedConfig, expected: readonly Expected[]): void {
  expect(shown(loaded)).toEqual(
    expected.map((e) => ({ severity: e.severity, path: e.path, message: expect.stringMatching(e.message), ...(e.strict === undefined ? {} : { strict: true }) })),
  );
  const hasError = expected.some((e) => e.severity === 'error');
  if (hasError) expect(loaded.config).toBeNull();
  else expect(loaded.config).not.toBeNull();
}

describe('a valid config', () => {
  it('the minimal config loads with no problems', () => {
    const loaded = build({ services: { api: service() }, agents: { bot: agent([HASH_A], [{ service: 'api', max_scope: ['items:read'] }]) } });
    expect(loaded.problems).toEqual([]);
    expect(loaded.config).not.toBeNull();
    expect(loaded.config?.source).toBeNull();
  });

  it('an empty object is a config with no services and no agents', () => {
    const loaded = build({});
    expect(loaded.problems).toEqual([]);
    expect(loaded.config?.services).toEqual({});
    expect(loaded.config?.agents).toEqual({});
  });

  it('fills the defaults: listen, data_dir, audit, log, limits, prefix, timeouts, service and grant options', () => {
    const loaded = build({ services: { openai: service() }, agents: { bot: agent([HASH_A], [{ service: 'openai', max_scope: ['items:read'] }]) } });
    const config = loaded.config;
    expect(config).not.toBeNull();
    if (config === null) return;
    expect(config.listen).toBe('127.0.0.1:7700');
    expect(config.data_dir).toBe(resolve(baseDir, 'data'));
    expect(config.audit.file).toBe(join(baseDir, 'data', 'audit.jsonl'));
    expect(config.log).toEqual({ level: 'info', requests: 'all' });
    expect(config.limits).toEqual({
      max_header_bytes: 16384,
      max_headers: 100,
      max_body_bytes: 10 * 1024 * 1024,
      headers_timeout: 10,
      request_timeout: 300,
      keep_alive_timeout: 5,
      max_sessions_per_agent: 1000,
      session_mint_rate: { requests: 600, per: 60, burst: 100 },
    });
    expect(config.approvals).toMatchObject({ max_pending: 1000, max_pending_per_agent: 100 });
    const openai = config.services['openai'];
    expect(openai).toMatchObject({
      name: 'openai',
      prefix: '/openai',
      hosts: [],
      allow_private: false,
      max_connections: 64,
      timeouts: { connect: 10, headers: 60, body: 300 },
      credential: { secret: 'env:API_KEY', inject: 'bearer' },
    });
    expect(openai?.listen).toBeUndefined();
    expect(openai?.max_body_bytes).toBeUndefined();
    expect(config.agents['bot']).toMatchObject({ name: 'bot', tokens: [HASH_A] });
    expect(config.agents['bot']?.credentials[0]).toEqual({ service: 'openai', max_scope: ['items:read'], max_ttl: 3600, require_session: false, require_approval: false, approval_mode: 'hold', approval_timeout: 300 });
  });

  it('partial limits and timeouts keep the defaults of the fields not written', () => {
    const config = build({ limits: { max_headers: 20 }, services: { api: service({ timeouts: { headers: 5 } }) } }).config;
    expect(config?.limits.max_headers).toBe(20);
    expect(config?.limits.max_body_bytes).toBe(10 * 1024 * 1024);
    expect(config?.services['api']?.timeouts).toEqual({ connect: 10, headers: 5, body: 300, queue: 30 });
  });

  it('an explicit prefix is kept', () => {
    expect(build({ services: { api: service({ prefix: '/v2/api' }) } }).config?.services['api']?.prefix).toBe('/v2/api');
  });

  it('the result is deep-frozen', () => {
    const loaded = build({
      services: { api: service({ hosts: ['api.internal'], credential: { secret: 'env:K', inject: { header: 'x-api-key', value: '${secret}' } } }) },
      agents: { bot: agent([HASH_A], [{ service: 'api', max_scope: ['items:read'], credential: { secret: 'file:bot-key' } }]) },
    });
    const config = loaded.config;
    expect(config).not.toBeNull();
    const unfrozen: string[] = [];
    let objects = 0;
    const walk = (value: unknown, where: string): void => {
      if (value === null || typeof value !== 'object') return;
      objects++;
      if (!Object.isFrozen(value)) unfrozen.push(where);
      for (const [key, child] of Object.entries(value)) walk(child, `${where}.${key}`);
    };
    walk(config, 'config');
    expect(objects).toBeGreaterThan(15);
    expect(unfrozen).toEqual([]);
    expect(() => {
      (config as unknown as { listen: string }).listen = '0.0.0.0:80';
    }).toThrow(TypeError);
    expect(() => {
      (config?.services['api']?.routes as unknown as Obj[]).push({ method: 'DELETE', path: '/', scope: 'x' });
    }).toThrow(TypeError);
    expect(() => {
      (config?.agents['bot']?.credentials[0]?.max_scope as unknown as string[])[0] = '*';
    }).toThrow(TypeError);
    expect(config?.agents['bot']?.credentials[0]?.max_scope[0]).toBe('items:read');
  });

  it('does not freeze or change the input object', () => {
    const input = { services: { api: service() } };
    build(input);
    expect(Object.isFrozen(input)).toBe(false);
    expect(Object.isFrozen(input.services.api)).toBe(false);
    expect(input.services.api).not.toHaveProperty('prefix');
  });
});

describe('paths are resolved against the config directory', () => {
  it.each([
    { data_dir: 'state', expected: () => join(baseDir, 'state') },
    { data_dir: './state/sub', expected: () => join(baseDir, 'state', 'sub') },
    { data_dir: '../elsewhere', expected: () => resolve(baseDir, '..', 'elsewhere') },
    { data_dir: '/var/lib/airlock', expected: () => '/var/lib/airlock' },
  ])('data_dir $data_dir', ({ data_dir, expected }) => {
    const config = build({ data_dir }).config;
    expect(config?.data_dir).toBe(expected());
    expect(config?.audit.file).toBe(join(expected(), 'audit.jsonl'));
  });

  it('a relative audit file is inside data_dir; an absolute one is kept', () => {
    expect(build({ data_dir: 'state', audit: { file: 'logs/audit.jsonl' } }).config?.audit.file).toBe(join(baseDir, 'state', 'logs', 'audit.jsonl'));
    expect(build({ data_dir: 'state', audit: { file: '/var/log/airlock.jsonl' } }).config?.audit.file).toBe('/var/log/airlock.jsonl');
  });

  it('a relative ca is resolved against baseDir and must exist', () => {
    mkdirSync(join(baseDir, 'certs'), { recursive: true });
    writeFileSync(join(baseDir, 'certs', 'ca.pem'), FIXED_CA_PEM);
    const ok = build({ services: { api: service({ ca: 'certs/ca.pem' }) } });
    expect(ok.problems).toEqual([]);
    expect(ok.config?.services['api']?.ca).toBe(join(baseDir, 'certs', 'ca.pem'));

    const missing = build({ services: { api: service({ ca: 'certs/missing.pem' }) } });
    expectProblems(missing, [{ severity: 'error', path: 'services.api.ca', message: new RegExp(`^CA file ${join(baseDir, 'certs', 'missing.pem').replace(/[.*+?^${}()|[\]\\]/g, '\\$&')} does not exist$`) }]);
  });

  it('the Vault and OAuth2 CA files must exist too (they are read on the first fetch, possibly long after start-up)', () => {
    mkdirSync(join(baseDir, 'certs'), { recursive: true });
    writeFileSync(join(baseDir, 'certs', 'store-ca.pem'), FIXED_CA_PEM);
    const stores = (file: string): Obj => ({
      secrets: {
        vault: { address: 'https://vault.internal:8200', ca_file: file, auth: { method: 'token', token: 'env:VAULT_TOKEN' } },
        oauth2: { crm: { token_url: 'https://login.example.com/oauth2/token', client_id: 'env:CRM_ID', client_secret: 'env:CRM_SECRET', ca: file } },
      },
    });
    const ok = build(stores('certs/store-ca.pem'));
    expect(ok.problems).toEqual([]);
    expect(ok.config?.secrets.vault?.ca_file).toBe(join(baseDir, 'certs', 'store-ca.pem'));

    const missing = join(baseDir, 'certs', 'gone.pem').replace(/[.*+?^${}()|[\]\\]/g, '\\$&');
    expectProblems(build(stores('certs/gone.pem')), [
      { severity: 'error', path: 'secrets.vault.ca_file', message: new RegExp(`^CA file ${missing} does not exist$`) },
      { severity: 'error', path: 'secrets.oauth2.crm.ca', message: new RegExp(`^CA file ${missing} does not exist$`) },
    ]);
  });

  it('the same relative input gives different absolute paths for different baseDirs', () => {
    const a = buildConfig({ data_dir: 'd' }, { baseDir: '/srv/one' }).config;
    const b = buildConfig({ data_dir: 'd' }, { baseDir: '/srv/two' }).config;
    expect(a?.data_dir).toBe('/srv/one/d');
    expect(b?.data_dir).toBe('/srv/two/d');
  });
});

describe('unknown keys are errors at every level, with a did-you-mean', () => {
  const grant = (extra: Obj = {}): Obj => ({ service: 'api', max_scope: ['items:read'], ...extra });
  it.each([
    { level: 'top', input: { servces: {} }, path: 'servces', hint: 'did you mean "services"?' },
    { level: 'audit', input: { audit: { fil: 'a.jsonl' } }, path: 'audit.fil', hint: 'did you mean "file"?' },
    { level: 'log', input: { log: { leve: 'info' } }, path: 'log.leve', hint: 'did you mean "level"?' },
    { level: 'limits', input: { limits: { max_header: 10 } }, path: 'limits.max_header', hint: 'did you mean "max_headers"?' },
    { level: 'service', input: { services: { api: service({ upstrem: 'x' }) } }, path: 'services.api.upstrem', hint: 'did you mean "upstream"?' },
    { level: 'timeouts', input: { services: { api: service({ timeouts: { conect: 1 } }) } }, path: 'services.api.timeouts.conect', hint: 'did you mean "connect"?' },
    { level: 'credential', input: { services: { api: service({ credential: { secret: 'env:K', injct: 'bearer' } }) } }, path: 'services.api.credential.injct', hint: 'did you mean "inject"?' },
    {
      level: 'inject header',
      input: { services: { api: service({ credential: { secret: 'env:K', inject: { header: 'x-api-key', value: '${secret}', valu: 'x' } } }) } },
      path: 'services.api.credential.inject.valu',
      hint: 'did you mean "value"?',
    },
    { level: 'route', input: { services: { api: service({ routes: [{ method: 'GET', path: '/x', scope: 's', scop: 't' }] }) } }, path: 'services.api.routes[0].scop', hint: 'did you mean "scope"?' },
    { level: 'agent', input: { agents: { bot: { tokens: [HASH_A], credentals: [] } } }, path: 'agents.bot.credentals', hint: 'did you mean "credentials"?' },
    { level: 'grant', input: { services: { api: service() }, agents: { bot: agent([HASH_A], [grant({ max_tll: 5 })]) } }, path: 'agents.bot.credentials[0].max_tll', hint: 'did you mean "max_ttl"?' },
    {
      level: 'grant credential',
      input: { services: { api: service() }, agents: { bot: agent([HASH_A], [grant({ credential: { secret: 'env:K', secrets: 'x' } })]) } },
      path: 'agents.bot.credentials[0].credential.secrets',
      hint: 'did you mean "secret"?',
    },
  ])('$level', ({ input, path, hint }) => {
    const loaded = build(input);
    expect(loaded.config).toBeNull();
    const key = path.split(/[.[\]]/).filter((p) => p !== '').at(-1);
    expectProblems(loaded, [{ severity: 'error', path, message: new RegExp(`^unknown key "${key}"; ${hint.replace(/[.*+?^${}()|[\]\\"]/g, '\\$&')}$`) }]);
  });

  it('a key close to nothing lists the keys allowed there', () => {
    expectProblems(build({ zzzzzz: 1 }), [{ severity: 'error', path: 'zzzzzz', message: /^unknown key "zzzzzz"; allowed here: listen, tls, trusted_proxies, data_dir, audit, telemetry, log, limits, secrets, admin, approvals, state, workers, shutdown_timeout, reload, anomalies, services, agents$/ }]);
  });
});

describe('schema problems name the field and what to write', () => {
  it.each([
    { name: 'missing fields', input: { services: { api: { upstream: 'https://a.example.com' } } }, expected: [
      { severity: 'error', path: 'services.api.credential', message: /^required: expected object$/ },
      { severity: 'error', path: 'services.api.routes', message: /^required: expected array$/ },
    ] },
    { name: 'bad listen', input: { listen: 'localhost' }, expected: [{ severity: 'error', path: 'listen', message: /expected HOST:PORT/ }] },
    { name: 'port too big', input: { listen: '127.0.0.1:65536' }, expected: [{ severity: 'error', path: 'listen', message: /expected HOST:PORT/ }] },
    { name: 'bad token hash', input: { agents: { bot: { tokens: ['sha256:ABC'] } } }, expected: [{ severity: 'error', path: 'agents.bot.tokens[0]', message: /npx airlock token/ }] },
    { name: 'reserved prefix', input: { services: { api: service({ prefix: '/_airlock' }) } }, expected: [{ severity: 'error', path: 'services.api.prefix', message: /reserved/ }] },
    { name: 'prefix with trailing slash', input: { services: { api: service({ prefix: '/api/' }) } }, expected: [{ severity: 'error', path: 'services.api.prefix', message: /without a trailing "\/"/ }] },
    { name: 'upstream with a query', input: { services: { api: service({ upstream: 'https://a.example.com/?x=1' }) } }, expected: [{ severity: 'error', path: 'services.api.upstream', message: /may not have a query/ }] },
    { name: 'upstream with credentials', input: { services: { api: service({ upstream: 'https://u:p@a.example.com' }) } }, expected: [{ severity: 'error', path: 'services.api.upstream', message: /credentials in the upstream URL/ }] },
    { name: 'upstream not a URL', input: { services: { api: service({ upstream: 'api.example.com' }) } }, expected: [{ severity: 'error', path: 'services.api.upstream', message: /is not a URL/ }] },
    { name: 'upstream base path with an encoded dot segment', input: { services: { api: service({ upstream: 'https://a.example.com/tenants/acme/%2e%2E/globex' }) } }, expected: [{ severity: 'error', path: 'services.api.upstream', message: /must be canonical/ }] },
    { name: 'upstream base path not canonical', input: { services: { api: service({ upstream: 'https://a.example.com/v1/../admin' }) } }, expected: [{ severity: 'error', path: 'services.api.upstream', message: /must be canonical/ }] },
    { name: 'unknown secret source', input: { services: { api: service({ credential: { secret: 'aws-sm:x' } }) } }, expected: [{ severity: 'error', path: 'services.api.credential.secret', message: /^unknown secret source "aws-sm"; use one of env:, file:, vault:, vault-lease:, oauth2:$/ }] },
    { name: 'bad env name', input: { services: { api: service({ credential: { secret: 'env:1X' } }) } }, expected: [{ severity: 'error', path: 'services.api.credential.secret', message: /not an environment variable name/ }] },
    // A reference is printed wherever its credential is named (audit, metrics, admin output): a key pasted as the name is refused, not repeated.
    { name: 'a key pasted as a file: name', input: { services: { api: service({ credential: { secret: 'file:sk-proj-PastedByMistake123' } }) } }, expected: [{ severity: 'error', path: 'services.api.credential.secret', message: /^what follows file: starts like a key .* \(not repeated here\)/ }] },
    { name: 'a key pasted in a vault path', input: { services: { api: service({ credential: { secret: 'vault:secret/ghp_PastedByMistake0123456789ab#f' } }) } }, expected: [{ severity: 'error', path: 'services.api.credential.secret', message: /^what follows vault: starts like a key/ }] },
    { name: 'a key pasted before the colon', input: { services: { api: service({ credential: { secret: 'sk_live_Pasted:x' } }) } }, expected: [{ severity: 'error', path: 'services.api.credential.secret', message: /^unknown secret source \(not repeated here: it may be a key\)/ }] },
    { name: 'unknown inject', input: { services: { api: service({ credential: { secret: 'env:K', inject: 'beerer' } }) } }, expected: [{ severity: 'error', path: 'services.api.credential.inject', message: /^inject must be "bearer"/ }] },
    { name: 'strip_headers with a name that is no header name', input: { services: { api: service({ strip_headers: ['Cookie', 'Bad Header'] }) } }, expected: [{ severity: 'error', path: 'services.api.strip_headers[1]', message: /not a valid HTTP header name/ }] },
    { name: 'strip_query with a key that could never match', input: { services: { api: service({ strip_query: ['api_key', 'key[]'] }) } }, expected: [{ severity: 'error', path: 'services.api.strip_query[1]', message: /a query key, without \[ \] = & ; \? #/ }] },
    { name: 'inject into a proxy header spelt with "_"', input: { services: { api: service({ credential: { secret: 'env:K', inject: { header: 'Content_Length', value: '${secret}' } } }) } }, expected: [{ severity: 'error', path: 'services.api.credential.inject.header', message: /Content_Length is managed by the proxy/ }] },
    { name: 'inject into a proxy header', input: { services: { api: service({ credential: { secret: 'env:K', inject: { header: 'Host', value: 'x ${secret}' } } }) } }, expected: [{ severity: 'error', path: 'services.api.credential.inject.header', message: /Host is managed by the proxy/ }] },
    { name: 'template with a character past ASCII', input: { services: { api: service({ credential: { secret: 'env:K', inject: { header: 'x-k', value: 'Clé ${secret}' } } }) } }, expected: [{ severity: 'error', path: 'services.api.credential.inject.value', message: /contains a character outside ASCII/ }] },
    { name: 'template with a line break', input: { services: { api: service({ credential: { secret: 'env:K', inject: { header: 'x-k', value: 'Token ${secret}\r\nX-Evil: 1' } } }) } }, expected: [{ severity: 'error', path: 'services.api.credential.inject.value', message: /contains a line break or NUL/ }] },
    { name: 'template without ${secret}', input: { services: { api: service({ credential: { secret: 'env:K', inject: { header: 'x-k', value: 'static' } } }) } }, expected: [{ severity: 'error', path: 'services.api.credential.inject.value', message: /never uses \$\{secret\}/ }] },
    { name: 'template with a typo', input: { services: { api: service({ credential: { secret: 'env:K', inject: { header: 'x-k', value: '${secrte}' } } }) } }, expected: [{ severity: 'error', path: 'services.api.credential.inject.value', message: /unknown placeholder \$\{secrte\}/ }] },
    { name: 'basic username with ":"', input: { services: { api: service({ credential: { secret: 'env:K', inject: { basic: { username: 'team:${secret}' } } } }) } }, expected: [{ severity: 'error', path: 'services.api.credential.inject.basic.username', message: /cannot hold ":" \(RFC 7617/ }] },
    { name: 'basic without ${secret}', input: { services: { api: service({ credential: { secret: 'env:K', inject: { basic: { username: 'u' } } } }) } }, expected: [{ severity: 'error', path: 'services.api.credential.inject.basic', message: /neither username nor password/ }] },
    { name: 'TRACE route', input: { services: { api: service({ routes: [{ method: 'trace', path: '/x', scope: 's' }] }) } }, expected: [{ severity: 'error', path: 'services.api.routes[0].method', message: /^TRACE is never forwarded/ }] },
    { name: 'CONNECT in a method list', input: { services: { api: service({ routes: [{ method: ['GET', 'CONNECT'], path: '/x', scope: 's' }] }) } }, expected: [{ severity: 'error', path: 'services.api.routes[0].method', message: /^CONNECT is never forwarded/ }] },
    { name: 'method "*"', input: { services: { api: service({ routes: [{ method: '*', path: '/x', scope: 's' }] }) } }, expected: [{ severity: 'error', path: 'services.api.routes[0].method', message: /HTTP method/ }] },
    { name: 'bad route template', input: { services: { api: service({ routes: [{ method: 'GET', path: '/v1/*/x', scope: 's' }] }) } }, expected: [{ severity: 'error', path: 'services.api.routes[0].path', message: /"\*" is only allowed as the last segment/ }] },
    { name: 'bad scope pattern', input: { services: { api: service() }, agents: { bot: agent([HASH_A], [{ service: 'api', max_scope: ['items*'] }]) } }, expected: [{ severity: 'error', path: 'agents.bot.credentials[0].max_scope[0]', message: /ends with ":\*"/ }] },
    { name: 'top level not a map', input: ['a'], expected: [{ severity: 'error', path: '(top level)', message: /expected object/ }] },
    { name: 'log.requests not a known choice', input: { log: { requests: 'errors' } }, expected: [{ severity: 'error', path: 'log.requests', message: /expected one of "all"\|"problems"/ }] },
  ] as Array<{ name: string; input: unknown; expected: Expected[] }>)('$name', ({ input, expected }) => {
    expectProblems(build(input), expected);
  });

  // A bad record key reports the name rule, not zod's generic message.
  it('a bad service name says what a service name may be', () => {
    const loaded = build({ services: { Api: service() } });
    expectProblems(loaded, [{ severity: 'error', path: 'services.Api', message: /lowercase letters, digits, _ and -/ }]);
  });
});

describe('cross-field rules (validate-config.ts)', () => {
  const g = (serviceName: string, maxScope: string[], extra: Obj = {}): Obj => ({ service: serviceName, max_scope: maxScope, ...extra });
  const rows: Array<{ rule: string; input: Obj; expected: Expected[] }> = [
    {
      rule: 'a service listener on the agent listener address',
      input: { listen: '127.0.0.1:7700', services: { api: service({ listen: '127.0.0.1:7700' }) } },
      expected: [{ severity: 'error', path: 'services.api.listen', message: /^127\.0\.0\.1:7700 clashes with 127\.0\.0\.1:7700 of the agent listener \(listen\); give each listener its own port$/ }],
    },
    {
      rule: 'two services on one listener',
      input: { services: { one: service({ listen: '127.0.0.1:7711' }), two: service({ listen: '127.0.0.1:7711' }) } },
      expected: [{ severity: 'error', path: 'services.two.listen', message: /^127\.0\.0\.1:7711 clashes with 127\.0\.0\.1:7711 of service one/ }],
    },
    { rule: 'port 0 twice is fine (each gets its own port)', input: { listen: '127.0.0.1:0', services: { one: service({ listen: '127.0.0.1:0' }) } }, expected: [] },
    { rule: 'same port on different explicit hosts is fine', input: { services: { one: service({ listen: '127.0.0.1:7711' }), two: service({ listen: '127.0.0.2:7711' }) } }, expected: [] },
    ...['169.254.169.254', '169.254.10.1', '[fd00:ec2::254]', '[fd20:ce::254]', '[fe80::1]', '[::ffff:169.254.169.254]', '100.100.100.200'].map((host) => ({
      rule: `a ${host} upstream literal without allow_private`,
      input: { services: { api: service({ upstream: `https://${host}` }) } },
      expected: [{ severity: 'error' as const, path: 'services.api.upstream', message: /is a link-local or cloud metadata address; set allow_private: true/ }],
    })),
    { rule: 'a metadata literal with allow_private', input: { services: { api: service({ upstream: 'https://169.254.169.254', allow_private: true }) } }, expected: [] },
    ...['127.0.0.1:9000', '10.0.0.5', '[::1]:8080', '192.168.1.10'].map((host) => ({ rule: `a ${host} literal is the operator's choice`, input: { services: { api: service({ upstream: `https://${host}` }) } }, expected: [] as Expected[] })),
    // Plain http: fine on this machine, a strict warning to any other host, for each thing that would
    // cross the network readable (an injected key, Vault's token and secrets, a client secret, JWKS).
    ...['http://127.0.0.1:9000', 'http://127.8.0.1', 'http://[::1]:8080'].map((upstream) => ({ rule: `plain http on this machine (${upstream})`, input: { services: { api: service({ upstream }) } }, expected: [] as Expected[] })),
    ...['http://localhost:8080', 'http://api.localhost'].map((upstream) => ({ rule: `plain http on this machine (${upstream}), with allow_private`, input: { services: { api: service({ upstream, allow_private: true }) } }, expected: [] as Expected[] })),
    // A localhost name without allow_private: the egress guard refuses it at connect time, every time.
    ...['http://localhost:8080', 'https://API.localhost'].map((upstream) => ({
      rule: `a localhost name without allow_private (${upstream})`,
      input: { services: { api: service({ upstream }) } },
      expected: [{ severity: 'warning' as const, path: 'services.api.upstream', message: /^(localhost|api\.localhost) always resolves to this machine, which the egress guard refuses .*write 127\.0\.0\.1 .* or set allow_private: true \(fails check --strict\)$/, strict: true as const }],
    })),
    ...['http://10.0.0.5', 'http://api.example.com', 'http://[fd00::5]:8080', 'http://127.0.0.1.nip.io'].map((upstream) => ({
      rule: `plain http off this machine (${upstream})`,
      input: { services: { api: service({ upstream }) } },
      expected: [{ severity: 'warning' as const, path: 'services.api.upstream', message: /^plain http to .+, off this machine: the injected credential crosses the network unencrypted.*fails check --strict/, strict: true as const }],
    })),
    {
      rule: 'plain http to Vault and a token endpoint off this machine (warnings), and to a JWKS (an error)',
      input: {
        secrets: {
          vault: { address: 'http://vault.internal:8200', auth: { method: 'token', token: 'env:VAULT_TOKEN' } },
          oauth2: { crm: { token_url: 'http://login.example.com/token', client_id: 'env:CRM_ID', client_secret: 'env:CRM_SECRET' }, local: { token_url: 'http://127.0.0.1:9/token', client_id: 'env:L_ID', client_secret: 'env:L_SECRET' } },
        },
        services: { api: service() },
        agents: { bot: { jwt: { issuer: 'https://issuer.example.com', audience: 'airlock', subject: 'bot', jwks_url: 'http://issuer.example.com/jwks' }, credentials: [g('api', ['items:read'])] } },
      },
      expected: [
        { severity: 'warning', path: 'secrets.vault.address', message: /^plain http to vault\.internal, off this machine: Airlock's Vault token and every secret it reads/, strict: true },
        { severity: 'warning', path: 'secrets.oauth2.crm.token_url', message: /^plain http to login\.example\.com, off this machine: the client secret and every token issued/, strict: true },
        // An error since a JWKS over plain http lets whoever is on the path forge tokens (config-jwks-url-scheme.test.ts).
        { severity: 'error', path: 'agents.bot.jwt.jwks_url', message: /^plain http to issuer\.example\.com: anyone on the network path can answer with signing keys of their own and forge tokens that authenticate as bot .*use https/ },
      ],
    },
    {
      // Found by review: a key that did not parse passed check, and a reload failed only after it had
      // taken Vault leases, with crypto's message and no path.
      rule: 'a JWT key that is not a public key, or is a private one (not repeated)',
      input: {
        services: { api: service() },
        agents: {
          bot: {
            jwt: { issuer: 'https://issuer.example.com', audience: 'airlock', keys: ['not a pem key', generateKeyPairSync('ec', { namedCurve: 'P-256' }).privateKey.export({ type: 'pkcs8', format: 'pem' }), generateKeyPairSync('ec', { namedCurve: 'P-256' }).publicKey.export({ type: 'spki', format: 'pem' })] },
            credentials: [g('api', ['items:read'])],
          },
        },
      },
      expected: [
        { severity: 'error', path: 'agents.bot.jwt.keys[0]', message: /^not a public key node can read: a PEM block such as -----BEGIN PUBLIC KEY-----/ },
        { severity: 'error', path: 'agents.bot.jwt.keys[1]', message: /^a private key: give its public key \(openssl pkey -in key\.pem -pubout\)$/ },
      ],
    },
    {
      rule: 'several workers on memory state',
      input: { workers: 2 },
      expected: [{ severity: 'error', path: 'workers', message: /^several worker processes need shared state: set state: \{type: redis, url: \.\.\.\}/ }],
    },
    {
      rule: 'workers: auto on memory state',
      input: { workers: 'auto' },
      expected: [{ severity: 'error', path: 'workers', message: /^several worker processes need shared state/ }],
    },
    { rule: 'workers: auto with redis state', input: { workers: 'auto', state: { type: 'redis', url: 'redis://127.0.0.1:6379' } }, expected: [] },
    { rule: 'one worker on memory state', input: { workers: 1 }, expected: [] },
    {
      rule: 'two services with the same prefix',
      input: { services: { one: service({ prefix: '/api' }), two: service({ prefix: '/api' }) } },
      expected: [{ severity: 'error', path: 'services.two.prefix', message: /^prefix \/api overlaps \/api of service one; a path must select one service$/ }],
    },
    {
      rule: 'a prefix nested under a default prefix',
      input: { services: { api: service(), v2: service({ prefix: '/api/v2' }) } },
      expected: [{ severity: 'error', path: 'services.v2.prefix', message: /^prefix \/api\/v2 overlaps \/api of service api/ }],
    },
    {
      rule: 'a default prefix above an earlier nested one',
      input: { services: { v2: service({ prefix: '/api/v2' }), api: service() } },
      expected: [{ severity: 'error', path: 'services.api.prefix', message: /^prefix \/api overlaps \/api\/v2 of service v2/ }],
    },
    { rule: 'prefixes sharing characters but not a segment', input: { services: { api: service(), apix: service() } }, expected: [] },
    {
      rule: 'one host for two services (case-insensitive)',
      input: { services: { one: service({ hosts: ['Api.Example.internal'] }), two: service({ hosts: ['other.internal', 'api.example.INTERNAL'] }) } },
      expected: [{ severity: 'error', path: 'services.two.hosts[1]', message: /^host api\.example\.internal already selects service one$/ }],
    },
    { rule: 'a service without routes', input: { services: { api: service({ routes: [] }) } }, expected: [{ severity: 'warning', path: 'services.api.routes', message: /has no routes, so every request to it is refused/ }] },
    {
      rule: 'a route shadowed by an earlier one of the same path',
      input: { services: { api: service({ routes: [{ method: ['GET', 'HEAD'], path: '/v1/x', scope: 'a' }, { method: 'get', path: '/v1/x', scope: 'b' }] }) } },
      expected: [{ severity: 'warning', strict: true, path: 'services.api.routes[1]', message: /^GET \/v1\/x never matches: routes\[0\] \(GET\|HEAD \/v1\/x\) comes first and matches every path it does \(first match wins\), so its scope b is never checked; list the more specific route first/ }],
    },
    {
      rule: 'a route an earlier `*` or `:name` covers (found by the ops walkthrough: a stricter scope that never applied)',
      input: {
        services: {
          api: service({
            routes: [
              { method: 'GET', path: '/v1/models/*', scope: 'models:read' },
              { method: 'GET', path: '/v1/models/gpt-4-internal', scope: 'models:admin' },
              { method: ['GET', 'DELETE'], path: '/v1/files/:id', scope: 'files:read' },
              { method: ['GET', 'POST'], path: '/v1/files/export', scope: 'files:export' },
              { method: 'GET', path: '/v1/models/:model/versions/*', scope: 'models:read' },
              // Not covered: a `:name` holds one segment, `*` one or more; other methods; other literals.
              { method: 'GET', path: '/v1/files/*', scope: 'files:read' },
              { method: 'PUT', path: '/v1/files/export', scope: 'files:export' },
              { method: 'GET', path: '/v2/models/x', scope: 'models:read' },
            ],
          }),
        },
      },
      expected: [
        { severity: 'warning', strict: true, path: 'services.api.routes[1]', message: /^GET \/v1\/models\/gpt-4-internal never matches: routes\[0\] \(GET \/v1\/models\/\*\) comes first .* so its scope models:admin is never checked/ },
        { severity: 'warning', strict: true, path: 'services.api.routes[3]', message: /^GET\|POST \/v1\/files\/export never matches for GET: routes\[2\] \(GET\|DELETE \/v1\/files\/:id\) comes first/ },
        { severity: 'warning', strict: true, path: 'services.api.routes[4]', message: /^GET \/v1\/models\/:model\/versions\/\* never matches: routes\[0\]/ },
      ],
    },
    {
      rule: 'two routes told apart only by letter case or an escape, with other scopes (found by review)',
      input: {
        services: {
          api: service({
            routes: [
              { method: 'GET', path: '/v1/Reports', scope: 'reports:admin' },
              { method: 'GET', path: '/v1/reports', scope: 'reports:read' },
              { method: 'POST', path: '/v1/models/a:b', scope: 'models:admin' },
              { method: 'POST', path: '/v1/models/a%3Ab', scope: 'models:write' },
              // The same scope, or no method in common: nothing to pick between.
              { method: 'GET', path: '/v1/Items', scope: 'items:read' },
              { method: 'GET', path: '/v1/items', scope: 'items:read' },
              { method: 'DELETE', path: '/v1/REPORTS', scope: 'reports:delete' },
            ],
          }),
        },
      },
      expected: [
        { severity: 'warning', strict: true, path: 'services.api.routes[1]', message: /^\/v1\/reports differs from routes\[0\] \(\/v1\/Reports\) only in letter case or escapes, with another scope: .* picks scope reports:admin or reports:read by how it spells the path/ },
        { severity: 'warning', strict: true, path: 'services.api.routes[3]', message: /^\/v1\/models\/a%3Ab differs from routes\[2\] \(\/v1\/models\/a:b\)/ },
      ],
    },
    {
      rule: 'a method listed twice in one route',
      input: { services: { api: service({ routes: [{ method: ['GET', 'get'], path: '/v1/items', scope: 'items:read' }] }) } },
      expected: [{ severity: 'warning', path: 'services.api.routes[0].method[1]', message: /^GET is listed twice in this route$/ }],
    },
    {
      rule: 'an agent without tokens',
      input: { services: { api: service() }, agents: { bot: agent([], [g('api', ['items:read'])]) } },
      expected: [{ severity: 'warning', path: 'agents.bot.tokens', message: /^agent bot has no tokens and cannot authenticate/ }],
    },
    {
      rule: 'one token hash in two agents',
      input: { agents: { one: agent([HASH_A, HASH_B]), two: agent([HASH_C, HASH_B]) } },
      expected: [{ severity: 'error', path: 'agents.two.tokens[1]', message: /^this token hash is already listed at agents\.one\.tokens\[1\]; every token belongs to exactly one agent$/ }],
    },
    {
      rule: 'one token hash twice in one agent',
      input: { agents: { one: agent([HASH_A, HASH_A]) } },
      expected: [{ severity: 'error', path: 'agents.one.tokens[1]', message: /already listed at agents\.one\.tokens\[0\]/ }],
    },
    {
      rule: 'a grant for a service that does not exist',
      input: { services: { api: service(), crm: service({ prefix: '/crm' }) }, agents: { bot: agent([HASH_A], [g('stripe', ['charges:read'])]) } },
      expected: [{ severity: 'error', path: 'agents.bot.credentials[0].service', message: /^no service named "stripe"; services are: api, crm$/ }],
    },
    {
      rule: 'a grant when there are no services at all',
      input: { agents: { bot: agent([HASH_A], [g('stripe', ['charges:read'])]) } },
      expected: [{ severity: 'error', path: 'agents.bot.credentials[0].service', message: /^no service named "stripe"$/ }],
    },
    {
      rule: 'scopes that match no route',
      input: { services: { api: service() }, agents: { bot: agent([HASH_A], [g('api', ['items:read', 'items:write', 'items:*', 'orders:*', '*'])]) } },
      expected: [
        { severity: 'warning', path: 'agents.bot.credentials[0].max_scope[1]', message: /^no route of api has a scope matching "items:write" \(a typo\?\)$/ },
        { severity: 'warning', path: 'agents.bot.credentials[0].max_scope[3]', message: /^no route of api has a scope matching "orders:\*"/ },
      ],
    },
    {
      rule: 'require_approval: true is accepted with an admin API to approve through',
      input: { admin: { tokens: [HASH_B] }, services: { api: service() }, agents: { bot: agent([HASH_A], [g('api', ['items:read'], { require_approval: true })]) } },
      expected: [],
    },
    {
      rule: 'require_approval without an admin API: nobody can approve',
      input: {
        services: { api: service({ routes: [{ method: 'GET', path: '/v1/items', scope: 'items:read' }, { method: 'POST', path: '/v1/items', scope: 'items:read', require_approval: true }] }) },
        agents: { bot: agent([HASH_A], [g('api', ['items:read'], { require_approval: true, approval_timeout: 90 })]) },
      },
      expected: [
        { severity: 'warning', path: 'services.api.routes[1].require_approval', message: /^nobody can approve: approvals are decided through the admin API .* so a call to this route waits its grant's approval_timeout and is refused; add an admin block/, strict: true },
        { severity: 'warning', path: 'agents.bot.credentials[0].require_approval', message: /^nobody can approve: .* so a call under this grant waits approval_timeout \(90 s\) and is refused; add an admin block .*fails check --strict/, strict: true },
      ],
    },
    {
      rule: 'one service credential granted to two agents',
      input: { services: { api: service() }, agents: { one: agent([HASH_A], [g('api', ['items:read'])]), two: agent([HASH_B], [g('api', ['items:read'])]) } },
      expected: [{ severity: 'warning', path: 'services.api.credential', message: /^the credential env:API_KEY is shared by agents one, two; .*fails check --strict/, strict: true }],
    },
    {
      rule: 'two agents on one service, one with its own credential',
      input: { services: { api: service() }, agents: { one: agent([HASH_A], [g('api', ['items:read'])]), two: agent([HASH_B], [g('api', ['items:read'], { credential: { secret: 'file:two-key' } })]) } },
      expected: [],
    },
    {
      rule: 'a grant for a service whose own entry is malformed is not reported again',
      input: { services: { api: service({ upstream: 'ftp://x.example.com' }) }, agents: { bot: agent([HASH_A], [g('api', ['items:read'])]) } },
      expected: [{ severity: 'error', path: 'services.api.upstream', message: /scheme ftp: is not supported/ }],
    },
    {
      rule: 'cross-field problems of well-formed parts are listed next to schema problems',
      input: { servces: {}, services: { bad: service({ upstream: 'ftp://x' }), one: service({ prefix: '/p' }), two: service({ prefix: '/p' }) } },
      expected: [
        // Without a file there are no line numbers to order by: schema problems come in the schema's order.
        { severity: 'error', path: 'services.bad.upstream', message: /scheme ftp:/ },
        { severity: 'error', path: 'servces', message: /did you mean "services"/ },
        { severity: 'error', path: 'services.two.prefix', message: /overlaps \/p of service one/ },
      ],
    },
    {
      // Found by the ops walkthrough: one malformed grant left its whole agent out of the cross-field
      // checks, hiding a grant to an unknown service and a scope typo beside it.
      rule: 'a malformed grant is left out alone: the agent\'s other grants are still checked, at their places in the file',
      input: {
        services: { api: service(), stripe: service() },
        agents: { bot: agent([HASH_A], [g('api', ['items:read'], { max_ttl: -1 }), g('stirpe', ['items:read']), g('api', ['items:raed'])]) },
      },
      expected: [
        { severity: 'error', path: 'agents.bot.credentials[0].max_ttl', message: /^a duration above 0$/ },
        { severity: 'error', path: 'agents.bot.credentials[1].service', message: /^no service named "stirpe"; did you mean "stripe"\?; services are: api, stripe$/ },
        { severity: 'warning', path: 'agents.bot.credentials[2].max_scope[0]', message: /no route of api has a scope matching "items:raed" \(a typo\?\)/ },
      ],
    },
    {
      rule: "a method node's HTTP parser refuses is an error, with the one it is near (PURGE, which it accepts, is not)",
      input: { services: { api: service({ routes: [{ method: 'GETT', path: '/v1/items', scope: 'items:read' }, { method: ['POST', 'PROPFIND', 'PURGE', 'CHECKIN'], path: '/v1/x', scope: 'items:read' }] }) } },
      expected: [
        { severity: 'error', path: 'services.api.routes[0].method', message: /^GETT is a method node's HTTP parser does not accept: a request with it is refused \(400\) before any route is looked at, so this route would never match; did you mean GET\?/ },
        { severity: 'error', path: 'services.api.routes[1].method[3]', message: /^CHECKIN is a method node's HTTP parser does not accept/ },
      ],
    },
  ];

  it.each(rows)('$rule', ({ input, expected }) => {
    expectProblems(build(input), expected);
  });

  // Found by the ops walkthrough: a token pasted where its hash goes was refused like any typo, with no
  // word that the token is now exposed in the file.
  it('a token pasted where its hash goes is refused, told to make a new pair, and not repeated', () => {
    const pasted = generateAgentToken().token;
    const adminPasted = generateAgentToken().token;
    const loaded = build({ admin: { listen: '127.0.0.1:0', tokens: [{ name: 'ops', hash: adminPasted }] }, agents: { bot: agent([pasted, `Bearer ${pasted}`, `sha256:${pasted}`]) }, services: {} });
    expect(loaded.config).toBeNull();
    const problems = shown(loaded);
    expect(problems.map((p) => p.path).sort()).toEqual(['admin.tokens[0].hash', 'agents.bot.tokens[0]', 'agents.bot.tokens[1]', 'agents.bot.tokens[2]']);
    for (const problem of problems) {
      expect(problem.message).toMatch(/^this is a token, not its hash: written in the config, it is exposed .* Run `npx airlock token` for a new pair/);
    }
    assertNoLeak([pasted, adminPasted], [{ name: 'problems', text: JSON.stringify(loaded.problems) }]);
    // Anything else is a malformed hash, as before.
    expect(shown(build({ agents: { bot: agent(['sha256:abc']) } }))[0]?.message).toMatch(/^expected "sha256:" and 64 lowercase hex digits/);
  });

  const twoGrants = { services: { api: service() }, agents: { bot: agent([HASH_A], [g('api', ['items:read']), g('api', ['items:read'])]) } };

  it('two grants for one service', () => {
    const loaded = build(twoGrants);
    expect(loaded.config).toBeNull();
    expect(shown(loaded)).toContainEqual({ severity: 'error', path: 'agents.bot.credentials[1].service', message: 'agent bot already has a grant for api; merge the two entries' });
  });

  // Two grants for one service are one problem, not also a shared-credential warning.
  it('two grants for one service are one problem, not also a shared-credential warning', () => {
    expectProblems(build(twoGrants), [{ severity: 'error', path: 'agents.bot.credentials[1].service', message: /^agent bot already has a grant for api; merge the two entries$/ }]);
  });

  // A wildcard listener clashes with a specific one on the same port.
  it('a wildcard listener and a specific one on the same port clash', () => {
    expectProblems(build({ services: { one: service({ listen: '0.0.0.0:7711' }), two: service({ listen: '127.0.0.1:7711' }) } }), [
      { severity: 'warning', path: 'services.one.listen', message: /^service one listens on 0\.0\.0\.0:7711, beyond this machine, over plain HTTP/ },
      { severity: 'error', path: 'services.two.listen', message: /clashes with 0.0.0.0:7711 of service one/ },
    ]);
  });

  // Airlock's listeners speak plain HTTP: one beyond loopback carries tokens readable on the network
  // path. A warning, not an error, and not strict: TLS in front is a setup the config cannot show.
  it.each([
    ['listen', { listen: '0.0.0.0:7700' }, 'the agent listener (listen) listens on 0.0.0.0:7700', 'agent tokens and request bodies'],
    ['listen', { listen: '[::]:7700' }, 'the agent listener (listen) listens on [::]:7700', 'agent tokens and request bodies'],
    ['listen', { listen: '10.1.2.3:0' }, 'the agent listener (listen) listens on 10.1.2.3:0', 'agent tokens and request bodies'],
    ['services.api.listen', { services: { api: service({ listen: '192.168.1.5:7711' }) } }, 'service api listens on 192.168.1.5:7711', 'agent tokens and request bodies'],
    ['admin.listen', { admin: { listen: '0.0.0.0:7701', tokens: [HASH_B] } }, 'the admin API (admin.listen) listens on 0.0.0.0:7701', 'admin tokens and approval decisions'],
  ])('warns of a plain-HTTP listener beyond loopback: %s %j', (path, input, said, carries) => {
    const base = { services: { api: service() }, agents: { bot: agent([HASH_A], [{ service: 'api', max_scope: ['items:read'] }]) } };
    const loaded = build({ ...base, ...input });
    const escape = (text: string): string => text.replace(/[.*+?^${}()|[\]\\]/g, '\\$&');
    expectProblems(loaded, [{ severity: 'warning', path, message: new RegExp(`^${escape(said)}, beyond this machine, over plain HTTP: ${escape(carries)} cross the network unencrypted; keep it on loopback, or serve TLS \\(${path === 'admin.listen' ? 'admin.tls' : 'the tls setting'}, or a TLS-terminating proxy`) }]);
  });

  it.each([['127.0.0.1:7700'], ['127.9.9.9:0'], ['[::1]:7700'], ['[0:0:0:0:0:0:0:1]:7700'], ['[::ffff:127.0.0.1]:7700'], ['localhost:7700'], ['airlock.localhost:7700']])('does not warn of a loopback listener: %s', (listen) => {
    const loaded = build({ listen, services: { api: service() }, agents: { bot: agent([HASH_A], [{ service: 'api', max_scope: ['items:read'] }]) } });
    expect(loaded.problems).toEqual([]);
  });
});

describe('parseConfigText', () => {
  const file = '/etc/airlock/airlock.yaml';

  it('loads YAML, records the source and resolves paths against the file directory', () => {
    const loaded = parseConfigText('data_dir: state\nservices:\n  api:\n    upstream: https://api.example.com\n    credential: {secret: env:K}\n    routes: []\n', file);
    expect(loaded.config?.source).toBe(file);
    expect(loaded.config?.data_dir).toBe('/etc/airlock/state');
    expectProblems(loaded, [{ severity: 'warning', path: 'services.api.routes', message: /has no routes/ }]);
    expect(loaded.problems[0]).toMatchObject({ line: 6, column: 5 });
  });

  it('a file of two YAML documents is one problem that says what to change, at the second document', () => {
    const loaded = parseConfigText('listen: 127.0.0.1:7700\n---\nservices: {}\n', file);
    expect(loaded.config).toBeNull();
    expect(loaded.problems).toEqual([
      { severity: 'error', path: [], line: 2, column: 1, message: 'YAML: the file holds more than one document (a "---" line after the first content); Airlock reads one: remove the "---" and merge the parts into one mapping' },
    ]);
  });

  it('an empty file is the default config', () => {
    const loaded = parseConfigText('', file);
    expect(loaded.problems).toEqual([]);
    expect(loaded.config?.listen).toBe('127.0.0.1:7700');
  });

  it('schema and cross-field problems carry the line and column of the key, in file order', () => {
    const text = [
      'listen: 127.0.0.1:7700', // 1
      'services:', // 2
      '  api:', // 3
      '    upstream: https://api.example.com', // 4
      '    credential: {secret: env:K, inject: {header: x-k, value: "${secrte}"}}', // 5
      '    routes:', // 6
      '      - {method: GET, path: /v1/x, scope: x:read}', // 7
      '      - method: TRACE', // 8
      '        path: /v1/y', // 9
      '        scope: y:read', // 10
      '  other:', // 11
      '    upstream: https://other.example.com', // 12
      '    prefix: /api', // 13
      '    credential: {secret: env:K}', // 14
      '    routes: []', // 15
      '    timeout: {connect: 1}', // 16
      'agents:', // 17
      '  bot:', // 18
      '    tokens: ["sha256:nothex"]', // 19
      '',
    ].join('\n');
    const loaded = parseConfigText(text, file);
    expect(loaded.config).toBeNull();
    const placed = loaded.problems.map((p) => ({ path: formatPath(p.path), line: p.line, column: p.column }));
    expect(placed).toEqual([
      { path: 'services.api.credential.inject.value', line: 5, column: (text.split('\n')[4] as string).indexOf('value:') + 1 },
      { path: 'services.api.routes[1].method', line: 8, column: 9 },
      { path: 'services.other.timeout', line: 16, column: 5 },
      { path: 'agents.bot.tokens[0]', line: 19, column: 14 },
    ]);
  });

  it('a cross-field problem is placed on its key', () => {
    const text = 'services:\n  api:\n    upstream: https://a.example.com\n    credential: {secret: env:K}\n    routes: [{method: GET, path: /x, scope: s}]\n  two:\n    upstream: https://b.example.com\n    prefix: /api\n    credential: {secret: env:K}\n    routes: [{method: GET, path: /x, scope: s}]\n';
    const loaded = parseConfigText(text, file);
    expect(loaded.problems).toEqual([{ severity: 'error', path: ['services', 'two', 'prefix'], message: expect.stringContaining('overlaps /api of service api'), line: 8, column: 5 }]);
  });

  it.each([
    ['an unclosed flow map', 'services:\n  a: {upstream: https://x.example.com\n', /Flow map/],
    ['a duplicate key', 'listen: 127.0.0.1:1\nlisten: 127.0.0.1:2\n', /^YAML: the key "listen" is given twice in the same mapping/],
    ['a duplicate key, nested and quoted', 'services:\n  api:\n    upstream: https://a.example.com\n    "upstream": https://b.example.com\n', /^YAML: the key "upstream" is given twice/],
    ['a duplicate key in a flow map', 'services:\n  a: {upstream: x, upstream: y}\n', /^YAML: the key "upstream" is given twice/],
    // A key that may be a pasted credential is not repeated (the rule secret references follow).
    ['a duplicate key shaped like a key', 'agents:\n  sk-live-4eC39HqLyjWDarjtT1zdp7dc: {}\n  sk-live-4eC39HqLyjWDarjtT1zdp7dc: {}\n', /^YAML: a key \(not repeated here: it looks like a credential\) is given twice/],
    ['an unterminated string', 'listen: "127.0.0.1:1\n', /Missing closing/],
    // Found only when the document is converted (the library throws there): a problem, not a crash.
    ['an alias with no anchor', 'listen: 127.0.0.1:1\nservices: *typo\n', /^YAML: Unresolved alias/],
    ['an alias bomb', `a: &a [x, x, x, x, x, x, x, x, x, x]\nb: &b [${'*a, '.repeat(9)}*a]\nc: [${'*b, '.repeat(9)}*b]\n`, /^YAML: Excessive alias count/],
  ])('a YAML syntax error (%s) is an error and nothing is loaded', (_name, text, message) => {
    const loaded = parseConfigText(text, file);
    expect(loaded.config).toBeNull();
    expect(loaded.problems.length).toBeGreaterThan(0);
    expect(loaded.problems[0]?.severity).toBe('error');
    expect(loaded.problems[0]?.message).toMatch(message);
  });

  // YAML syntax errors have a line and column.
  it.each([
    ['an unclosed flow map', 'services:\n  a: {upstream: https://x.example.com\n'],
    ['a duplicate key', 'listen: 127.0.0.1:1\nlisten: 127.0.0.1:2\n'],
  ])('a YAML syntax error (%s) has a line and column', (_name, text) => {
    const loaded = parseConfigText(text, file);
    expect(loaded.problems[0]?.line).toEqual(expect.any(Number));
    expect(loaded.problems[0]?.column).toEqual(expect.any(Number));
  });
});

describe('workers: N | auto', () => {
  it('auto is one worker per CPU the process may use; a number is itself', () => {
    expect(workerCount('auto')).toBe(availableParallelism());
    expect(workerCount(3)).toBe(3);
  });
});

describe('admin.listen', () => {
  it('defaults to loopback 127.0.0.1:7701 when an admin block is given without listen', () => {
    const loaded = build({ admin: { tokens: [HASH_A] } });
    expect(loaded.problems).toEqual([]);
    expect(loaded.config?.admin).toEqual({ listen: '127.0.0.1:7701', tokens: [HASH_A], hosts: [] });
    // The default is its own port: no clash with the default agent listener.
    expect(loaded.config?.listen).toBe('127.0.0.1:7700');
    expect(build({ admin: { tokens: [{ name: 'oncall', hash: HASH_B }] } }).config?.admin?.listen).toBe('127.0.0.1:7701');
  });

  it('an explicit listen is kept', () => {
    expect(build({ admin: { listen: '10.0.0.5:9000', tokens: [HASH_A] } }).config?.admin?.listen).toBe('10.0.0.5:9000');
  });

  it('no admin block means no admin listener', () => {
    expect(build({}).config?.admin ?? null).toBeNull();
  });

  it('tokens are required even when listen is left to its default', () => {
    expectProblems(build({ admin: {} }), [{ severity: 'error', path: 'admin.tokens', message: /^required/ }]);
    expectProblems(build({ admin: { tokens: [] } }), [{ severity: 'error', path: 'admin.tokens', message: /^the admin API needs at least one token hash/ }]);
  });
});

// Found by a fresh-user walkthrough: `connect: 10s` said only "expected number, received string"; then
// by the ops walkthrough: `rate.per: 1m` was taken where `max_ttl: 1h` was refused. Every duration takes
// a unit now.
describe('durations written with a unit', () => {
  it('are read as seconds at every path', () => {
    const loaded = build({
      services: { api: service({ timeouts: { connect: '10s', headers: '10m' }, credential: { secret: 'env:API_KEY', ttl: '1.5m', max_staleness: '1d' } }) },
      agents: { bot: agent([HASH_A], [{ service: 'api', max_scope: ['*'], max_ttl: '1h', require_approval: true, approval_timeout: '5m', rate: { requests: 10, per: '500ms' } }]) },
      admin: { tokens: [HASH_B] },
      anomalies: { denial_burst: { window: '2m' } },
      limits: { headers_timeout: ' 30s ', keep_alive_timeout: '1.1h' },
      shutdown_timeout: '45s',
    });
    expect(shown(loaded)).toEqual([]);
    const config = loaded.config;
    expect(config?.services['api']?.timeouts).toMatchObject({ connect: 10, headers: 600 });
    expect(config?.services['api']?.credential).toMatchObject({ ttl: 90, max_staleness: 86_400 });
    expect(config?.agents['bot']?.credentials[0]).toMatchObject({ max_ttl: 3600, approval_timeout: 300, rate: { per: 0.5 } });
    expect(config?.anomalies.denial_burst.window).toBe(120);
    expect(config?.limits.headers_timeout).toBe(30);
    // Not 3960.0000000000005 (floating point), which a whole-seconds field would refuse.
    expect(config?.limits.keep_alive_timeout).toBe(3960);
    expect(config?.shutdown_timeout).toBe(45);
  });

  it('says a route method is required, a session lives at most 366 days, and a timer waits at least 1 ms', () => {
    expectProblems(
      build({
        services: { api: service({ routes: [{ path: '/v1/*', scope: 'items:read' }], timeouts: { connect: 0 } }) },
        agents: { bot: agent([HASH_A], [{ service: 'api', max_scope: ['*'], max_ttl: '400d' }]) },
      }),
      [
        { severity: 'error', path: 'services.api.timeouts.connect', message: /^a duration of at least 1 ms/ },
        { severity: 'error', path: 'services.api.routes[0].method', message: /^method is required: GET, POST, or a list such as \[GET, HEAD\]$/ },
        { severity: 'error', path: 'agents.bot.credentials[0].max_ttl', message: /^max_ttl is at most 366d/ },
      ],
    );
  });

  it('refuses a duration it cannot read, and one a field takes whole that is not, saying what to write', () => {
    expectProblems(
      build({
        services: { api: service({ timeouts: { connect: '10 sec' } }) },
        agents: { bot: agent([HASH_A], [{ service: 'api', max_scope: ['*'], max_ttl: '1500ms', require_approval: true, approval_timeout: 'soon' }]) },
        admin: { tokens: [HASH_B] },
      }),
      [
        { severity: 'error', path: 'services.api.timeouts.connect', message: /^expected a duration: seconds as a number \(3600\), or with a unit \(500ms, 30s, 5m, 1h, 1d\)$/ },
        { severity: 'error', path: 'agents.bot.credentials[0].max_ttl', message: /^max_ttl is a whole number of seconds \(such as 90, 90s, 15m or 1h\)$/ },
        { severity: 'error', path: 'agents.bot.credentials[0].approval_timeout', message: /^expected a duration: seconds as a number/ },
      ],
    );
  });

  it('a missing required duration still says "required"', () => {
    const loaded = build({ services: { api: service() }, agents: { bot: agent([HASH_A], [{ service: 'api', max_scope: ['*'], rate: { per: 1 } }]) } });
    expect(shown(loaded).map((p) => [p.path, p.message])).toContainEqual(['agents.bot.credentials[0].rate.requests', 'required: expected number']);
  });
});

describe('durations Airlock waits for with a timer', () => {
  // node fires a timer longer than 2^31 - 1 ms after 1 ms: such a timeout would not wait at all.
  const longest = Math.floor((2 ** 31 - 1) / 1000);
  const tooLong = longest + 1;
  const TOO_LONG = /at most 2147483 seconds \(about 24\.8 days\), the longest node can wait/;

  it('are refused past node’s longest timer, each with its path, and accepted up to it', () => {
    const input = (value: number): Obj => ({
      shutdown_timeout: value,
      limits: { request_timeout: value },
      services: { api: service({ timeouts: { headers: value } }) },
      agents: { bot: agent([HASH_A], [{ service: 'api', max_scope: ['*'], require_approval: true, approval_timeout: value }]) },
    });
    expectProblems(build(input(tooLong)), [
      { severity: 'error', path: 'limits.request_timeout', message: TOO_LONG },
      { severity: 'error', path: 'shutdown_timeout', message: TOO_LONG },
      { severity: 'error', path: 'services.api.timeouts.headers', message: TOO_LONG },
      { severity: 'error', path: 'agents.bot.credentials[0].approval_timeout', message: TOO_LONG },
    ]);
    const accepted = build(input(longest));
    expect(accepted.problems.filter((p) => p.severity === 'error')).toEqual([]);
    expect(accepted.config?.shutdown_timeout).toBe(longest);
  });
});

// Found by probing the CLI: a key pasted where a secret name or an upstream goes was printed back in the
// problem, to the terminal and CI logs.
describe('a value pasted in the wrong place is not repeated in its problem', () => {
  const pasted = 'sk-live-PASTEDKEY0123456789abcdef';
  it.each([
    ['env', `env:${pasted}$`],
    ['file', `file:${pasted}/x`],
    ['vault', `vault:${pasted}`],
    ['vault-lease', `vault-lease:${pasted}`],
    ['oauth2', `oauth2:${pasted}!`],
  ])('a %s: reference', (_kind, secret) => {
    const built = build({ services: { api: service({ credential: { secret } }) } });
    const problems = built.problems.filter((p) => p.path.join('.') === 'services.api.credential.secret');
    expect(problems.length, JSON.stringify(built.problems)).toBeGreaterThan(0);
    expect(JSON.stringify(built.problems)).not.toContain('PASTEDKEY');
  });

  // Found by review: every other problem that quotes what was written printed a pasted key whole.
  it.each([
    ['an unknown key named by it', (): LoadedConfig => build({ services: { api: service({ credential: { secret: 'env:K', [pasted]: true } }) } })],
    ['an upstream that is it', (): LoadedConfig => build({ services: { api: service({ upstream: pasted }) } })],
    ['a grant naming it as its service', (): LoadedConfig => build({ services: { api: service() }, agents: { bot: agent([generateAgentToken().hash], [{ service: pasted, max_scope: ['items:read'] }]) } })],
    ['a YAML alias named by it', (): LoadedConfig => parseConfigText(`services: *${pasted}\n`, join(baseDir, 'airlock.yaml'))],
    ['an Airlock token as a key', (): LoadedConfig => build({ services: { api: service({ [generateAgentToken().token]: 1 }) } })],
  ])('%s: the problem says so, the value masked', (_what, load) => {
    const loaded = load();
    expect(loaded.problems.length).toBeGreaterThan(0);
    const text = JSON.stringify(loaded.problems);
    expect(text).not.toContain('PASTEDKEY');
    expect(text).not.toMatch(/al[ks]_[A-Za-z0-9_-]{43}/);
    expect(text).toContain('[a value that looks like a key]');
  });

  // Found by review: masking the path before the problem is placed puts it on its parent's line.
  it('a masked problem still points at the line and column of what it is about', () => {
    const text = `services:\n  api:\n    upstream: https://api.example.com\n    credential:\n      secret: env:K\n      inject: bearer\n      ${pasted}: true\n    routes: []\n`;
    const loaded = parseConfigText(text, join(baseDir, 'airlock.yaml'));
    const problem = loaded.problems.find((p) => p.message.includes('[a value that looks like a key]'));
    expect(problem, JSON.stringify(loaded.problems)).toMatchObject({ line: 7, column: 7 });
    expect(JSON.stringify(loaded.problems)).not.toContain('PASTEDKEY');
  });

  it('an upstream with user:password that does not parse', () => {
    const built = build({ services: { api: service({ upstream: `https://user:${pasted}@exa mple.com` }) } });
    expect(built.problems.some((p) => /is not a URL/.test(p.message))).toBe(true);
    expect(JSON.stringify(built.problems)).not.toContain('PASTEDKEY');
  });
});

// Found by probing the CLI: `workers: "two"` was "error at workers: Invalid input".
describe('a value no branch of a union takes', () => {
  it('says what the union takes', () => {
    expectProblems(build({ workers: 'two' }), [{ severity: 'error', path: 'workers', message: /^expected number or "auto"$/ }]);
  });
});
