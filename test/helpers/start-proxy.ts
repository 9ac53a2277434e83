/**
 * Builds and starts a real Airlock from a test config object (validated exactly like a YAML file), on
 * 127.0.0.1 port 0, with its own temporary data_dir, its own environment and a captured log.
 */
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { startAirlock, type RunningAirlock } from '../../src/app.js';
import { formatProblem } from '../../src/config/config-problem.js';
import { buildConfig } from '../../src/config/load-config.js';
import type { AirlockConfig } from '../../src/config/types.js';
import type { AuditRecord } from '../../src/observability/audit-record.js';

export interface ProxyFixture {
  readonly url: string;
  readonly serviceUrls: Readonly<Record<string, string>>;
  readonly config: AirlockConfig;
  readonly dataDir: string;
  readonly airlock: RunningAirlock;
  /** Every log line written so far, raw. */
  readonly logLines: string[];
  logRecords(): Array<Record<string, unknown>>;
  auditText(): string;
  auditRecords(): AuditRecord[];
  /** Waits until the audit log holds at least n records (records are written as responses finish). */
  waitForAudit(n: number, timeoutMs?: number): Promise<AuditRecord[]>;
  close(): Promise<void>;
}

export interface ProxyOptions {
  env?: Record<string, string>;
  /** Reuse a data_dir (e.g. one a CLI test wrote secrets into); default a fresh temporary one. */
  dataDir?: string;
  /** The proxy's clock (AirlockOptions.now): a test moves it on so that time passes without a wait. */
  now?: () => Date;
}

export function tempDir(prefix = 'airlock-test-'): string {
  return mkdtempSync(join(tmpdir(), prefix));
}

export async function startProxy(input: Record<string, unknown>, options: ProxyOptions = {}): Promise<ProxyFixture> {
  const ownDir = options.dataDir === undefined;
  const dataDir = options.dataDir ?? tempDir();
  // A proxy that does not start (many tests expect that) leaves no temporary directory behind.
  const abandon = (): void => {
    if (ownDir) rmSync(dataDir, { recursive: true, force: true });
  };
  const built = buildConfig({ listen: '127.0.0.1:0', data_dir: dataDir, ...input }, { baseDir: dataDir });
  if (built.config === null) {
    abandon();
    throw new Error(`test config is invalid:\n${built.problems.map((p) => formatProblem(p, null)).join('\n')}`);
  }
  const config = built.config;
  const logLines: string[] = [];
  let airlock: RunningAirlock;
  try {
    airlock = await startAirlock(config, {
      env: options.env ?? {},
      logDestination: { write: (line: string) => void logLines.push(line) },
      ...(options.now === undefined ? {} : { now: options.now }),
    });
  } catch (error) {
    abandon();
    throw error;
  }
  const auditText = (): string => {
    try {
      return readFileSync(config.audit.file, 'utf8');
    } catch {
      return '';
    }
  };
  const auditRecords = (): AuditRecord[] =>
    auditText()
      .split('\n')
      .filter((line) => line !== '')
      .map((line) => JSON.parse(line) as AuditRecord)
      // Airlock's own start/reload/stop records (actor "airlock") are not requests.
      .filter((record) => record.actor !== 'airlock');
  return {
    url: airlock.url,
    serviceUrls: airlock.serviceUrls,
    config,
    dataDir,
    airlock,
    logLines,
    logRecords: () => logLines.map((line) => JSON.parse(line) as Record<string, unknown>),
    auditText,
    auditRecords,
    async waitForAudit(n, timeoutMs = 5000) {
      const deadline = Date.now() + timeoutMs;
      for (;;) {
        const records = auditRecords();
        if (records.length >= n) return records;
        if (Date.now() > deadline) throw new Error(`audit log has ${records.length} records, expected ${n}`);
        await new Promise((resolve) => setTimeout(resolve, 10));
      }
    },
    async close() {
      // Tests do not wait out shutdown_timeout for a connection they left hanging.
      await airlock.close(2_000);
      if (ownDir) rmSync(dataDir, { recursive: true, force: true });
    },
  };
}
