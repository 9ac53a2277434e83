/**
 * `airlock token`: a new agent token and the hash line that goes into the config. The token goes to
 * stdout first (for scripts), then the hash; the explanation goes to stderr.
 */
import { generateAgentToken } from '../identity/agent-token.js';
import type { CliIo } from './cli-io.js';

export async function tokenCommand(io: CliIo): Promise<number> {
  const pair = generateAgentToken();
  io.stdout.write(`${pair.token}\n${pair.hash}\n`);
  io.stderr.write(
    [
      '',
      'The first line is the agent token: give it to the agent as its API key. It is shown only once.',
      'The second line is its hash: add it to the agent in your config, for example',
      `  agents:\n    support-bot:\n      tokens: ["${pair.hash}"]`,
      'then restart Airlock (`npx airlock check` first if you like).',
      '',
    ].join('\n'),
  );
  return 0;
}
