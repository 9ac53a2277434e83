/**
 * SHA-256 of the agent and session tokens seen recently. An agent sends the same token on every
 * request, so it is hashed once rather than per request. Bounded (LRU): a flood of made-up tokens
 * only evicts entries, and an entry is only a hash of what the caller itself sent.
 */
import { LRUCache } from 'lru-cache';
import { hashAgentToken } from './agent-token.js';

export class TokenHashes {
  readonly #cache = new LRUCache<string, string>({ max: 10_000 });

  of(token: string): string {
    let hash = this.#cache.get(token);
    if (hash === undefined) {
      hash = hashAgentToken(token);
      this.#cache.set(token, hash);
    }
    return hash;
  }
}
