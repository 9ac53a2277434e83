/**
 * A method override in a request body: Rack::MethodOverride (in Rails' default stack), Laravel, Symfony
 * and Express's method-override read `_method` from a POST body and run that method instead, so a grant
 * for POST would run DELETE while the audit said POST (found by review). Each kind of body has its own
 * watch, which reads the body as it streams to the upstream (request-body.ts refuses it with 400).
 */
import { FormOverrideWatch } from './form-override-watch.js';
import { JsonOverrideWatch } from './json-override-watch.js';
import { MultipartOverrideWatch } from './multipart-override-watch.js';

/** Watches a body for a method override as it streams: true once one is found. */
export interface OverrideWatch {
  push(chunk: Buffer): boolean;
  end(): boolean;
}

/**
 * Which watch a body gets by its Content-Type: by its media type (watchByMediaType), and the JSON watch
 * as well whenever "json" appears anywhere in the header. Laravel reads the body as JSON when the raw
 * header merely contains "/json" or "+json" (Str::contains in InteractsWithContentTypes::isJson), even
 * in a parameter, and makes that its request fields, which Symfony's getMethod reads `_method` from:
 * `text/json` and `text/plain; x=/json` ran DELETE (found by review). A form type carrying "/json" is
 * read as a form by Rack and as JSON by Laravel, so both watches read it.
 */
export function overrideWatchFor(contentType: string | undefined): OverrideWatch | null {
  const type = (contentType ?? '').trim().toLowerCase();
  const byMediaType = watchByMediaType(type, (contentType ?? '').trim());
  if (!type.includes('json')) return byMediaType;
  const json = new JsonOverrideWatch();
  return byMediaType === null ? json : new BothWatches(byMediaType, json);
}

/**
 * The watch for a body's media type. None given is read as a form too: Rack parses a POST without a
 * Content-Type as one (found by the owner's review: the override passed that way). Every multipart type
 * gets the multipart watch, given the header as sent (`contentType`: a boundary is case-sensitive): Rack
 * parses multipart/mixed and /related as form data too (found by review).
 */
function watchByMediaType(type: string, contentType: string): OverrideWatch | null {
  if (type === '' || type.startsWith('application/x-www-form-urlencoded')) return new FormOverrideWatch();
  if (type.startsWith('multipart/')) return new MultipartOverrideWatch(contentType);
  return null;
}

/** Two watches over one body: an override either finds is refused. */
class BothWatches implements OverrideWatch {
  readonly #first: OverrideWatch;
  readonly #second: OverrideWatch;

  constructor(first: OverrideWatch, second: OverrideWatch) {
    this.#first = first;
    this.#second = second;
  }

  push(chunk: Buffer): boolean {
    return this.#first.push(chunk) || this.#second.push(chunk);
  }

  end(): boolean {
    return this.#first.end() || this.#second.end();
  }
}
