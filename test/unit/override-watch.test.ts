/**
 * overrideWatchFor: which method-override watch a request body gets by its Content-Type, and what each
 * refuses, fed whole and one byte at a time (every chunk seam). Found by review (PHP 8.2 with Symfony
 * and Laravel, Rack 2.2 and 3.2, qs, Slim 4): form keys spelled so a parser reads `_method` (".method",
 * "+_method", "[_method]", "_method%00"), a JSON key in capitals (`_METHOD`, which Slim reads), and
 * JSON sent under a Content-Type Laravel reads as JSON ("text/json", "text/plain; x=/json").
 */
import { describe, expect, it } from 'vitest';
import { overrideWatchFor } from '../../src/ingress/override-watch.js';

const FORM = 'application/x-www-form-urlencoded';
const JSON_TYPE = 'application/json';

/** Whether the watch for `contentType` refuses `body`, fed in chunks of `size` bytes (0: whole). */
function refuses(contentType: string | undefined, body: string, size = 0): boolean {
  const watch = overrideWatchFor(contentType);
  // Every type these tables use has a watch: a missing one must fail the case, not pass it as forwarded.
  if (watch === null) throw new Error(`no override watch for ${String(contentType)}`);
  const bytes = Buffer.from(body, 'latin1');
  const step = size === 0 ? Math.max(1, bytes.length) : size;
  for (let at = 0; at < bytes.length; at += step) if (watch.push(bytes.subarray(at, at + step))) return true;
  return watch.end();
}

function verdicts(contentType: string | undefined, body: string): boolean[] {
  return [refuses(contentType, body), refuses(contentType, body, 1), refuses(contentType, body, 7)];
}

describe('form body keys', () => {
  it.each([
    '.method=DELETE',
    '%2Emethod=DELETE',
    '+_method=DELETE',
    '%20_method=DELETE',
    'a=1&%09_method=DELETE',
    '_method%00=DELETE',
    '_method%00junk=DELETE',
    '[_method]=DELETE',
    'a=1&%5B_method%5D=DELETE',
    '_METHOD=DELETE',
    '_method]=DELETE',
    // leading filler past the key length the watch keeps: still `_method` to PHP and Rack
    `${'+'.repeat(300)}_method=DELETE`,
    `${'%20'.repeat(200)}_method=DELETE`,
    `${'['.repeat(300)}_method]=DELETE`,
    `a=1&${'+%5B'.repeat(150)}_method=DELETE`,
  ])('refuses %s', (body) => {
    expect(verdicts(FORM, body)).toEqual([true, true, true]);
    expect(verdicts(undefined, body)).toEqual([true, true, true]);
  });

  it.each([
    'payment_method=pm_x',
    'method=flickr.photos.search',
    'methods=1&_methods=2&x_method=3&payment.method=4&method.=5',
    'a=_method&b=.method',
    `${'x'.repeat(300)}_method=DELETE`,
    `a=${'+'.repeat(1000)}&b=2`,
  ])('forwards %s', (body) => {
    expect(verdicts(FORM, body)).toEqual([false, false, false]);
  });
});

describe('JSON body keys, in any case', () => {
  it.each([
    '{"_METHOD":"DELETE"}',
    '{"amount":5,"_Method":"DELETE"}',
    '{"_\\u004DETHOD":"DELETE"}',
    '{"\\u005F\\u004d\\u0045\\u0054\\u0048\\u004f\\u0044":"DELETE"}',
    '{"_method":"DELETE"}',
  ])('refuses %s', (body) => {
    expect(verdicts(JSON_TYPE, body)).toEqual([true, true, true]);
  });

  it.each(['{"method":"card"}', '{"payment_method":"x"}', '{"METHOD":"x","_methods":1,"x_METHOD":2}', '{"note":"say \\"_METHOD\\""}'])('forwards %s', (body) => {
    expect(verdicts(JSON_TYPE, body)).toEqual([false, false, false]);
  });
});

describe('a Content-Type Laravel reads as JSON gets the JSON watch', () => {
  it.each([
    'text/json',
    'text/plain; x=/json',
    'text/plain; charset=utf-8+json',
    'Application/JSON',
    'application/vnd.api+json; charset=utf-8',
    'application/x-ndjson',
    `${FORM}; x=/json`,
    'multipart/form-data; boundary=a/json',
  ])('%s: refuses {"\\u005fmethod":"DELETE"}', (contentType) => {
    expect(verdicts(contentType, '{"\\u005fmethod":"DELETE"}')).toEqual([true, true, true]);
    expect(verdicts(contentType, '{"_METHOD":"DELETE"}')).toEqual([true, true, true]);
  });

  it('a form type carrying /json is still read as a form too (Rack reads it so)', () => {
    expect(verdicts(`${FORM}; x=/json`, 'a=1&_method=DELETE')).toEqual([true, true, true]);
    expect(verdicts(`${FORM}; x=/json`, 'payment_method=pm_x')).toEqual([false, false, false]);
  });

  it('a JSON body that only resembles an override is forwarded under those types too', () => {
    expect(verdicts('text/json', '{"method":"card","payment_method":"x"}')).toEqual([false, false, false]);
  });
});
