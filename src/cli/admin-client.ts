/**
 * How CLI commands talk to a running Airlock: its admin API at admin.listen, with the admin token from
 * AIRLOCK_ADMIN_TOKEN (never from argv, where it would show in the process list and shell history).
 */
import { isIP } from 'node:net';
import { Client } from 'undici';
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
  const client = new Client(`http://${host}:${listen.port}`, { headersTimeout: 30_000, bodyTimeout: 30_000 });
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
