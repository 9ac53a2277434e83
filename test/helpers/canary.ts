/**
 * Unique canary secrets: every credential fixture is one, so a leak anywhere is attributable to the
 * test that planted it. Shaped like a provider key so shape-based redaction rules see it too.
 */
import { randomBytes } from 'node:crypto';

export function canary(label: string): string {
  const tag = label.replace(/[^A-Za-z0-9]/g, '').slice(0, 12) || 'x';
  return `sk-canary-${tag}-${randomBytes(15).toString('base64url')}`;
}

/**
 * A canary shaped like no provider key: only Airlock knowing the value can mask it, never a key-shape
 * rule. A test that must show the catalogue knows a value (a rotated one, say) uses this, since an
 * `sk-` canary is masked by the built-in openai shape whether Airlock knows it or not.
 */
export function plainCanary(label: string): string {
  const tag = label.replace(/[^A-Za-z0-9]/g, '').slice(0, 12) || 'x';
  return `plain${tag}${randomBytes(16).toString('hex')}`;
}
