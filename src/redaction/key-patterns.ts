/**
 * Shape rules: credentials Airlock does not manage but recognizes by their published formats, plus
 * operator rules of the same kind. A rule is a literal prefix followed by a run of characters from a
 * set, between a minimum and a maximum length (and, for PEM private keys, a BEGIN...END block).
 *
 * Why not regular expressions: a streaming redactor must know, at every chunk end, exactly which bytes
 * could still become part of a match, and hold back only those (an SSE event must not wait for the
 * next one). For prefix+run rules that is decidable and cheap; for an arbitrary RegExp it is not.
 *
 * Formats: OpenAI/Anthropic "sk-" keys; Stripe secret and restricted live keys (docs.stripe.com/keys);
 * GitHub tokens ghp_/gho_/ghu_/ghs_/ghr_ and github_pat_ (github.blog 2021-04-05 token format);
 * Slack xox?- tokens; AWS access key ids AKIA/ASIA + 16; Google API keys AIza + 35; PEM private keys
 * (RFC 7468 labels ending in "PRIVATE KEY").
 */

export interface RunRule {
  readonly kind: 'run';
  readonly name: string;
  readonly prefixes: readonly Buffer[];
  /** 1 for bytes allowed in the run. */
  readonly charset: Uint8Array;
  readonly minRun: number;
  readonly maxRun: number;
}

export interface BlockRule {
  readonly kind: 'block';
  readonly name: string;
}

export type KeyRule = RunRule | BlockRule;

export function charsetOf(spec: string): Uint8Array {
  const set = new Uint8Array(256);
  for (let i = 0; i < spec.length; i++) {
    const from = spec.charCodeAt(i);
    if (spec[i + 1] === '-' && i + 2 < spec.length) {
      const to = spec.charCodeAt(i + 2);
      for (let c = from; c <= to; c++) set[c] = 1;
      i += 2;
    } else {
      set[from] = 1;
    }
  }
  return set;
}

function run(name: string, prefixes: string[], charset: string, minRun: number, maxRun: number): RunRule {
  return Object.freeze({ kind: 'run', name, prefixes: prefixes.map((p) => Buffer.from(p, 'utf8')), charset: charsetOf(charset), minRun, maxRun });
}

export const BUILTIN_RULE_NAMES = ['openai', 'stripe', 'github', 'slack', 'aws', 'google', 'private_key'] as const;
export type BuiltinRuleName = (typeof BUILTIN_RULE_NAMES)[number];

export const BUILTIN_RULES: Readonly<Record<BuiltinRuleName, KeyRule>> = Object.freeze({
  openai: run('openai', ['sk-'], 'A-Za-z0-9_-', 20, 256),
  stripe: run('stripe', ['sk_live_', 'rk_live_'], 'A-Za-z0-9', 16, 256),
  github: run('github', ['ghp_', 'gho_', 'ghu_', 'ghs_', 'ghr_', 'github_pat_'], 'A-Za-z0-9_', 22, 255),
  slack: run('slack', ['xoxa-', 'xoxb-', 'xoxo-', 'xoxp-', 'xoxr-', 'xoxs-', 'xoxe-'], 'A-Za-z0-9-', 10, 255),
  aws: run('aws', ['AKIA', 'ASIA'], 'A-Z0-9', 16, 16),
  google: run('google', ['AIza'], 'A-Za-z0-9_-', 35, 35),
  private_key: Object.freeze({ kind: 'block', name: 'private_key' }),
});

export function customRule(name: string, prefix: string, charset: string, minLength: number, maxLength: number): RunRule {
  return run(name, [prefix], charset, minLength, maxLength);
}

const BEGIN = Buffer.from('-----BEGIN ', 'latin1');
const END = Buffer.from('-----END ', 'latin1');
const LABEL_TAIL = Buffer.from('PRIVATE KEY-----', 'latin1');
/** The longest PEM label we wait for after BEGIN ("ENCRYPTED PRIVATE KEY", "OPENSSH PRIVATE KEY", ...). */
const MAX_LABEL = 48;
/** A 16384-bit RSA key in PEM is about 12.7 KB; nothing legitimate keeps a block open longer. */
export const MAX_BLOCK = 64 * 1024;

function isWordByte(byte: number): boolean {
  return (byte >= 0x30 && byte <= 0x39) || (byte >= 0x41 && byte <= 0x5a) || (byte >= 0x61 && byte <= 0x7a);
}

export interface RuleScan {
  /** Start of the earliest match that more data could still extend or complete; -1 if none. */
  livePartial: number;
}

/**
 * Appends complete matches of the rules to `out` as [start, end) pairs and reports the earliest live
 * partial match. `before` is the byte that preceded data[0] (-1 at the start of the stream), for the
 * word-boundary check. With `final`, nothing more will come: runs that reached the end are judged as
 * they are.
 */
export function scanRules(rules: readonly KeyRule[], data: Buffer, before: number, final: boolean, out: number[]): RuleScan {
  const n = data.length;
  let livePartial = -1;
  const noteLive = (at: number): void => {
    if (livePartial === -1 || at < livePartial) livePartial = at;
  };
  for (const rule of rules) {
    if (rule.kind === 'block') {
      let at = data.indexOf(BEGIN);
      while (at !== -1) {
        const label = data.indexOf(LABEL_TAIL, at + BEGIN.length);
        const labelEnd = label === -1 ? -1 : label + LABEL_TAIL.length;
        if (label === -1 || label - (at + BEGIN.length) > MAX_LABEL) {
          if (!final && label === -1 && n - at < BEGIN.length + MAX_LABEL + LABEL_TAIL.length) noteLive(at);
          at = data.indexOf(BEGIN, at + 1);
          continue;
        }
        const endMarker = data.indexOf(END, labelEnd);
        const closing = endMarker === -1 ? -1 : data.indexOf(LABEL_TAIL, endMarker + END.length);
        if (closing !== -1 && closing + LABEL_TAIL.length - at <= MAX_BLOCK) {
          out.push(at, closing + LABEL_TAIL.length);
          at = data.indexOf(BEGIN, closing + LABEL_TAIL.length);
        } else if (n - at < MAX_BLOCK && !final) {
          noteLive(at);
          break;
        } else {
          // Unterminated (or absurdly long): fail closed, mask what a key body could be.
          const end = Math.min(n, at + MAX_BLOCK);
          out.push(at, end);
          at = data.indexOf(BEGIN, end);
        }
      }
      const partialBegin = final ? -1 : partialPrefixStart(data, BEGIN, -1);
      if (partialBegin !== -1) noteLive(partialBegin);
      continue;
    }
    for (const prefix of rule.prefixes) {
      let at = data.indexOf(prefix);
      while (at !== -1) {
        const previous = at === 0 ? before : (data[at - 1] as number);
        if (previous !== -1 && isWordByte(previous)) {
          at = data.indexOf(prefix, at + 1);
          continue;
        }
        const bodyStart = at + prefix.length;
        let k = bodyStart;
        while (k < n && k - bodyStart < rule.maxRun && rule.charset[data[k] as number] === 1) k++;
        const runLength = k - bodyStart;
        if (k === n && runLength < rule.maxRun && !final) {
          noteLive(at);
        } else if (runLength >= rule.minRun) {
          out.push(at, k);
        }
        at = data.indexOf(prefix, at + 1);
      }
      if (!final) {
        const partial = partialPrefixStart(data, prefix, before);
        if (partial !== -1) noteLive(partial);
      }
    }
  }
  return { livePartial };
}

/** Where a proper prefix of `prefix` begins at the very end of data (respecting the word boundary). */
function partialPrefixStart(data: Buffer, prefix: Buffer, before: number): number {
  const n = data.length;
  for (let length = Math.min(prefix.length - 1, n); length > 0; length--) {
    const start = n - length;
    if (data.compare(prefix, 0, length, start, n) !== 0) continue;
    const previous = start === 0 ? before : (data[start - 1] as number);
    if (prefix[0] !== 0x2d && previous !== -1 && isWordByte(previous)) continue;
    return start;
  }
  return -1;
}
