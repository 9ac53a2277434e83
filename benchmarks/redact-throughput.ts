/**
 * npm run bench:redact - redaction scanner throughput, MB/s on one core, for:
 *   1 credential with all its encodings, 10 credentials, 1,000 credentials, and the built-in key shapes.
 * Goals (issue 3): >= 1 GB/s for one credential, >= 300 MB/s for 1,000.
 * Then the event-joining layer: its cost per event of an OpenAI-style chat stream (six string fields
 * followed per event, no secret in them), and its memory: heap still held after an NDJSON stream of 255
 * lines of 256 KiB, each on its own JSON path, has been sent (bounded by a window per path, not the
 * events; with `node --expose-gc` the figure is exact, without it an upper bound).
 *
 * The corpus is JSON-like text with no secret in it (the common case: the scanner's job is to find
 * nothing fast), streamed in 64 KiB chunks through the same StreamRedactor the proxy uses.
 */
import { randomBytes } from 'node:crypto';
import { BUILTIN_RULES, BUILTIN_RULE_NAMES } from '../src/redaction/key-patterns.js';
import { NeedleSet } from '../src/redaction/needle-set.js';
import { RedactionMatcher } from '../src/redaction/redaction-matcher.js';
import { secretForms } from '../src/redaction/secret-forms.js';
import { SseDeltaRedactor } from '../src/redaction/sse-delta-redactor.js';
import { StreamRedactor } from '../src/redaction/stream-redactor.js';

const CHUNK = 64 * 1024;
const TOTAL = Number(process.env['BENCH_MB'] ?? 256) * 1024 * 1024;

function corpus(): Buffer {
  const items: string[] = [];
  let size = 0;
  for (let i = 0; size < 4 * CHUNK; i++) {
    const item = JSON.stringify({ id: `obj_${i}`, object: 'chat.completion.chunk', text: `lorem ipsum dolor sit amet ${randomBytes(24).toString('base64')}`, n: i, ok: true });
    items.push(item);
    size += item.length + 1;
  }
  return Buffer.from(items.join('\n'));
}

function secret(): string {
  return `sk-proj-${randomBytes(36).toString('base64url')}`;
}

function measure(label: string, matcher: RedactionMatcher, data: Buffer): { label: string; needles: number; strategy: string; mbPerSecond: number } {
  const chunks: Buffer[] = [];
  for (let offset = 0; offset + CHUNK <= data.length; offset += CHUNK) chunks.push(data.subarray(offset, offset + CHUNK));
  const run = (bytes: number): number => {
    const redactor = new StreamRedactor(matcher);
    let done = 0;
    const started = process.hrtime.bigint();
    while (done < bytes) {
      for (const chunk of chunks) {
        redactor.push(chunk);
        done += chunk.length;
      }
    }
    redactor.end();
    const seconds = Number(process.hrtime.bigint() - started) / 1e9;
    return done / 1e6 / seconds;
  };
  run(Math.min(TOTAL, 32 * 1024 * 1024)); // warm-up: let the JIT settle
  const mbPerSecond = Math.max(run(TOTAL), run(TOTAL));
  return { label, needles: matcher.needles.size, strategy: matcher.needles.size === 0 ? '-' : matcher.needles.strategy, mbPerSecond };
}

const data = corpus();
const scenarios: Array<[string, string[], boolean]> = [
  ['1 credential, all encodings', [secret()], false],
  ['10 credentials', Array.from({ length: 10 }, secret), false],
  // Without a vendor prefix a head is 8 bytes, and the sampled search probes more often.
  ['10 credentials, no prefix', Array.from({ length: 10 }, () => randomBytes(36).toString('base64url')), false],
  ['1,000 credentials', Array.from({ length: 1000 }, secret), false],
  ['built-in key shapes only', [], true],
  ['1 credential + key shapes', [secret()], true],
];
const goals: Record<string, number> = { '1 credential, all encodings': 1000, '1,000 credentials': 300 };
console.log(`redaction throughput, ${TOTAL / 1024 / 1024} MiB per run in ${CHUNK / 1024} KiB chunks, node ${process.version}\n`);
console.log('scenario                       needles  search    MB/s   goal');
let failed = false;
for (const [label, secrets, rules] of scenarios) {
  const matcher = new RedactionMatcher(new NeedleSet(secrets.flatMap((s) => secretForms(s))), rules ? BUILTIN_RULE_NAMES.map((n) => BUILTIN_RULES[n]) : []);
  process.stdout.write(`${label.padEnd(30)} `);
  const result = measure(label, matcher, data);
  const goal = goals[label];
  const verdict = goal === undefined ? '' : result.mbPerSecond >= goal ? `>= ${goal} ok` : `>= ${goal} MISSED`;
  if (goal !== undefined && result.mbPerSecond < goal) failed = true;
  console.log(`${String(result.needles).padStart(7)}  ${result.strategy.padEnd(8)} ${result.mbPerSecond.toFixed(0).padStart(6)}   ${verdict}`);
}

/** Heap held by an event-joining layer once a stream of big events on distinct paths has been sent. */
function sseRetention(): number {
  const gc = (globalThis as { gc?: () => void }).gc;
  const redactor = new SseDeltaRedactor(new NeedleSet(secretForms(secret())), 'lines');
  const value = 'z'.repeat(256 * 1024);
  gc?.();
  const before = process.memoryUsage().heapUsed;
  for (let i = 0; i < 255; i++) redactor.push(Buffer.from(`${JSON.stringify({ [`k${i}`]: value })}\n`));
  gc?.();
  const held = process.memoryUsage().heapUsed - before;
  redactor.end();
  return held;
}
/** Microseconds per event of an OpenAI-style chat stream through the event-joining layer (median of 5 runs). */
function sseEventCost(): number {
  const words = 'The quick brown fox jumps over the lazy dog'.split(' ');
  const events = Array.from({ length: 20_000 }, (_, i) =>
    Buffer.from(`data: ${JSON.stringify({ id: 'chatcmpl-9x7Yabc123', object: 'chat.completion.chunk', created: 1_700_000_000 + i, model: 'gpt-4o-2024-08-06', system_fingerprint: 'fp_44709d6fcb', choices: [{ index: 0, delta: { content: ` ${words[i % words.length]}` }, logprobs: null, finish_reason: null }] })}\n\n`),
  );
  const runs: number[] = [];
  for (let run = 0; run < 5; run++) {
    const redactor = new SseDeltaRedactor(new NeedleSet(secretForms(secret())));
    const start = process.hrtime.bigint();
    for (const event of events) redactor.push(event);
    redactor.end();
    runs.push(Number(process.hrtime.bigint() - start) / events.length / 1000);
  }
  return runs.sort((a, b) => a - b)[2] as number;
}
console.log(`\nevent joining: ${sseEventCost().toFixed(1)} µs per event of an OpenAI-style chat stream`);
console.log(`event joining: heap held after 255 sent lines of 256 KiB on distinct paths: ${(sseRetention() / 1024 / 1024).toFixed(1)} MiB`);
process.exitCode = failed ? 1 : 0;
