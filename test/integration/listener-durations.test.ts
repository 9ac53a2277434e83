/**
 * Listener durations that `check` accepts start `serve` (found by review). node's http server takes
 * headersTimeout, requestTimeout and keepAliveTimeout as whole milliseconds (ERR_OUT_OF_RANGE
 * otherwise), and 2.01 s * 1000 is 2009.9999999999998, '1.001s' 1000.9999999999999, '1500.5ms' 1500.5;
 * a duration under 1 ms would round to 0, node's "no timeout"; and node refuses a headers deadline
 * past the request's.
 */
import { describe, expect, it } from 'vitest';
import { buildConfig } from '../../src/config/load-config.js';
import { formatProblem } from '../../src/config/config-problem.js';
import { generateAgentToken } from '../../src/identity/agent-token.js';
import { canary } from '../helpers/canary.js';
import { sendRequest } from '../helpers/send-request.js';
import { startProxy } from '../helpers/start-proxy.js';
import { startUpstream } from '../helpers/start-upstream.js';

const agent = generateAgentToken();
const key = canary('listener-durations');
const input = (limits: Record<string, unknown>, upstream = 'http://127.0.0.1:9'): Record<string, unknown> => ({
  limits,
  services: { svc: { upstream, credential: { secret: 'env:SVC_KEY' }, routes: [{ method: 'GET', path: '/v1/*', scope: 'api' }] } },
  agents: { bot: { tokens: [agent.hash], credentials: [{ service: 'svc', max_scope: ['*'] }] } },
});
const problems = (limits: Record<string, unknown>): string[] =>
  buildConfig({ listen: '127.0.0.1:0', data_dir: '/tmp', ...input(limits) }, { baseDir: '/tmp' }).problems.filter((p) => p.severity === 'error').map((p) => formatProblem(p, null));

describe('listener durations the config accepts start the listener', () => {
  it.each([
    ['headers_timeout', '2.01s'],
    ['request_timeout', '10.001s'],
    ['keep_alive_timeout', '1500.5ms'],
    ['headers_timeout', 2.01],
  ])('limits.%s: %s is accepted, and the proxy starts and answers', async (field, value) => {
    expect(problems({ [field]: value })).toEqual([]);
    const upstream = await startUpstream();
    const proxy = await startProxy(input({ [field]: value }, upstream.url), { env: { SVC_KEY: key } });
    try {
      const answer = await sendRequest(`${proxy.url}/svc/v1/ping`, { headers: { authorization: `Bearer ${agent.token}` } });
      expect(answer.status).toBe(200);
    } finally {
      await proxy.close();
      await upstream.close();
    }
  });

  it('limits.request_timeout below headers_timeout (10 s by default) is a config error naming both', () => {
    expect(problems({ request_timeout: '5s' })).toEqual([expect.stringMatching(/limits\.request_timeout.*request_timeout \(5 s\) is shorter than headers_timeout \(10 s\)/)]);
    expect(problems({ request_timeout: '5s', headers_timeout: '5s' })).toEqual([]);
  });

  it('a duration under 1 ms is refused (it would be no timeout at all)', () => {
    expect(problems({ headers_timeout: '0.0004s' })).toEqual([expect.stringContaining('at least 1 ms')]);
    expect(problems({ headers_timeout: '0.5ms' })).toEqual([expect.stringContaining('at least 1 ms')]);
  });
});
