/**
 * Which config file a command uses: --config, else AIRLOCK_CONFIG, else ./config/airlock.yaml (so
 * `npm start` works on a fresh checkout, whose own config/ that is). Nothing else: run elsewhere with
 * none of the three, a command refuses and says how to name one. It once fell back to the config shipped
 * inside the installation, whatever the directory (found by the ops walkthrough): `airlock serve` in
 * /srv/ops served the demo policy, and `secrets set` wrote into the installation's data directory,
 * where an upgrade deletes it.
 */
import { existsSync } from 'node:fs';
import { resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { formatProblem } from '../config/config-problem.js';
import { shellWord } from '../config/shell-word.js';
import { loadConfigFile, type LoadedConfig } from '../config/load-config.js';
import type { AirlockConfig } from '../config/types.js';
import { UsageError, type CliIo } from './cli-io.js';

export const SHIPPED_CONFIG = fileURLToPath(new URL('../../config/airlock.yaml', import.meta.url));

export function configPath(io: CliIo, flag: string | undefined): string {
  return locateConfig(io, flag).file;
}

/**
 * What to add to a command suggested for `file` so that it acts on the same config: nothing when the
 * command would find that file by itself, else --config and the path (found by walkthroughs: started
 * with --config, a suggested `secrets set` stored the secret in another config's data_dir).
 */
export function configFlagFor(io: CliIo, file: string): string {
  return configFoundUnnamed(io) === file ? '' : ` --config ${shellWord(file)}`;
}

/** The config a command given no --config would use, or null when it would find none. */
export function configFoundUnnamed(io: CliIo): string | null {
  return unnamedConfig(io)?.file ?? null;
}

/**
 * The file, and whether it was found in the current directory rather than named (--config,
 * AIRLOCK_CONFIG): a checkout someone else wrote may hold one (admin-client.ts says why that matters).
 */
function locateConfig(io: CliIo, flag: string | undefined): { file: string; fromCwd: boolean } {
  if (flag !== undefined) return { file: resolve(io.cwd, flag), fromCwd: false };
  const found = unnamedConfig(io);
  if (found !== null) return found;
  throw new UsageError(
    `No config to use: none named by --config or AIRLOCK_CONFIG, and no config/airlock.yaml in ${io.cwd}.\n` +
      `Name yours (airlock serve --config /etc/airlock/airlock.yaml, or export AIRLOCK_CONFIG=...), or start from the default one shipped with Airlock:\n` +
      `  mkdir -p config && cp ${SHIPPED_CONFIG} config/airlock.yaml\n` +
      `(its data_dir, ./data, is then next to your copy: secrets and the audit log live there).`,
  );
}

function unnamedConfig(io: CliIo): { file: string; fromCwd: boolean } | null {
  const fromEnv = io.env['AIRLOCK_CONFIG'];
  if (fromEnv !== undefined && fromEnv !== '') return { file: resolve(io.cwd, fromEnv), fromCwd: false };
  const local = resolve(io.cwd, 'config/airlock.yaml');
  return existsSync(local) ? { file: local, fromCwd: true } : null;
}

export interface CliConfig {
  readonly config: AirlockConfig;
  readonly loaded: LoadedConfig;
  readonly file: string;
  /** Found as ./config/airlock.yaml, not named by --config or AIRLOCK_CONFIG. */
  readonly fromCwd: boolean;
}

/** Loads the config, printing every problem; returns null (after printing) when it has errors. */
/**
 * `use: 'operator'`, for the commands that act on a running Airlock or on data_dir (revoke, restore,
 * status, approvals, anomalies, secrets, audit verify): a config with problems elsewhere still serves
 * them through LoadedConfig.fallback, when its data_dir, audit, admin, state and workers are well
 * formed. Found by an ops walkthrough: a typo in a grant, which the running Airlock had refused to
 * reload, made `airlock revoke` refuse too, in the middle of an incident.
 *
 * `unreadable`: what an operator command says to do when the file cannot be read at all; by default the
 * way to the kill switch without it, which fits the commands that call the admin API. The others say
 * their own (found by an ops walkthrough: `airlock health`, a container's HEALTHCHECK, on a half-edited
 * file, pointed at the admin API and the kill switch).
 *
 * Operator commands do not read the TLS private keys (tls.key_file, admin.tls.key_file): they pin
 * admin.tls's certificate and never serve, and the key is Airlock's user's (found by review: an operator
 * who could not read it got an error at admin.tls.key_file and no command, the kill switch included).
 */
export function loadConfigOrReport(io: CliIo, flag: string | undefined, use: 'whole' | 'operator' = 'whole', unreadable: string = ADMIN_API_WAY_OUT): CliConfig | null {
  const { file, fromCwd } = locateConfig(io, flag);
  const loaded = loadConfigFile(file, { privateKeys: use !== 'operator' });
  for (const problem of loaded.problems) {
    if (problem.severity === 'error') io.stderr.write(`${formatProblem(problem, file)}\n`);
  }
  if (loaded.config === null) {
    const count = loaded.problems.filter((p) => p.severity === 'error').length;
    const problems = `${count} problem${count === 1 ? '' : 's'}`;
    if (use === 'operator' && loaded.fallback != null) {
      io.stderr.write(
        `\n${file} has ${problems} (a running Airlock refuses to reload it, and keeps its last good config). This command goes on with the file's data_dir, audit, admin and state settings, which are well formed; fix the rest (\`npx airlock check\` lists it).\n\n`,
      );
      return { config: loaded.fallback, loaded, file, fromCwd };
    }
    io.stderr.write(`\n${file} has ${problems}; fix ${count === 1 ? 'it' : 'them'} and run again (\`npx airlock check\` lists them).\n`);
    // During an incident, with a half-edited file (found by an ops walkthrough: a stray "}" stopped
    // `revoke`): the running Airlock keeps the config it last loaded, and its admin API still answers.
    if (use === 'operator') io.stderr.write(`${unreadable}\n`);
    return null;
  }
  return { config: loaded.config, loaded, file, fromCwd };
}

/** For the commands that call the admin API, when their config file cannot be read at all. */
const ADMIN_API_WAY_OUT =
  "Its operator settings (data_dir, audit, admin, state) cannot be read from it, so this command cannot reach the running Airlock, which keeps the config it last loaded. To act now (the kill switch among others), run it with --config naming a good copy of the file, or call the admin API directly, e.g.  curl -X POST -H \"authorization: Bearer $AIRLOCK_ADMIN_TOKEN\" -d '{\"reason\":\"...\"}' http://ADMIN_LISTEN/v1/agents/NAME/revoke  (README, Admin API).";
