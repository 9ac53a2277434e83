/**
 * checkAdminHost (admin/check-admin-host.ts): the admin listener answers only for its own names, a
 * DNS-rebinding guard; table of Host headers against one admin block's names.
 */
import { describe, expect, it } from 'vitest';
import { adminHostNames, checkAdminHost } from '../../src/admin/check-admin-host.js';

const names = adminHostNames(['ops.example.com'], 'https://airlock.example.org/console', 'admin.corp.example');

describe('checkAdminHost', () => {
  it.each([
    '127.0.0.1:7701',
    '10.2.3.4',
    '[::1]:7701',
    'localhost:7701',
    'airlock:7701',
    'airlock.ops.svc:7701',
    'airlock-admin.default.svc.cluster.local',
    'admin.airlock.internal',
    'printer.local',
    'box.home.arpa',
    'ops.example.com',
    'OPS.Example.com.:7701',
    'airlock.example.org',
    'admin.corp.example:7701',
  ])('answers %s', (host) => {
    expect(() => checkAdminHost(host, names)).not.toThrow();
  });

  it.each(['evil.attacker.example', 'evil.attacker.example:7701', 'airlock.example.org.evil.example', '[attacker.example]:7701', 'svc.attacker.example', 'example.com'])('refuses %s with 400, not repeating it', (host) => {
    let thrown: unknown = null;
    try {
      checkAdminHost(host, names);
    } catch (error) {
      thrown = error;
    }
    expect(thrown).toMatchObject({ code: 'invalid_request' });
    expect(String((thrown as Error).message)).not.toContain(host);
  });
});
