/**
 * The files whose loss fails open or loses secrets are written so that a power cut leaves the old
 * contents or the new (src/state/write-durably.ts): the new contents are fsynced before they are
 * renamed (or linked) into place, and the directory is fsynced after. A power cut cannot be staged
 * here, so the order of the system calls is what is checked: the real CLI and the real state backend,
 * each run under strace (Debian package strace; skipped loudly without it, and failing under CI=true,
 * where .ci/run installs it). The CLI and backend run from dist/: `npm run build` first when running
 * this file alone.
 */
import { spawnSync } from 'node:child_process';
import { readdirSync, readFileSync, statSync, writeFileSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { describe, expect, it } from 'vitest';
import { canary } from '../helpers/canary.js';
import { assertNoLeak } from '../helpers/assert-no-leak.js';
import { tempDir } from '../helpers/start-proxy.js';

const REPO = fileURLToPath(new URL('../..', import.meta.url));
const DIST = resolve(REPO, 'dist');

function straceAvailable(): boolean {
  const probe = spawnSync('strace', ['-o', '/dev/null', 'true']);
  if (probe.error !== undefined || probe.status !== 0) {
    // .ci/run installs strace, so in CI a missing or blocked strace is a broken machine, not a skip.
    if (process.env['CI'] !== undefined && process.env['CI'] !== '') throw new Error(`strace cannot trace here (${probe.error?.message ?? probe.stderr.toString()}); CI installs it (.ci/run)`);
    console.warn('\n*** strace is not installed (or cannot trace here): the durable-write tests are SKIPPED. Install the Debian package `strace` (apt-get install -y strace). ***\n');
    return false;
  }
  return true;
}

/** Runs node with args under strace; the trace's lines (every thread, file calls only). */
function traced(args: readonly string[], options: { input?: string; cwd?: string } = {}): { lines: string[]; stdout: string; stderr: string; status: number | null } {
  const log = join(tempDir('strace-'), 'trace');
  const run = spawnSync(
    'strace',
    ['-f', '-qq', '-s', '256', '-e', 'trace=openat,fsync,fdatasync,rename,renameat,renameat2,link,linkat,close', '-o', log, process.execPath, ...args],
    { input: options.input ?? '', cwd: options.cwd ?? REPO, encoding: 'utf8', env: { ...process.env, NO_COLOR: '1' }, timeout: 60_000 },
  );
  return { lines: readFileSync(log, 'utf8').split('\n'), stdout: run.stdout, stderr: run.stderr, status: run.status };
}

interface Durability {
  /** The line indexes of: the temporary file's open, its fsync, its close, the rename/link into place, the directory's fsync. */
  readonly open: number;
  readonly sync: number;
  readonly close: number;
  readonly place: number;
  readonly dirSync: number;
}

/**
 * Finds, in a trace, the write of `target` through a temporary file: which fd the temporary file got,
 * when that fd was fsynced and closed, when the file was renamed or linked to target, and when target's
 * directory was opened and fsynced after that. -1 for a step not found.
 */
function durability(lines: readonly string[], target: string): Durability {
  const escaped = target.replace(/[.*+?^${}()|[\]\\]/g, '\\$&');
  const opened = new RegExp(`^(\\d+)\\s+openat\\(AT_FDCWD, "${escaped}\\.[0-9a-f]{12}\\.tmp", [^)]*O_CREAT[^)]*O_EXCL[^)]*\\) = (\\d+)`);
  let open = -1;
  let fd = '';
  for (let i = 0; i < lines.length && open < 0; i++) {
    const match = opened.exec(lines[i]!);
    if (match !== null) [open, fd] = [i, match[2]!];
  }
  const after = (from: number, test: (line: string) => boolean): number => {
    if (from < 0) return -1;
    for (let i = from + 1; i < lines.length; i++) if (test(lines[i]!)) return i;
    return -1;
  };
  // The fd's own fsync, before it is closed (its number may be reused after).
  const close = after(open, (l) => new RegExp(`^\\d+\\s+close\\(${fd}\\)\\s*= 0`).test(l));
  const syncAt = after(open, (l) => new RegExp(`^\\d+\\s+f(data)?sync\\(${fd}\\)\\s*= 0`).test(l));
  const sync = syncAt >= 0 && (close < 0 || syncAt < close) ? syncAt : -1;
  const place = after(open, (l) => new RegExp(`(rename|renameat2?|link|linkat)\\(.*"${escaped}\\.[0-9a-f]{12}\\.tmp", .*"${escaped}"`).test(l));
  const dir = target.slice(0, target.lastIndexOf('/'));
  const dirOpen = after(place, (l) => l.includes(`openat(AT_FDCWD, "${dir}", O_RDONLY`));
  const dirFd = dirOpen < 0 ? '' : /= (\d+)$/.exec(lines[dirOpen]!)?.[1] ?? '';
  const dirSync = after(dirOpen, (l) => new RegExp(`^\\d+\\s+fsync\\(${dirFd}\\)\\s*= 0`).test(l));
  return { open, sync, close, place, dirSync };
}

function expectDurable(d: Durability): void {
  expect(d.open, 'the temporary file was made (O_CREAT|O_EXCL)').toBeGreaterThanOrEqual(0);
  expect(d.sync, 'the temporary file was fsynced before it was closed').toBeGreaterThan(d.open);
  expect(d.place, 'then renamed or linked into place').toBeGreaterThan(d.sync);
  expect(d.dirSync, 'then the directory was fsynced').toBeGreaterThan(d.place);
}

describe.skipIf(!straceAvailable())('durable writes (the order of system calls, under strace)', () => {
  it('`airlock secrets set` makes the master key and writes secrets.json through a synced temporary file, then syncs the directory', () => {
    const dir = tempDir('durable-secrets-');
    const dataDir = join(dir, 'data');
    const config = join(dir, 'airlock.yaml');
    writeFileSync(config, 'listen: 127.0.0.1:0\ndata_dir: ./data\nservices: {}\nagents: {}\n');
    const value = canary('durable');

    const run = traced([join(DIST, 'main.js'), 'secrets', 'set', 'DURABLE_ONE', '--config', config], { input: `${value}\n` });

    expect(run.status, run.stderr).toBe(0);
    expectDurable(durability(run.lines, join(dataDir, 'master.key')));
    expectDurable(durability(run.lines, join(dataDir, 'secrets.json')));
    // What was written is what a reader gets; no temporary file is left; the modes are private.
    expect(readFileSync(join(dataDir, 'master.key'), 'utf8')).toMatch(/^[A-Za-z0-9+/]{43}=\n$/);
    expect(JSON.stringify(JSON.parse(readFileSync(join(dataDir, 'secrets.json'), 'utf8')))).toContain('DURABLE_ONE');
    expect(readdirSync(dataDir).filter((name) => name.endsWith('.tmp'))).toEqual([]);
    expect(statSync(join(dataDir, 'master.key')).mode & 0o777).toBe(0o600);
    expect(statSync(join(dataDir, 'secrets.json')).mode & 0o777).toBe(0o600);
    assertNoLeak([value], [{ name: 'stdout', text: run.stdout }, { name: 'stderr', text: run.stderr }]);

    // A second set replaces secrets.json the same way, with the key kept.
    const key = readFileSync(join(dataDir, 'master.key'), 'utf8');
    const second = canary('durable2');
    const again = traced([join(DIST, 'main.js'), 'secrets', 'set', 'DURABLE_TWO', '--config', config], { input: `${second}\n` });
    expect(again.status, again.stderr).toBe(0);
    assertNoLeak(
      [value, second],
      [
        { name: 'second stdout', text: again.stdout },
        { name: 'second stderr', text: again.stderr },
        { name: 'secrets.json (values sealed)', text: readFileSync(join(dataDir, 'secrets.json'), 'utf8') },
      ],
    );
    expectDurable(durability(again.lines, join(dataDir, 'secrets.json')));
    expect(readFileSync(join(dataDir, 'master.key'), 'utf8')).toBe(key);
    expect(readFileSync(join(dataDir, 'secrets.json'), 'utf8')).toContain('DURABLE_ONE');
  });

  it("the state file's compaction (revocations, sessions) is written through a synced temporary file", () => {
    const dir = tempDir('durable-state-');
    const file = join(dir, 'state.jsonl');
    const script = join(dir, 'compact.mjs');
    writeFileSync(
      script,
      `import { FileStateBackend } from ${JSON.stringify(join(DIST, 'state/file-backend.js'))};
const backend = new FileStateBackend(${JSON.stringify(file)});
const revocation = { kind: 'agent', target: 'durable-bot', by: 'test', reason: 'r', at: 1 };
await backend.append({ type: 'revocation.added', revocation });
await backend.compact([{ type: 'revocation.added', revocation }]);
await backend.close();
`,
    );
    const run = traced([script]);
    expect(run.status, run.stderr).toBe(0);
    expectDurable(durability(run.lines, file));
    expect(readFileSync(file, 'utf8')).toContain('durable-bot');
    expect(readdirSync(dir).filter((name) => name.endsWith('.tmp'))).toEqual([]);
  });
});
