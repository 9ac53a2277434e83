/**
 * A JWT agent's `typ`: the values of the JWT `typ` header it accepts (RFC 8725 3.11, explicit typing).
 * The default takes the tokens accepted before the setting existed (no typ, or `JWT`), SPIFFE's `JOSE`,
 * and RFC 9068 access tokens (`at+jwt`); anything else is a JWT of another kind (a DPoP proof, a logout
 * token, a security event) and is refused. A list narrows it (`[at+jwt]` requires explicit typing).
 */
import { rmSync } from 'node:fs';
import { afterAll, describe, expect, it } from 'vitest';
import { formatPath } from '../../src/config/config-problem.js';
import { buildConfig, type LoadedConfig } from '../../src/config/load-config.js';
import { tempDir } from '../helpers/start-proxy.js';

const baseDir = tempDir('airlock-jwt-typ-');
afterAll(() => rmSync(baseDir, { recursive: true, force: true }));

function withTyp(typ?: unknown): LoadedConfig {
  return buildConfig(
    {
      services: { api: { upstream: 'https://api.example.com', credential: { secret: 'env:API_KEY' }, routes: [{ method: 'GET', path: '/v1/items', scope: 'items:read' }] } },
      agents: { bot: { jwt: { issuer: 'https://issuer.example.com', audience: 'airlock', subject: 'bot', jwks_url: 'https://issuer.example.com/jwks', ...(typ === undefined ? {} : { typ }) }, credentials: [{ service: 'api', max_scope: ['items:read'] }] } },
    },
    { baseDir },
  );
}

describe('agents.NAME.jwt.typ', () => {
  it('defaults to JWT (or none), JOSE and at+jwt', () => {
    const loaded = withTyp();
    expect(loaded.problems).toEqual([]);
    expect(loaded.config?.agents['bot']?.jwt?.typ).toEqual(['JWT', 'JOSE', 'at+jwt']);
  });

  it.each([[['at+jwt']], [['application/at+jwt', 'JWT']], [['secevent+jwt']]])('%j is taken as written', (typ) => {
    const loaded = withTyp(typ);
    expect(loaded.problems).toEqual([]);
    expect(loaded.config?.agents['bot']?.jwt?.typ).toEqual(typ);
  });

  it.each([
    [[], /at least one typ value/],
    [['at jwt'], /a media type such as JWT, at\+jwt or application\/at\+jwt/],
    [['at+jwt; charset=utf-8'], /a media type such as JWT/],
    [[''], /a media type such as JWT/],
    ['JWT', /a list/],
  ])('%j is refused with its path', (typ, message) => {
    const loaded = withTyp(typ);
    expect(loaded.config).toBeNull();
    const errors = loaded.problems.filter((p) => p.severity === 'error');
    expect(errors.length).toBeGreaterThan(0);
    for (const problem of errors) {
      expect(formatPath(problem.path)).toMatch(/^agents\.bot\.jwt\.typ/);
      expect(problem.message).toMatch(message);
    }
  });
});
