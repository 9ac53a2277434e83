/**
 * A JWT agent's jwks_url over plain http. The keys fetched from it decide who may act as the agent, and
 * over plain http anyone on the network path can answer with keys of their own and then sign tokens
 * that verify (RFC 7515 4.1.2 requires TLS to fetch a JWK Set; RFC 7517 9.1: trust a key no more than
 * the way it was obtained). It was a warning that only `check --strict` failed on; it is now an error,
 * except for a loopback address (a sidecar on this machine, or a test's JWKS server), where the fetch
 * never leaves the machine.
 */
import { rmSync } from 'node:fs';
import { afterAll, describe, expect, it } from 'vitest';
import { formatPath } from '../../src/config/config-problem.js';
import { buildConfig } from '../../src/config/load-config.js';
import { tempDir } from '../helpers/start-proxy.js';

const baseDir = tempDir('airlock-jwks-scheme-');
afterAll(() => rmSync(baseDir, { recursive: true, force: true }));

function problemsFor(jwksUrl: string): Array<{ severity: string; path: string; message: string }> {
  const loaded = buildConfig(
    {
      services: { api: { upstream: 'https://api.example.com', credential: { secret: 'env:API_KEY' }, routes: [{ method: 'GET', path: '/v1/items', scope: 'items:read' }] } },
      agents: { bot: { jwt: { issuer: 'https://issuer.example.com', audience: 'airlock', subject: 'bot', jwks_url: jwksUrl }, credentials: [{ service: 'api', max_scope: ['items:read'] }] } },
    },
    { baseDir },
  );
  return loaded.problems.map((p) => ({ severity: p.severity, path: formatPath(p.path), message: p.message }));
}

describe('jwks_url over plain http', () => {
  it.each([
    ['http://issuer.example.com/jwks', 'issuer.example.com'],
    ['http://10.0.0.5:8080/jwks', '10.0.0.5'],
    ['http://[fd00::5]/jwks', 'fd00::5'],
    // Not exempt here, unlike elsewhere in check: glibc looks such names up in DNS unless /etc/hosts or
    // systemd-resolved says otherwise, so the name may lead off the machine.
    ['http://issuer.localhost/jwks', 'issuer.localhost'],
    ['http://localhost.example.com/jwks', 'localhost.example.com'],
  ])('%s is refused, saying to use https', (url, host) => {
    expect(problemsFor(url)).toEqual([
      {
        severity: 'error',
        path: 'agents.bot.jwt.jwks_url',
        message: `plain http to ${host}: anyone on the network path can answer with signing keys of their own and forge tokens that authenticate as bot (RFC 7515 4.1.2 requires TLS for a JWK Set); use https, or for a JWKS served on this machine a loopback address (127.0.0.0/8, ::1 or localhost)`,
      },
    ]);
  });

  it.each([
    'https://issuer.example.com/jwks',
    'http://127.0.0.1:8080/jwks',
    'http://127.10.0.1/jwks',
    'http://[::1]:8080/jwks',
    'http://[0:0:0:0:0:0:0:1]/jwks',
    'http://[::ffff:127.0.0.1]/jwks',
    'http://localhost:8080/jwks',
    'http://LOCALHOST/jwks',
  ])('%s is accepted', (url) => {
    expect(problemsFor(url)).toEqual([]);
  });
});
