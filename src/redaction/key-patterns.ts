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

import { maskAgentTokens, TOKEN_IN_TEXT } from '../identity/agent-token.js';
import { PrefixFilter } from './prefix-filter.js';

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
  slack: run('slack', ['xoxa-', 'xoxb-', 'xoxc-', 'xoxd-', 'xoxe-', 'xoxo-', 'xoxp-', 'xoxr-', 'xoxs-'], 'A-Za-z0-9-', 10, 255),
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

/** ASCII letters and digits. */
export function isWordByte(byte: number): boolean {
  return (byte >= 0x30 && byte <= 0x39) || (byte >= 0x41 && byte <= 0x5a) || (byte >= 0x61 && byte <= 0x7a);
}

export interface RuleScan {
  /** Start of the earliest match that more data could still extend or complete; -1 if none. */
  livePartial: number;
}

/** A literal string as a RegExp source. */
export function escapeRegExp(text: string): string {
  return text.replace(/[.*+?^${}()|[\]\\/-]/g, '\\$&');
}

/** Whether a RuleSet may search bytes with the WebAssembly prefix filter (tests compare both searches). */
export interface RuleSetOptions {
  readonly simd?: boolean;
}

/**
 * The rules of one matcher, compiled. Where a prefix (or the PEM marker) starts in a Buffer is found by
 * the WebAssembly SIMD prefix filter (~2.8 GB/s), its candidates verified byte for byte; without
 * WebAssembly, by one RegExp alternation of the prefixes (V8's irregexp, ~0.5 GB/s, several times
 * faster than one Buffer#indexOf pass per prefix). In a string, always by the RegExp. The run after a
 * prefix is then measured byte by byte. Both hold the handful of rule prefixes only, never the secrets.
 */
export class RuleSet {
  readonly rules: readonly KeyRule[];
  /** Every literal a match starts with: the run rules' prefixes, and the PEM marker when a block rule is on. */
  readonly searchPrefixes: readonly Buffer[];
  readonly #finder: RegExp | null;
  /** Built on the first byte scan (a matcher used only for strings never needs it); null: use #finder. */
  #filter: PrefixFilter | null | undefined;
  readonly #simd: boolean;
  /** Prefix positions of the Buffer being scanned; reused, as scan() runs to its end synchronously. */
  readonly #positions: number[] = [];
  /** The run rules' prefixes by first byte, in declaration order. */
  readonly #runsByFirstByte: Array<Array<{ rule: RunRule; prefix: Buffer }> | undefined> = new Array(256);
  /** The same alternation without the global flag, for a string's own characters; null when a prefix is not ASCII. */
  readonly #textFinder: RegExp | null;
  readonly #byPrefix = new Map<string, Array<{ rule: RunRule; prefix: Buffer }>>();
  readonly #hasBlock: boolean;
  /** Prefixes (and the PEM BEGIN marker) by their first byte, for the partial match at a chunk's end. */
  readonly #byFirstByte: Array<Array<{ prefix: Buffer; block: boolean }> | undefined> = new Array(256);
  #longestPrefix = 0;

  constructor(rules: readonly KeyRule[], options: RuleSetOptions = {}) {
    this.rules = rules;
    this.#simd = options.simd ?? true;
    this.#hasBlock = rules.some((r) => r.kind === 'block');
    const alternatives: string[] = [];
    for (const rule of rules) {
      if (rule.kind !== 'run') continue;
      for (const prefix of rule.prefixes) {
        const text = prefix.toString('latin1');
        const list = this.#byPrefix.get(text) ?? [];
        if (list.length === 0) {
          alternatives.push(text);
          this.#notePrefix(prefix, false);
        }
        list.push({ rule, prefix });
        this.#byPrefix.set(text, list);
      }
    }
    if (this.#hasBlock) {
      alternatives.push(BEGIN.toString('latin1'));
      this.#notePrefix(BEGIN, true);
    }
    // A flat alternation measured faster here than a hand-factored one (npm run bench:redact).
    this.#finder = alternatives.length === 0 ? null : new RegExp(alternatives.map(escapeRegExp).join('|'), 'g');
    const ascii = alternatives.every((text) => /^[\x00-\x7f]*$/.test(text));
    this.#textFinder = this.#finder === null || !ascii ? null : new RegExp(this.#finder.source);
    const prefixes = [...this.#byPrefix.values()].map((entries) => (entries[0] as { prefix: Buffer }).prefix);
    this.searchPrefixes = this.#hasBlock ? [...prefixes, BEGIN] : prefixes;
    for (const entries of this.#byPrefix.values()) {
      for (const entry of entries) {
        const first = entry.prefix[0] as number;
        const list = this.#runsByFirstByte[first] ?? [];
        list.push(entry);
        this.#runsByFirstByte[first] = list;
      }
    }
  }

  /** Ascending positions in `data` where a prefix or the PEM marker may start: every one where one does. */
  #prefixPositions(data: Buffer): number[] {
    const positions = this.#positions;
    positions.length = 0;
    if (this.#filter === undefined) this.#filter = this.#simd ? PrefixFilter.create(this.searchPrefixes) : null;
    if (this.#filter !== null) {
      this.#filter.candidates(data, positions);
      return positions;
    }
    const finder = this.#finder as RegExp;
    const text = data.toString('latin1');
    finder.lastIndex = 0;
    for (let found = finder.exec(text); found !== null; found = finder.exec(text)) {
      positions.push(found.index);
      finder.lastIndex = found.index + 1;
    }
    return positions;
  }

  get size(): number {
    return this.rules.length;
  }

  #notePrefix(prefix: Buffer, block: boolean): void {
    const first = prefix[0] as number;
    const list = this.#byFirstByte[first] ?? [];
    list.push({ prefix, block });
    this.#byFirstByte[first] = list;
    this.#longestPrefix = Math.max(this.#longestPrefix, prefix.length);
  }

  /**
   * Where the earliest proper prefix of a prefix (or of the PEM marker) begins at the very end of data,
   * respecting the word boundary; -1 when none. Only the last (longest prefix - 1) bytes can hold one,
   * and only where a prefix's first byte is: a lookup per byte, not a compare per prefix and length.
   */
  #partialAtEnd(data: Buffer, before: number): number {
    const n = data.length;
    for (let start = Math.max(0, n - this.#longestPrefix + 1); start < n; start++) {
      const candidates = this.#byFirstByte[data[start] as number];
      if (candidates === undefined) continue;
      const length = n - start;
      for (const { prefix, block } of candidates) {
        if (prefix.length <= length || !startsWith(prefix, data, start, length)) continue;
        if (!block && prefix[0] !== 0x2d) {
          const previous = start === 0 ? before : (data[start - 1] as number);
          if (previous !== -1 && isWordByte(previous)) continue;
        }
        return start;
      }
    }
    return -1;
  }

  /**
   * True when a final scan of the UTF-8 or Latin-1 bytes of `text` certainly finds nothing: no rule
   * prefix (nor the PEM marker) occurs in it, and in a final scan every match starts at one. Asked of
   * the string itself, which is exact for ASCII prefixes under the condition NeedleSet#surelyAbsentFrom
   * states. False means "scan the bytes".
   */
  surelyAbsentFrom(text: string): boolean {
    if (this.#finder === null) return true;
    return this.#textFinder !== null && !this.#textFinder.test(text);
  }

  /**
   * Appends complete matches to `out` as [start, end) pairs and reports the earliest live partial
   * match. `before` is the byte that preceded data[0] (-1 at the start of the stream), for the
   * word-boundary check. With `final`, nothing more will come: runs that reached the end are judged as
   * they are. `candidates`: ascending positions from a prefix filter over (at least) searchPrefixes,
   * searched by the caller; without them the rule set searches itself.
   */
  scan(data: Buffer, before: number, final: boolean, out: number[], candidates?: readonly number[]): RuleScan {
    const result: RuleScan = { livePartial: -1 };
    if (this.#finder === null) return result;
    const noteLive = (at: number): void => {
      if (result.livePartial === -1 || at < result.livePartial) result.livePartial = at;
    };
    let resumeAt = 0;
    let blockSeenAt = -1;
    for (const at of candidates ?? this.#prefixPositions(data)) {
      // Positions inside a PEM block already masked (or held) are not looked at again.
      if (at < resumeAt) continue;
      if (this.#hasBlock && blockSeenAt < at && startsAt(data, BEGIN, at)) {
        blockSeenAt = scanBlock(data, at, final, out, noteLive);
        if (blockSeenAt === Infinity) break;
        resumeAt = Math.max(at + 1, blockSeenAt);
        continue;
      }
      // Every prefix that starts here (one may be a prefix of another); a filter's false candidate starts none.
      const entries = this.#runsByFirstByte[data[at] as number];
      if (entries === undefined) continue;
      for (const { rule, prefix } of entries) if (startsAt(data, prefix, at)) scanRun(rule, prefix, data, at, before, final, out, noteLive);
    }
    if (!final) {
      const partial = this.#partialAtEnd(data, before);
      if (partial !== -1) noteLive(partial);
    }
    return result;
  }
}

/** True when `prefix` begins with the `length` bytes of `data` at `at` (a loop: Buffer#compare's argument checks cost more on a few bytes). */
function startsWith(prefix: Buffer, data: Buffer, at: number, length: number): boolean {
  for (let k = 0; k < length; k++) if (data[at + k] !== prefix[k]) return false;
  return true;
}

/** True when `prefix` occurs whole in `data` at `at`. */
function startsAt(data: Buffer, prefix: Buffer, at: number): boolean {
  return at + prefix.length <= data.length && startsWith(prefix, data, at, prefix.length);
}

function scanRun(rule: RunRule, prefix: Buffer, data: Buffer, at: number, before: number, final: boolean, out: number[], noteLive: (at: number) => void): void {
  const n = data.length;
  const previous = at === 0 ? before : (data[at - 1] as number);
  if (previous !== -1 && isWordByte(previous)) return;
  const bodyStart = at + prefix.length;
  let k = bodyStart;
  while (k < n && k - bodyStart < rule.maxRun && rule.charset[data[k] as number] === 1) k++;
  const runLength = k - bodyStart;
  if (k === n && runLength < rule.maxRun && !final) noteLive(at);
  else if (runLength >= rule.minRun) out.push(at, k);
}

/**
 * A PEM block starting at `at`: masked through its END line, held while it may still be completing,
 * masked to MAX_BLOCK when it never ends. Returns where scanning may resume (Infinity: everything
 * after `at` is held).
 */
function scanBlock(data: Buffer, at: number, final: boolean, out: number[], noteLive: (at: number) => void): number {
  const n = data.length;
  const label = data.indexOf(LABEL_TAIL, at + BEGIN.length);
  if (label === -1 || label - (at + BEGIN.length) > MAX_LABEL) {
    if (!final && label === -1 && n - at < BEGIN.length + MAX_LABEL + LABEL_TAIL.length) noteLive(at);
    return at + 1;
  }
  const labelEnd = label + LABEL_TAIL.length;
  const endMarker = data.indexOf(END, labelEnd);
  const closing = endMarker === -1 ? -1 : data.indexOf(LABEL_TAIL, endMarker + END.length);
  if (closing !== -1 && closing + LABEL_TAIL.length - at <= MAX_BLOCK) {
    out.push(at, closing + LABEL_TAIL.length);
    return closing + LABEL_TAIL.length;
  }
  if (n - at < MAX_BLOCK && !final) {
    noteLive(at);
    return Infinity;
  }
  // Unterminated (or absurdly long): fail closed, mask what a key body could be.
  const end = Math.min(n, at + MAX_BLOCK);
  out.push(at, end);
  return end;
}

/**
 * Where a built-in match may start: any literal one starts with (the run rules' prefixes, the PEM BEGIN
 * marker), read from a RuleSet's own list once, so the two cannot disagree. Text holding none of them
 * holds no key (looksLikeKey). They are ASCII, so found in a string exactly where they are in its UTF-8
 * bytes. Not global: test() keeps no position between calls (nothing here changes after load).
 */
const BUILTIN_START = new RegExp(
  new RuleSet(BUILTIN_RULE_NAMES.map((name) => BUILTIN_RULES[name]), { simd: false }).searchPrefixes.map((start) => escapeRegExp(start.toString('latin1'))).join('|'),
);

/**
 * Whether text holds a key the built-in rules would mask (sk-, ghp_, AKIA, ... followed by at least the
 * rule's shortest run of its characters, or a PEM private key block) or an Airlock token: such text is
 * never taken for a name, nor repeated (config problems, secret references, `airlock secrets`).
 *
 * Judged by the redactor's own scan of the rules, so text is refused exactly when output holding it
 * would be masked: a prefix alone refused plain names such as sk-prod, AKIA_X or ghp_notes (found by
 * review). It errs towards "a key" where it can without refusing names: the whole text is scanned, not
 * only its start (NAME=sk-... is refused too), and a PEM block counts. It keeps the redactor's word
 * boundary, or task-scheduler-service-token and risk-engine-api-credentials would be refused as sk- keys.
 *
 * It runs on the request path too (each name segment of a secret reference on a credential fetch, and
 * every cached reference the lease broker follows), so text holding none of the rules' starts, most
 * names, is answered at once (~0.05 µs); only the rest is scanned, by a fresh RuleSet each time (tens
 * of µs), as no module state may be mutable and a RuleSet keeps scratch state. Without SIMD no
 * WebAssembly module is built for it.
 */
export function looksLikeKey(text: string): boolean {
  if (TOKEN_IN_TEXT.test(text)) return true;
  return (builtinKeySpans(text)?.spans.length ?? 0) > 0;
}

/**
 * [start, end) byte pairs of every built-in key shape in the UTF-8 bytes of `text`, with those bytes;
 * null at once, with nothing encoded, when no rule's start is in it (most names on the request path).
 */
function builtinKeySpans(text: string): { bytes: Buffer; spans: number[] } | null {
  if (!BUILTIN_START.test(text)) return null;
  const bytes = Buffer.from(text, 'utf8');
  const spans: number[] = [];
  new RuleSet(BUILTIN_RULE_NAMES.map((name) => BUILTIN_RULES[name]), { simd: false }).scan(bytes, -1, true, spans);
  return { bytes, spans };
}

/**
 * `text` with every part looksLikeKey would find (a built-in key shape, a PEM private key block, an
 * Airlock token) replaced by `marker`: for text made of what an operator wrote, shown back to them and
 * logged (config problems; found by review: a pasted key named as an unknown key, or an upstream that
 * "is not a URL", was printed whole by `airlock check` and the reload log).
 */
export function maskKeyShapes(text: string, marker: string): string {
  const untokened = maskAgentTokens(text).replace(/al[ks]_\[REDACTED\]/g, marker);
  const scanned = builtinKeySpans(untokened);
  if (scanned === null || scanned.spans.length === 0) return untokened;
  const { bytes, spans: found } = scanned;
  const spans: Array<[number, number]> = [];
  for (let i = 0; i < found.length; i += 2) spans.push([found[i] as number, found[i + 1] as number]);
  spans.sort((a, b) => a[0] - b[0]);
  const parts: Buffer[] = [];
  let at = 0;
  for (const [from, to] of spans) {
    if (to <= at) continue;
    // An overlapping span extends the one masked before it.
    if (from >= at) parts.push(bytes.subarray(at, from), Buffer.from(marker, 'utf8'));
    at = to;
  }
  parts.push(bytes.subarray(at));
  return Buffer.concat(parts).toString('utf8');
}
