/**
 * Two listeners on one port, the address spelt two ways: `localhost` beside 127.0.0.1, `127.1` or
 * `127.000.000.001` (read as 127.0.0.1 by the resolver), `[::ffff:127.0.0.1]` (the same socket on
 * Linux). check compared the text and said OK; serve then stopped with "another process uses this
 * port; stop it", while the other was Airlock's own listener. check names the clash now, as it does
 * for the same spelling.
 */
import { describe, expect, it } from 'vitest';
import { formatPath } from '../../src/config/config-problem.js';
import { buildConfig } from '../../src/config/load-config.js';

function withServiceListen(listen: string, agentListen = '127.0.0.1:7700'): ReturnType<typeof buildConfig> {
  return buildConfig(
    {
      listen: agentListen,
      services: { api: { upstream: 'https://api.example.com', listen, credential: { secret: 'env:API_KEY' }, routes: [{ method: 'GET', path: '/v1/items', scope: 'items:read' }] } },
    },
    { baseDir: '/tmp' },
  );
}

const errors = (loaded: ReturnType<typeof buildConfig>): string[] => loaded.problems.filter((p) => p.severity === 'error').map((p) => `${formatPath(p.path)}: ${p.message}`);

describe('listeners that clash under another spelling of the address', () => {
  it.each(['localhost:7700', 'LOCALHOST:7700', '127.1:7700', '127.000.000.001:7700', '[::ffff:127.0.0.1]:7700', '0:7700'])('%s beside 127.0.0.1:7700', (listen) => {
    expect(errors(withServiceListen(listen))).toEqual([`services.api.listen: ${listen} clashes with 127.0.0.1:7700 of the agent listener (listen); give each listener its own port`]);
  });

  it('[0:0:0:0:0:0:0:1] beside localhost', () => {
    expect(errors(withServiceListen('[0:0:0:0:0:0:0:1]:7700', 'localhost:7700'))).toEqual([
      'services.api.listen: [0:0:0:0:0:0:0:1]:7700 clashes with localhost:7700 of the agent listener (listen); give each listener its own port',
    ]);
  });

  it('other addresses or ports do not clash', () => {
    expect(errors(withServiceListen('127.0.0.2:7700'))).toEqual([]);
    expect(errors(withServiceListen('localhost:7701'))).toEqual([]);
    expect(errors(withServiceListen('[::1]:7700'))).toEqual([]);
  });
});
