/**
 * A method override in a request body: Rack::MethodOverride (in Rails' default stack), Laravel, Symfony
 * and Express's method-override read `_method` from a POST body and run that method instead, so a grant
 * for POST would run DELETE while the audit said POST (found by review). Each kind of body has its own
 * watch, which reads the body as it streams to the upstream (request-body.ts refuses it with 400).
 */
import { FormOverrideWatch } from './form-override-watch.js';
import { JSON_OVERRIDES, LiteralOverrideWatch, MULTIPART_OVERRIDES } from './literal-override-watch.js';

/** Watches a body for a method override as it streams: true once one is found. */
export interface OverrideWatch {
  push(chunk: Buffer): boolean;
  end(): boolean;
}

/**
 * Which watch a body gets by its Content-Type. None given is read as a form too: Rack parses a POST
 * without a Content-Type as one (found by the owner's review: the override passed that way).
 */
export function overrideWatchFor(contentType: string | undefined): OverrideWatch | null {
  const type = (contentType ?? '').trim().toLowerCase();
  if (type === '' || type.startsWith('application/x-www-form-urlencoded')) return new FormOverrideWatch();
  if (type.startsWith('multipart/form-data')) return new LiteralOverrideWatch(MULTIPART_OVERRIDES, false);
  if (type.startsWith('application/json') || /^application\/[a-z0-9.+-]*\+json/.test(type)) return new LiteralOverrideWatch(JSON_OVERRIDES, true);
  return null;
}

