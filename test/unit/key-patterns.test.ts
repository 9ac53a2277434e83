/**
 * Key-shape rules: each built-in shape is masked, word boundaries are respected, live partial matches
 * are held at a chunk end and judged at the stream end, and PEM blocks are masked whole.
 */
import { describe, expect, it } from 'vitest';
import { BUILTIN_RULE_NAMES, BUILTIN_RULES, customRule, type BuiltinRuleName, type KeyRule } from '../../src/redaction/key-patterns.js';
import { NeedleSet } from '../../src/redaction/needle-set.js';
import { RedactionMatcher } from '../../src/redaction/redaction-matcher.js';
import { StreamRedactor } from '../../src/redaction/stream-redactor.js';

const allRules = BUILTIN_RULE_NAMES.map((name) => BUILTIN_RULES[name]);

function redact(rules: readonly KeyRule[], ...chunks: string[]): { text: string; count: number; outputs: string[] } {
  const redactor = new StreamRedactor(new RedactionMatcher(new NeedleSet([]), rules));
  const outputs = chunks.map((c) => redactor.push(Buffer.from(c)).toString());
  outputs.push(redactor.end().toString());
  return { text: outputs.join(''), count: redactor.redactions, outputs };
}

// Example values are built at run time so this file does not itself look like it holds keys.
const samples: Record<string, string> = {
  openai: `sk-proj-${'Ab3'.repeat(12)}`,
  stripe: `sk_live_${'4eC39HqLyjWDarjtT1zdp7dc'}`,
  github: `ghp_${'a1B2c3D4e5'.repeat(3)}abcdef`,
  slack: `xoxb-${'1234567890'}-${'abcdefghij'}`,
  aws: `AKIA${'IOSFODNN7EXAMPLE'}`,
  google: `AIza${'SyA'.padEnd(35, 'x')}`,
  private_key: `-----BEGIN RSA PRIVATE KEY-----\nMIIEow${'B'.repeat(200)}\n-----END RSA PRIVATE KEY-----`,
};

describe('built-in key shapes', () => {
  it.each(Object.entries(samples))('%s is masked inside JSON', (name, sample) => {
    const result = redact(allRules, `{"leak":"${sample}","ok":1}`);
    expect(result.text).toBe('{"leak":"[REDACTED]","ok":1}');
    expect(result.count).toBe(1);
    expect(BUILTIN_RULE_NAMES).toContain(name);
  });

  it.each(Object.entries(samples))('%s is masked when split across chunks', (_name, sample) => {
    const cut = Math.floor(sample.length / 2);
    const result = redact(allRules, `x ${sample.slice(0, cut)}`, `${sample.slice(cut)} y`);
    expect(result.text).toBe('x [REDACTED] y');
  });

  it('a switched-off shape passes through', () => {
    const rules = allRules.filter((r) => r.name !== 'aws');
    expect(redact(rules, `id=${samples['aws']}`).text).toBe(`id=${samples['aws']}`);
  });

  it('respects the word boundary before a prefix ("task-" is not an sk- key)', () => {
    const text = `a task-${'x'.repeat(40)} and mask_live_${'y'.repeat(30)}`;
    expect(redact(allRules, text).text).toBe(text);
  });

  it('a prefix followed by too short a run is not a key', () => {
    expect(redact(allRules, 'see sk-short here').text).toBe('see sk-short here');
  });

  it('holds a live run at a chunk end and releases it when it ends too short', () => {
    const result = redact(allRules, 'value: sk-abc', 'd"');
    expect(result.outputs[0]).toBe('value: ');
    expect(result.text).toBe('value: sk-abcd"');
  });

  it('judges a run that reaches the end of the stream as it is', () => {
    expect(redact(allRules, `tail ${samples['openai']}`).text).toBe('tail [REDACTED]');
  });

  it('holds a partial prefix at a chunk end only when the boundary allows a key there', () => {
    expect(redact(allRules, 'ask').outputs[0]).toBe('ask');
    expect(redact(allRules, 'a s').outputs[0]).toBe('a ');
  });

  it('masks an unterminated private key block to the end of the stream', () => {
    const result = redact(allRules, 'x -----BEGIN PRIVATE KEY-----\nMIIB', 'CCCC');
    expect(result.text).toBe('x [REDACTED]');
  });

  it('a custom prefix rule masks its shape', () => {
    const rules = [customRule('internal', 'itk_', 'A-Za-z0-9', 20, 64)];
    expect(redact(rules, `token=itk_${'Q'.repeat(30)}&x=1`).text).toBe('token=[REDACTED]&x=1');
  });
});

// More of each built-in shape, by the rule that must mask it alone (key-patterns.ts: prefix, charset, run length).
const alnum = (n: number): string => 'Zq7Lm2Xw9Kb4'.repeat(Math.ceil(n / 12)).slice(0, n);
const shapes: Array<[string, BuiltinRuleName, string]> = [
  ['Stripe rk_live_ (restricted key)', 'stripe', `rk_live_${alnum(24)}`],
  ['Stripe rk_live_ at the 16-character minimum', 'stripe', `rk_live_${alnum(16)}`],
  ['GitHub github_pat_ (fine-grained)', 'github', `github_pat_${alnum(22)}_${alnum(59)}`],
  ['GitHub gho_ (OAuth)', 'github', `gho_${alnum(36)}`],
  ['GitHub ghu_ (user-to-server)', 'github', `ghu_${alnum(36)}`],
  ['GitHub ghs_ (server-to-server)', 'github', `ghs_${alnum(36)}`],
  ['GitHub ghr_ (refresh)', 'github', `ghr_${alnum(36)}`],
  ['GitHub ghp_ at the 22-character minimum', 'github', `ghp_${alnum(22)}`],
  ['Slack xoxp- (user)', 'slack', `xoxp-${'2'.repeat(12)}-${'3'.repeat(12)}-${alnum(32)}`],
  ['Slack xoxc- (browser client)', 'slack', `xoxc-${'4'.repeat(12)}-${'5'.repeat(12)}-${alnum(40)}`],
  ['Slack xoxd- (session cookie)', 'slack', `xoxd-${alnum(40)}`],
  ['Slack xoxa- (app)', 'slack', `xoxa-2-${alnum(40)}`],
  ['Slack xoxe- (refresh)', 'slack', `xoxe-1-${alnum(40)}`],
  ['AWS ASIA (temporary) + 16', 'aws', `ASIA${'Q3VZ7EXAMPLE2KDT'}`],
  ['Google AIza + 35', 'google', `AIza${alnum(33)}_-`],
  ['OpenAI sk- (legacy)', 'openai', `sk-${alnum(48)}`],
  ['OpenAI sk-proj- (project)', 'openai', `sk-proj-${alnum(40)}_${alnum(20)}-${alnum(20)}`],
  ['Anthropic sk-ant-', 'openai', `sk-ant-api03-${alnum(80)}-${alnum(6)}AA`],
  ['OpenAI sk- at the 20-character minimum', 'openai', `sk-${alnum(20)}`],
];

// Near misses: the same prefixes, but too short a run, a character outside the set, or a word character
// right before the prefix. None of them may be masked by any built-in rule.
const nearMisses: Array<[string, string]> = [
  ['Stripe rk_live_ one short of 16', `rk_live_${alnum(15)}`],
  ['Stripe rk_live_ with "-" (not in A-Za-z0-9)', `rk_live_${alnum(6)}-${alnum(6)}-${alnum(6)}`],
  ['Stripe rk_live_ after a word character', `work_live_${alnum(24)}`],
  ['GitHub github_pat_ one short of 22', `github_pat_${alnum(21)}`],
  ['GitHub gho_ with "-" (not in A-Za-z0-9_)', `gho_${alnum(10)}-${alnum(10)}-${alnum(10)}`],
  ['GitHub ghs_ after a word character', `xghs_${alnum(36)}`],
  ['GitHub github_pat_ after a word character', `my1github_pat_${alnum(30)}`],
  ['Slack xoxp- one short of 10', `xoxp-${'7'.repeat(9)}`],
  ['Slack xoxp- with "." (not in A-Za-z0-9-)', `xoxp-${'1'.repeat(5)}.${'2'.repeat(5)}.${'3'.repeat(5)}`],
  ['Slack xoxb- after a word character', `axoxb-${'1'.repeat(12)}-${alnum(24)}`],
  ['AWS ASIA one short of 16', `ASIA${'Q3VZ7EXAMPLE2KD'}`],
  ['AWS ASIA lower-case (not in A-Z0-9)', `ASIA${'q3vz7example2kdt'}`],
  ['AWS ASIA after a word character', `X${'ASIA'}${'Q3VZ7EXAMPLE2KDT'}`],
  ['Google AIza one short of 35', `AIza${alnum(34)}`],
  ['Google AIza with "." (not in A-Za-z0-9_-)', `AIza${alnum(17)}.${alnum(17)}`],
  ['Google AIza after a word character', `9AIza${alnum(35)}`],
  ['OpenAI sk- one short of 20', `sk-${alnum(19)}`],
  ['OpenAI sk-proj- with "." (not in A-Za-z0-9_-)', `sk-proj-${alnum(8)}.${alnum(30)}`],
  ['OpenAI sk- after a word character ("disk-")', `disk-${alnum(40)}`],
];

describe('built-in key shapes, one by one', () => {
  it.each(shapes)('%s is masked by its own rule (%s) and by all rules', (_label, rule, sample) => {
    const alone = redact([BUILTIN_RULES[rule]], `{"leak":"${sample}","ok":1}`);
    expect(alone.text).toBe('{"leak":"[REDACTED]","ok":1}');
    expect(alone.count).toBe(1);
    const all = redact(allRules, `Authorization: ${sample}\r\n`);
    expect(all.text).toBe('Authorization: [REDACTED]\r\n');
  });

  it.each(shapes)('%s is masked when split across chunks', (_label, _rule, sample) => {
    const cut = Math.floor(sample.length / 2);
    expect(redact(allRules, `x ${sample.slice(0, cut)}`, `${sample.slice(cut)} y`).text).toBe('x [REDACTED] y');
  });

  it.each(nearMisses)('%s is not masked', (_label, sample) => {
    const text = `{"leak":"${sample}","ok":1}`;
    const result = redact(allRules, text);
    expect(result.text).toBe(text);
    expect(result.count).toBe(0);
    // Nor at the end of the stream, where a run is judged as it is.
    expect(redact(allRules, `tail ${sample}`).text).toBe(`tail ${sample}`);
  });
});

describe('needle search strategies agree', () => {
  it('indexOf and sampled hashing find the same occurrences', () => {
    const needles = Array.from({ length: 40 }, (_, i) => Buffer.from(`needle-${i}-${'z'.repeat(i % 7)}-tail${i}`));
    const haystack = Buffer.from(needles.map((n, i) => `${'.'.repeat(i)}${n.toString()}`).join('|') + needles[3]?.toString());
    const a: number[] = [];
    const b: number[] = [];
    new NeedleSet(needles, 'indexOf').findMatches(haystack, a);
    new NeedleSet(needles, 'sampled').findMatches(haystack, b);
    const pairs = (x: number[]): string[] => x.reduce<string[]>((acc, v, i) => (i % 2 === 0 ? [...acc, `${v}-${x[i + 1]}`] : acc), []).sort();
    expect(pairs(b)).toEqual(pairs(a));
    expect(a.length / 2).toBe(41);
  });
});
