/**
 * The process log: pino, JSON lines. Observe by allowlist: call sites log named fields (ids, names,
 * codes, timings), never request or response objects, header values or query strings. As a backstop
 * every line is scrubbed of known secret values before it reaches the destination.
 */
import { pino, type Logger } from 'pino';
import type { SecretCatalog } from '../redaction/secret-catalog.js';
import type { AuditRecord } from './audit-record.js';
import { IsoTime } from './iso-time.js';
import { jsonBoolean, jsonNumber, jsonString } from './json-text.js';

export interface LogDestination {
  write(line: string): void;
}

export type LogLevel = 'fatal' | 'error' | 'warn' | 'info' | 'debug' | 'trace' | 'silent';

export interface Logging {
  /** Every line but the per-request one. */
  readonly logger: Logger;
  /** The one line per request (same destination, same level). */
  readonly requestLog: RequestLog;
}

/** Both logs write through one scrubbing destination, so no line can leave unscrubbed. */
export function createLogging(level: LogLevel, destination: LogDestination, secrets: SecretCatalog, requests: RequestLines = 'all'): Logging {
  const scrubbing: LogDestination = {
    write(line: string): void {
      let scrubbed: string;
      try {
        scrubbed = secrets.scrub(line);
      } catch {
        // Fail closed for the line (it may hold a secret the scrubber could not check) and never for
        // the caller: a throwing log call ended timers, listeners and with them the process.
        scrubbed = `{"level":"error","time":"${new Date().toISOString()}","msg":"a log line was dropped: the secret scrubber failed on it"}\n`;
      }
      destination.write(scrubbed);
    },
  };
  const logger = pino(
    {
      level,
      base: undefined,
      timestamp: cachedIsoTime(),
      formatters: { level: (label) => ({ level: label }) },
      serializers: { err: serializeError },
    },
    scrubbing,
  );
  const requestLog = new RequestLog(logger, scrubbing);
  requestLog.lines = requests;
  return { logger, requestLog };
}

export type RequestLogLevel = 'info' | 'warn' | 'error';

/** log.requests: a line for every request, or only for those logged at warn or error. */
export type RequestLines = 'all' | 'problems';

/**
 * The one log line per request, written straight to the destination in the shape pino writes
 * (`{"level":..,"time":..,<fields>,"msg":"request"}`).
 *
 * Why not `logger.info(fields)`: pino's generic serializer walks the object, checks every value's type
 * and looks up serializers per key; for these sixteen fixed fields that was a tenth of the proxy's CPU
 * per request (npm run profile). Here each field is written as JSON.stringify would write it (json-text.ts),
 * in a fixed order. The level in force is pino's, so a reload that changes `log.level` applies; a reload
 * sets `lines` too.
 *
 * `lines: 'problems'` leaves the info lines (answered requests, 4xx) to the audit log, which records every
 * request anyway: building, scrubbing and writing the line was ~7% of the CPU per small request.
 */
export class RequestLog {
  readonly #logger: Logger;
  readonly #destination: LogDestination;
  readonly #time = cachedIsoTime();
  lines: RequestLines = 'all';

  constructor(logger: Logger, destination: LogDestination) {
    this.#logger = logger;
    this.#destination = destination;
  }

  write(level: RequestLogLevel, record: AuditRecord, audited: boolean, cause?: unknown): void {
    if ((level === 'info' && this.lines === 'problems') || !this.#logger.isLevelEnabled(level)) return;
    const r = record;
    const err = cause === undefined ? '' : `,"err":${JSON.stringify(serializeError(cause))}`;
    this.#destination.write(
      `{"level":"${level}"${this.#time()},"request_id":${jsonString(r.request_id)},"trace_id":${jsonString(r.trace_id)},"agent":${jsonString(r.agent)},"service":${jsonString(r.service)}` +
        `,"method":${jsonString(r.method)},"path":${jsonString(r.path)},"route":${jsonString(r.route)},"scope":${jsonString(r.scope)},"decision":${jsonString(r.decision)},"code":${jsonString(r.code)}` +
        `,"status":${jsonNumber(r.status)},"upstream_status":${jsonNumber(r.upstream_status)},"duration_ms":${jsonNumber(r.duration_ms)},"incomplete":${jsonBoolean(r.incomplete)},"audited":${jsonBoolean(audited)}${err},"msg":"request"}\n`,
    );
  }
}

/**
 * pino's `,"time":"<ISO>"` fragment. pino's own isoTime formats a new Date per line; under load many
 * lines share a millisecond.
 */
function cachedIsoTime(): () => string {
  const iso = new IsoTime();
  let lastMs = -1;
  let last = '';
  return () => {
    const now = Date.now();
    if (now !== lastMs) {
      lastMs = now;
      last = `,"time":"${iso.format(now)}"`;
    }
    return last;
  };
}

/** Errors keep their type, code and message chain; stacks only at debug, where operators opt in. */
function serializeError(error: unknown): Record<string, unknown> {
  if (!(error instanceof Error)) return { message: String(error) };
  const out: Record<string, unknown> = { type: error.name, message: error.message };
  const code = (error as { code?: unknown }).code;
  if (typeof code === 'string') out['code'] = code;
  if (error.cause !== undefined) out['cause'] = serializeError(error.cause);
  return out;
}
