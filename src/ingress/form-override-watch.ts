/**
 * The keys of an application/x-www-form-urlencoded body (or one without a Content-Type), read as they
 * stream, for a method override key (override-watch.ts).
 */
import { METHOD_OVERRIDE_QUERY_KEYS } from '../pipeline/build-upstream-request.js';
import { formKeyName } from '../upstream/outbound-request.js';
import type { OverrideWatch } from './override-watch.js';

/** Longer keys are not read: every override key fits, percent-encoded whole, well within it. */
const FORM_KEY_LIMIT = 256;
const OVERRIDE_KEYS: ReadonlySet<string> = new Set(METHOD_OVERRIDE_QUERY_KEYS);

/**
 * The keys of an application/x-www-form-urlencoded body, read as they stream. Rack::MethodOverride (in
 * Rails' default stack), Laravel and Symfony read `_method` from a POST form body and run that method
 * instead, so a grant for POST would run DELETE while the audit said POST (found by review). Such a key
 * is refused, as the same key in the query is removed (build-upstream-request.ts).
 */
export class FormOverrideWatch implements OverrideWatch {
  #key = '';
  #inKey = true;

  /** True once a key naming a method override has been read whole. */
  push(chunk: Buffer): boolean {
    for (let i = 0; i < chunk.length; i++) {
      const byte = chunk[i] as number;
      if (byte === 0x26 || byte === 0x3b) {
        // "&" (and ";", which some parsers also split on) ends a pair; a key without "=" counts too.
        if (this.#inKey && this.#overrides()) return true;
        this.#inKey = true;
        this.#key = '';
      } else if (this.#inKey) {
        if (byte === 0x3d) {
          if (this.#overrides()) return true;
          this.#inKey = false;
        } else if (this.#key.length < FORM_KEY_LIMIT) {
          this.#key += String.fromCharCode(byte);
        }
      }
    }
    return false;
  }

  end(): boolean {
    return this.#inKey && this.#overrides();
  }

  #overrides(): boolean {
    return this.#key !== '' && OVERRIDE_KEYS.has(formKeyName(this.#key));
  }
}

