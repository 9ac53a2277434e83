/**
 * How CLI commands talk to a running Airlock: its admin API at admin.listen, with the admin token from
 * AIRLOCK_ADMIN_TOKEN (never from argv, where it would show in the process list and shell history).
 */
import { createPrivateKey, X509Certificate, type KeyObject } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { isIP } from 'node:net';
import type { TLSSocket } from 'node:tls';
import { buildConnector, Client } from 'undici';
import { parseListen } from '../config/schema.js';
import { shellWord } from '../config/shell-word.js';
import { classifyAddress } from '../upstream/egress-guard.js';
import type { CliIo } from './cli-io.js';
import type { CliConfig } from './locate-config.js';

export class AdminCallError extends Error {
  override name = 'AdminCallError';
}

export interface AdminAnswer {
  readonly status: number;
  readonly body: Record<string, unknown>;
}

export async function callAdmin(io: CliIo, target: CliConfig, method: string, path: string, body?: unknown): Promise<AdminAnswer> {
  const { config } = target;
  if (config.admin === null) {
    throw new AdminCallError(`No admin API is configured in ${target.file} (admin.listen and admin.tokens); it is how the CLI reaches a running Airlock. Add one (README, Admin API and console) and restart, or name the config the running Airlock uses with --config.`);
  }
  const token = io.env['AIRLOCK_ADMIN_TOKEN'];
  if (token === undefined || token === '') throw new AdminCallError('Set AIRLOCK_ADMIN_TOKEN to an admin token (one whose sha256 is listed under admin.tokens).');
  const listen = parseListen(config.admin.listen);
  if (listen === null) throw new AdminCallError(`admin.listen ${config.admin.listen} is not HOST:PORT.`);
  const host = listen.host === '0.0.0.0' ? '127.0.0.1' : listen.host === '::' ? '[::1]' : listen.host.includes(':') ? `[${listen.host}]` : listen.host;
  // The token goes, in the clear, wherever the config's admin.listen says. A config picked up from the
  // current directory may be a checkout's, not the operator's (found by review: one naming another host
  // received the token): beyond this machine, the config must be named.
  if (target.fromCwd && !isLoopback(listen.host)) {
    throw new AdminCallError(
      `${target.file} (found in the current directory) names admin.listen ${config.admin.listen}, which is not this machine; the CLI sends AIRLOCK_ADMIN_TOKEN there only to a config you name: pass --config ${shellWord(target.file)} (or set AIRLOCK_CONFIG) if it is yours.`,
    );
  }
  const tls = config.admin.tls;
  const client = new Client(`${tls === undefined ? 'http' : 'https'}://${host}:${listen.port}`, {
    headersTimeout: 30_000,
    bodyTimeout: 30_000,
    ...(tls === undefined ? {} : { connect: pinnedConnector(tls.cert_file, config.admin.listen, tls.client_ca_file === undefined ? null : clientCertificate(io)) }),
  });
  try {
    const response = await client.request({
      method: method as 'GET' | 'POST',
      path,
      headers: { authorization: `Bearer ${token}`, 'content-type': 'application/json' },
      body: body === undefined ? null : JSON.stringify(body),
    });
    const text = await response.body.text();
    let parsed: Record<string, unknown> = {};
    try {
      parsed = text === '' ? {} : (JSON.parse(text) as Record<string, unknown>);
    } catch {
      parsed = { detail: text.slice(0, 200) };
    }
    return { status: response.statusCode, body: parsed };
  } catch (error) {
    if (error instanceof AdminCallError) throw error;
    // Under TLS 1.3 a server refuses a client certificate after the client's side of the handshake is
    // done (RFC 8446 4.4.2.4): undici sees the connection closed, not the alert.
    const code = (error as { code?: string }).code;
    if (tls?.client_ca_file !== undefined && (code === 'UND_ERR_SOCKET' || code === 'ECONNRESET')) {
      throw new AdminCallError(
        `The admin API at ${config.admin.listen} closed the connection without answering, which is how it refuses a client certificate: check that the one AIRLOCK_ADMIN_CLIENT_CERT names was signed by a CA in admin.tls.client_ca_file, is meant for clients (extendedKeyUsage clientAuth) and has not expired. The call was not answered.`,
      );
    }
    // A listener that asks for client certificates closes the connection of a CLI that shows none.
    const mtlsHint = tls !== undefined && tls.client_ca_file === undefined && (code === 'UND_ERR_SOCKET' || code === 'ECONNRESET') ? ' If the running Airlock asks for client certificates (admin.tls.client_ca_file in its config), name that file in this config too and set AIRLOCK_ADMIN_CLIENT_CERT and AIRLOCK_ADMIN_CLIENT_KEY.' : '';
    // A reload does not move the admin API (found by review: after admin.listen was edited and reloaded,
    // this pointed at the new address with no word of where the running one still listens).
    throw new AdminCallError(
      `No Airlock answered at admin ${config.admin.listen} (${(error as Error).message}); is it running with this config? If admin.listen was changed since it started, its admin API is still at the old address until a restart (its log line "airlock listening" says where): restart it, or run this with a copy of the config that names the old address.${mtlsHint}`,
    );
  } finally {
    await client.close();
  }
}

/**
 * With admin.tls.client_ca_file the admin listener asks for a client certificate (mTLS): the CLI shows
 * the one named by AIRLOCK_ADMIN_CLIENT_CERT and AIRLOCK_ADMIN_CLIENT_KEY (PEM files), as curl's --cert
 * and --key would. Paths in the environment, not argv, like the token.
 */
function clientCertificate(io: CliIo): { cert: Buffer; key: Buffer } {
  const certFile = io.env['AIRLOCK_ADMIN_CLIENT_CERT'];
  const keyFile = io.env['AIRLOCK_ADMIN_CLIENT_KEY'];
  if (certFile === undefined || certFile === '' || keyFile === undefined || keyFile === '') {
    throw new AdminCallError('The admin API asks for a client certificate (admin.tls.client_ca_file): set AIRLOCK_ADMIN_CLIENT_CERT and AIRLOCK_ADMIN_CLIENT_KEY to the PEM files of a certificate one of those CAs signed, and its key.');
  }
  const read = (file: string, setting: string): Buffer => {
    try {
      return readFileSync(file);
    } catch (error) {
      const code = (error as NodeJS.ErrnoException).code;
      throw new AdminCallError(`${setting} names ${file}, which ${code === 'ENOENT' ? 'does not exist' : code === 'EACCES' ? 'this user may not read' : `cannot be read (${(error as Error).message})`}.`);
    }
  };
  const pair = { cert: read(certFile, 'AIRLOCK_ADMIN_CLIENT_CERT'), key: read(keyFile, 'AIRLOCK_ADMIN_CLIENT_KEY') };
  // Checked here, where the names are known: OpenSSL's own errors for a swapped or wrong pair came out
  // as "No Airlock answered" (found by review). The messages name the files, never their contents.
  let certificate: X509Certificate;
  try {
    certificate = new X509Certificate(pair.cert);
  } catch {
    throw new AdminCallError(`AIRLOCK_ADMIN_CLIENT_CERT names ${certFile}, which holds no PEM certificate it can read (swapped with AIRLOCK_ADMIN_CLIENT_KEY?).`);
  }
  let key: KeyObject;
  try {
    key = createPrivateKey(pair.key);
  } catch {
    throw new AdminCallError(`AIRLOCK_ADMIN_CLIENT_KEY names ${keyFile}, which holds no unencrypted PEM private key it can read (swapped with AIRLOCK_ADMIN_CLIENT_CERT, or encrypted with a passphrase?).`);
  }
  if (!certificate.checkPrivateKey(key)) throw new AdminCallError(`AIRLOCK_ADMIN_CLIENT_KEY (${keyFile}) is not the key of the certificate in AIRLOCK_ADMIN_CLIENT_CERT (${certFile}).`);
  return pair;
}

/**
 * With admin.tls the CLI trusts exactly the certificate in admin.tls.cert_file, which it reads from the
 * same config: the listener is reached by the address it binds (127.0.0.1), which the certificate need
 * not name, and a self-signed one or a private CA's needs no trust store. The leaf's SHA-256
 * fingerprint must match before the token is written (the check runs as the connection is handed to
 * undici, before any request on it). A CA-based check would trust any certificate that CA signed.
 */
function pinnedConnector(certFile: string, listen: string, client: { cert: Buffer; key: Buffer } | null): buildConnector.connector {
  let expected: string;
  try {
    const pem = /-----BEGIN CERTIFICATE-----[\s\S]*?-----END CERTIFICATE-----/.exec(readFileSync(certFile, 'utf8'))?.[0];
    if (pem === undefined) throw new AdminCallError(`admin.tls.cert_file ${certFile} holds no PEM certificate; the CLI checks the admin API's certificate against it. Run npx airlock check.`);
    expected = new X509Certificate(pem).fingerprint256;
  } catch (error) {
    if (error instanceof AdminCallError) throw error;
    const code = (error as NodeJS.ErrnoException).code;
    const why = code === 'EACCES' ? 'this user may not read it' : code === 'ENOENT' ? 'it does not exist' : (error as Error).message;
    throw new AdminCallError(`The CLI checks the admin API's certificate against admin.tls.cert_file ${certFile}, and ${why}; run the command as a user who can read it (the certificate is public; its key is not needed).`);
  }
  // Verification is the pin below, not a CA's: the chain is not what is trusted.
  const connect = buildConnector({ rejectUnauthorized: false, ...(client ?? {}) });
  return function connectPinned(options, callback) {
    connect(options, (error, socket) => {
      if (error !== null) return callback(error, null);
      const served = (socket as TLSSocket).getPeerCertificate().fingerprint256;
      if (served === expected) return callback(null, socket);
      socket.destroy();
      callback(
        new AdminCallError(
          `The admin API at ${listen} presents a certificate other than the one in admin.tls.cert_file ${certFile} (SHA-256 ${served ?? 'none'}); AIRLOCK_ADMIN_TOKEN was not sent. If the certificate was just renewed, the running Airlock serves it after its reload (reload.watch, or SIGHUP): try again in a moment. Otherwise something else answers at that address.`,
        ),
        null,
      );
    });
  };
}

/**
 * Loopback addresses, `localhost`, and the wildcard binds the CLI reaches on loopback (above). Not other
 * names under .localhost (found by review): the resolver may ask DNS for them, and whoever answers
 * chooses the address.
 */
function isLoopback(host: string): boolean {
  if (host === 'localhost' || host === '0.0.0.0' || host === '::') return true;
  return isIP(host) !== 0 && classifyAddress(host) === 'loopback';
}

/** Prints a refusal's detail and returns the exit code. */
export function reportRefusal(io: CliIo, answer: AdminAnswer, what: string): number {
  io.stderr.write(`${what} was refused (${answer.status}): ${String(answer.body['detail'] ?? 'no detail')}\n`);
  return 1;
}
