/**
 * MultipartOverrideWatch: the header section of every part of a multipart body (any multipart/* type),
 * read as it streams, for a field name a framework would run as the method. Found by review against
 * Rack 2.2.22 and 3.2.0 (each ran DELETE while Airlock forwarded POST): multipart/mixed and /related
 * bodies, a backslash-escaped name (`name="\_method"`), a part named by its Content-ID, `name= _method`
 * and `_METHOD`; the readings of PHP, busboy and Go besides (single quotes, ".method", RFC 2231
 * `name*`, a boundary with no CRLF before it, header bytes busboy reads past). Every body is fed whole,
 * split in two at every byte offset, and one byte at a time, so every chunk seam is crossed. Part bodies
 * are not read: a file holding `name="_method"` is forwarded.
 */
import { describe, expect, it } from 'vitest';
import { MultipartOverrideWatch } from '../../src/ingress/multipart-override-watch.js';
import { overrideWatchFor } from '../../src/ingress/override-watch.js';

const FORM_DATA = 'multipart/form-data; boundary=XyZ';

/** Whether the watch overrideWatchFor gives `contentType` refuses a body fed as these chunks (end() included). */
function refuses(contentType: string, chunks: readonly Buffer[]): boolean {
  const watch = overrideWatchFor(contentType);
  // Every type these tables use has a watch: a missing one must fail the case, not pass it as forwarded.
  if (watch === null) throw new Error(`no override watch for ${String(contentType)}`);
  for (const chunk of chunks) if (watch.push(chunk)) return true;
  return watch.end();
}

/**
 * The verdicts on `body`: whole, then split in two at every offset, then byte by byte. A body is
 * refused, or forwarded, the same way however it is cut.
 */
function verdicts(contentType: string, body: string): Set<boolean> {
  const bytes = Buffer.from(body, 'latin1');
  const seen = new Set<boolean>([refuses(contentType, [bytes])]);
  for (let at = 0; at <= bytes.length; at++) seen.add(refuses(contentType, [bytes.subarray(0, at), bytes.subarray(at)]));
  seen.add(refuses(contentType, [...bytes].map((byte) => Buffer.from([byte]))));
  return seen;
}

/** A one-field body: the part's header lines as given, then DELETE. */
function part(headers: string, boundary = 'XyZ'): string {
  return `--${boundary}\r\n${headers}\r\n\r\nDELETE\r\n--${boundary}--\r\n`;
}

describe('a field a framework would run as the method is refused', () => {
  it.each<[string, string, string]>([
    // The bypasses found by review (Rack 2.2.22 and 3.2.0 ran DELETE).
    ['multipart/mixed', 'multipart/mixed; boundary=XyZ', part('Content-Disposition: form-data; name="_method"')],
    ['multipart/related', 'multipart/related; boundary=XyZ', part('Content-Disposition: form-data; name="_method"')],
    ['an escaped underscore', FORM_DATA, part('Content-Disposition: form-data; name="\\_method"')],
    ['an escaped letter', FORM_DATA, part('Content-Disposition: form-data; name="_m\\ethod"')],
    ['every character escaped', FORM_DATA, part('Content-Disposition: form-data; name="\\_\\m\\e\\t\\h\\o\\d"')],
    ['only a Content-ID', FORM_DATA, part('Content-ID: _method')],
    ['a Content-ID in multipart/related', 'multipart/related; boundary=XyZ', part('Content-Type: text/plain\r\nContent-ID: _method')],
    ['a token after "= "', FORM_DATA, part('Content-Disposition: form-data; name= _method')],
    ['_METHOD (Slim)', FORM_DATA, part('Content-Disposition: form-data; name="_METHOD"')],
    // Spellings of the parameter and the header, and (below) the structure, each with a name the old
    // search for the bytes `"_method"` and `=_method` missed (escaped, or a token in capitals).
    ['NAME in capitals', FORM_DATA, part('Content-Disposition: form-data; NAME="\\_method"')],
    ['the header name in capitals, a token', FORM_DATA, part('CONTENT-DISPOSITION: FORM-DATA; NAME=_METHOD')],
    ['a quoted name after "= "', FORM_DATA, part('Content-Disposition: form-data; name= "\\_method"')],
    ['spaces around "="', FORM_DATA, part('Content-Disposition: form-data; name = "\\_method"')],
    ['"==" (PHP skips every "=")', FORM_DATA, part('Content-Disposition: form-data; name==_METHOD')],
    ['single quotes (PHP)', FORM_DATA, part("Content-Disposition: form-data; name='_method'")],
    ['tabs', FORM_DATA, part('Content-Disposition:\tform-data;\tname="\\_method"')],
    ['a no-break space after "=" (Go skips Unicode spaces)', FORM_DATA, part('Content-Disposition: form-data; name=\xC2\xA0_method')],
    ['a folded line', FORM_DATA, part('Content-Disposition: form-data;\r\n name="\\_method"')],
    ['a folded line with a tab', FORM_DATA, part('Content-Disposition: form-data;\r\n\tname="\\_method"')],
    ['name twice, the override last (PHP)', FORM_DATA, part('Content-Disposition: form-data; name="a"; name="\\_method"')],
    ['name twice, the override first (busboy)', FORM_DATA, part('Content-Disposition: form-data; name="\\_method"; name="a"')],
    ['a file name besides', FORM_DATA, part('Content-Disposition: form-data; filename="a.txt"; name="\\_method"')],
    ['in a filename\'s quotes (Rack 2.2 ignores quoting)', FORM_DATA, part('Content-Disposition: form-data; name="a"; filename="x; name=_METHOD"')],
    ['no Content-Disposition type', FORM_DATA, part('Content-Disposition: name=_METHOD')],
    // RFC 2231 / 5987 (Go reads them).
    ['name*=utf-8\'\'%5Fmethod', FORM_DATA, part("Content-Disposition: form-data; name*=utf-8''%5Fmethod")],
    ['name* in UTF-16', FORM_DATA, part("Content-Disposition: form-data; name*=utf-16le''%5F%00m%00e%00t%00h%00o%00d%00")],
    ['continuations name*0, name*1', FORM_DATA, part('Content-Disposition: form-data; name*0="_me"; name*1="thod"')],
    ['encoded continuations', FORM_DATA, part("Content-Disposition: form-data; name*0*=utf-8''%5Fme; name*1=thod")],
    // Names a parser reads as `_method` (queryKeyNames).
    ['".method" (PHP)', FORM_DATA, part('Content-Disposition: form-data; name=".method"')],
    ['" _method" (PHP)', FORM_DATA, part('Content-Disposition: form-data; name=" _method"')],
    ['"[_method]" (Rack 2.2)', FORM_DATA, part('Content-Disposition: form-data; name="[_method]"')],
    ['"_method[]"', FORM_DATA, part('Content-Disposition: form-data; name="_method[]"')],
    ['x-http-method-override', FORM_DATA, part('Content-Disposition: form-data; name="X-HTTP-Method-Override"')],
    // Structure: delimiters and header sections as some parser finds them.
    [
      'a second part',
      FORM_DATA,
      '--XyZ\r\nContent-Disposition: form-data; name="a"\r\n\r\n1\r\n--XyZ\r\nContent-Disposition: form-data; name="\\_method"\r\n\r\nDELETE\r\n--XyZ--\r\n',
    ],
    ['a boundary with no CRLF before it (Rack 2.2)', FORM_DATA, 'preamble--XyZ\r\nContent-Disposition: form-data; name="\\_method"\r\n\r\nDELETE\r\n--XyZ--\r\n'],
    [
      'a part inside a file, behind a bare boundary (Rack 2.2)',
      FORM_DATA,
      '--XyZ\r\nContent-Disposition: form-data; name="f"; filename="a.bin"\r\n\r\nbytes--XyZ\r\nContent-Disposition: form-data; name="\\_method"\r\n\r\nDELETE\r\n--XyZ--\r\n',
    ],
    [
      'a part after the close delimiter (PHP reads on)',
      FORM_DATA,
      '--XyZ\r\nContent-Disposition: form-data; name="a"\r\n\r\n1\r\n--XyZ--\r\n--XyZ\r\nContent-Disposition: form-data; name="\\_method"\r\n\r\nDELETE\r\n--XyZ--\r\n',
    ],
    ['transport padding after the boundary (Go)', FORM_DATA, '--XyZ \t \r\nContent-Disposition: form-data; name="\\_method"\r\n\r\nDELETE\r\n--XyZ--\r\n'],
    ['a delimiter line ending in LF alone (PHP, Go)', FORM_DATA, '--XyZ\nContent-Disposition: form-data; name="\\_method"\r\n\r\nDELETE\r\n--XyZ--\r\n'],
    ['a blank line first (Rack reads the next lines as headers)', FORM_DATA, '--XyZ\r\n\r\nContent-Disposition: form-data; name="\\_method"\r\n\r\nDELETE\r\n--XyZ--\r\n'],
    [
      'header bytes after a boundary that ends a section (busboy reads on)',
      FORM_DATA,
      '--XyZ\r\nContent-Type: text/plain\r\n\r\n--XyZContent-Disposition: form-data; name="\\_method"\r\n\r\nDELETE\r\n--XyZ--\r\n',
    ],
    ['the boundary inside a header section (busboy cuts it out)', FORM_DATA, part('Content-Disposition: form-data; name="_me\r\n--XyZthod"')],
    ['a quoted boundary in the Content-Type', 'multipart/form-data; boundary="a b:c"', part('Content-Disposition: form-data; name="\\_method"', 'a b:c')],
    ['a boundary that overlaps itself', 'multipart/form-data; boundary=ab--ab', 'x--ab--ab--ab\r\nContent-Disposition: form-data; name="\\_method"\r\n\r\nDELETE\r\n--ab--ab--\r\n'],
  ])('%s', (_case, contentType, body) => {
    expect(verdicts(contentType, body)).toEqual(new Set([true]));
  });
});

describe('what cannot be read as a header section is refused (fails closed)', () => {
  it.each<[string, string]>([
    ['a line that is no header field', part('Content-Disposition: form-data; name="a"\r\nnot a header')],
    ['a bare LF inside the section', part('Content-Disposition: form-data; name="a"\nX-Other: 1')],
    ['a bare CR inside the section', part('Content-Disposition: form-data; name="a"\rX: 1')],
    ['a fold with no field before it', '--XyZ\r\n\r\n folded\r\n\r\nDELETE\r\n--XyZ--\r\n'],
    ['a control character', part('Content-Disposition: form-data; name="a\x01"')],
    ['a space before the colon', part('Content-Disposition : form-data; name="a"')],
    ['more name parameters than any client writes', part(`Content-Disposition: form-data${'; name="a"'.repeat(17)}`)],
    ['a name longer than any client writes', part(`Content-Disposition: form-data; name="${'['.repeat(600)}_method"`)],
    ['a header section the body ends inside', '--XyZ\r\nContent-Disposition: form-data; name="a"\r\n'],
  ])('%s', (_case, body) => {
    expect(verdicts(FORM_DATA, body)).toEqual(new Set([true]));
  });

  it('refuses a header section longer than the limit, however it arrives', () => {
    const body = part(`Content-Disposition: form-data; name="a"\r\nX-Pad: ${'a'.repeat(8 * 1024)}`);
    expect(verdicts(FORM_DATA, body)).toEqual(new Set([true]));
    // One just under the limit is read.
    const fits = part(`Content-Disposition: form-data; name="a"\r\nX-Pad: ${'a'.repeat(8 * 1024 - 60)}`);
    expect(refuses(FORM_DATA, [Buffer.from(fits, 'latin1')])).toBe(false);
  });

  it.each([
    'multipart/form-data',
    'multipart/form-data; boundary=',
    'multipart/form-data; boundary=a; boundary=b',
    'multipart/form-data; boundary="a,b"',
    'multipart/form-data; boundary="a\\b"',
    'multipart/form-data; boundary = XyZ',
    'multipart/form-data; boundary=XyZ junk',
    `multipart/form-data; boundary=${'b'.repeat(71)}`,
    'multipart/form-data; charset="x boundary=y"; boundary=XyZ',
  ])('refuses a body under %s: no boundary every parser reads alike', (contentType) => {
    expect(verdicts(contentType, part('Content-Disposition: form-data; name="a"'))).toEqual(new Set([true]));
  });

  it('an empty body has nothing to refuse, whatever the Content-Type', () => {
    expect(refuses('multipart/form-data', [])).toBe(false);
  });
});

describe('bodies that only resemble an override are forwarded', () => {
  const upload = (content: string): string =>
    `--XyZ\r\nContent-Disposition: form-data; name="file"; filename="notes.txt"\r\nContent-Type: text/plain\r\n\r\n${content}\r\n--XyZ--\r\n`;

  it.each<[string, string, string]>([
    ['a file holding name="_method"', FORM_DATA, upload('Content-Disposition: form-data; name="_method"\r\n\r\nDELETE')],
    ['a file holding =_method and "_method"', FORM_DATA, upload('a=_method&b="_method" {"_method":"DELETE"}')],
    ['a field whose value is _method', FORM_DATA, part('Content-Disposition: form-data; name="note"').replace('DELETE', '_method')],
    ['a field named payment_method', FORM_DATA, part('Content-Disposition: form-data; name="payment_method"')],
    ['a field named _methods', FORM_DATA, part('Content-Disposition: form-data; name="_methods"')],
    ['a field named x_method', FORM_DATA, part('Content-Disposition: form-data; name="x_method"')],
    ['a field named method', FORM_DATA, part('Content-Disposition: form-data; name="method"')],
    ['a file named _method', FORM_DATA, part('Content-Disposition: form-data; name="file"; filename="_method"')],
    ['a file named _method.txt', FORM_DATA, part('Content-Disposition: form-data; name="file"; filename="_method.txt"')],
    [
      'preamble and epilogue mentioning _method',
      FORM_DATA,
      `This is the preamble. name="_method" =_method\r\n${part('Content-Disposition: form-data; name="a"')}Epilogue: Content-Disposition: form-data; name="_method"\r\n`,
    ],
    ['the boundary in a file without "--" before it', FORM_DATA, upload('XyZ\r\nContent-Disposition: form-data; name="_method"\r\n\r\n')],
    ['"--" and the boundary run on in a file', FORM_DATA, upload('x--XyZabc\r\nContent-Disposition: form-data; name="_method"\r\n\r\n--XyZ-x')],
    ['a part with no body', FORM_DATA, '--XyZ\r\nContent-Disposition: form-data; name="a"\r\n\r\n\r\n--XyZ--\r\n'],
    ['a Content-ID', 'multipart/related; boundary=XyZ', part('Content-Type: application/json\r\nContent-ID: <meta@example.com>')],
    [
      'a Google Drive style multipart/related upload',
      'multipart/related; boundary=foo_bar_baz',
      '--foo_bar_baz\r\nContent-Type: application/json; charset=UTF-8\r\n\r\n{"name":"_method","_method":"DELETE"}\r\n--foo_bar_baz\r\nContent-Type: image/jpeg\r\n\r\n\xFF\xD8\xFF\r\n--foo_bar_baz--',
    ],
    ['a UTF-8 file name', FORM_DATA, part('Content-Disposition: form-data; name="file"; filename="r\xC3\xA9sum\xC3\xA9.pdf"')],
    ['a folded Content-Disposition', FORM_DATA, part('Content-Disposition: form-data;\r\n name="a"')],
    ['a multipart/mixed part with a name', 'multipart/mixed; boundary=XyZ', part('Content-Disposition: attachment; name="report"')],
    [
      'a WebKit boundary (the word "boundary" twice in the header)',
      'multipart/form-data; boundary=----WebKitFormBoundary7MA4YWxkTrZu0gW',
      part('Content-Disposition: form-data; name="a"', '----WebKitFormBoundary7MA4YWxkTrZu0gW'),
    ],
    [
      'a quoted boundary and a charset after it',
      'multipart/form-data; boundary="----formdata-undici-0123"; charset=utf-8',
      part('Content-Disposition: form-data; name="a"', '----formdata-undici-0123'),
    ],
  ])('%s', (_case, contentType, body) => {
    expect(verdicts(contentType, body)).toEqual(new Set([false]));
  });

  it('a large upload is searched only for its boundary', () => {
    const content = Buffer.alloc(4 * 1024 * 1024, 'name="_method" =_method "_method" --XyZ-\r\n');
    const head = Buffer.from('--XyZ\r\nContent-Disposition: form-data; name="file"; filename="big.bin"\r\n\r\n', 'latin1');
    const tail = Buffer.from('\r\n--XyZ--\r\n', 'latin1');
    const watch = new MultipartOverrideWatch(FORM_DATA);
    const body = Buffer.concat([head, content, tail]);
    for (let at = 0; at < body.length; at += 65536) expect(watch.push(body.subarray(at, at + 65536))).toBe(false);
    expect(watch.end()).toBe(false);
  });
});

describe('overrideWatchFor', () => {
  it.each(['multipart/form-data; boundary=XyZ', 'multipart/mixed; boundary=XyZ', 'multipart/related; boundary=XyZ', 'Multipart/X-Anything; boundary=XyZ'])(
    'gives %s the multipart watch, the boundary read as sent',
    (contentType) => {
      const watch = overrideWatchFor(contentType);
      expect(watch).toBeInstanceOf(MultipartOverrideWatch);
      expect(watch?.push(Buffer.from(part('Content-Disposition: form-data; name="_method"'), 'latin1'))).toBe(true);
    },
  );

  it('reads a boundary in its own case', () => {
    const watch = overrideWatchFor('multipart/form-data; boundary=AbC');
    expect(watch?.push(Buffer.from(part('Content-Disposition: form-data; name="a"', 'abc'), 'latin1'))).toBe(false);
    expect(watch?.end()).toBe(false);
    const other = overrideWatchFor('multipart/form-data; boundary=AbC');
    expect(other?.push(Buffer.from(part('Content-Disposition: form-data; name="_method"', 'AbC'), 'latin1'))).toBe(true);
  });
});
