/**
 * When audit records are written (audit-log.ts): a record whose answer waits for it (a denial) at the
 * end of the event-loop turn, with everything pending before it; the record of an answered request
 * within AFTER_ANSWER_WINDOW_MS, sharing the write with the records that arrive meanwhile. The live
 * feed hears records as they are written, so the turn in which it hears one tells when it was written.
 * The log here has a 200 ms window, so that a slow machine cannot end it between two turns.
 */
import { existsSync, lstatSync, readFileSync, symlinkSync } from 'node:fs';
import { join } from 'node:path';
import { pino } from 'pino';
import { afterEach, describe, expect, it } from 'vitest';
import { verifyChain } from '../../src/observability/audit-chain.js';
import { AuditLog } from '../../src/observability/audit-log.js';
import type { AuditRecord } from '../../src/observability/audit-record.js';
import { IsoTime } from '../../src/observability/iso-time.js';
import { newRecord } from '../../src/pipeline/run-pipeline.js';
import { SecretCatalog } from '../../src/redaction/secret-catalog.js';
import { sleep } from '../helpers/operator.js';
import { tempDir } from '../helpers/start-proxy.js';

const WINDOW_MS = 200;
const nextTurn = (): Promise<void> => new Promise((resolve) => setImmediate(resolve));

function record(path: string): AuditRecord {
  const r = newRecord({ nowMs: Date.now, isoTime: new IsoTime() }, 'GET', '127.0.0.1');
  r.path = path;
  return r;
}

const logs: AuditLog[] = [];

async function openLog(logger: pino.Logger | null = null): Promise<{ log: AuditLog; heard: Array<{ path: string | null; turn: number }>; turn: { n: number } }> {
  const log = new AuditLog({ file: join(tempDir('audit-batching-'), 'audit.jsonl'), secrets: new SecretCatalog(), onFailure: 'refuse', maxBytes: 0, keep: 0, webhook: null, logger, windowMs: WINDOW_MS });
  await log.open();
  logs.push(log);
  const turn = { n: 0 };
  const heard: Array<{ path: string | null; turn: number }> = [];
  log.subscribe((r) => heard.push({ path: r.path, turn: turn.n }));
  return { log, heard, turn };
}

afterEach(async () => {
  for (const log of logs.splice(0)) await log.close();
});

describe('audit write batching', () => {
  it("writes an answered request's record after the turn, together with those of the next turns, in order and chained", async () => {
    const { log, heard, turn } = await openLog();
    const written = [log.append(record('/a'), true)];
    await nextTurn();
    turn.n = 1;
    written.push(log.append(record('/b'), true));
    await nextTurn();
    turn.n = 2;
    written.push(log.append(record('/c'), true));
    expect(await Promise.all(written)).toEqual([true, true, true]);
    expect(heard.map((h) => h.path)).toEqual(['/a', '/b', '/c']);
    // Not written at the end of its own turn: /a was heard no earlier than the turn /b was appended in.
    expect(heard[0]?.turn).toBeGreaterThanOrEqual(1);
    const text = readFileSync(log.file, 'utf8');
    expect(text.trim().split('\n')).toHaveLength(3);
    expect(verifyChain([{ name: log.file, text }])).toMatchObject({ ok: true, records: 3 });
  });

  it('is written within the window even when nothing else comes', async () => {
    const { log, heard } = await openLog();
    const started = performance.now();
    expect(await log.append(record('/alone'), true)).toBe(true);
    expect(heard.map((h) => h.path)).toEqual(['/alone']);
    // A generous bound: the timer fires after the window; a loaded CI machine may be late, never early.
    expect(performance.now() - started).toBeLessThan(WINDOW_MS + 1000);
  });

  it('a record whose answer waits for it is written at the end of this turn, and takes the pending ones along, in order', async () => {
    const { log, heard, turn } = await openLog();
    const answered = log.append(record('/answered'), true);
    const denial = log.append(record('/denied'), false);
    await nextTurn();
    turn.n = 1;
    expect(heard).toEqual([
      { path: '/answered', turn: 0 },
      { path: '/denied', turn: 0 },
    ]);
    expect(await Promise.all([answered, denial])).toEqual([true, true]);
    // The window's timer was cancelled with the write: nothing is written twice or out of turn.
    await sleep(WINDOW_MS * 3);
    expect(readFileSync(log.file, 'utf8').trim().split('\n')).toHaveLength(2);
  });

  it('a record that cannot be serialized is settled as a failed write: refused, the log unwritable, healed by the next write', async () => {
    const { log } = await openLog();
    const bad = record('/bad');
    (bad as unknown as { duration_ms: bigint }).duration_ms = 1n;
    const outcome = await log.append(bad, true).then(
      () => 'written',
      (error: unknown) => `refused: ${(error as Error).message}`,
    );
    expect(outcome).toBe('refused: audit record field duration_ms is a bigint; number belongs there');
    expect(log.healthy).toBe(false);
    expect(() => log.assertWritable()).toThrow(/audit log cannot be written/);
    expect(await log.append(record('/good'), true)).toBe(true);
    expect(log.healthy).toBe(true);
    expect(readFileSync(log.file, 'utf8')).not.toContain('/bad');
  });

  it('a record that cannot be serialized fails alone: the answered records of its batch are written', async () => {
    const { log } = await openLog();
    const bad = record('/bad');
    (bad as unknown as { duration_ms: bigint }).duration_ms = 1n;
    const before = log.append(record('/before'), true);
    const refused = log.append(bad, true).then(
      () => 'written',
      (error: unknown) => `refused: ${(error as Error).message}`,
    );
    const after = log.append(record('/after'), true);
    expect(await before).toBe(true);
    expect(await after).toBe(true);
    // The field is named (json-text.ts alone knows only the value's type), its value never.
    expect(await refused).toBe('refused: audit record field duration_ms is a bigint; number belongs there');
    const lines = readFileSync(log.file, 'utf8').trim().split('\n').map((line) => JSON.parse(line) as { path: string; prev: string; hash: string });
    expect(lines.map((line) => line.path)).toEqual(['/before', '/after']);
    // The chain skips the record that never reached the file.
    expect(lines[1]?.prev).toBe(lines[0]?.hash);
    expect(log.healthy).toBe(true);
  });

  it('names the field of a refused record in the error log line, with the type and without the value', async () => {
    const lines: string[] = [];
    const { log } = await openLog(pino({ level: 'info' }, { write: (line: string) => void lines.push(line) }));
    const bad = record('/bad');
    (bad as unknown as { agent: number }).agent = 4242424242;
    (bad as unknown as { incomplete: undefined }).incomplete = undefined;
    const outcome = await log.append(bad, true).then(
      () => 'written',
      (error: unknown) => `refused: ${(error as Error).message}`,
    );
    // The first field in the record's order that is wrong.
    expect(outcome).toBe('refused: audit record field agent is a number; string or null belongs there');
    const logged = lines.map((line) => JSON.parse(line) as { msg: string; err?: { message: string } }).find((line) => line.msg === 'audit records could not be written');
    // pino's error serializer appends the cause's message (json-text.ts's, which has the type alone).
    expect(logged?.err?.message).toBe('audit record field agent is a number; string or null belongs there: a number where a JSON string or null belongs');
    expect(lines.join('\n')).not.toContain('4242424242');
  });

  it('a failed record whose failure cannot be logged either still fails alone: every request of the batch is settled', async () => {
    // A log destination that throws, as stdout does when it is gone (EPIPE) or as a scrubber fault would.
    const attempts: string[] = [];
    const brokenLog = pino({ level: 'info' }, { write: (line: string) => { attempts.push(line); throw new Error('log destination broken'); } });
    const { log } = await openLog(brokenLog);
    const bad = record('/bad');
    (bad as unknown as { duration_ms: bigint }).duration_ms = 1n;
    const settled = [log.append(record('/before'), true), log.append(bad, true), log.append(record('/after'), true)].map((p) =>
      p.then(
        (written) => `written: ${written}`,
        (error: unknown) => `refused: ${(error as Error).message}`,
      ),
    );
    const outcomes = await Promise.all(settled);
    expect(outcomes[0]).toBe('written: true');
    expect(outcomes[1]).toBe('refused: audit record field duration_ms is a bigint; number belongs there');
    expect(outcomes[2]).toBe('written: true');
    // The failure was offered to the log, which could not take it.
    expect(attempts.some((line) => line.includes('audit records could not be written'))).toBe(true);
    const lines = readFileSync(log.file, 'utf8').trim().split('\n').map((line) => JSON.parse(line) as { path: string });
    expect(lines.map((line) => line.path)).toEqual(['/before', '/after']);
    expect(log.healthy).toBe(true);
  });

  it('encodes each batch as UTF-8 lines: non-ASCII paths, a batch larger than the reused buffer, and small ones after it', async () => {
    const { log } = await openLog();
    // Two-, three- and four-byte UTF-8 (the worst case the encoder makes room for is 3 bytes per UTF-16 unit).
    const odd = ['/caf\u00e9', '/\u20ac/\u4e2d\u6587', '/\ud83d\ude00', '/x\u0000"\\'];
    expect(await Promise.all(odd.map((path) => log.append(record(path))))).toEqual([true, true, true, true]);
    // ~2.4 MiB in one batch: past the 1 MiB buffer kept between writes, so it gets a buffer of its own.
    const long = '/\u4e2d'.repeat(400);
    const big = Array.from({ length: 1000 }, (_, i) => log.append(record(`${long}/${i}`)));
    expect((await Promise.all(big)).every((ok) => ok)).toBe(true);
    expect(await log.append(record('/after'))).toBe(true);
    const text = readFileSync(log.file, 'utf8');
    const lines = text.trim().split('\n');
    expect(lines).toHaveLength(1005);
    expect(lines.slice(0, 4).map((line) => (JSON.parse(line) as AuditRecord).path)).toEqual(odd);
    expect((JSON.parse(lines[1003] as string) as AuditRecord).path).toBe(`${long}/999`);
    expect((JSON.parse(lines[1004] as string) as AuditRecord).path).toBe('/after');
    expect(verifyChain([{ name: 'audit.jsonl', text }])).toMatchObject({ ok: true, records: 1005, lastHash: log.head });
  });

  it('close() writes what is still waiting for its window', async () => {
    const { log } = await openLog();
    const pending = log.append(record('/at-close'), true);
    logs.splice(logs.indexOf(log), 1);
    await log.close();
    expect(await pending).toBe(true);
    expect(readFileSync(log.file, 'utf8')).toContain('"/at-close"');
  });

  // The request path's form (appendAnswered): a callback per record instead of a promise, told the same
  // outcomes append's promise gives, once each, in order, and never left unsettled.
  it('appendAnswered tells each callback how its record ended: written, refused with the error, or after close', async () => {
    const { log } = await openLog();
    const heard: Array<{ path: string | null; written: boolean; error: string | null }> = [];
    const listen = (r: AuditRecord) => (written: boolean, error: Error | null): void => void heard.push({ path: r.path, written, error: error?.message ?? null });
    const good = record('/answered');
    const bad = record('/unserializable');
    (bad as unknown as { duration_ms: bigint }).duration_ms = 1n;
    const after = record('/after-bad');
    for (const r of [good, bad, after]) log.appendAnswered(r, listen(r));
    expect(heard).toEqual([]);
    await sleep(WINDOW_MS + 100);
    expect(heard).toEqual([
      { path: '/unserializable', written: false, error: 'audit record field duration_ms is a bigint; number belongs there' },
      { path: '/answered', written: true, error: null },
      { path: '/after-bad', written: true, error: null },
    ]);
    // A callback that throws does not keep the rest of its batch from hearing.
    const second: string[] = [];
    log.appendAnswered(record('/throws'), () => {
      throw new Error('a callback fault (injected by the test)');
    });
    log.appendAnswered(record('/still-heard'), (written) => void second.push(`still-heard ${written}`));
    await sleep(WINDOW_MS + 100);
    expect(second).toEqual(['still-heard true']);
    logs.splice(logs.indexOf(log), 1);
    await log.close();
    const closed: Array<[boolean, string | undefined]> = [];
    log.appendAnswered(record('/after-close'), (written, error) => void closed.push([written, error?.message]));
    expect(closed).toEqual([[false, 'audit log is closed']]);
    expect(readFileSync(log.file, 'utf8')).not.toContain('/after-close');
  });

  it('never rotates a file that is not a regular file (audit.file: /dev/null discards, it is not renamed)', async () => {
    // Through a symlink: were the rule broken, the link would be renamed, never /dev/null itself.
    const dir = tempDir('audit-devnull-');
    const file = join(dir, 'audit-to-null');
    symlinkSync('/dev/null', file);
    const log = new AuditLog({ file, secrets: new SecretCatalog(), onFailure: 'refuse', maxBytes: 600, keep: 2, webhook: null, logger: null, windowMs: WINDOW_MS });
    await log.open();
    logs.push(log);
    // Each record is ~700 bytes: every write after the first would pass max_bytes.
    for (const path of ['/one', '/two', '/three']) expect(await log.append(record(path), true)).toBe(true);
    expect(lstatSync(file).isSymbolicLink()).toBe(true);
    expect(existsSync(`${file}.1`)).toBe(false);
    expect(log.healthy).toBe(true);
  });
});
