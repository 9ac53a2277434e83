/**
 * Secret references as written in config: KIND:NAME. The kinds are the sources Airlock has.
 */

export const SECRET_REF_KINDS = ['env', 'file'] as const;
export type SecretRefKind = (typeof SECRET_REF_KINDS)[number];

export interface SecretRef {
  readonly kind: SecretRefKind;
  readonly name: string;
  readonly text: string;
}

const ENV_NAME = /^[A-Za-z_][A-Za-z0-9_]*$/;
export const SECRET_NAME = /^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$/;

export type ParsedSecretRef = { ok: true; ref: SecretRef } | { ok: false; problem: string };

export function parseSecretRef(text: string): ParsedSecretRef {
  const colon = text.indexOf(':');
  const kind = colon === -1 ? '' : text.slice(0, colon);
  const name = colon === -1 ? '' : text.slice(colon + 1);
  if (!(SECRET_REF_KINDS as readonly string[]).includes(kind)) {
    return { ok: false, problem: `unknown secret source "${kind}"; use one of ${SECRET_REF_KINDS.map((k) => `${k}:`).join(', ')}` };
  }
  if (kind === 'env' && !ENV_NAME.test(name)) return { ok: false, problem: `"${name}" is not an environment variable name` };
  if (kind === 'file' && !SECRET_NAME.test(name)) {
    return { ok: false, problem: `"${name}" is not a secret name (letters, digits, _ . -; set it with \`npx airlock secrets set NAME\`)` };
  }
  return { ok: true, ref: Object.freeze({ kind: kind as SecretRefKind, name, text }) };
}
