/**
 * `airlock token`: a new agent token and the hash line that goes into the config. The token goes to
 * stdout first (for scripts), then the hash; the explanation goes to stderr.
 */
import { generateAgentToken } from '../identity/agent-token.js';
import { UsageError, type CliIo } from './cli-io.js';

export async function tokenCommand(io: CliIo): Promise<number> {
  // `airlock token support-bot` reads as if it named the token's agent; it cannot (the hash line goes
  // into whichever agent the operator puts it in), so the argument is refused rather than ignored.
  // The arguments are not echoed: `airlock token alk_...` ("hash my token") would print a token to a CI log.
  if (io.args.length > 0) throw new UsageError(`usage: airlock token   (no arguments: it prints a new token and its hash; put the hash under the agent's tokens in the config); got ${io.args.length} argument(s)`);
  const pair = generateAgentToken();
  io.stdout.write(`${pair.token}\n${pair.hash}\n`);
  // A token that never reached stdout (a full disk) must not have its hash pasted into a config: the
  // snippet would admit a token nobody holds. main.ts says what failed, and exits 1 (EPIPE: a reader
  // that went away, 0).
  if ((await io.stdoutSettled?.()) != null) return 0;
  io.stderr.write(
    [
      '',
      'The first line is the agent token: give it to the agent as its API key. It is shown only once.',
      'The second line is its hash: add it to the agent in your config, for example',
      `  agents:\n    support-bot:\n      tokens: ["${pair.hash}"]`,
      'and save: a running Airlock applies it within about a second (with reload.watch, the default; otherwise',
      '`kill -HUP` its pid, shown in its start-up summary). `npx airlock check` shows any problem with the edit.',
      '',
    ].join('\n'),
  );
  return 0;
}
