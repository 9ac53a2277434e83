/**
 * The configuration contract (DESIGN.md section 5), one line of description per field.
 *
 * Objects are strict: an unknown key is an error, so a typo never silently turns a control off.
 * This file only checks shapes; cross-field rules (unique prefixes, grants naming real services, ...)
 * live in validate-config.ts so that every problem is reported in one pass.
 */
import { createPublicKey } from 'node:crypto';
import { isIP } from 'node:net';
import { z } from 'zod';
import { parseSecretRef } from '../credentials/secret-ref.js';
import { AGENT_TOKEN_PATTERN, SESSION_TOKEN_PATTERN } from '../identity/agent-token.js';
import { DEFAULT_JWT_TYP, JWT_TYP_PATTERN } from '../identity/jwt-typ.js';
import { injectorProblems } from '../injection/build-injector.js';
import { parseRouteTemplate } from '../policy/route-template.js';
import { BUILTIN_RULE_NAMES } from '../redaction/key-patterns.js';
import { scopePatternProblem } from '../policy/scope-grant.js';
import { parseUpstream } from '../upstream/upstream-target.js';

/** Methods Airlock never forwards: TRACE/TRACK reflect requests (cross-site tracing), CONNECT tunnels. */
export const NEVER_FORWARDED_METHODS: ReadonlySet<string> = new Set(['TRACE', 'TRACK', 'CONNECT']);

export const RESERVED_PREFIX = '/_airlock';

/**
 * Durations are seconds (DESIGN.md, the contract), written as a number (3600) or with a unit ("30s",
 * "5m", "1h", "1d"; "ms" too). Found by the ops walkthroughs: a string said only "expected number,
 * received string", and then `rate.per: 1m` was taken where `max_ttl: 1h` was refused.
 */
const DURATION_TEXT = /^(\d+(?:\.\d+)?)(ms|s|m|h|d)$/;
const UNIT_SECONDS: Readonly<Record<string, number>> = { ms: 0.001, s: 1, m: 60, h: 3600, d: 86_400 };

/** A duration written with a unit, as seconds; anything else as given, for the number schema to judge. */
function secondsFromUnit(value: unknown): unknown {
  if (typeof value !== 'string') return value;
  const match = DURATION_TEXT.exec(value.trim());
  // To the microsecond: 1.1 * 3600 is 3960.0000000000005 in floating point, which a whole-seconds field refuses.
  return match === null ? value : Math.round(Number(match[1]) * (UNIT_SECONDS[match[2] as string] as number) * 1e6) / 1e6;
}

/** `schema` (a number of seconds) that also takes the duration written with a unit. */
function withUnits<T extends z.ZodType>(schema: T): z.ZodPreprocess<T, unknown> {
  return z.preprocess(secondsFromUnit, schema);
}

const SECONDS_WITHOUT_UNIT = {
  error: (issue: { input?: unknown }) =>
    typeof issue.input === 'string' ? 'expected a duration: seconds as a number (3600), or with a unit (500ms, 30s, 5m, 1h, 1d)' : issue.input === undefined ? 'a duration is required here' : undefined,
};
const ABOVE_ZERO = 'a duration above 0';
const secondsNumber = z.number(SECONDS_WITHOUT_UNIT).positive(ABOVE_ZERO);
/**
 * Durations Airlock counts in whole seconds (a session's life, an approval's): zod's "expected int,
 * received number" said neither that nor what to write (found by a README walkthrough: `max_ttl: 500ms`).
 */
const wholeSeconds = (field: string): z.ZodNumber => z.number(SECONDS_WITHOUT_UNIT).int(`${field} is a whole number of seconds (such as 90, 90s, 15m or 1h)`).positive(ABOVE_ZERO);
/** A year: a task session is short-lived, and a longer one would end past what a Date can hold (found by review: 100000000000d was taken). */
const LONGEST_SESSION_SECONDS = 366 * 86_400;
const seconds = withUnits(secondsNumber).describe('a duration: seconds, or with a unit (30s, 5m, 1h, 1d)');
/** node's longest timer (a signed 32-bit count of ms): a longer delay fires after 1 ms instead. */
export const LONGEST_TIMER_MS = 2 ** 31 - 1;
/** So a configured timeout longer than this would not wait at all: the config refuses it. */
const LONGEST_TIMER_SECONDS = Math.floor(LONGEST_TIMER_MS / 1000);
const TIMER_BOUND = { error: `at most ${LONGEST_TIMER_SECONDS} seconds (about 24.8 days), the longest node can wait` } as const;
/** A duration Airlock waits for with a timer. */
const timerSeconds = withUnits(
  // At least 1 ms: node's timers and its http server's deadlines are whole milliseconds, and a deadline
  // rounded down to 0 is none at all (review: '0.0004s' passed, and crashed serve).
  z.number(SECONDS_WITHOUT_UNIT).min(0.001, 'a duration of at least 1 ms (0.001 s): node waits in whole milliseconds').max(LONGEST_TIMER_SECONDS, TIMER_BOUND),
);
/** Anomaly windows are counted per second in rings sized to the window: whole seconds, at most an hour. */
const anomalyWindow = withUnits(
  z
    .number(SECONDS_WITHOUT_UNIT)
    .int('an anomaly window is a whole number of seconds')
    .min(1)
    .max(3600, 'an anomaly window is at most 3600 s (one hour); the baseline itself spans an hour'),
);

/**
 * An http(s) URL that node's URL parser reads, as every user of these fields (fetch, undici, the OTLP
 * exporter, jose) parses it. The prefix alone let `http://`, a host with a space, an unclosed `[` or a
 * port past 65535 pass check, and serve (or a reload) then failed with a bare "Invalid URL", no path
 * (found by review). The value is not repeated: a URL may hold a password.
 */
function httpUrl(error: string): z.ZodString {
  return z.string().refine(
    (text) => {
      if (!/^https?:\/\//.test(text)) return false;
      try {
        new URL(text);
        return true;
      } catch {
        return false;
      }
    },
    // Alone: a field that adds a rule of its own (the Vault origin) says one thing of a URL that does not parse.
    { error, abort: true },
  );
}

/** HOST:PORT, host an IP literal (IPv6 in brackets) or a name. */
export function parseListen(text: string): { host: string; port: number } | null {
  const match = /^(?:\[([0-9a-fA-F:.]+)\]|([A-Za-z0-9.-]+)):(\d{1,5})$/.exec(text);
  if (!match) return null;
  const port = Number(match[3]);
  if (port > 65535) return null;
  return { host: (match[1] ?? match[2]) as string, port };
}

const listenAddress = z
  .string()
  .refine((text) => parseListen(text) !== null, { error: 'expected HOST:PORT with a port from 0 to 65535, e.g. 127.0.0.1:7700 or [::1]:7700' })
  .describe('HOST:PORT to listen on; port 0 picks a free port');

const secretRef = z
  .string()
  .superRefine((text, ctx) => {
    const parsed = parseSecretRef(text);
    if (!parsed.ok) ctx.addIssue({ code: 'custom', message: parsed.problem });
  })
  .describe('where the secret lives: env:NAME | file:NAME');

const scopeName = z
  .string()
  .regex(/^[A-Za-z0-9_.:*-]+$/, { error: 'a scope is letters, digits and _ . : - (and * in grants), e.g. chat:write' });

const headerName = z
  .string()
  .regex(/^[!#$%&'*+.^_`|~0-9A-Za-z-]+$/, { error: 'not a valid HTTP header name (RFC 9110 5.1)' });

const injectSpec = z
  .union([
    z.literal('bearer').describe('Authorization: Bearer <secret>'),
    z.strictObject({
      header: headerName.describe('header to set'),
      value: z.string().describe('template; ${secret} is replaced by the secret').default('${secret}'),
    }),
    z.strictObject({
      basic: z.strictObject({
        username: z.string().describe('template for the user name; may use ${secret}'),
        password: z.string().describe('template for the password; may use ${secret}').default(''),
      }),
    }),
    z.strictObject({ query: z.string().min(1).describe('query parameter that carries the secret') }),
  ], { error: 'inject must be "bearer", {header: NAME, value: "Token ${secret}"}, {basic: {username, password}} or {query: NAME}' })
  .describe('how the secret is put on the upstream request');

const credentialSpec = z
  .strictObject({
    secret: secretRef,
    inject: injectSpec.default('bearer'),
    ttl: seconds.optional().describe('how long a fetched value is used before it is fetched again; default secrets.cache.ttl (file: 1, env: forever)'),
    max_staleness: seconds.optional().describe('how long the last good value is served while its source fails; past it, 503; default secrets.cache.max_staleness'),
    retry_on: z
      .array(z.number().int().min(400).max(599))
      .default([])
      .describe('upstream statuses (e.g. [401]) after which the credential is fetched again and, if it changed, the request replayed once'),
  })
  .superRefine((spec, ctx) => {
    for (const problem of injectorProblems(spec.inject)) ctx.addIssue({ code: 'custom', path: ['inject', ...problem.path], message: problem.message });
  })
  .describe('the credential injected into upstream requests');

const methodName = z.string().regex(/^[A-Za-z]+$/, { error: 'an HTTP method such as GET or POST' });

const routeSpec = z
  .strictObject({
    method: z
      .union([methodName, z.array(methodName).min(1)], {
        error: (issue) => (issue.input === undefined ? 'method is required: GET, POST, or a list such as [GET, HEAD]' : 'an HTTP method such as GET, or a list of them'),
      })
      .describe('method or list of methods; "*" is not allowed, list them'),
    path: z.string().min(1).describe('path template: literal segments, :name for one segment, a trailing * for the rest'),
    scope: scopeName.describe('scope an agent must hold to call this route'),
    require_approval: z.boolean().default(false).describe('a human approves every call to this route, whatever the grant says'),
  })
  .superRefine((route, ctx) => {
    const methods = Array.isArray(route.method) ? route.method : [route.method];
    for (const method of methods) {
      if (NEVER_FORWARDED_METHODS.has(method.toUpperCase())) ctx.addIssue({ code: 'custom', path: ['method'], message: `${method.toUpperCase()} is never forwarded by Airlock; remove it` });
    }
    const template = parseRouteTemplate(route.path);
    if (!template.ok) ctx.addIssue({ code: 'custom', path: ['path'], message: template.problem });
  });

/** A DNS name as a Host header carries it, without scheme or port. */
const hostName = z.string().regex(/^[A-Za-z0-9]([A-Za-z0-9-]*[A-Za-z0-9])?(\.[A-Za-z0-9]([A-Za-z0-9-]*[A-Za-z0-9])?)*$/, { error: 'a host name, without scheme or port' });

const timeoutsSpec = z.strictObject({
  connect: timerSeconds.default(10).describe('TCP+TLS connect timeout'),
  headers: timerSeconds.default(60).describe('time to the upstream response headers'),
  body: timerSeconds.default(300).describe('longest silence between two body chunks (keep above your SSE keep-alive interval)'),
  queue: timerSeconds.default(30).describe('longest wait for a free connection while all max_connections are busy; then 503 upstream_busy, the request never sent'),
});

const BUILTIN_PATTERN_NAMES = BUILTIN_RULE_NAMES;

const redactRule = z
  .strictObject({
    name: z.string().regex(/^[a-z0-9_-]+$/, { error: 'a rule name is lowercase letters, digits, _ and -' }).describe('name, for messages'),
    prefix: z.string().min(2).describe('literal prefix the key starts with, e.g. "itk_"'),
    charset: z
      .string()
      .regex(/^(?:[!-~]-[!-~]|[!-~])+$/, { error: 'a character set like A-Za-z0-9_- (ranges and single printable ASCII characters)' })
      .describe('characters of the part after the prefix, as ranges: A-Za-z0-9_-'),
    min_length: z.number().int().positive().describe('shortest part after the prefix that counts as a key'),
    max_length: z.number().int().positive().max(4096).describe('longest part after the prefix that is masked'),
  })
  .refine((rule) => rule.min_length <= rule.max_length, { error: 'min_length must not exceed max_length', path: ['min_length'] });

const redactSpec = z.strictObject({
  scope: z.enum(['request', 'service', 'all']).default('service').describe("whose secrets are removed from this service's responses"),
  builtin_patterns: z
    .strictObject(Object.fromEntries(BUILTIN_PATTERN_NAMES.map((name) => [name, z.boolean().default(true)])) as Record<(typeof BUILTIN_PATTERN_NAMES)[number], z.ZodDefault<z.ZodBoolean>>)
    .default(Object.fromEntries(BUILTIN_PATTERN_NAMES.map((name) => [name, true])) as Record<(typeof BUILTIN_PATTERN_NAMES)[number], boolean>)
    .describe('well-known key shapes masked in responses; each on by default'),
  rules: z.array(redactRule).default([]).describe('extra key shapes: prefix + characters + length'),
  max_decoded_bytes: z.number().int().positive().default(128 * 1024 * 1024).describe('largest decoded (gunzip/brotli) response body; more is cut as a bomb'),
  max_ratio: z.number().positive().default(200).describe('largest decoded/encoded size ratio past 1 MiB; more is cut as a bomb'),
});

const serviceSpec = z.strictObject({
  upstream: z
    .string()
    .superRefine((text, ctx) => {
      const parsed = parseUpstream(text);
      if (!parsed.ok) ctx.addIssue({ code: 'custom', message: parsed.problem });
    })
    .describe('upstream origin, optionally with a base path: https://api.openai.com or http://10.0.0.5:8080/api'),
  prefix: z
    .string()
    .regex(/^(\/[A-Za-z0-9._~-]+)+$/, { error: 'a prefix is "/" then segments of letters, digits, . _ ~ -, without a trailing "/"' })
    .refine((prefix) => !prefix.startsWith(RESERVED_PREFIX), { error: `${RESERVED_PREFIX} is reserved for Airlock's own endpoints` })
    .optional()
    .describe('path prefix on the agent listener, removed before forwarding; default /<service name>'),
  listen: listenAddress.optional().describe('a listener for this service alone, no prefix (for SDKs without a base path, e.g. stripe)'),
  hosts: z.array(hostName).default([]).describe('Host header values that select this service, no prefix'),
  allow_private: z.boolean().default(false).describe('allow upstream addresses that are private, loopback, link-local or cloud metadata'),
  ca: z.string().optional().describe('PEM file of extra CA certificates trusted for this upstream, besides the system CAs'),
  max_connections: z.number().int().positive().default(64).describe('upper bound of open connections to the upstream'),
  max_body_bytes: z.number().int().positive().optional().describe('request body limit for this service; default limits.max_body_bytes'),
  method_overrides: z
    .enum(['refuse', 'forward'])
    .default('refuse')
    .describe("refuse: a body naming a method override (`_method` in a form, a multipart field or JSON) gets 400, as Rails, Laravel, Symfony and Express would run it; forward: this upstream honours none (an LLM API, whose JSON may hold `_method` as data), so bodies are not checked for one"),
  strip_headers: z
    .array(headerName)
    .default([])
    .describe('request headers removed before forwarding, besides those Airlock always removes: credentials of another kind an agent may send along (Cookie, X-Auth-Token)'),
  strip_query: z
    .array(
      // A key as a form parser names it: brackets are read off ("key[]" is "key"), and "=", "&", ";", "?", "#"
      // end or split a key, so an entry holding one could never match (found by review: accepted silently).
      // Control characters too: a name is cut at NUL (PHP), so "a\u0000b" would remove every "a".
      z.string().regex(/^[^[\]=&;?#\s\x00-\x1f\x7f]+$/, { error: 'a query key, without [ ] = & ; ? #, spaces or control characters (key[] and key[0] are removed with key)' }),
    )
    .default([])
    .describe('query keys removed before forwarding (key[], key[0] and every spelling a framework reads as the key, such as session.key for session_key in PHP), besides the credential\'s own'),
  timeouts: timeoutsSpec.default({ connect: 10, headers: 60, body: 300, queue: 30 }),
  credential: credentialSpec,
  redact: redactSpec.default({
    scope: 'service',
    builtin_patterns: Object.fromEntries(BUILTIN_PATTERN_NAMES.map((name) => [name, true])) as Record<(typeof BUILTIN_PATTERN_NAMES)[number], boolean>,
    rules: [],
    max_decoded_bytes: 128 * 1024 * 1024,
    max_ratio: 200,
  }),
  routes: z.array(routeSpec).describe('first match wins; a request that matches none is refused (403 route_not_allowed)'),
});

/**
 * A rate's period ("1s", "5m", "1h", or seconds), as rate limits read best. At most 366 days (found by
 * review): a longer one made the time to the next token more seconds than Retry-After can say as
 * delay-seconds (RFC 9110 10.2.3): `per: 1e21` answered `Retry-After: 1e+21`, `per: 1e308` (no refill at
 * all in floating point) `Retry-After: Infinity`.
 */
const durationSpec = withUnits(secondsNumber.max(LONGEST_SESSION_SECONDS, 'a rate period is at most 366d (a yearly quota)')).describe('a duration: seconds, or with a unit (30s, 5m, 1h, 1d)');

const rateSpec = z
  .strictObject({
    requests: z.number().int().positive().describe('requests allowed per `per`, on average'),
    per: durationSpec.default(1).describe('the period, e.g. 1s, 1m'),
    burst: z.number().int().positive().optional().describe('bucket size: requests allowed at once; default `requests`'),
    concurrency: z.number().int().positive().optional().describe('requests in flight at once (per replica)'),
  })
  .describe('a token bucket per agent and service; over it, 429 rate_limited with Retry-After');

const grantSpec = z.strictObject({
  service: z.string().describe('the service this grant applies to'),
  max_scope: z
    .array(
      scopeName.superRefine((pattern, ctx) => {
        const problem = scopePatternProblem(pattern);
        if (problem !== null) ctx.addIssue({ code: 'custom', message: problem });
      }),
    )
    .describe('scopes granted: exact names, "*" for all of the service, "files:*" for a prefix'),
  max_ttl: withUnits(wholeSeconds('max_ttl').max(LONGEST_SESSION_SECONDS, 'max_ttl is at most 366d: task sessions are meant to be short-lived')).default(3600).describe('longest task session this grant may mint (seconds, or 1h)'),
  require_session: z.boolean().default(false).describe('the agent token only mints task sessions; calls need a session token (zero standing privileges)'),
  require_approval: z.boolean().default(false).describe('a human approves each call'),
  approval_mode: z.enum(['hold', 'async']).default('hold').describe('hold: the request waits for the decision; async: 202 with an approval id to retry with'),
  approval_timeout: withUnits(wholeSeconds('approval_timeout').max(LONGEST_TIMER_SECONDS, TIMER_BOUND)).default(300).describe('how long an approval may take (hold) or stays valid (async): seconds, or 5m'),
  rate: rateSpec.optional(),
  credential: credentialSpec.optional().describe('a credential for this agent alone, instead of the service one'),
});

const TOKEN_HASH = /^sha256:[0-9a-f]{64}$/;
const PASTED_TOKEN = new RegExp(`(?:${AGENT_TOKEN_PATTERN.source.replace(/^\^|\$$/g, '')})|(?:${SESSION_TOKEN_PATTERN.source.replace(/^\^|\$$/g, '')})`);

/**
 * A token pasted where its hash belongs is refused, and (found by the ops walkthrough) told that the
 * token is now exposed: whoever reads the config file, its backups or its history has it. Never repeated
 * (sayableProblem masks what looks like a key).
 */
const tokenHash = z.string().superRefine((value, ctx) => {
  if (TOKEN_HASH.test(value)) return;
  // Anywhere in the value: "Bearer alk_..." or "sha256:alk_..." exposes the token as much (found by review).
  const pasted = PASTED_TOKEN.test(value);
  ctx.addIssue({
    code: 'custom',
    message: pasted
      ? 'this is a token, not its hash: written in the config, it is exposed to whoever reads the file, its backups or its history. Run `npx airlock token` for a new pair, give the new token to its holder, put its sha256: line here, and let the pasted one go (it is no longer accepted once removed here)'
      : 'expected "sha256:" and 64 lowercase hex digits; run `npx airlock token` to make one',
  });
});

const jwtAlgorithm = z.enum(['RS256', 'RS384', 'RS512', 'PS256', 'PS384', 'PS512', 'ES256', 'ES384', 'ES512', 'EdDSA']);

/**
 * A key node can read as a public key, checked here so that `airlock check` and a reload refuse it with
 * its path (found by review: a key that did not parse passed check, and a reload failed only after it
 * had built pools and taken Vault leases, with crypto's message and no path). A private key is refused
 * rather than used for its public half: it does not belong in a config file. The value is not repeated.
 */
const publicKeyPem = z
  .string()
  .min(1)
  .refine((pem) => !/PRIVATE KEY/.test(pem), { error: 'a private key: give its public key (openssl pkey -in key.pem -pubout)' })
  .refine(
    (pem) => {
      try {
        createPublicKey(pem);
        return true;
      } catch {
        return false;
      }
    },
    { error: 'not a public key node can read: a PEM block such as -----BEGIN PUBLIC KEY----- (SPKI) or a certificate' },
  );

const jwtSpec = z
  .strictObject({
    issuer: z.string().min(1).describe('required iss claim'),
    audience: z.string().min(1).describe('required aud claim'),
    subject: z.string().min(1).optional().describe('required sub claim'),
    claims: z.record(z.string(), z.string()).default({}).describe('further claims that must equal these strings'),
    jwks_url: httpUrl('an http(s) URL node can parse, e.g. https://issuer.example/.well-known/jwks.json').optional().describe("the issuer's JWKS endpoint: https (plain http only to a loopback address or localhost)"),
    keys: z.array(publicKeyPem).default([]).describe('PEM public keys (SPKI), instead of or besides jwks_url'),
    algorithms: z
      .array(jwtAlgorithm)
      .min(1)
      .default(['RS256', 'ES256'])
      .describe('accepted signature algorithms (pinned; HMAC and "none" are never accepted: no shared secrets, no alg confusion)'),
    max_token_age: seconds.optional().describe('refuse tokens issued (iat) longer ago than this'),
    typ: z
      .array(z.string().regex(JWT_TYP_PATTERN, { error: 'a media type such as JWT, at+jwt or application/at+jwt (RFC 7515 4.1.9), without parameters' }), {
        error: (issue) => (issue.code === 'invalid_type' ? 'a list of accepted typ header values, e.g. [at+jwt] or [JWT, JOSE, at+jwt]' : undefined),
      })
      .min(1, { error: 'at least one typ value: leave typ out for the default [JWT, JOSE, at+jwt]' })
      .default([...DEFAULT_JWT_TYP])
      .describe('accepted values of the JWT typ header (RFC 8725 3.11), compared case-insensitively with application/ implied; JWT also takes a token without typ; other kinds (logout+jwt, secevent+jwt, dpop+jwt) are refused'),
  })
  .refine((jwt) => jwt.jwks_url !== undefined || jwt.keys.length > 0, { error: 'give jwks_url or keys', path: ['keys'] });

const agentSpec = z.strictObject({
  tokens: z.array(tokenHash).default([]).describe('hashes of the agent tokens (alk_...) this agent may present'),
  jwt: jwtSpec.optional().describe('workload identity: signed JWTs (e.g. Kubernetes or SPIFFE tokens) this agent may present instead of a token'),
  credentials: z.array(grantSpec).default([]).describe('grants: which services and scopes this agent may use'),
});

const limitsSpec = z.strictObject({
  max_header_bytes: z.number().int().min(1024).default(16384).describe('total size of request headers; more is refused with 431'),
  max_headers: z.number().int().min(8).default(100).describe('number of request header fields; more is refused with 431'),
  max_body_bytes: z.number().int().positive().default(10 * 1024 * 1024).describe('request body limit; more is refused with 413'),
  headers_timeout: timerSeconds.default(10).describe('time allowed to send the request headers (slowloris guard)'),
  request_timeout: timerSeconds.default(300).describe('time allowed to send the whole request'),
  keep_alive_timeout: timerSeconds.default(5).describe('idle time before an agent connection is closed'),
  max_sessions_per_agent: z.number().int().positive().default(1000).describe("live task sessions one agent may hold at once; minting another is refused with 429 until one ends or expires"),
  session_mint_rate: z
    .strictObject({
      requests: z.number().int().positive().describe('task sessions one agent may mint per `per`, on average'),
      per: durationSpec.default(1).describe('the period, e.g. 1s, 1m'),
      burst: z.number().int().positive().optional().describe('mints allowed at once; default `requests`'),
    })
    .default({ requests: 600, per: 60, burst: 100 })
    .describe('a token bucket per agent for minting task sessions (each is a durable state write); over it, 429 rate_limited with Retry-After'),
});

const defaultLimits = {
  max_header_bytes: 16384,
  max_headers: 100,
  max_body_bytes: 10 * 1024 * 1024,
  headers_timeout: 10,
  request_timeout: 300,
  keep_alive_timeout: 5,
  max_sessions_per_agent: 1000,
  session_mint_rate: { requests: 600, per: 60, burst: 100 },
};

/** A secret used to reach a secret store itself: only the proxy's environment or the embedded file. */
const bootstrapRef = z
  .string()
  .regex(/^(env|file):[A-Za-z0-9_.-]+$/, { error: 'credentials of a secret store come from env:NAME or file:NAME' })
  .describe('env:NAME or file:NAME');

const vaultAuthSpec = z.union(
  [
    z.strictObject({ method: z.literal('token'), token: bootstrapRef }),
    z.strictObject({
      method: z.literal('approle'),
      role_id: bootstrapRef,
      secret_id: bootstrapRef,
      mount: z.string().regex(/^[A-Za-z0-9_-]+$/).default('approle').describe('auth mount path'),
    }),
    z.strictObject({
      method: z.literal('kubernetes'),
      role: z.string().min(1).describe('Vault role bound to the service account'),
      jwt_file: z.string().default('/var/run/secrets/kubernetes.io/serviceaccount/token').describe('service account token file'),
      mount: z.string().regex(/^[A-Za-z0-9_-]+$/).default('kubernetes').describe('auth mount path'),
    }),
  ],
  { error: 'auth is {method: token, token: env:VAULT_TOKEN}, {method: approle, role_id, secret_id} or {method: kubernetes, role, jwt_file}' },
);

const vaultSpec = z.strictObject({
  address: httpUrl('an http(s) origin node can parse, e.g. https://vault.internal:8200').regex(/^https?:\/\/[^/?#]+\/?$/, { error: 'an http(s) origin, e.g. https://vault.internal:8200' }).describe('Vault address'),
  namespace: z.string().optional().describe('Vault Enterprise namespace (X-Vault-Namespace)'),
  ca_file: z.string().optional().describe('PEM CA certificates for the Vault TLS connection'),
  timeout: timerSeconds.default(5).describe('deadline for each whole Vault call, connect to last byte'),
  rotation_grace: timerSeconds
    .default(30)
    .describe('how long a lease replaced by a new one stays valid before Airlock revokes it (requests in flight finish with it)'),
  auth: vaultAuthSpec,
});

const oauth2ClientSpec = z.strictObject({
  token_url: httpUrl('an http(s) URL node can parse, e.g. https://login.example.com/oauth2/token').describe('the token endpoint (RFC 6749 3.2)'),
  client_id: secretRef.describe('reference to the client id'),
  client_secret: secretRef.describe('reference to the client secret'),
  scope: z.string().optional().describe('space-separated scopes to request'),
  audience: z.string().optional().describe('audience parameter, for providers that want one'),
  params: z.record(z.string(), z.string()).default({}).describe('extra form parameters for the token request'),
  auth_method: z.enum(['basic', 'body']).default('basic').describe('client authentication: HTTP Basic (RFC 6749 2.3.1) or body parameters'),
  ca: z.string().optional().describe('PEM CA certificates for the token endpoint'),
  timeout: timerSeconds.default(10).describe('deadline for each whole token request, connect to last byte'),
  refresh_skew: seconds.default(30).describe('a token is refreshed this long before it expires'),
});

const secretsSpec = z.strictObject({
  cache: z
    .strictObject({
      ttl: seconds.default(300).describe('default time a fetched value is used before it is fetched again'),
      max_staleness: seconds.default(900).describe('default time the last good value is served while its source fails'),
    })
    .default({ ttl: 300, max_staleness: 900 }),
  vault: vaultSpec.optional(),
  oauth2: z.record(z.string().regex(/^[a-z0-9][a-z0-9_-]*$/, { error: 'OAuth2 client names are lowercase letters, digits, _ and -' }), oauth2ClientSpec).default({}),
});

/** A listener's certificate and key: the agent listeners' (tls) and the admin API's (admin.tls) have the same shape. */
const listenerTls = z.strictObject({
  cert_file: z.string().min(1).describe("PEM certificate chain: the server's own certificate first, then its intermediates; relative to the config file"),
  key_file: z.string().min(1).describe('PEM private key of that certificate, unencrypted (mode 600); relative to the config file'),
  min_version: z.enum(['TLSv1.2', 'TLSv1.3']).default('TLSv1.2').describe('oldest TLS version accepted'),
});

const adminToken = z.union(
  [tokenHash, z.strictObject({ name: z.string().regex(/^[A-Za-z0-9][A-Za-z0-9_.@-]*$/, { error: 'a name such as alice or oncall@example.com' }), hash: tokenHash })],
  { error: 'an admin token is "sha256:<hex>" or {name: alice, hash: "sha256:<hex>"}; run `npx airlock token`' },
);

const adminSpec = z.strictObject({
  hosts: z
    .array(hostName)
    .default([])
    .describe('names the admin API and console answer to besides IP addresses, loopback names, names without a dot, .local and .internal ones and public_url\'s host (a DNS-rebinding guard)'),
  listen: listenAddress.default('127.0.0.1:7701').describe('admin API and console listener; keep it on loopback or a private network'),
  tokens: z
    .array(adminToken)
    .min(1, { error: 'the admin API needs at least one token hash; run `npx airlock token`' })
    .describe('tokens that may call the admin API; a name is recorded as the approver or revoker'),
  public_url: httpUrl('an http(s) URL node can parse, e.g. https://airlock-console.example.com').optional().describe('how approvers reach the console, for links in webhooks and 202 answers'),
  tls: listenerTls
    .extend({
      client_ca_file: z
        .string()
        .min(1)
        .optional()
        .describe('PEM CA certificates: with it, every connection must present a client certificate one of them signed (mTLS), before any admin token is read; relative to the config file'),
    })
    .optional()
    .describe('serve the admin API, console and /metrics over HTTPS (its own certificate, or the agent listeners\' files); the CLI pins the certificate in cert_file; a reload, or a change of either file, serves new ones'),
});

/** Headers that choose whose account a request acts on (Stripe Connect, OpenAI organisations and projects). */
const DEFAULT_APPROVAL_HEADERS = ['stripe-account', 'stripe-context', 'openai-organization', 'openai-project'] as const;

const approvalsSpec = z.strictObject({
  webhook: httpUrl('an http(s) URL node can parse, e.g. https://hooks.example.com/airlock').optional().describe('POSTed a JSON announcement (with a Slack-compatible text field) of each pending approval'),
  max_body_bytes: z.number().int().positive().default(1024 * 1024).describe('largest request body held while it waits for approval'),
  max_pending: z.number().int().positive().default(1000).describe('pending approvals at once; more are refused with 429'),
  max_pending_per_agent: z.number().int().positive().default(100).describe("pending approvals of one agent at once; more of that agent's are refused with 429, so one agent cannot use up max_pending for all"),
  preview_bytes: z
    .number()
    .int()
    .min(0)
    .max(65536, 'at most 65536: each pending approval keeps its preview in the governance state (and Redis)')
    .default(2048)
    .describe("how much of a held request's body approvers see (console, admin API, CLI, webhook), secrets and tokens masked; 0 = no preview of query, bound headers or body"),
  bind_headers: z
    .array(headerName)
    .default([...DEFAULT_APPROVAL_HEADERS])
    .describe('request headers an approval is bound to, beside Content-Type, and shown to approvers in the preview: an async approval redeemed with another value (or without one) is refused; the defaults pick an account or organisation'),
});

const anomalyAction = z.enum(['alert', 'suspend']).describe('alert: log, audit, metric, webhook; suspend: also revoke the agent (the kill switch) until an admin restores it');

const anomaliesSpec = z.strictObject({
  enabled: z.boolean().default(true).describe('watch each agent and service against its own baseline'),
  warmup: z
    .strictObject({
      requests: z.number().int().min(0).default(100).describe('requests seen before baseline rules (rate, volume, new route/scope) fire'),
      seconds: seconds.default(3600).describe('and at least this long'),
    })
    .default({ requests: 100, seconds: 3600 }),
  cooldown: seconds.default(60).describe('the same rule raises at most one event per agent and service in this time'),
  webhook: httpUrl('an http(s) URL node can parse, e.g. https://hooks.example.com/airlock').optional().describe('POSTed each anomaly event as JSON (Slack-compatible text field)'),
  rate_spike: z
    .strictObject({ factor: z.number().min(1).default(5), window: anomalyWindow.default(60), min_requests: z.number().int().min(1).default(20), action: anomalyAction.default('alert') })
    .default({ factor: 5, window: 60, min_requests: 20, action: 'alert' })
    .describe('requests in the window exceed factor x the baseline rate'),
  new_route: z.strictObject({ action: anomalyAction.default('alert') }).default({ action: 'alert' }).describe('a route used for the first time after warm-up'),
  new_scope: z.strictObject({ action: anomalyAction.default('alert') }).default({ action: 'alert' }).describe('a scope used for the first time after warm-up'),
  denial_burst: z
    .strictObject({ count: z.number().int().min(1).default(30), window: anomalyWindow.default(60), action: anomalyAction.default('suspend') })
    .default({ count: 30, window: 60, action: 'suspend' })
    .describe('many requests refused by policy (unknown token, route, scope, service, method, missing session; not the upstream answers) in a window: probing'),
  volume_spike: z
    .strictObject({ factor: z.number().min(1).default(10), window: anomalyWindow.default(300), min_bytes: z.number().int().min(0).default(1024 * 1024), action: anomalyAction.default('alert') })
    .default({ factor: 10, window: 300, min_bytes: 1024 * 1024, action: 'alert' })
    .describe('response bytes in the window exceed factor x the baseline: exfiltration'),
  off_hours: z
    .strictObject({
      hours: z.string().regex(/^([01]\d|2[0-3]):[0-5]\d-([01]\d|2[0-3]):[0-5]\d$/, { error: 'HH:MM-HH:MM, e.g. 08:00-20:00' }).describe('usual hours; calls outside raise an event'),
      utc_offset_minutes: z.number().int().min(-840).max(840).default(0).describe('the hours are in UTC plus this offset'),
      action: anomalyAction.default('alert'),
    })
    .optional(),
  new_client_address: z.strictObject({ action: anomalyAction.default('alert') }).default({ action: 'alert' }).describe('a task session used from a second client address'),
});

const stateSpec = z.union(
  [
    z.strictObject({
      type: z.literal('memory').describe('memory: kept in memory and in data_dir/state.jsonl (sessions, revocations, approvals survive a restart)'),
    }),
    z.strictObject({
      type: z.literal('redis').describe('redis: shared by every replica (sessions, revocations, approvals, rate buckets, OAuth2 tokens)'),
      url: z.string().regex(/^rediss?:\/\//, { error: 'a redis:// or rediss:// URL' }).describe('the Redis server, e.g. redis://127.0.0.1:6379/0'),
      prefix: z.string().regex(/^[A-Za-z0-9:_.-]*$/, { error: 'a key prefix of letters, digits and : _ . -, such as airlock: or team-a:' }).default('airlock:').describe('key prefix, to share one Redis between deployments'),
      stale_after: seconds.default(30).describe('how long a replica cut off from Redis serves from what it knows before refusing (503 state_unavailable)'),
    }),
  ],
  { error: 'state is {type: memory} or {type: redis, url: redis://...}' },
);

/** An address, or a CIDR range of them, as BlockList takes it. */
const addressOrRange = z.string().refine(
  (value) => {
    const [address, bits, extra] = value.split('/');
    const family = isIP(address ?? '');
    if (family === 0 || extra !== undefined) return false;
    if (bits === undefined) return true;
    return /^\d{1,3}$/.test(bits) && Number(bits) <= (family === 4 ? 32 : 128);
  },
  { error: 'an IP address or a CIDR range, such as 10.0.0.0/8 or fd00:1::/48' },
);

export const configSchema = z.strictObject({
  listen: listenAddress.default('127.0.0.1:7700').describe('agent-facing listener'),
  tls: listenerTls
    .optional()
    .describe('serve agents over HTTPS on every agent-facing listener (listen and services.*.listen); a reload, or a change of either file, serves new ones'),
  trusted_proxies: z
    .array(addressOrRange)
    .default([])
    .describe('load balancers in front of Airlock (addresses or CIDR ranges): from their connections, the agent\'s address is read from X-Forwarded-For, right to left, past every trusted hop'),
  data_dir: z.string().default('./data').describe('embedded state: encrypted secrets, audit log, keys; relative to the config file'),
  audit: z
    .strictObject({
      file: z.string().default('audit.jsonl').describe('audit log, one hash-chained JSON object per line; relative to data_dir'),
      on_failure: z.enum(['refuse', 'log']).default('refuse').describe('refuse: no request is forwarded while records cannot be written (fail closed); log: go on and log it'),
      max_bytes: z.number().int().min(0).default(100 * 1024 * 1024).describe('rotate the file past this size (0: never); the hash chain continues in the new file; a file that is not a regular file (/dev/null, a FIFO) is never rotated'),
      keep: z.number().int().min(0).max(1000).default(10).describe('rotated files kept: audit.jsonl.1 ... .N'),
      webhook: httpUrl('an http(s) URL node can parse, e.g. https://hooks.example.com/airlock').optional().describe('also POST records here in JSON batches (best effort; the file is the record)'),
    })
    .default({ file: 'audit.jsonl', on_failure: 'refuse', max_bytes: 100 * 1024 * 1024, keep: 10 }),
  telemetry: z
    .strictObject({
      otlp: z
        .strictObject({
          endpoint: httpUrl('an http(s) URL node can parse, e.g. http://127.0.0.1:4318').describe('OTLP/HTTP collector; traces go to <endpoint>/v1/traces'),
          headers: z.record(z.string(), z.string()).default({}).describe('extra headers for the collector (e.g. an API key, as env: reference is not supported here)'),
        })
        .optional()
        .describe('export traces over OTLP/HTTP (absent: OTEL_EXPORTER_OTLP_ENDPOINT, or no tracing)'),
      sampling: z.number().min(0).max(1).optional().describe('share of new traces sampled (parent-based); absent: OTEL_TRACES_SAMPLER and OTEL_TRACES_SAMPLER_ARG, else 1.0'),
      service_name: z.string().min(1).optional().describe('service.name of the spans; default OTEL_SERVICE_NAME or airlock'),
    })
    .default({}),
  log: z
    .strictObject({
      level: z.enum(['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent']).default('info').describe('log level'),
      requests: z
        .enum(['all', 'problems'])
        .default('all')
        .describe('the line per request: all, or problems only (5xx, cut short, not audited: the warn and error lines); the audit log records every request either way'),
    })
    .default({ level: 'info', requests: 'all' }),
  limits: limitsSpec.default(defaultLimits),
  secrets: secretsSpec.default({ cache: { ttl: 300, max_staleness: 900 }, oauth2: {} }),
  admin: adminSpec.optional().describe('the admin API (absent: no admin listener)'),
  approvals: approvalsSpec.default({ max_body_bytes: 1024 * 1024, max_pending: 1000, max_pending_per_agent: 100, preview_bytes: 2048, bind_headers: [...DEFAULT_APPROVAL_HEADERS] }),
  state: stateSpec.default({ type: 'memory' }),
  workers: z
    .union([z.number().int().min(1).max(256), z.literal('auto')])
    .default(1)
    .describe('processes serving on the same ports (node cluster); "auto" = one per CPU; more than 1 needs state type redis'),
  shutdown_timeout: timerSeconds.default(30).describe('on SIGTERM, how long in-flight requests (streams included) may take to finish'),
  reload: z
    .strictObject({ watch: z.boolean().default(true).describe('reload when the config file changes (SIGHUP always reloads)') })
    .default({ watch: true }),
  anomalies: anomaliesSpec.default({
    enabled: true,
    warmup: { requests: 100, seconds: 3600 },
    cooldown: 60,
    rate_spike: { factor: 5, window: 60, min_requests: 20, action: 'alert' },
    new_route: { action: 'alert' },
    new_scope: { action: 'alert' },
    denial_burst: { count: 30, window: 60, action: 'suspend' },
    volume_spike: { factor: 10, window: 300, min_bytes: 1024 * 1024, action: 'alert' },
    new_client_address: { action: 'alert' },
  }),
  services: z.record(z.string().regex(/^[a-z0-9][a-z0-9_-]*$/, { error: 'service names are lowercase letters, digits, _ and -' }), serviceSpec).default({}),
  agents: z.record(z.string().regex(/^[A-Za-z0-9][A-Za-z0-9_.-]*$/, { error: 'agent names are letters, digits, _ . and -' }), agentSpec).default({}),
});

export type ConfigInput = z.input<typeof configSchema>;
export type ParsedConfig = z.output<typeof configSchema>;
export type ServiceSpec = z.output<typeof serviceSpec>;
export type RouteSpec = z.output<typeof routeSpec>;
export type GrantSpec = z.output<typeof grantSpec>;
export type AgentSpec = z.output<typeof agentSpec>;
export type CredentialSpec = z.output<typeof credentialSpec>;
export type InjectSpec = z.output<typeof injectSpec>;
export type LimitsSpec = z.output<typeof limitsSpec>;
export type RedactSpec = z.output<typeof redactSpec>;
export type SecretsSpec = z.output<typeof secretsSpec>;
export type VaultSpec = z.output<typeof vaultSpec>;
export type OAuth2ClientSpec = z.output<typeof oauth2ClientSpec>;
export type AdminSpec = z.output<typeof adminSpec>;
export type ApprovalsSpec = z.output<typeof approvalsSpec>;
export type JwtSpec = z.output<typeof jwtSpec>;
export type StateSpec = z.output<typeof stateSpec>;
export type RateSpec = z.output<typeof rateSpec>;
export type AnomaliesSpec = z.output<typeof anomaliesSpec>;
export type TelemetrySpec = z.output<typeof configSchema>['telemetry'];
export type AuditSpec = z.output<typeof configSchema>['audit'];
export type ListenerTlsSpec = NonNullable<z.output<typeof configSchema>['tls']>;
