/**
 * `airlock <command>`: dispatch to one file per command. Returns the exit code.
 *
 * What is refused here (an unknown command, an option a command does not know, an argument it does not
 * take) is never repeated: it may be a key pasted in the wrong place, and the terminal, a CI log or a
 * shell history collector would keep it (DESIGN.md invariant 1 counts CLI output; secrets-command.ts
 * follows the same rule). A near miss of a command's name is answered with the command's own name.
 */
import { editDistance } from '../config/edit-distance.js';
import { UsageError, type CliIo } from './cli-io.js';
import { checkCommand } from './check-command.js';
import { statusCommand } from './status-command.js';
import { anomaliesCommand } from './anomalies-command.js';
import { approvalsCommand } from './approvals-command.js';
import { auditCommand } from './audit-command.js';
import { demoCommand } from './demo-command.js';
import { restoreCommand, revokeCommand } from './revoke-command.js';
import { explainCommand } from './explain-command.js';
import { secretsCommand } from './secrets-command.js';
import { serveCommand } from './serve-command.js';
import { healthCommand } from './health-command.js';
import { tokenCommand } from './token-command.js';

const NOT_REPEATED = 'not repeated here: it may be a key';

const COMMANDS: Readonly<Record<string, { run: (io: CliIo) => Promise<number>; summary: string }>> = {
  serve: { run: serveCommand, summary: 'serve [--config F]                 run the proxy' },
  check: { run: checkCommand, summary: 'check [--config F] [--strict]      list every config problem; exit 1 if any' },
  token: { run: tokenCommand, summary: 'token                              print a new agent token and its sha256 hash' },
  secrets: { run: secretsCommand, summary: 'secrets set NAME | list | rm NAME | rotate REF | rekey [--config F]  manage the encrypted secrets file (value on stdin)' },
  explain: { run: explainCommand, summary: 'explain --agent NAME METHOD PATH [--host H] [--listen ADDR] [--config F]  the decision for a request, without calling upstream' },
  approvals: { run: approvalsCommand, summary: 'approvals list [--all] | approve ID [--reason TEXT] | deny ID [--reason TEXT] [--config F]  decide pending approvals' },
  revoke: { run: revokeCommand, summary: 'revoke agent|session|credential|service NAME | all [--config F]  the kill switch (--reason TEXT)' },
  restore: { run: restoreCommand, summary: 'restore agent|credential|service NAME | all [--reason TEXT] [--config F]  lift a revocation (a revoked session is ended for good)' },
  health: { run: healthCommand, summary: 'health [--ready] [--config F]      probe the agent listener (/_airlock/health or /ready), as a container HEALTHCHECK; exit 1 unless 200' },
  status: { run: statusCommand, summary: 'status [--json] [--config F]        a running Airlock: audit, revocations, approvals, sessions, credentials' },
  anomalies: { run: anomaliesCommand, summary: 'anomalies [--agent NAME] [--limit N] [--json] [--config F]  recent anomaly events and their evidence' },
  audit: { run: auditCommand, summary: 'audit verify [FILE...] [--complete] [--head HASH] [--gaps-known-until TIME] [--config F]  check the audit hash chain; names the first bad line' },
  demo: { run: demoCommand, summary: 'demo                               an offline walk-through with a stand-in upstream' },
};

export function usage(): string {
  return ['usage: airlock <command> [options]', '', ...Object.values(COMMANDS).map((c) => `  airlock ${c.summary}`), ''].join('\n');
}

export async function runCli(io: CliIo): Promise<number> {
  const [name, ...rest] = io.args;
  if (name === undefined) {
    // Asked for nothing: the usage is the answer to a mistake, so it goes where errors go.
    io.stderr.write(usage());
    return 1;
  }
  if (name === 'help' || name === '--help' || name === '-h') {
    io.stdout.write(usage());
    return 0;
  }
  const command = COMMANDS[name];
  if (command === undefined) {
    const near = nearestCommand(name);
    io.stderr.write(`That is not an airlock command (${NOT_REPEATED}).${near === null ? '' : ` Did you mean \`airlock ${near}\`?`}\n\n${usage()}`);
    return 1;
  }
  const commandUsage = `usage: airlock ${command.summary.replace(/\s{2,}/, '\n  ')}\n(the README's CLI table has every option)\n`;
  if (rest.includes('--help') || rest.includes('-h')) {
    io.stdout.write(commandUsage);
    return 0;
  }
  try {
    return await command.run({ ...io, args: rest });
  } catch (error) {
    const code = (error as { code?: string }).code;
    if (typeof code === 'string' && code.startsWith('ERR_PARSE_ARGS')) {
      io.stderr.write(`airlock ${name}: ${parseProblem(code, (error as Error).message)}\n${commandUsage}`);
      return 1;
    }
    if (error instanceof UsageError) {
      io.stderr.write(`${error.message}\n`);
      return 1;
    }
    io.stderr.write(`airlock ${name}: ${(error as Error).message}\n`);
    return 1;
  }
}

/**
 * node's parseArgs errors repeat what they refuse ("Unknown option '--sk_live_…'", "Unexpected argument
 * '…'"): said here without it. A missing or unwanted value names the option as the command defines it
 * (parseArgs builds that text from its own option table, never from the input), which is kept.
 */
function parseProblem(code: string, message: string): string {
  switch (code) {
    case 'ERR_PARSE_ARGS_UNKNOWN_OPTION':
      return `an option it does not know was given (${NOT_REPEATED}); its options are below.`;
    case 'ERR_PARSE_ARGS_UNEXPECTED_POSITIONAL':
      return `an argument it does not take was given (${NOT_REPEATED}); it takes only the options below.`;
    case 'ERR_PARSE_ARGS_INVALID_OPTION_VALUE': {
      const option = /^Option '(?:-[A-Za-z], )?(--[a-z][a-z0-9-]*)/.exec(message)?.[1];
      return `${option === undefined ? 'an option' : `the option ${option}`} is missing its value, or was given one it does not take (${NOT_REPEATED}); a value that starts with a dash is written --option=VALUE.`;
    }
    default:
      return `its arguments could not be read (${NOT_REPEATED}).`;
  }
}

/** The command a mistyped name was most likely meant to be (at most two edits away), else null. */
function nearestCommand(typed: string): string | null {
  if (typed.length > 16) return null;
  let best: { name: string; distance: number } | null = null;
  for (const name of Object.keys(COMMANDS)) {
    const distance = editDistance(typed.toLowerCase(), name);
    if (distance <= 2 && distance < name.length && (best === null || distance < best.distance)) best = { name, distance };
  }
  return best?.name ?? null;
}
