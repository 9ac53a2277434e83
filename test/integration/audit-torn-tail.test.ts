/**
 * A run that died in the middle of a write (power lost before the page cache reached the disk, a
 * partial write whose cut-off failed) leaves the audit file ending without a newline. The next run
 * must start its records on a line of their own: appended to the torn line, its airlock:start and the
 * airlock:audit-gap record that says the previous run did not stop were merged into one unparseable
 * line, so the record explaining the loss was itself lost, and a last line missing only its newline
 * turned an intact chain into a broken one.
 */
import { readFileSync, rmSync, writeFileSync } from 'node:fs';
import { describe, expect, it } from 'vitest';
import { generateAgentToken } from '../../src/identity/agent-token.js';
import type { AuditRecord } from '../../src/observability/audit-record.js';
import { assertNoLeak } from '../helpers/assert-no-leak.js';
import { canary } from '../helpers/canary.js';
import { runCliCapture } from '../helpers/operator.js';
import { sendRequest } from '../helpers/send-request.js';
import { startProxy, tempDir } from '../helpers/start-proxy.js';
import { startUpstream } from '../helpers/start-upstream.js';

const agent = generateAgentToken();

describe('an audit file whose last line was torn by a crash', () => {
  it.each([
    { cut: 'mid-record', tear: (line: string) => line.slice(0, 60), verifyCode: 2 },
    { cut: 'only the newline', tear: (line: string) => line, verifyCode: 3 },
  ])('the next run writes on a line of its own ($cut)', async ({ tear, verifyCode }) => {
    const upstream = await startUpstream();
    const key = canary('audit-torn-tail');
    const input = {
      services: { echo: { upstream: upstream.url, credential: { secret: 'env:TORN_KEY' }, routes: [{ method: 'GET', path: '/v1/*', scope: 'read' }] } },
      agents: { 'torn-bot': { tokens: [agent.hash], credentials: [{ service: 'echo', max_scope: ['read'] }] } },
    };
    const dataDir = tempDir('airlock-audit-torn-');
    const seen: string[] = [];
    try {
      const first = await startProxy(input, { env: { TORN_KEY: key }, dataDir });
      const file = first.config.audit.file;
      expect((await sendRequest(`${first.url}/echo/v1/last-call`, { headers: { authorization: `Bearer ${agent.token}` } })).status).toBe(200);
      await first.waitForAudit(1);
      await first.close();
      // As if the machine lost power while the last request's record was being written: no airlock:stop,
      // and the last line cut short, with no newline after it.
      const lines = readFileSync(file, 'utf8').split('\n').filter((l) => l !== '');
      const kept = lines.slice(0, -2);
      writeFileSync(file, `${kept.join('\n')}\n${tear(lines.at(-2) as string)}`);

      const second = await startProxy(input, { env: { TORN_KEY: key }, dataDir });
      await second.close();
      const after = readFileSync(file, 'utf8').split('\n').filter((l) => l !== '');
      // The torn line stays as it was (evidence), and every record of the next run is on its own line.
      expect(after[kept.length]).toBe(tear(lines.at(-2) as string));
      const next = after.slice(kept.length + 1).map((l) => JSON.parse(l) as AuditRecord);
      expect(next.map((r) => r.route)).toEqual(['airlock:start', 'airlock:audit-gap', 'airlock:stop']);

      const verify = await runCliCapture(['audit', 'verify', file], {}, seen);
      expect(verify.code, verify.stdout + verify.stderr).toBe(verifyCode);
      if (verifyCode === 2) expect(verify.stdout).toContain(`BROKEN at ${file} line ${kept.length + 1}: not valid JSON`);
      else expect(verify.stdout).toContain('The previous run of Airlock ended without an airlock:stop record');
      assertNoLeak([key, agent.token], [
        { name: 'audit', text: readFileSync(file, 'utf8') },
        { name: 'logs', text: first.logLines.join('') + second.logLines.join('') },
        { name: 'CLI output', text: seen.join('\n') },
      ]);
    } finally {
      await upstream.close();
      rmSync(dataDir, { recursive: true, force: true });
    }
  });
});
