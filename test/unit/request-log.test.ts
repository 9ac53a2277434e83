/**
 * The per-request log line is written without pino's generic serializer (logger.ts, RequestLog). It must read
 * exactly as the pino line for the same fields would, obey the level in force, and pass the scrubber.
 */
import { describe, expect, it } from 'vitest';
import { Credential } from '../../src/credentials/credential.js';
import { IsoTime } from '../../src/observability/iso-time.js';
import { createLogging } from '../../src/observability/logger.js';
import { newRecord } from '../../src/pipeline/run-pipeline.js';
import { SecretCatalog } from '../../src/redaction/secret-catalog.js';
import { assertNoLeak } from '../helpers/assert-no-leak.js';
import { canary } from '../helpers/canary.js';

function setup(level: 'info' | 'warn') {
  const lines: string[] = [];
  const catalog = new SecretCatalog();
  const { logger, requestLog } = createLogging(level, { write: (line) => lines.push(line) }, catalog);
  return { lines, catalog, logger, requestLog };
}

function withoutTime(line: string): Record<string, unknown> {
  const parsed = JSON.parse(line) as Record<string, unknown>;
  expect(typeof parsed['time']).toBe('string');
  delete parsed['time'];
  return parsed;
}

describe('request log line', () => {
  it('reads as the pino line for the same fields, escapes and nulls included, with and without an error', () => {
    const { lines, logger, requestLog } = setup('info');
    const record = newRecord({ nowMs: Date.now, isoTime: new IsoTime() }, 'GET', '127.0.0.1');
    Object.assign(record, { agent: 'bot "one"', service: 'api', path: '/v1/caf\u00e9\n\\x', route: '/v1/:id', scope: 'read', status: 502, upstream_status: null, duration_ms: 1.25, code: 'upstream_unreachable', incomplete: true });
    const cause = Object.assign(new Error('connect ECONNREFUSED', { cause: new Error('inner') }), { code: 'ECONNREFUSED' });
    for (const [level, err] of [['info', undefined], ['warn', cause]] as const) {
      requestLog.write(level, record, false, err);
      const fields = { request_id: record.request_id, trace_id: record.trace_id, agent: record.agent, service: record.service, method: record.method, path: record.path, route: record.route, scope: record.scope, decision: record.decision, code: record.code, status: record.status, upstream_status: record.upstream_status, duration_ms: record.duration_ms, incomplete: record.incomplete, audited: false };
      logger[level](err === undefined ? fields : { ...fields, err }, 'request');
      const [ours, pinos] = lines.splice(0, 2) as [string, string];
      expect(ours.endsWith('}\n')).toBe(true);
      expect(withoutTime(ours)).toEqual(withoutTime(pinos));
      expect(Object.keys(withoutTime(ours))).toEqual(Object.keys(withoutTime(pinos)));
    }
  });

  it('writes nothing below the level in force, and follows a level change', () => {
    const { lines, logger, requestLog } = setup('warn');
    const record = newRecord({ nowMs: Date.now, isoTime: new IsoTime() }, 'GET', undefined);
    requestLog.write('info', record, true);
    expect(lines).toHaveLength(0);
    requestLog.write('warn', record, true);
    expect(lines).toHaveLength(1);
    logger.level = 'info';
    requestLog.write('info', record, true);
    expect(lines).toHaveLength(2);
  });

  it('is scrubbed of known secrets like every other line', () => {
    const secret = canary('request-log');
    const { lines, catalog, requestLog } = setup('info');
    catalog.remember(new Credential('env:KEY', secret));
    const record = newRecord({ nowMs: Date.now, isoTime: new IsoTime() }, 'GET', undefined);
    record.path = `/v1/${secret}`;
    requestLog.write('info', record, true);
    expect(lines[0]).toContain('[REDACTED]');
    assertNoLeak([secret], [{ name: 'request log line', text: lines.join('') }]);
  });
});

describe('a scrubber that fails', () => {
  /** The real catalogue, except that scrubbing a line that mentions FAULT throws, as a scrubber bug would. */
  class FaultyCatalog extends SecretCatalog {
    override scrub(text: string): string {
      if (text.includes('FAULT')) throw new Error('scrubber fault (injected by the test)');
      return super.scrub(text);
    }
  }

  it('drops that line for a fixed one, and neither throws to the caller nor stops later lines', () => {
    const secret = canary('scrub-fault');
    const lines: string[] = [];
    const catalog = new FaultyCatalog();
    catalog.remember(new Credential('env:KEY', secret));
    const { logger } = createLogging('info', { write: (line) => lines.push(line) }, catalog);
    expect(() => logger.error({ detail: `FAULT ${secret}` }, 'about to fail')).not.toThrow();
    logger.info({ detail: secret }, 'after');
    expect(lines).toHaveLength(2);
    expect(JSON.parse(lines[0] as string)).toMatchObject({ level: 'error', msg: 'a log line was dropped: the secret scrubber failed on it' });
    expect(JSON.parse(lines[1] as string)).toMatchObject({ msg: 'after', detail: '[REDACTED]' });
    assertNoLeak([secret], [{ name: 'log', text: lines.join('') }]);
  });
});
