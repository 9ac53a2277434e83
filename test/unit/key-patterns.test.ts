/**
 * Key-shape rules: each built-in shape is masked, word boundaries are respected, live partial matches
 * are held at a chunk end and judged at the stream end, and PEM blocks are masked whole.
 */
import { describe, expect, it } from 'vitest';
import { BUILTIN_RULE_NAMES, BUILTIN_RULES, customRule, type KeyRule } from '../../src/redaction/key-patterns.js';
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
