/**
 * What the CLI refuses is not repeated (found by review): a key pasted in the wrong place (as a command,
 * an option, an argument) was printed back by `unknown command "…"` and by node's parseArgs errors
 * ("Unknown option '--sk_live_…'", "Unexpected argument '…'"), and the secrets file's "does not decrypt"
 * error named the entry, whatever its name. The terminal, a CI log or the proxy's log would keep it
 * (DESIGN.md invariant 1 counts CLI output). secrets-command.ts set the rule; these are the rest.
 */
import { readFileSync, rmSync, writeFileSync } from 'node:fs';
import { randomBytes } from 'node:crypto';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { EncryptedSecretFile, SecretFileError } from '../../src/credentials/encrypted-secret-file.js';
import { assertNoLeak } from '../helpers/assert-no-leak.js';
import { canary, plainCanary } from '../helpers/canary.js';
import { runCliCapture } from '../helpers/operator.js';
import { tempDir } from '../helpers/start-proxy.js';

const dirs: string[] = [];
afterAll(() => {
  for (const dir of dirs) rmSync(dir, { recursive: true, force: true });
});

const NOT_REPEATED = 'not repeated here: it may be a key';

describe('airlock (dispatch) does not repeat what it refuses', () => {
  it('an unknown command: neither a key-shaped one nor any other is printed; a near miss is answered with the command meant', async () => {
    for (const pasted of [canary('cli-command'), plainCanary('clicommand')]) {
      const run = await runCliCapture([pasted], {}, []);
      expect(run.code).toBe(1);
      expect(run.stderr).toContain(`That is not an airlock command (${NOT_REPEATED}).`);
      expect(run.stderr).toContain('usage: airlock <command>');
      assertNoLeak([pasted], [{ name: 'cli', text: run.stdout + run.stderr }]);
    }
    const typo = await runCliCapture(['serv'], {}, []);
    expect(typo.code).toBe(1);
    expect(typo.stderr).toContain('Did you mean `airlock serve`?');
    expect(typo.stderr).not.toContain('"serv"');
  });

  it.each(['check', 'serve', 'explain', 'approvals', 'revoke', 'restore', 'anomalies', 'audit'])('%s: an unknown option and an unexpected argument are said without their text', async (command) => {
    const pasted = canary(`cli-opt-${command}`);
    const option = await runCliCapture([command, `--${pasted}`], {}, []);
    expect(option.code).toBe(1);
    expect(option.stderr).toContain(`airlock ${command}: an option it does not know was given (${NOT_REPEATED})`);
    expect(option.stderr).toContain(`usage: airlock ${command}`);
    assertNoLeak([pasted], [{ name: 'cli', text: option.stdout + option.stderr }]);
    // A short option is a single letter, but a key can follow it in the same word.
    const short = await runCliCapture([command, `-${pasted}`], {}, []);
    expect(short.code).toBe(1);
    assertNoLeak([pasted], [{ name: 'cli', text: short.stdout + short.stderr }]);
  });

  it('an argument a command does not take, and a value an option does not take, are not repeated; the option is named', async () => {
    const pasted = canary('cli-positional');
    const positional = await runCliCapture(['check', pasted], {}, []);
    expect(positional.code).toBe(1);
    expect(positional.stderr).toContain(`airlock check: an argument it does not take was given (${NOT_REPEATED})`);
    const value = await runCliCapture(['check', `--strict=${pasted}`], {}, []);
    expect(value.code).toBe(1);
    expect(value.stderr).toContain(`airlock check: the option --strict is missing its value, or was given one it does not take (${NOT_REPEATED})`);
    const missing = await runCliCapture(['check', '--config'], {}, []);
    expect(missing.code).toBe(1);
    expect(missing.stderr).toContain('airlock check: the option --config is missing its value');
    assertNoLeak([pasted], [{ name: 'cli', text: [positional, value, missing].map((r) => r.stdout + r.stderr).join('\n') }]);
  });
});

describe('the secrets file: an entry that does not decrypt', () => {
  function damagedStore(names: readonly string[]): EncryptedSecretFile {
    const dir = tempDir('airlock-refused-secrets-');
    dirs.push(dir);
    const store = new EncryptedSecretFile(dir, randomBytes(32));
    for (const name of names) store.set(name, canary(`value-${names.indexOf(name)}`), new Date());
    // Swap the two entries' ciphertexts: each is sealed with its own name, so neither decrypts.
    const document = JSON.parse(readFileSync(join(dir, 'secrets.json'), 'utf8')) as { secrets: Record<string, unknown> };
    const [a, b] = names as [string, string];
    [document.secrets[a], document.secrets[b]] = [document.secrets[b], document.secrets[a]];
    writeFileSync(join(dir, 'secrets.json'), JSON.stringify(document));
    return store;
  }

  function readAllError(store: EncryptedSecretFile): string {
    try {
      store.readAll();
    } catch (error) {
      expect(error).toBeInstanceOf(SecretFileError);
      return (error as Error).message;
    }
    throw new Error('readAll did not refuse the damaged file');
  }

  it('whose name looks like a key is not named, and the message says how to find and remove it', () => {
    const keyName = canary('secret-name');
    const message = readAllError(damagedStore([keyName, 'plain-name']));
    expect(message).toContain('whose name looks like a key (not repeated here) does not decrypt');
    expect(message).toContain('`npx airlock secrets list` marks it DAMAGED');
    assertNoLeak([keyName], [{ name: 'error', text: message }]);
  });

  it('with a plain name is still named, with the command that sets it again', () => {
    const message = readAllError(damagedStore(['openai', 'github']));
    expect(message).toMatch(/^secret "openai" in .* does not decrypt: .* `npx airlock secrets set openai`$/);
  });
});
