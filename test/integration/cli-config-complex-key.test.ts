/**
 * A YAML key that is a list or a map: `check` reports it with its path, a key-shaped value in it
 * masked. The YAML library also printed it whole as a node process warning on stderr ("Keys with
 * collection values will be stringified ..."), past every mask, a pasted credential included.
 */
import { spawnSync } from 'node:child_process';
import { existsSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterAll, describe, expect, it } from 'vitest';
import { assertNoLeak } from '../helpers/assert-no-leak.js';
import { canary } from '../helpers/canary.js';
import { tempDir } from '../helpers/start-proxy.js';

const MAIN = fileURLToPath(new URL('../../dist/main.js', import.meta.url));
const dir = tempDir('airlock-complex-key-');
afterAll(() => rmSync(dir, { recursive: true, force: true }));

describe('a list used as a YAML key', () => {
  it('is reported by check with its path and the key shape masked, and node prints no warning holding it', () => {
    expect(existsSync(MAIN), `${MAIN} is missing: run \`npm run build\` (npm test does)`).toBe(true);
    const key = canary('yaml-complex-key');
    const file = join(dir, 'airlock.yaml');
    writeFileSync(file, `services:\n  ? [${key}, other]\n  : {}\nagents: {}\n`);
    const run = spawnSync(process.execPath, [MAIN, 'check', '--config', file], { encoding: 'utf8', env: { PATH: process.env['PATH'] ?? '' } });
    expect(run.status).toBe(1);
    expect(run.stdout + run.stderr).toMatch(/airlock\.yaml:2:3: error at services\["\[ \[a value that looks like a key\], other \]"\]/);
    expect(run.stderr).not.toContain('Keys with collection values');
    assertNoLeak([key], [{ name: 'check output', text: run.stdout + run.stderr }]);
  });
});
