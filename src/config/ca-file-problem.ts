/**
 * What is wrong with the text of a CA file (a service's `ca`, `secrets.vault.ca_file`, an OAuth2 client's
 * `ca`), or null when node's TLS would trust every certificate in it.
 *
 * node hands the text to OpenSSL, which reads PEM certificate blocks one after another and stops, without
 * an error, at the first it cannot read: a file that holds none (a key, a DER file, the wrong file, an
 * empty one) trusts nothing, and one whose second block is damaged trusts the first only. Either way
 * `tls.createSecureContext` succeeds and the connection fails only at its handshake, at the first request,
 * with a certificate error that names no file (found by review: such files passed `airlock check`). So
 * each block is parsed here with X509Certificate, as tls-identity.ts reads the listener's chain.
 *
 * Other PEM blocks (a key beside the certificates) are skipped by OpenSSL, and so here. The messages say
 * the PEM label without its dashes, which the problem's key-shape mask would hide.
 */
import { X509Certificate } from 'node:crypto';

/** The labels OpenSSL's PEM_read_bio_X509_AUX takes as a certificate (RFC 7468 5; OpenSSL's own two). */
const BEGIN_CERTIFICATE = /-----BEGIN ((?:TRUSTED |X509 )?CERTIFICATE)-----/g;
const ANY_BEGIN = /-----BEGIN [^-\r\n]*-----/g;

/**
 * A DER certificate starts with a SEQUENCE (0x30) whose length takes one to two more bytes (0x81, 0x82):
 * said so, with the command that converts it, rather than "no PEM certificate" alone.
 */
function looksLikeDer(bytes: Buffer): boolean {
  return bytes.length > 4 && bytes[0] === 0x30 && (bytes[1] === 0x81 || bytes[1] === 0x82 || bytes[1] === 0x83);
}

/** The file name a converted copy of `file` is written to: its name with .pem for its extension, never itself. */
function pemName(file: string): string {
  const stem = file.replace(/\.[^./]*$/, '');
  return `${stem}.pem` === file ? `${stem}-converted.pem` : `${stem}.pem`;
}

/** `file` is the absolute path, for the message; `bytes` its content. */
export function caFileProblem(file: string, bytes: Buffer): string | null {
  const text = bytes.toString('latin1');
  const begins = [...text.matchAll(BEGIN_CERTIFICATE)];
  if (begins.length === 0) {
    const der = looksLikeDer(bytes) ? `; it looks like DER (binary): convert it with openssl x509 -inform der -in ${file} -out ${pemName(file)} and name that file here` : '';
    return `CA file ${file} holds no PEM certificate (a BEGIN CERTIFICATE block): node's TLS would ignore it without a word and trust no private CA, so the connection would fail at the first request; give the CA's certificate in PEM form${der}`;
  }
  for (const [index, begin] of begins.entries()) {
    const start = begin.index;
    const endMarker = `-----END ${begin[1] as string}-----`;
    const end = text.indexOf(endMarker, start);
    ANY_BEGIN.lastIndex = start + begin[0].length;
    const nextBegin = ANY_BEGIN.exec(text);
    // No END line, or another block begins first: the block was cut short (a truncated copy, two files
    // pasted together mid-line).
    let readable = end !== -1 && (nextBegin === null || nextBegin.index > end);
    if (readable) {
      try {
        new X509Certificate(text.slice(start, end + endMarker.length));
      } catch {
        readable = false;
      }
    }
    if (!readable) {
      return `CA file ${file}: certificate ${index + 1} of ${begins.length} cannot be read (cut short, or not a certificate); node's TLS stops reading the file there without a word, so it and every certificate after it would not be trusted: replace it with the CA's certificate in PEM form, or remove it`;
    }
  }
  return null;
}

/**
 * When every certificate of a CA file that caFileProblem passed has expired: a warning, as a handshake
 * against it fails once the server's chain is checked against an expired root (found by review: such a
 * file passed check). A bundle that holds some expired certificates among current ones is normal.
 */
export function caFileExpired(file: string, bytes: Buffer, nowMs: number): string | null {
  const text = bytes.toString('latin1');
  let latest = -Infinity;
  for (const begin of text.matchAll(BEGIN_CERTIFICATE)) {
    const endMarker = `-----END ${begin[1] as string}-----`;
    const end = text.indexOf(endMarker, begin.index);
    if (end === -1) return null;
    latest = Math.max(latest, Date.parse(new X509Certificate(text.slice(begin.index, end + endMarker.length)).validTo));
  }
  if (latest === -Infinity || latest > nowMs) return null;
  return `every certificate in CA file ${file} has expired (the last on ${new Date(latest).toISOString()}), so no server certificate chains to it any more; put the CA's current certificate in it (fails check --strict)`;
}
