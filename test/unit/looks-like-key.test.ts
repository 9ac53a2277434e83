/**
 * looksLikeKey: what is never taken for a name nor repeated. Text is refused when the built-in key
 * shapes would mask it (a prefix followed by at least the rule's shortest run) or it holds an Airlock
 * token; a prefix followed by a short run is an ordinary name (found by review: sk-prod, AKIA_X and
 * ghp_notes were refused as keys).
 */
import { randomBytes } from 'node:crypto';
import { describe, expect, it } from 'vitest';
import { generateAgentToken } from '../../src/identity/agent-token.js';
import { BUILTIN_RULE_NAMES, BUILTIN_RULES, looksLikeKey, type RunRule } from '../../src/redaction/key-patterns.js';
import { canary } from '../helpers/canary.js';

const UPPER_DIGITS = 'ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789';
const ALNUM = `${UPPER_DIGITS}abcdefghijklmnopqrstuvwxyz`;

/** A unique run of `length` characters from `alphabet`: every key below is a canary. */
function run(alphabet: string, length: number): string {
  return [...randomBytes(length)].map((b) => alphabet[b % alphabet.length]).join('');
}

/**
 * Every built-in run rule and prefix, with the rule's own minimum (read from BUILTIN_RULES, so the cases
 * follow the rules) and the letters and digits its run accepts (no "-" or "_": a run of them could hold
 * another rule's prefix, or end a word early).
 */
const RUN_RULES = BUILTIN_RULE_NAMES.map((name) => BUILTIN_RULES[name])
  .filter((rule): rule is RunRule => rule.kind === 'run')
  .flatMap((rule) =>
    rule.prefixes.map((prefix) => ({
      rule: rule.name,
      prefix: prefix.toString('utf8'),
      minRun: rule.minRun,
      alphabet: [...ALNUM].filter((char) => rule.charset[char.charCodeAt(0)] === 1).join(''),
    })),
  );

describe('looksLikeKey', () => {
  it.each([
    'sk-prod',
    'sk-prod-billing',
    'sk_live_notes',
    'AKIA_X',
    'AKIA-rotation-notes',
    'ASIA_session',
    'ghp_notes',
    'github_pat_readme',
    'github-token',
    'GITHUB_TOKEN',
    'OPENAI_API_KEY',
    'openai-key',
    'stripe_live_key',
    'xoxb-bot',
    'AIza-maps',
    'alk_notes',
    // The redactor's word boundary: sk- inside a word is no key (21+ characters follow each).
    'task-scheduler-service-token',
    'risk-engine-api-credentials',
    'secret/stripe',
    'api_key',
  ])('%s is a name', (name) => {
    expect(looksLikeKey(name)).toBe(false);
  });

  const agent = generateAgentToken().token;
  it.each([
    ['a full-length OpenAI project key', `sk-proj-${run(ALNUM, 48)}`],
    ['a canary sk- key', canary('looks-like-key')],
    ['an OpenAI key with the shortest run masked', `sk-${run(ALNUM, 20)}`],
    ['a Stripe live secret key', `sk_live_${run(ALNUM, 24)}`],
    ['a Stripe restricted key', `rk_live_${run(ALNUM, 24)}`],
    ['an AWS access key id', `AKIA${run(UPPER_DIGITS, 16)}`],
    ['an AWS temporary access key id', `ASIA${run(UPPER_DIGITS, 16)}`],
    ['a GitHub classic token', `ghp_${run(ALNUM, 36)}`],
    ['a GitHub fine-grained token', `github_pat_${run(ALNUM, 22)}_${run(ALNUM, 59)}`],
    ['a Slack bot token', `xoxb-${run('0123456789', 12)}-${run(ALNUM, 24)}`],
    ['a Google API key', `AIza${run(ALNUM, 35)}`],
    ['an Airlock agent token', agent],
    ['an Airlock token inside a word', `key${agent}`],
    ['a key after NAME=', `OPENAI_API_KEY=sk-proj-${run(ALNUM, 48)}`],
    ['a PEM private key header', `-----BEGIN PRIVATE KEY-----${run(ALNUM, 20)}`],
    ['a PEM private key block after other text', `key: -----BEGIN RSA PRIVATE KEY-----\n${run(ALNUM, 64)}\n-----END RSA PRIVATE KEY-----`],
  ])('%s is refused', (_what, key) => {
    expect(looksLikeKey(key)).toBe(true);
  });

  it('the boundary cases below cover every built-in run rule, sk- and AIza among them', () => {
    const runRules = BUILTIN_RULE_NAMES.filter((name) => BUILTIN_RULES[name].kind === 'run');
    expect(runRules.length).toBeGreaterThan(0);
    expect(new Set(RUN_RULES.map((r) => r.rule))).toEqual(new Set(runRules));
    expect(RUN_RULES.map((r) => r.prefix)).toEqual(expect.arrayContaining(['sk-', 'AIza']));
    for (const { alphabet } of RUN_RULES) expect(alphabet.length).toBeGreaterThanOrEqual(10);
  });

  // The boundary: one character short of the rule's shortest run is a name; the shortest run itself is a key.
  it.each(RUN_RULES.map((r) => [`${r.prefix} + ${r.minRun - 1} characters (${r.rule})`, r] as const))('%s is a name', (_what, { prefix, minRun, alphabet }) => {
    expect(looksLikeKey(`${prefix}${run(alphabet, minRun - 1)}`)).toBe(false);
  });

  it.each(RUN_RULES.map((r) => [`${r.prefix} + ${r.minRun} characters (${r.rule})`, r] as const))('%s is refused', (_what, { prefix, minRun, alphabet }) => {
    expect(looksLikeKey(`${prefix}${run(alphabet, minRun)}`)).toBe(true);
  });

  // Text without any rule's start is answered before a scan (on the request path): a key anywhere in it still has its start.
  it.each(RUN_RULES.map((r) => [`${r.prefix} + ${r.minRun} characters (${r.rule})`, r] as const))('%s after other text is refused', (_what, { prefix, minRun, alphabet }) => {
    expect(looksLikeKey(`KEY=${prefix}${run(alphabet, minRun)}`)).toBe(true);
    expect(looksLikeKey(`notes about a key: ${prefix}${run(alphabet, minRun)} (rotated)`)).toBe(true);
  });
});
