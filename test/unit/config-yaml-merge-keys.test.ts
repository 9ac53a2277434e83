/**
 * YAML merge keys (`<<: *defaults`), the usual way to share a service's settings between entries (as
 * docker-compose files do). The parser ran with YAML 1.2's core schema, which has none: check said
 * `unknown key "<<"` and that upstream, credential and routes were required, about a file whose
 * every key was written. Merged keys are read now, a key written beside the merge wins, and what is
 * wrong in merged settings is still reported with its path.
 */
import { rmSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { formatProblem } from '../../src/config/config-problem.js';
import { parseConfigText } from '../../src/config/load-config.js';
import { tempDir } from '../helpers/start-proxy.js';

const baseDir = tempDir('airlock-merge-keys-');
afterAll(() => rmSync(baseDir, { recursive: true, force: true }));
const file = join(baseDir, 'airlock.yaml');

const shared = (timeouts: string): string => `
listen: 127.0.0.1:0
services:
  openai: &llm
    upstream: https://api.openai.com
    credential: {secret: env:OPENAI_KEY}
    timeouts: ${timeouts}
    routes:
      - {method: POST, path: /v1/chat/completions, scope: chat:write}
  openai-batch:
    <<: *llm
    prefix: /batch
    credential: {secret: env:OPENAI_BATCH_KEY}
`;

describe('YAML merge keys', () => {
  it('merged settings are taken, and a key written beside the merge wins', () => {
    const loaded = parseConfigText(shared('{headers: 600}'), file);
    expect(loaded.problems.filter((p) => p.severity === 'error').map((p) => formatProblem(p, file))).toEqual([]);
    const batch = loaded.config?.services['openai-batch'];
    expect(batch?.upstream).toBe('https://api.openai.com');
    expect(batch?.timeouts.headers).toBe(600);
    expect(batch?.routes).toEqual([{ method: 'POST', path: '/v1/chat/completions', scope: 'chat:write', require_approval: false }]);
    expect(batch?.prefix).toBe('/batch');
    expect(batch?.credential.secret).toBe('env:OPENAI_BATCH_KEY');
  });

  it('a problem in the merged settings is reported at each service that takes them, with a line', () => {
    const loaded = parseConfigText(shared('{headers: 0}'), file);
    expect(loaded.config).toBeNull();
    const shown = loaded.problems.filter((p) => p.severity === 'error').map((p) => formatProblem(p, file));
    expect(shown).toEqual([
      expect.stringMatching(/airlock\.yaml:\d+:\d+: error at services\.openai\.timeouts\.headers: a duration of at least 1 ms/),
      expect.stringMatching(/airlock\.yaml:\d+:\d+: error at services\.openai-batch\.timeouts\.headers: a duration of at least 1 ms/),
    ]);
  });
});
