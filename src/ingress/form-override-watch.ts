/**
 * The keys of an application/x-www-form-urlencoded body (or one without a Content-Type), read as they
 * stream, for a method override key (override-watch.ts).
 */
import { METHOD_OVERRIDE_NAMES } from '../pipeline/build-upstream-request.js';
import { formKeyNames } from '../upstream/outbound-request.js';
import type { OverrideWatch } from './override-watch.js';

/**
 * Longer keys are not read past it: every override key fits, percent-encoded whole, well within it. What
 * formKeyNames reads past before a name (leading whitespace and brackets, "+" and their escapes
 * included) can be longer, so it is dropped from a key that reaches the limit, and reading goes on:
 * "+" repeated 300 times before "_method" is still `_method` to PHP.
 */
const FORM_KEY_LIMIT = 256;
const LEADING_FILLER = /^(?:[+\t\n\v\f\r [\]]|%(?:20|0[9A-Da-d]|5[BDbd]))+/;

/**
 * The keys of an application/x-www-form-urlencoded body, read as they stream. Rack::MethodOverride (in
 * Rails' default stack), Laravel and Symfony read `_method` from a POST form body and run that method
 * instead, so a grant for POST would run DELETE while the audit said POST (found by review). Such a key
 * is refused, as the same key in the query is removed (build-upstream-request.ts). Keys are compared as
 * formKeyNames reads them, in any case (Slim reads `_METHOD`) and in every spelling a parser reads as
 * the override (".method" and " _method" to PHP, "[_method]" to Rack 2.2 and qs; found by review).
 */
export class FormOverrideWatch implements OverrideWatch {
  #key = '';
  #inKey = true;
  /** The key reached FORM_KEY_LIMIT with no leading filler left to drop: the rest of it is not read. */
  #full = false;

  /** True once a key naming a method override has been read whole. */
  push(chunk: Buffer): boolean {
    for (let i = 0; i < chunk.length; i++) {
      const byte = chunk[i] as number;
      if (byte === 0x26 || byte === 0x3b) {
        // "&" (and ";", which some parsers also split on) ends a pair; a key without "=" counts too.
        if (this.#inKey && this.#overrides()) return true;
        this.#inKey = true;
        this.#key = '';
        this.#full = false;
      } else if (this.#inKey) {
        if (byte === 0x3d) {
          if (this.#overrides()) return true;
          this.#inKey = false;
        } else if (!this.#full) {
          if (this.#key.length >= FORM_KEY_LIMIT) {
            this.#key = this.#key.replace(LEADING_FILLER, '');
            this.#full = this.#key.length >= FORM_KEY_LIMIT;
          }
          if (!this.#full) this.#key += String.fromCharCode(byte);
        }
      }
    }
    return false;
  }

  end(): boolean {
    return this.#inKey && this.#overrides();
  }

  #overrides(): boolean {
    return this.#key !== '' && formKeyNames(this.#key).some((name) => METHOD_OVERRIDE_NAMES.has(name));
  }
}

