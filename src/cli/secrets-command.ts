/**
 * `airlock secrets set NAME` (value from stdin; hidden when typed at a terminal), `secrets list`
 * (names only, never values), `secrets rm NAME`. The store is data_dir/secrets.json, AES-256-GCM.
 *
 * A name, a reference or an option this command refuses is never repeated, and a name that looks like a
 * key is never printed: what is typed where a name goes may be the key itself (the rule of
 * secret-ref.ts, and of config problems; DESIGN.md invariant 1 counts CLI output).
 */
import { randomBytes } from 'node:crypto';
import { existsSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import { looksLikeKey } from '../redaction/key-patterns.js';
import { localSecretReferences } from '../config/secret-references.js';
import { shellWord } from '../config/shell-word.js';
import type { AirlockConfig } from '../config/types.js';
import { EncryptedSecretFile, SECRETS_FILE, shownSecretName } from '../credentials/encrypted-secret-file.js';
import { decodeMasterKey, loadMasterKeyring, MASTER_KEY_FILE, NEXT_KEY_ENV, nextKeyFile } from '../credentials/master-key.js';
import { parseSecretRef, SECRET_NAME, SECRET_REF_KINDS } from '../credentials/secret-ref.js';
import { headerValueFault } from '../injection/injector.js';
import { AdminCallError, callAdmin, reportRefusal } from './admin-client.js';
import { MIN_SECRET_LENGTH } from '../redaction/secret-catalog.js';
import { createFileSync, replaceFileSync } from '../state/write-durably.js';
import { UsageError, type CliIo } from './cli-io.js';
import { configFlagFor, loadConfigOrReport, type CliConfig } from './locate-config.js';

const USAGE = 'usage: airlock secrets set NAME | secrets list | secrets rm NAME | secrets rotate REF | secrets rekey   [--config FILE]';

const NOT_REPEATED = 'not repeated here: it may be a key';
const KEY_LIKE = 'starts like a key (sk-, ghp_, AKIA, ...) or holds an Airlock token';
const NAME_RULE = 'a secret name is letters, digits, _ . - (up to 128), starting with a letter or digit; the value goes on stdin, e.g.  printf %s "$KEY" | npx airlock secrets set openai';

/**
 * node's parseArgs names the option it did not know in its error ("Unknown option '--sk_live_…'"), and
 * the CLI prints parse errors as they are: say what is wrong, and what to do, without the text.
 */
function parseSecretsArgs(args: readonly string[]): { config: string | undefined; positionals: string[] } {
  try {
    const { values, positionals } = parseArgs({ args: [...args], options: { config: { type: 'string' } }, allowPositionals: true });
    return { config: values.config, positionals };
  } catch (error) {
    const code = (error as { code?: string }).code ?? '';
    if (!code.startsWith('ERR_PARSE_ARGS')) throw error;
    const what = code === 'ERR_PARSE_ARGS_UNKNOWN_OPTION' ? `an option it does not know was given (${NOT_REPEATED})` : `an option was given in a form it does not take (${NOT_REPEATED})`;
    throw new UsageError(`airlock secrets: ${what}; its one option is --config FILE.\n${USAGE}`);
  }
}

export async function secretsCommand(io: CliIo): Promise<number> {
  const { config: configFile, positionals } = parseSecretsArgs(io.args);
  const [action, name, ...extra] = positionals;
  if (action === undefined || extra.length > 0) throw new UsageError(USAGE);
  // rotate calls the admin API; the other actions work on data_dir.
  const unreadable = action === 'rotate' ? undefined : 'Its data_dir, where the secrets are kept, cannot be read from it; fix it, or run the command with --config naming a good copy of the file.';
  const loaded = loadConfigOrReport(io, configFile, 'operator', unreadable);
  if (loaded === null) return 1;
  const config = loaded.config;
  switch (action) {
    case 'set':
      return setSecret(io, config, requireName(name), loaded.file);
    case 'list':
    case 'ls':
      if (name !== undefined) throw new UsageError(USAGE);
      return listSecrets(io, config, configFlagFor(io, loaded.file));
    case 'rm':
    case 'remove':
      return removeSecret(io, config, requireName(name, { keyLike: 'allowed' }));
    case 'rotate':
      if (name === undefined) throw new UsageError(USAGE);
      return rotateSecret(io, loaded, name);
    case 'rekey':
      if (name !== undefined) throw new UsageError(USAGE);
      return rekeySecrets(io, config);
    default:
      throw new UsageError(USAGE);
  }
}

/**
 * The secret name given, or a usage error that does not repeat it. `rm` takes a name that looks like a
 * key (one stored before such names were refused must be removable) but never prints it.
 */
function requireName(name: string | undefined, options: { keyLike: 'refused' | 'allowed' } = { keyLike: 'refused' }): string {
  if (name === undefined) throw new UsageError(USAGE);
  if (!SECRET_NAME.test(name)) throw new UsageError(`That is not a secret name (${NOT_REPEATED}): ${NAME_RULE}`);
  if (options.keyLike === 'refused' && looksLikeKey(name)) throw new UsageError(`That name ${KEY_LIKE}, so it is refused (${NOT_REPEATED}). Name the secret for what it is; ${NAME_RULE}`);
  return name;
}

/** The file: references in the config (credentials, a Vault login, OAuth2 clients), by secret name, with where they are used. */
function fileRefs(config: AirlockConfig): Map<string, readonly string[]> {
  return new Map(localSecretReferences(config).filter((r) => r.kind === 'file').map((r) => [r.name, r.usedBy]));
}

/** "name (where, where)", for a list of references on one line. */
function namedWithUse(name: string, usedBy: readonly string[]): string {
  return `${shownSecretName(name)} (${usedBy.join(', ')})`;
}

async function readValue(io: CliIo, name: string): Promise<string> {
  if (io.stdin.isTTY === true && io.stdin.setRawMode !== undefined) {
    io.stderr.write(`Value for ${name} (typing is hidden; Enter to finish): `);
    io.stdin.setRawMode(true);
    let value = '';
    try {
      for await (const chunk of io.stdin) {
        for (const ch of chunk.toString()) {
          if (ch === '\r' || ch === '\n') return value;
          if (ch === '\u0003') throw new UsageError('cancelled');
          if (ch === '\u007f' || ch === '\b') value = value.slice(0, -1);
          else value += ch;
        }
      }
      return value;
    } finally {
      io.stdin.setRawMode(false);
      io.stderr.write('\n');
    }
  }
  const chunks: Buffer[] = [];
  for await (const chunk of io.stdin) chunks.push(Buffer.isBuffer(chunk) ? chunk : Buffer.from(chunk));
  // One trailing line break is the shell's (echo, a here-string), not the secret's.
  return Buffer.concat(chunks).toString('utf8').replace(/\r?\n$/, '');
}

/** `command` is what the operator ran (`set NAME`, `rotate file:NAME`), to be suggested again as it was. */
async function setSecret(io: CliIo, config: AirlockConfig, name: string, configFile: string, command = `set ${name}`): Promise<number> {
  const value = await readValue(io, name);
  if (value.length === 0) {
    // With the config this run used (found by an ops walkthrough: run as shown, without --config, it
    // stored the value in another config's data_dir).
    io.stderr.write(`No value read for ${name}; pipe it in, e.g.  printf %s "$KEY" | npx airlock secrets ${command}${configFlagFor(io, configFile)}\n`);
    return 1;
  }
  if (value.length < MIN_SECRET_LENGTH) {
    io.stderr.write(`The value is shorter than ${MIN_SECRET_LENGTH} characters; Airlock refuses to inject secrets it cannot reliably redact.\n`);
    return 1;
  }
  const fault = headerValueFault(value);
  if (fault !== null) {
    // At the hidden prompt a control character is a key that edits nothing there: an arrow, Ctrl-U, Delete.
    io.stderr.write(`The value contains ${fault}, which cannot be sent in a header (an arrow key, Ctrl-U or Delete typed at the prompt?); paste the value again, or check what you piped in.\n`);
    return 1;
  }
  if (value.includes('\ufffd')) {
    io.stderr.write('The value is not valid UTF-8 text (or holds U+FFFD); a key is text. Check what you piped in.\n');
    return 1;
  }
  // Stored as given (a Basic password may end in a space), but said: in a header it arrives without it.
  if (value !== value.trim()) {
    io.stderr.write('Note: the value starts or ends with whitespace. Injected into a header it reaches the upstream without it (a paste mistake?); both forms are redacted.\n');
  }
  const key = loadMasterKeyring({ dataDir: config.data_dir, env: io.env, create: true });
  if (key === null) throw new Error('no master key');
  const file = new EncryptedSecretFile(config.data_dir, key);
  file.set(name, value, new Date());
  const keySource = io.env['AIRLOCK_MASTER_KEY'] ? 'AIRLOCK_MASTER_KEY' : `${config.data_dir}/${MASTER_KEY_FILE}`;
  const used = fileRefs(config).get(name);
  io.stdout.write(`Stored secret ${name} in ${file.path} (AES-256-GCM, key from ${keySource}).\n`);
  // Found by a README walkthrough: a 503's `secrets set NAME`, run in another directory than the proxy's
  // config, stored the value in the wrong data_dir and said only "nothing uses it yet".
  io.stdout.write(
    used === undefined
      ? `Nothing in ${configFile} uses file:${name} yet; reference it as  secret: file:${name}\nIf a running Airlock asked for it, it reads another config: store it there, \`npx airlock secrets set ${name} --config <that file>\`.\n`
      : `Used by ${used.join(', ')}; a running Airlock picks it up within a second.\n`,
  );
  return 0;
}

async function listSecrets(io: CliIo, config: AirlockConfig, configFlag: string): Promise<number> {
  const key = loadMasterKeyring({ dataDir: config.data_dir, env: io.env, create: false });
  const refs = fileRefs(config);
  const stored = key === null ? [] : new EncryptedSecretFile(config.data_dir, key).inventory();
  if (stored.length === 0) io.stdout.write('No secrets stored yet.\n');
  for (const entry of [...stored].sort((a, b) => a.name.localeCompare(b.name))) {
    const used = refs.get(entry.name);
    io.stdout.write(`${shownSecretName(entry.name)}\t${entry.updatedAt ?? '-'}\t${used === undefined ? 'unused' : `used by ${used.join(', ')}`}${entry.damaged ? '\tDAMAGED: does not decrypt' : ''}\n`);
  }
  const damaged = stored.filter((entry) => entry.damaged).map((entry) => entry.name);
  if (damaged.length > 0) {
    // The proxy serves the other entries; a damaged one is refused by name (credentials/file-source.ts).
    io.stderr.write(`Damaged (the file was edited, or an entry moved): ${damaged.map(shownSecretName).join(', ')}. Until each is set again, a running Airlock answers requests that need it with 503; the other file: secrets are served. Set each again: npx airlock secrets set ${shownSecretName(damaged[0] as string)}${configFlag}\n`);
  }
  const names = new Set(stored.map((entry) => entry.name));
  const missing = [...refs.keys()].filter((name) => !names.has(name)).sort();
  if (missing.length > 0) io.stdout.write(`\nNot set yet (requests that need them get 503): ${missing.map((name) => namedWithUse(name, refs.get(name) ?? [])).join(', ')}\n  npx airlock secrets set ${shownSecretName(missing[0] as string)}${configFlag}\n`);
  const fromEnv = localSecretReferences(config).filter((r) => r.kind === 'env');
  if (fromEnv.length > 0) io.stdout.write(`\nRead from Airlock's environment, not stored here: ${fromEnv.map((r) => namedWithUse(r.name, r.usedBy)).join(', ')}\n`);
  return damaged.length > 0 ? 1 : 0;
}

async function removeSecret(io: CliIo, config: AirlockConfig, name: string): Promise<number> {
  const key = loadMasterKeyring({ dataDir: config.data_dir, env: io.env, create: false });
  if (key === null || !new EncryptedSecretFile(config.data_dir, key).remove(name)) {
    io.stderr.write(`No secret named ${shownSecretName(name)} is stored.\n`);
    return 1;
  }
  io.stdout.write(`Removed secret ${shownSecretName(name)}. Requests that use ${looksLikeKey(name) ? 'it' : `file:${name}`} now get 503 credential_unavailable.\n`);
  return 0;
}

/**
 * `secrets rotate REF`: make a running Airlock use a new value now. For file: secrets (or a bare name)
 * the new value is read from stdin and stored first; then the running proxy is asked, through its admin
 * API (admin.listen, token in AIRLOCK_ADMIN_TOKEN), to fetch the reference again.
 */
async function rotateSecret(io: CliIo, target: CliConfig, refOrName: string): Promise<number> {
  const config = target.config;
  const ref = refOrName.includes(':') ? refOrName : `file:${refOrName}`;
  const kind = ref.slice(0, ref.indexOf(':'));
  // parseSecretRef repeats an unknown kind, which is whatever came before the first colon.
  if (!(SECRET_REF_KINDS as readonly string[]).includes(kind)) {
    throw new UsageError(`That is not a secret reference (${NOT_REPEATED}): give a file: secret's name, or a reference the config uses: ${SECRET_REF_KINDS.map((k) => `${k}:`).join(', ')}.`);
  }
  const parsed = parseSecretRef(ref);
  if (!parsed.ok) throw new UsageError(`That reference is refused (${NOT_REPEATED}): ${parsed.problem}.`);
  // A well-formed reference may still hold a key (vault:secret/sk_live_…#f): not sent, not repeated.
  if (parsed.ref.name.split(/[/#]/).some(looksLikeKey)) throw new UsageError(`A part of that reference ${KEY_LIKE}, so it is refused (${NOT_REPEATED}). Give the reference as the config writes it, e.g. vault:secret/stripe#api_key.`);
  if (parsed.ref.kind === 'file') {
    // Found by the ops walkthrough: a name the config does not use was stored, then refused by the
    // admin API (404), leaving an entry nothing reads. `secrets set` stores one ahead of its use.
    const name = parsed.ref.name;
    if (!localSecretReferences(config).some((reference) => reference.kind === 'file' && reference.name === name)) {
      const configFlag = configFlagFor(io, target.file);
      io.stderr.write(`This config uses no file:${shownSecretName(name)}, so a running Airlock would not pick it up, and nothing was stored. Check the name (\`npx airlock secrets list${configFlag}\` shows the stored ones); to store a secret before the config uses it, run \`npx airlock secrets set ${shownSecretName(name)}${configFlag}\`.\n`);
      return 1;
    }
    const stored = await setSecret(io, config, requireName(name), target.file, `rotate ${refOrName}`);
    if (stored !== 0) return stored;
  }
  if (config.admin === null) {
    io.stderr.write(
      parsed.ref.kind === 'file'
        ? 'No admin API is configured (admin.listen), so a running Airlock picks the new value up on its own within a second.\n'
        : `No admin API is configured (admin.listen): a running Airlock fetches ${ref} again when its cache TTL ends. Configure admin to rotate at once.\n`,
    );
    return parsed.ref.kind === 'file' ? 0 : 1;
  }
  try {
    const answer = await callAdmin(io, target, 'POST', '/v1/credentials/refresh', { ref });
    if (answer.status !== 200) return reportRefusal(io, answer, `Rotating ${ref}`);
    const body = answer.body as { generation?: string | null; previous_generation?: string | null };
    io.stdout.write(`Airlock now uses ${ref}, generation ${body.generation ?? '(none)'}${body.previous_generation ? ` (was ${body.previous_generation})` : ''}.\n`);
    return 0;
  } catch (error) {
    if (!(error instanceof AdminCallError)) throw error;
    // A file: value is stored, and a running Airlock reads it within a second without being asked:
    // the rotation happened, so exit 0 (found by an ops walkthrough: `set -e` scripts took it for a
    // failure). Any other reference is fetched again only when asked, or at its TTL's end: 1.
    io.stderr.write(`${error.message}${parsed.ref.kind === 'file' ? ' The value is stored all the same, and a running Airlock uses it within a second.' : ''}\n`);
    return parsed.ref.kind === 'file' ? 0 : 1;
  }
}

/**
 * `secrets rekey`: every file: secret sealed again under a new master key, each keeping its date (its
 * generation), and the old key no longer opening the file: after a key may have been exposed (a backup
 * of data_dir with master.key in it, an operator who left), as Vault's rekey. Refused while an entry
 * does not decrypt (it would be lost).
 *
 * With data_dir/master.key, a new random key is written to master.key.next (durably), the file replaced,
 * then master.key replaced by it: a running Airlock reads both (loadMasterKeyring), so it serves on
 * throughout, even across a crash between the two. With AIRLOCK_MASTER_KEY, the new key is
 * AIRLOCK_MASTER_KEY_NEXT, which the operator chose and gave to every running Airlock first.
 */
async function rekeySecrets(io: CliIo, config: AirlockConfig): Promise<number> {
  const dataDir = config.data_dir;
  const fromEnv = io.env['AIRLOCK_MASTER_KEY'] !== undefined && io.env['AIRLOCK_MASTER_KEY'] !== '';
  const keys = loadMasterKeyring({ dataDir, env: io.env, create: false });
  if (keys === null) {
    io.stdout.write('No secrets are stored yet, so there is nothing to re-encrypt; the first `secrets set` makes the key.\n');
    return 0;
  }
  const file = new EncryptedSecretFile(dataDir, keys);
  if (fromEnv) {
    const next = io.env[NEXT_KEY_ENV];
    if (next === undefined || next === '') {
      io.stderr.write(
        `The master key comes from AIRLOCK_MASTER_KEY, so the new one is yours to choose and keep: set ${NEXT_KEY_ENV} to it (\`openssl rand -base64 32\`) here and on every running Airlock (a restart each; they then open the file under either key), and run \`secrets rekey\` again. Nothing was changed.\n`,
      );
      return 1;
    }
    const newKey = decodeMasterKey(next, NEXT_KEY_ENV);
    if (newKey.equals(keys[0] as Buffer)) {
      io.stderr.write(`${NEXT_KEY_ENV} is the same key as AIRLOCK_MASTER_KEY; choose a new one. Nothing was changed.\n`);
      return 1;
    }
    const count = file.rekey(newKey, () => undefined);
    io.stdout.write(
      `Re-encrypted ${count} secret${count === 1 ? '' : 's'} in ${file.path} under ${NEXT_KEY_ENV}; AIRLOCK_MASTER_KEY no longer opens it.\n` +
        `Now make that key AIRLOCK_MASTER_KEY wherever Airlock and its CLI run, and unset ${NEXT_KEY_ENV}. An Airlock started with ${NEXT_KEY_ENV} set to it serves on meanwhile; one started without it serves the values it holds up to their max_staleness, then 503, until restarted with the new key.\n`,
    );
    return 0;
  }
  const nextPath = nextKeyFile(dataDir);
  const keyPath = join(dataDir, MASTER_KEY_FILE);
  if (existsSync(nextPath)) {
    io.stderr.write(
      `${nextPath} exists: an earlier rekey was cut short. If ${file.path} opens with it alone (it was replaced), finish that rekey:  mv ${shellWord(nextPath)} ${shellWord(keyPath)}; if it does not (the crash came first), remove it:  rm ${shellWord(nextPath)}. Then run \`secrets rekey\` again. Nothing was changed.\n`,
    );
    return 1;
  }
  const newKey = randomBytes(32);
  const text = `${newKey.toString('base64')}\n`;
  const count = file.rekey(newKey, () => createFileSync(nextPath, text));
  replaceFileSync(keyPath, text);
  rmSync(nextPath, { force: true });
  io.stdout.write(
    `Re-encrypted ${count} secret${count === 1 ? '' : 's'} in ${file.path} under a new master key, now in ${keyPath}; the old key no longer opens the file.\n` +
      `A running Airlock uses the new key within a second, with no restart. Back the new key up apart from ${SECRETS_FILE} (a backup holding both opens every secret), and let go of copies of the old one.\n`,
  );
  return 0;
}
