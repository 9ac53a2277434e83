/**
 * How CLI commands talk to a running Airlock: its admin API at admin.listen, with the admin token from
 * AIRLOCK_ADMIN_TOKEN (never from argv, where it would show in the process list and shell history).
 */
import { X509Certificate } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { isIP } from 'node:net';
import type { TLSSocket } from 'node:tls';
import { buildConnector, Client } from 'undici';
import { parseListen } from '../config/schema.js';
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
      `${target.file} (found in the current directory) names admin.listen ${config.admin.listen}, which is not this machine; the CLI sends AIRLOCK_ADMIN_TOKEN there only to a config you name: pass --config ${target.file} (or set AIRLOCK_CONFIG) if it is yours.`,
    );
  }
  const tls = config.admin.tls;
  const client = new Client(`${tls === undefined ? 'http' : 'https'}://${host}:${listen.port}`, {
    headersTimeout: 30_000,
    bodyTimeout: 30_000,
    ...(tls === undefined ? {} : { connect: pinnedConnector(tls.cert_file, config.admin.listen) }),
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
    // A reload does not move the admin API (found by review: after admin.listen was edited and reloaded,
    // this pointed at the new address with no word of where the running one still listens).
    throw new AdminCallError(
      `No Airlock answered at admin ${config.admin.listen} (${(error as Error).message}); is it running with this config? If admin.listen was changed since it started, its admin API is still at the old address until a restart (its log line "airlock listening" says where): restart it, or run this with a copy of the config that names the old address.`,
    );
  } finally {
    await client.close();
  }
}

/**
 * With admin.tls the CLI trusts exactly the certificate in admin.tls.cert_file, which it reads from the
 * same config: the listener is reached by the address it binds (127.0.0.1), which the certificate need
 * not name, and a self-signed one or a private CA's needs no trust store. The leaf's SHA-256
 * fingerprint must match before the token is written (the check runs as the connection is handed to
 * undici, before any request on it). A CA-based check would trust any certificate that CA signed.
 */
function pinnedConnector(certFile: string, listen: string): buildConnector.connector {
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
  const connect = buildConnector({ rejectUnauthorized: false });
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
