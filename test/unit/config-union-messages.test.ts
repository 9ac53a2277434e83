/**
 * Settings with several forms (state: memory or redis; a Vault login: token, approle or kubernetes).
 * Found by review: a form missing one key said only which forms exist (`state: {type: redis}` without
 * url: "state is {type: memory} or {type: redis, url: redis://...}"; an approle login without
 * secret_id likewise), and a key of another form was called unknown with itself as the suggestion
 * (`unknown key "url"; did you mean "url"?`). Each problem now names the key and what to do.
 */
import { describe, expect, it } from 'vitest';
import { formatProblem } from '../../src/config/config-problem.js';
import { parseConfigText } from '../../src/config/load-config.js';

function shown(yaml: string): string[] {
  return parseConfigText(`listen: 127.0.0.1:0\nservices: {}\n${yaml}\n`, '/tmp/airlock.yaml').problems.map((p) => formatProblem(p, 'airlock.yaml'));
}

describe('problems in a setting with several forms', () => {
  it('a form missing a key names the key', () => {
    expect(shown('state: {type: redis}')).toEqual(['airlock.yaml:3:8: error at state.url: required: expected string']);
    expect(shown('secrets: {vault: {address: "https://vault.internal:8200", auth: {method: approle, role_id: env:ROLE}}}')).toEqual([
      'airlock.yaml:3:65: error at secrets.vault.auth.secret_id: required: expected string',
    ]);
  });

  it('a key of another form says so, not "did you mean" itself', () => {
    const [problem, ...rest] = shown('state: {type: memory, url: "redis://127.0.0.1:6379"}');
    expect(rest).toEqual([]);
    expect(problem).toMatch(/^airlock\.yaml:3:23: error at state\.url: unknown key "url" for this form of the setting: another form takes it \(check its type or method\)$/);
  });

  it('state.prefix says what it may hold', () => {
    expect(shown('state: {type: redis, url: "redis://127.0.0.1:6379", prefix: "team a:"}')).toEqual([
      'airlock.yaml:3:53: error at state.prefix: a key prefix of letters, digits and : _ . -, such as airlock: or team-a:',
    ]);
  });
});
