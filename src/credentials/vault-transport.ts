/**
 * node-vault's HTTP transport, replaced by undici with a deadline for the whole call.
 *
 * node-vault accepts a `request-promise`-shaped transport (`config['request-promise']`); its own
 * (axios) hands `timeout` to the socket as an idle timeout, so a Vault that trickles or streams an
 * endless answer was never timed out and its body was kept in memory. This transport bounds each call
 * by secrets.vault.timeout from connect to the last byte and caps the answer's size
 * (read-store-answer.ts). node-vault still builds every request and reads every answer.
 */
import type { Dispatcher } from 'undici';
import { readStoreAnswer, storeAgent } from './read-store-answer.js';

/** What node-vault passes for one call (the former request library's options). */
interface VaultCallOptions {
  method: string;
  uri: string;
  headers?: Record<string, string>;
  /** An object is the JSON body; `true` only asks for a parsed answer. */
  json?: unknown;
}

/** What node-vault's handleVaultResponse reads. */
interface VaultCallAnswer {
  statusCode: number;
  body: unknown;
  request: { path: string };
}

export interface VaultTransport {
  /** node-vault calls defaults(rpDefaults) once and then the returned function per call. */
  defaults(base: Record<string, unknown>): (options: VaultCallOptions) => Promise<VaultCallAnswer>;
  close(): Promise<void>;
}

export function createVaultTransport(timeoutSeconds: number, caFile: string | undefined): VaultTransport {
  const deadlineMs = timeoutSeconds * 1000;
  const agent = storeAgent(deadlineMs, caFile);
  return {
    defaults() {
      return async function callVault(options) {
        const headers: Record<string, string> = { accept: 'application/json', ...options.headers };
        let body: string | undefined;
        if (typeof options.json === 'object' && options.json !== null) {
          body = JSON.stringify(options.json);
          headers['content-type'] = 'application/json';
        }
        const answer = await readStoreAnswer(options.uri, {
          method: options.method.toUpperCase() as Dispatcher.HttpMethod,
          headers,
          ...(body === undefined ? {} : { body }),
          dispatcher: agent,
          deadlineMs,
        });
        let parsed: unknown = undefined;
        if (answer.text !== '') {
          try {
            parsed = JSON.parse(answer.text);
          } catch {
            // Not JSON (a proxy's error page): node-vault reports the status alone.
            parsed = undefined;
          }
        }
        return { statusCode: answer.status, body: parsed, request: { path: new URL(options.uri).pathname } };
      };
    },
    close: () => agent.close(),
  };
}
