/**
 * "Token ${secret}" templates, split once at start-up into literal parts so injection is a join.
 * Only ${secret} is a placeholder; any other ${...} is a config error (likely a typo).
 */

export interface SecretTemplate {
  readonly usesSecret: boolean;
  render(secret: string): string;
}

export type ParsedSecretTemplate = { ok: true; template: SecretTemplate } | { ok: false; problem: string };

const PLACEHOLDER = '${secret}';

export function parseSecretTemplate(text: string): ParsedSecretTemplate {
  const parts = text.split(PLACEHOLDER);
  for (const part of parts) {
    const stray = /\$\{[^}]*\}/.exec(part);
    if (stray) return { ok: false, problem: `unknown placeholder ${stray[0]}; the only one is \${secret}` };
  }
  const usesSecret = parts.length > 1;
  return {
    ok: true,
    template: Object.freeze({
      usesSecret,
      render: function renderSecretTemplate(secret: string): string {
        return parts.join(secret);
      },
    }),
  };
}
