/**
 * `airlock <command>`: dispatch to one file per command. Returns the exit code.
 */
import { UsageError, type CliIo } from './cli-io.js';
import { checkCommand } from './check-command.js';
import { anomaliesCommand } from './anomalies-command.js';
import { approvalsCommand } from './approvals-command.js';
import { auditCommand } from './audit-command.js';
import { demoCommand } from './demo-command.js';
import { restoreCommand, revokeCommand } from './revoke-command.js';
import { explainCommand } from './explain-command.js';
import { secretsCommand } from './secrets-command.js';
import { serveCommand } from './serve-command.js';
import { tokenCommand } from './token-command.js';

const COMMANDS: Readonly<Record<string, { run: (io: CliIo) => Promise<number>; summary: string }>> = {
  serve: { run: serveCommand, summary: 'serve [--config F]                 run the proxy' },
  check: { run: checkCommand, summary: 'check [--config F] [--strict]      list every config problem; exit 1 if any' },
  token: { run: tokenCommand, summary: 'token                              print a new agent token and its sha256 hash' },
  secrets: { run: secretsCommand, summary: 'secrets set NAME | list | rm NAME | rotate REF  manage the encrypted secrets file (value on stdin)' },
  explain: { run: explainCommand, summary: 'explain --agent NAME METHOD PATH [--host H]  the decision for a request, without calling upstream' },
  approvals: { run: approvalsCommand, summary: 'approvals list [--all] | approve ID | deny ID  decide pending approvals (--reason TEXT)' },
  revoke: { run: revokeCommand, summary: 'revoke agent|session|credential|service NAME | all   the kill switch (--reason TEXT)' },
  restore: { run: restoreCommand, summary: 'restore agent|credential|service NAME | all  lift a revocation (a revoked session is ended for good)' },
  anomalies: { run: anomaliesCommand, summary: 'anomalies [--agent NAME] [--limit N] [--json]  recent anomaly events and their evidence' },
  audit: { run: auditCommand, summary: 'audit verify [FILE...] [--complete] [--head HASH]  check the audit hash chain; names the first bad line' },
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
    io.stderr.write(`unknown command "${name}"\n\n${usage()}`);
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
    if (error instanceof UsageError || (error as { code?: string }).code?.startsWith('ERR_PARSE_ARGS')) {
      io.stderr.write(`${(error as Error).message}\n${(error as { code?: string }).code?.startsWith('ERR_PARSE_ARGS') ? commandUsage : ''}`);
      return 1;
    }
    io.stderr.write(`airlock ${name}: ${(error as Error).message}\n`);
    return 1;
  }
}
