/**
 * `airlock secrets set` run several times at once (found by review): each read the file, added its
 * secret and renamed its copy over the file, so all but one of the secrets were lost while every command
 * printed "Stored". Changes now take a lock in turn. Real processes of the built CLI, started together.
 */
import { spawn } from 'node:child_process';
import { existsSync, readdirSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { assertNoLeak } from '../helpers/assert-no-leak.js';
import { canary } from '../helpers/canary.js';
import { writeConfigFile } from '../helpers/operator.js';
import { DIST_MAIN } from '../helpers/spawn-serve.js';
import { tempDir } from '../helpers/start-proxy.js';

const COUNT = 8;

function run(args: string[], stdin: string): Promise<{ code: number | null; stdout: string; stderr: string }> {
  return new Promise((resolve) => {
    const child = spawn(process.execPath, [DIST_MAIN, ...args], { env: { PATH: process.env['PATH'] ?? '' }, stdio: ['pipe', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (chunk: Buffer) => (stdout += chunk.toString('utf8')));
    child.stderr.on('data', (chunk: Buffer) => (stderr += chunk.toString('utf8')));
    child.on('close', (code) => resolve({ code, stdout, stderr }));
    child.stdin.end(stdin);
  });
}

describe('secrets set, several at once', () => {
  const dir = tempDir('airlock-secrets-concurrent-');
  const values = Array.from({ length: COUNT }, (_, i) => canary(`concurrent-${i}`));
  const outputs: string[] = [];

  afterAll(() => {
    assertNoLeak(values, [{ name: 'cli output', text: outputs.join('\n') }]);
    rmSync(dir, { recursive: true, force: true });
  });

  it(`${COUNT} sets started together each keep their secret, and no lock is left behind`, async () => {
    expect(existsSync(DIST_MAIN), `${DIST_MAIN} is missing: run \`npm run build\` (npm test does)`).toBe(true);
    const config = writeConfigFile(dir, { listen: '127.0.0.1:0', data_dir: join(dir, 'data'), services: {}, agents: {} });
    // The master key is made by the first command; made here first, so the eight share it.
    const first = await run(['secrets', 'set', 'first', '--config', config], `${canary('first-of-all')}\n`);
    expect(first.code, first.stderr).toBe(0);
    const answers = await Promise.all(values.map((value, i) => run(['secrets', 'set', `name-${i}`, '--config', config], `${value}\n`)));
    for (const answer of answers) {
      outputs.push(answer.stdout, answer.stderr);
      expect(answer.code, answer.stderr).toBe(0);
    }
    const listed = await run(['secrets', 'list', '--config', config], '');
    outputs.push(listed.stdout, listed.stderr);
    for (let i = 0; i < COUNT; i++) expect(listed.stdout).toContain(`name-${i}`);
    expect(readdirSync(join(dir, 'data')).filter((name) => name.endsWith('.lock'))).toEqual([]);
  });
});
