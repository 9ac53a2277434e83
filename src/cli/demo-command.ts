/**
 * `airlock demo` (npm run demo): an offline walk-through. A stand-in upstream on loopback, a proxy built
 * from an in-memory config, one agent; an allowed call, a denied call, an unauthenticated call and a
 * hostile path; then the audit lines those requests left. Nothing leaves the machine.
 */
import { randomBytes } from 'node:crypto';
import { once } from 'node:events';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { createServer, type IncomingMessage, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Client } from 'undici';
import { startAirlock } from '../app.js';
import { buildConfig } from '../config/load-config.js';
import { generateAgentToken } from '../identity/agent-token.js';
import { UsageError, type CliIo } from './cli-io.js';

export async function demoCommand(io: CliIo): Promise<number> {
  // It takes no arguments; one given (a config path, say) would otherwise be ignored without a word, and
  // the demo mistaken for a run of that config. Not echoed, as `airlock token` does not echo its own.
  if (io.args.length > 0) throw new UsageError(`usage: airlock demo   (no arguments: it runs offline on a built-in config; \`airlock serve --config F\` runs yours); got ${io.args.length} argument(s)`);
  const say = (text: string): void => {
    io.stdout.write(`${text}\n`);
  };
  const realKey = `sk-demo-${randomBytes(18).toString('base64url')}`;
  const workDir = mkdtempSync(join(tmpdir(), 'airlock-demo-'));
  say('Airlock demo (offline): a stand-in OpenAI upstream, one agent, four requests.\n');

  const upstream = createServer(function standInOpenAI(req: IncomingMessage, res: ServerResponse) {
    const sawRealKey = req.headers.authorization === `Bearer ${realKey}`;
    const sawAgentToken = JSON.stringify(req.headers).includes('alk_');
    req.resume();
    res.writeHead(200, { 'content-type': 'application/json' });
    res.end(
      JSON.stringify({
        id: 'chatcmpl-demo',
        object: 'chat.completion',
        choices: [{ index: 0, message: { role: 'assistant', content: sawRealKey && !sawAgentToken ? 'The upstream received the real API key, and no agent token.' : 'The upstream did NOT receive the expected key.' } }],
      }),
    );
  });
  upstream.listen(0, '127.0.0.1');
  await once(upstream, 'listening');
  const upstreamUrl = `http://127.0.0.1:${(upstream.address() as AddressInfo).port}`;
  say(`[1/6] Started a stand-in upstream at ${upstreamUrl}; it checks the key it receives and never prints it.`);

  const agent = generateAgentToken();
  const built = buildConfig(
    {
      listen: '127.0.0.1:0',
      data_dir: workDir,
      log: { level: 'silent' },
      services: {
        openai: {
          upstream: upstreamUrl,
          credential: { secret: 'env:DEMO_OPENAI_KEY', inject: 'bearer' },
          routes: [
            { method: 'POST', path: '/v1/chat/completions', scope: 'chat:write' },
            { method: 'GET', path: '/v1/models', scope: 'models:read' },
          ],
        },
      },
      agents: { 'demo-agent': { tokens: [agent.hash], credentials: [{ service: 'openai', max_scope: ['chat:write'] }] } },
    },
    { baseDir: workDir },
  );
  if (built.config === null) throw new Error(`demo config invalid: ${built.problems.map((p) => p.message).join('; ')}`);
  const airlock = await startAirlock(built.config, { env: { DEMO_OPENAI_KEY: realKey }, logDestination: { write: () => undefined } });
  say(`[2/6] Started Airlock at ${airlock.url}: service openai -> ${upstreamUrl}, agent demo-agent holds only chat:write.`);

  const client = new Client(airlock.url);
  const call = async (method: string, path: string, token: string | null, body?: string): Promise<{ status: number; json: Record<string, unknown> }> => {
    const headers: Record<string, string> = { 'content-type': 'application/json' };
    if (token !== null) headers['authorization'] = `Bearer ${token}`;
    const response = await client.request({ method, path, headers, body: body ?? null });
    const text = await response.body.text();
    return { status: response.statusCode, json: JSON.parse(text) as Record<string, unknown> };
  };
  const denial = (json: Record<string, unknown>): string => `${String(json['code'])}: ${String(json['detail'])}`;

  try {
    const allowed = await call('POST', '/openai/v1/chat/completions', agent.token, '{"model":"demo","messages":[{"role":"user","content":"hi"}]}');
    const choice = (allowed.json['choices'] as Array<{ message: { content: string } }> | undefined)?.[0]?.message.content;
    say(`[3/6] Allowed:  POST /openai/v1/chat/completions with the agent's alk_ token\n        -> ${allowed.status}; upstream says: "${choice ?? JSON.stringify(allowed.json)}"`);
    const denied = await call('GET', '/openai/v1/models', agent.token);
    say(`[4/6] Denied:   GET /openai/v1/models (route needs models:read)\n        -> ${denied.status} ${denial(denied.json)}`);
    const anonymous = await call('POST', '/openai/v1/chat/completions', null, '{}');
    say(`[5/6] No token: POST /openai/v1/chat/completions\n        -> ${anonymous.status} ${denial(anonymous.json)}`);
    const hostile = await call('GET', '/openai/v1/%2e%2e/admin', agent.token);
    say(`[6/6] Hostile:  GET /openai/v1/%2e%2e/admin\n        -> ${hostile.status} ${denial(hostile.json)}`);
  } finally {
    await client.close();
    await airlock.close();
    upstream.close();
  }

  say(`\nThe audit log (${built.config.audit.file}) has one line per request; none holds a secret:`);
  for (const line of readFileSync(built.config.audit.file, 'utf8').trim().split('\n')) say(`  ${line}`);
  const leaked = readFileSync(built.config.audit.file, 'utf8').includes(realKey);
  say(`\nThe real key appears in the audit log: ${leaked ? 'YES (a bug: please report it)' : 'no'}.`);
  rmSync(workDir, { recursive: true, force: true });
  say('Next: `npm start` runs Airlock on config/airlock.yaml; the README walks through tokens and secrets.');
  return leaked ? 1 : 0;
}
