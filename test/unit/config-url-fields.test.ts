/**
 * URL fields that only looked at their first characters (`^https?://`): `http://` alone, a host with a
 * space, an unclosed IPv6 bracket, a port past 65535 passed `airlock check`, then `serve` (or a reload)
 * failed with node's bare "Invalid URL", no path, no line (admin.public_url, a JWT agent's jwks_url,
 * telemetry.otlp.endpoint), or the URL failed on each use (webhooks, the Vault address, a token_url).
 * Each is refused now with its YAML path and line, and the value is not repeated (it may hold a password).
 */
import { rmSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { formatProblem } from '../../src/config/config-problem.js';
import { parseConfigText } from '../../src/config/load-config.js';
import { generateAgentToken } from '../../src/identity/agent-token.js';
import { tempDir } from '../helpers/start-proxy.js';

const baseDir = tempDir('airlock-url-fields-');
afterAll(() => rmSync(baseDir, { recursive: true, force: true }));

const AGENT = generateAgentToken().hash;
const ADMIN = generateAgentToken().hash;

/** A clean config with `url` planted at one field; `path` is where check must say the problem is. */
const fields: ReadonlyArray<{ path: string; yaml: (url: string) => string }> = [
  { path: 'admin.public_url', yaml: (url) => `admin: {listen: "127.0.0.1:0", tokens: ["${ADMIN}"], public_url: "${url}"}` },
  { path: 'approvals.webhook', yaml: (url) => `approvals: {webhook: "${url}"}` },
  { path: 'anomalies.webhook', yaml: (url) => `anomalies: {webhook: "${url}"}` },
  { path: 'audit.webhook', yaml: (url) => `audit: {webhook: "${url}"}` },
  { path: 'telemetry.otlp.endpoint', yaml: (url) => `telemetry: {otlp: {endpoint: "${url}"}}` },
  { path: 'secrets.vault.address', yaml: (url) => `secrets: {vault: {address: "${url}", auth: {method: token, token: env:VAULT_TOKEN}}}` },
  { path: 'secrets.oauth2.crm.token_url', yaml: (url) => `secrets: {oauth2: {crm: {token_url: "${url}", client_id: env:CRM_ID, client_secret: env:CRM_SECRET}}}` },
  { path: 'agents.bot.jwt.jwks_url', yaml: (url) => `agents: {bot: {jwt: {issuer: https://issuer.example, audience: airlock, subject: bot, jwks_url: "${url}"}}}` },
];

function configWith(line: string): string {
  const agents = line.startsWith('agents:') ? '' : `agents: {bot: {tokens: ["${AGENT}"]}}\n`;
  return `listen: 127.0.0.1:0\nservices: {}\n${agents}${line}\n`;
}

/** Unparseable by node's URL (what every user of these fields calls), though they start with http(s)://. */
const BROKEN = ['http://', 'https://', 'http:// collector.example', 'https://[::1', 'https://vault.example:99999', 'https://user:hunter2-pass@bad host.example'];

describe('URL fields are refused unless node can parse them', () => {
  for (const field of fields) {
    for (const url of BROKEN) {
      it(`${field.path}: ${JSON.stringify(url)} is refused with its path and line`, () => {
        const loaded = parseConfigText(configWith(field.yaml(url)), join(baseDir, 'airlock.yaml'));
        expect(loaded.config).toBeNull();
        const errors = loaded.problems.filter((p) => p.severity === 'error');
        expect(errors.map((p) => p.path.join('.'))).toEqual([field.path]);
        const shown = formatProblem(errors[0]!, 'airlock.yaml');
        expect(shown).toMatch(/^airlock\.yaml:\d+:\d+: error at /);
        expect(shown).toMatch(/an http\(s\) (URL|origin) node can parse/);
        expect(shown).not.toContain('hunter2');
      });
    }
    it(`${field.path}: a well-formed URL is still taken`, () => {
      const url = field.path === 'secrets.vault.address' ? 'https://vault.example:8200' : 'https://hooks.example:8443/airlock';
      const loaded = parseConfigText(configWith(field.yaml(url)), join(baseDir, 'airlock.yaml'));
      expect(loaded.problems.filter((p) => p.severity === 'error')).toEqual([]);
      expect(loaded.config).not.toBeNull();
    });
  }
});
