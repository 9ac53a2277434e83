/**
 * OAuth2 tokens kept in this process, where no shared state keeps them: state: memory, or Redis without
 * a shared master key (shared-token-source.ts then shares the fetch lock but stores no token).
 *
 * The client-credentials grant mints a new token on every request, so "the token in use" exists only if
 * someone keeps it. The credential cache asks for it between two forced fetches while an upstream keeps
 * refusing (FetchOptions.current): without this, each of those asks minted a token, and an upstream that
 * refused every token (a disabled account) turned the agents' requests into a stream of token requests.
 * Here a `current` fetch takes the last token minted for the reference while it has life left; forced
 * and ordinary fetches (an upstream's refusal, an operator's rotate, first use, refresh ahead of expiry)
 * mint, as before. A reload builds a new broker, and with it a new keeper.
 */
import { EXPIRY_MARGIN_MS, type Credential } from './credential.js';
import type { SecretSource } from './secret-source.js';

export function createKeptTokenSource(inner: SecretSource, now: () => number = Date.now): SecretSource {
  // One entry per oauth2: reference in the config: bounded by the config, replaced on every mint. A token
  // within EXPIRY_MARGIN_MS of its end is not handed out as current.
  const kept = new Map<string, Credential>();
  const alive = (token: Credential | undefined): token is Credential => token !== undefined && (token.expiresAt === null || token.expiresAt - now() >= EXPIRY_MARGIN_MS);

  return {
    async fetchSecret(name, ref, options) {
      const last = kept.get(ref);
      if (options?.current === true && alive(last)) return last;
      const minted = await inner.fetchSecret(name, ref, options);
      kept.set(ref, minted);
      return minted;
    },
  };
}
