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
import { EncryptedSecretFile } from '../../src/credentials/encrypted-secret-file.js';
import { generateAgentToken } from '../../src/identity/agent-token.js';
import type { AuditRecord } from '../../src/observability/audit-record.js';
import { assertNoLeak, type Surface } from '../helpers/assert-no-leak.js';
import { canary, plainCanary } from '../helpers/canary.js';
import { runCliCapture, writeConfigFile, type CliRun } from '../helpers/operator.js';
import { sendRequest, type Problem, type SentResponse } from '../helpers/send-request.js';
import { startProxy, tempDir } from '../helpers/start-proxy.js';
import { startUpstream } from '../helpers/start-upstream.js';

const dirs: string[] = [];
afterAll(() => {
  for (const dir of dirs) rmSync(dir, { recursive: true, force: true });
});

const NOT_REPEATED = 'not repeated here: it may be a key';
/** What an agent is told of a file: secret it cannot have (credentials/file-source.ts): no path, no other name. */
const UNAVAILABLE = (name: string): string =>
  `The credential file:${name} is unavailable: its store could not be read, and the request was not sent. An operator finds why in the audit record and the proxy log under this request id.`;

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

  it.each(['check', 'serve', 'explain', 'approvals', 'revoke', 'restore', 'status', 'anomalies', 'audit'])('%s: an unknown option and an unexpected argument are said without their text', async (command) => {
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
  const agent = generateAgentToken();

  /** A data_dir whose secrets file holds `names`, the first two with their ciphertexts swapped. */
  function damagedStore(names: readonly string[]): { dir: string; masterKey: string; values: string[] } {
    const dir = tempDir('airlock-refused-secrets-');
    dirs.push(dir);
    const key = randomBytes(32);
    const store = new EncryptedSecretFile(dir, key);
    const values = names.map((_name, index) => canary(`value-${index}`));
    names.forEach((name, index) => store.set(name, values[index] as string, new Date()));
    // Swap the two entries' ciphertexts: each is sealed with its own name, so neither decrypts.
    const document = JSON.parse(readFileSync(join(dir, 'secrets.json'), 'utf8')) as { secrets: Record<string, unknown> };
    const [a, b] = names as [string, string];
    [document.secrets[a], document.secrets[b]] = [document.secrets[b], document.secrets[a]];
    writeFileSync(join(dir, 'secrets.json'), JSON.stringify(document));
    return { dir, masterKey: key.toString('hex'), values };
  }

  /**
   * What people see of it: the operator's `airlock secrets list` (the real CLI), and an agent's request
   * through a real Airlock on that data_dir to a service whose credential is file:`wanted`.
   */
  async function seenOf(damaged: { dir: string; masterKey: string }, wanted: string): Promise<{ list: CliRun; response: SentResponse; record: AuditRecord | undefined; upstreamCalls: number; surfaces: Surface[] }> {
    const env = { AIRLOCK_MASTER_KEY: damaged.masterKey };
    const configFile = writeConfigFile(damaged.dir, { listen: '127.0.0.1:0', data_dir: damaged.dir, services: {}, agents: {} });
    const list = await runCliCapture(['secrets', 'list', '--config', configFile], env, []);
    const upstream = await startUpstream();
    const proxy = await startProxy(
      {
        services: { api: { upstream: upstream.url, credential: { secret: `file:${wanted}`, inject: 'bearer' }, routes: [{ method: 'GET', path: '/v1/*', scope: 'api:call' }] } },
        agents: { bot: { tokens: [agent.hash], credentials: [{ service: 'api', max_scope: ['*'] }] } },
      },
      { dataDir: damaged.dir, env },
    );
    try {
      const response = await sendRequest(`${proxy.url}/api/v1/items`, { headers: { authorization: `Bearer ${agent.token}` } });
      await proxy.waitForAudit(1);
      return {
        list,
        response,
        record: proxy.auditRecords().find((r) => r.request_id === response.headers['x-airlock-request-id']),
        upstreamCalls: upstream.requests.length,
        surfaces: [
          { name: 'secrets list stdout', text: list.stdout },
          { name: 'secrets list stderr', text: list.stderr },
          { name: 'response', text: `${JSON.stringify(response.headers)}\n${response.text}` },
          { name: 'proxy log', text: proxy.logLines.join('') },
          { name: 'audit', text: proxy.auditText() },
        ],
      };
    } finally {
      await proxy.close();
      await upstream.close();
    }
  }

  it('whose name looks like a key is not named to the operator or the agent; both are told how to find and remove it', async () => {
    const keyName = canary('secret-name');
    const damaged = damagedStore([keyName, 'plain-name']);
    const { list, response, record, upstreamCalls, surfaces } = await seenOf(damaged, 'plain-name');
    expect(list.code).toBe(1);
    expect(list.stdout).toMatch(/^\(a name that looks like a key, not shown\)\t.*\tDAMAGED: does not decrypt$/m);
    expect(list.stdout).toMatch(/^plain-name\t.*\tDAMAGED: does not decrypt$/m);
    expect(list.stderr).toContain('Damaged (the file was edited, or an entry moved): (a name that looks like a key, not shown), plain-name.');
    // The entry the request needs is damaged: the agent gets 503 with a fixed detail, and nothing is sent
    // upstream; the audit record names the entry and says what to run.
    expect(response.status).toBe(503);
    expect(response.json<Problem>().code).toBe('credential_unavailable');
    expect(response.json<Problem>().detail).toBe(UNAVAILABLE('plain-name'));
    expect(record?.reason).toMatch(/secret "plain-name" in .* does not decrypt: .* `npx airlock secrets set plain-name`/);
    expect(upstreamCalls).toBe(0);
    assertNoLeak([keyName, damaged.masterKey, agent.token, ...damaged.values], surfaces);
  });

  it('with a plain name is still named, with the command that sets it again', async () => {
    const damaged = damagedStore(['openai', 'github']);
    const { list, response, record, upstreamCalls, surfaces } = await seenOf(damaged, 'openai');
    expect(list.code).toBe(1);
    expect(list.stdout).toMatch(/^github\t.*\tDAMAGED: does not decrypt$/m);
    expect(list.stdout).toMatch(/^openai\t.*\tDAMAGED: does not decrypt$/m);
    expect(list.stderr).toContain('Damaged (the file was edited, or an entry moved): openai, github.');
    expect(list.stderr).toContain('Set each again: npx airlock secrets set openai');
    expect(response.status).toBe(503);
    expect(response.json<Problem>().code).toBe('credential_unavailable');
    expect(response.json<Problem>().detail).toBe(UNAVAILABLE('openai'));
    expect(record?.reason).toMatch(/secret "openai" in .* does not decrypt: .* `npx airlock secrets set openai`/);
    expect(upstreamCalls).toBe(0);
    assertNoLeak([damaged.masterKey, agent.token, ...damaged.values], surfaces);
  });
});
