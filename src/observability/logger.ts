/**
 * The process log: pino, JSON lines. Observe by allowlist: call sites log named fields (ids, names,
 * codes, timings), never request or response objects, header values or query strings. As a backstop
 * every line is scrubbed of known secret values before it reaches the destination.
 */
import { pino, type Logger } from 'pino';
import type { SecretCatalog } from '../redaction/secret-catalog.js';

export interface LogDestination {
  write(line: string): void;
}

export type LogLevel = 'fatal' | 'error' | 'warn' | 'info' | 'debug' | 'trace' | 'silent';

export function createLogger(level: LogLevel, destination: LogDestination, secrets: SecretCatalog): Logger {
  const scrubbing = {
    write(line: string): void {
      destination.write(secrets.scrub(line));
    },
  };
  return pino(
    {
      level,
      base: undefined,
      timestamp: isoTimeCachedPerMillisecond(),
      formatters: { level: (label) => ({ level: label }) },
      serializers: { err: errorSerializer },
    },
    scrubbing,
  );
}

/** pino's isoTime, formatting a new Date per line; under load many lines share a millisecond. */
function isoTimeCachedPerMillisecond(): () => string {
  let lastMs = -1;
  let last = '';
  return () => {
    const now = Date.now();
    if (now !== lastMs) {
      lastMs = now;
      last = `,"time":"${new Date(now).toISOString()}"`;
    }
    return last;
  };
}

/** Errors keep their type, code and message chain; stacks only at debug, where operators opt in. */
function errorSerializer(error: unknown): Record<string, unknown> {
  if (!(error instanceof Error)) return { message: String(error) };
  const out: Record<string, unknown> = { type: error.name, message: error.message };
  const code = (error as { code?: unknown }).code;
  if (typeof code === 'string') out['code'] = code;
  if (error.cause !== undefined) out['cause'] = errorSerializer(error.cause);
  return out;
}
