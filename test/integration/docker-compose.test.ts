/**
 * docker/compose.yaml is a valid Compose file that offers users a real Vault dev server (vault) and a
 * one-shot job that seeds it (vault-seed): `docker-compose -f docker/compose.yaml config` accepts it.
 * Nothing is pulled or started; only the file is checked. Skipped, loudly, when docker-compose is absent.
 */
import { spawnSync } from 'node:child_process';
import { resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { describe, expect, it } from 'vitest';
import { parse } from 'yaml';

const REPO = fileURLToPath(new URL('../..', import.meta.url));
const COMPOSE_FILE = resolve(REPO, 'docker/compose.yaml');

function dockerCompose(args: string[]): { status: number | null; stdout: string; stderr: string; missing: boolean } {
  const run = spawnSync('docker-compose', ['-f', COMPOSE_FILE, ...args], { cwd: REPO, encoding: 'utf8', timeout: 60_000 });
  const missing = (run.error as NodeJS.ErrnoException | undefined)?.code === 'ENOENT';
  return { status: run.status, stdout: run.stdout ?? '', stderr: run.stderr ?? '', missing };
}

describe('docker/compose.yaml', () => {
  it('passes `docker-compose config` and defines the services vault and vault-seed', (context) => {
    const config = dockerCompose(['config']);
    if (config.missing) {
      console.warn('SKIPPED: docker/compose.yaml was not validated: the `docker-compose` binary is missing; install the Debian package `docker-compose` (apt-get install docker-compose).');
      context.skip();
      return;
    }
    expect(config.status, config.stderr).toBe(0);
    const services = dockerCompose(['config', '--services']);
    expect(services.status, services.stderr).toBe(0);
    expect(services.stdout.split('\n').filter((line) => line !== '').sort()).toEqual(['vault', 'vault-seed']);

    // The resolved file: a Vault dev server on loopback, and a seed job that waits for it and writes secret/stripe.
    const resolved = parse(config.stdout) as { services: Record<string, Record<string, unknown>> };
    const vault = resolved.services['vault'];
    const seed = resolved.services['vault-seed'];
    expect(String(vault?.['image'])).toMatch(/^hashicorp\/vault:/);
    expect(vault?.['command']).toEqual(expect.arrayContaining(['server', '-dev']));
    expect(JSON.stringify(vault?.['ports'])).toContain('127.0.0.1');
    expect(JSON.stringify(seed?.['depends_on'])).toContain('vault');
    expect(JSON.stringify(seed?.['command'])).toContain('vault kv put secret/stripe api_key=');
  });
});
