/**
 * `airlock health [--ready] [--config F]`: asks the agent listener of the config's Airlock for
 * /_airlock/health (or /_airlock/ready), at the address and in the scheme the config gives (https with
 * `tls`); exit 0 on 200, 1 otherwise. For container and supervisor probes: the Docker image's
 * HEALTHCHECK asked http://127.0.0.1:7700 whatever the config said, so a mounted config on another port,
 * or with tls (a 400 to plain HTTP), made a healthy container unhealthy (a known limit until then).
 *
 * The probe sends no token and reads only the status and the checks, so the certificate is not verified
 * here (it usually names the service's public host, not the address probed): nothing is given away to
 * whoever answers, and the worst a wrong answer does is mark a container healthy or not.
 */
import { request as httpRequest, type IncomingMessage } from 'node:http';
import { request as httpsRequest } from 'node:https';
import { parseArgs } from 'node:util';
import { editDistance } from '../config/edit-distance.js';
import type { LoadedConfig } from '../config/load-config.js';
import { configSchema, parseListen } from '../config/schema.js';
import type { CliIo } from './cli-io.js';
import { loadConfigOrReport } from './locate-config.js';
import { oneLine } from './one-line.js';

/** Docker's HEALTHCHECK gives 3 s; the answer is a few bytes from this machine. */
const PROBE_TIMEOUT_MS = 2_500;
const ANSWER_CHARS = 200;

export async function healthCommand(io: CliIo): Promise<number> {
  const { values } = parseArgs({ args: [...io.args], options: { config: { type: 'string' }, ready: { type: 'boolean', default: false } }, allowPositionals: false });
  const loaded = loadConfigOrReport(io, values.config, 'operator', 'Where and how to probe the agent listener (listen, tls) cannot be read from it, so nothing was probed; fix it, or run the probe with --config naming a good copy of the file.');
  if (loaded === null) return 1;
  const unreadable = unreadableTransport(loaded.loaded);
  if (unreadable.length > 0) {
    io.stderr.write(`unknown: ${loaded.file} has errors in ${unreadable.join(' and ')}, so where and how to probe cannot be told; fix them (npx airlock check lists them).\n`);
    return 1;
  }
  const listen = parseListen(loaded.config.listen);
  if (listen === null) {
    io.stderr.write(`listen ${loaded.config.listen} is not HOST:PORT.\n`);
    return 1;
  }
  // A wildcard bind is reached on loopback; `::` binds both families (node sets no ipv6Only), and a
  // container without IPv6 has no ::1 (found by review).
  const host = listen.host === '0.0.0.0' || listen.host === '::' ? '127.0.0.1' : listen.host;
  const scheme = loaded.config.tls === null ? 'http' : 'https';
  const path = values.ready ? '/_airlock/ready' : '/_airlock/health';
  const url = `${scheme}://${host.includes(':') ? `[${host}]` : host}:${listen.port}${path}`;
  try {
    const { status, body } = await probe(scheme, host, listen.port, path);
    const said = oneLine(body.trim(), ANSWER_CHARS);
    if (status === 200) {
      io.stdout.write(`ok: ${url} answered 200 ${said}\n`);
      return 0;
    }
    io.stderr.write(`${values.ready ? 'not ready' : 'unhealthy'}: ${url} answered ${status} ${said}\n`);
    return 1;
  } catch (error) {
    io.stderr.write(`unhealthy: nothing answered at ${url} (${oneLine((error as Error).message, ANSWER_CHARS)}); is Airlock running with ${loaded.file}?\n`);
    return 1;
  }
}

/** Where and how Airlock is reached: what the probe must read from the file itself. */
const TRANSPORT = ['listen', 'tls'];

/**
 * The transport settings a config file with errors leaves unknown. The operator fallback vouches for
 * data_dir, audit, admin, state and workers only: a listen or tls with an error, or misspelt at the top
 * (`tsl:`), is dropped and its default put in its place, which would probe another address or plain HTTP
 * (found by review: a misspelt key under tls made the probe ask http:// and report the 400 it got).
 */
function unreadableTransport(loaded: LoadedConfig): string[] {
  if (loaded.config !== null) return [];
  const unknown = new Set<string>();
  for (const problem of loaded.problems) {
    if (problem.severity !== 'error') continue;
    const top = String(problem.path[0] ?? '');
    if (TRANSPORT.includes(top)) unknown.add(top);
    else if (problem.path.length === 1 && !(top in configSchema.shape)) {
      for (const setting of TRANSPORT) if (editDistance(top.toLowerCase(), setting) <= 2) unknown.add(setting);
    }
  }
  return [...unknown];
}

function probe(scheme: 'http' | 'https', host: string, port: number, path: string): Promise<{ status: number; body: string }> {
  return new Promise((resolve, reject) => {
    const options = { host, port, path, method: 'GET', timeout: PROBE_TIMEOUT_MS, headers: { connection: 'close' } };
    const answered = (response: IncomingMessage): void => {
      let body = '';
      response.setEncoding('utf8');
      response.on('data', (chunk: string) => {
        if (body.length < 4096) body += chunk;
      });
      response.on('end', () => resolve({ status: response.statusCode ?? 0, body }));
      response.on('error', reject);
    };
    const req = scheme === 'https' ? httpsRequest({ ...options, rejectUnauthorized: false }, answered) : httpRequest(options, answered);
    req.on('timeout', () => req.destroy(new Error(`no answer within ${PROBE_TIMEOUT_MS} ms`)));
    req.on('error', reject);
    req.end();
  });
}
