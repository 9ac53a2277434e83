/**
 * The certificate chain and private key the agent-facing listeners present when the config has `tls:`
 * (PEM files, as nginx's ssl_certificate and ssl_certificate_key take them). Read and checked together,
 * once per start and reload, so that what `check` says is what `serve` would do: a file that cannot be
 * read, a key that is not the certificate's, or a certificate outside its validity period is a problem
 * with the setting's path, not a handshake failure every agent meets later.
 *
 * The private key is a secret (invariant 1): it stays inside TlsIdentity, which prints as
 * `TlsIdentity(<subject>) [REDACTED]`, and leaves it only for node's TLS (contextOptions).
 */
import { X509Certificate, createPrivateKey, type KeyObject } from 'node:crypto';
import { readFileSync, statSync } from 'node:fs';
import { createSecureContext, type SecureContextOptions } from 'node:tls';
import { caFileProblem } from '../config/ca-file-problem.js';
import { shellWord } from '../config/shell-word.js';

export interface TlsSpec {
  readonly cert_file: string;
  readonly key_file: string;
  readonly min_version: 'TLSv1.2' | 'TLSv1.3';
  /** The CAs whose client certificates the listener asks for and requires (mTLS; admin.tls only). */
  readonly client_ca_file?: string | undefined;
}

const PEM_CERTIFICATE = /-----BEGIN CERTIFICATE-----[\s\S]*?-----END CERTIFICATE-----/g;

/** Certificates this close to their end are warned about at check, start-up and reload. */
export const EXPIRY_WARNING_DAYS = 14;
const DAY_MS = 86_400_000;

export interface TlsProblem {
  readonly severity: 'error' | 'warning';
  readonly field: 'cert_file' | 'key_file' | 'client_ca_file';
  readonly message: string;
  /** A warning that `check --strict` fails on. */
  readonly strict?: boolean;
}

export class TlsIdentity {
  readonly #key: Buffer;
  readonly #chain: string;
  /** The leaf certificate's subject and names, for log lines and the console; public. */
  readonly subject: string;
  readonly names: string;
  /** When the chain stops being valid (its first certificate to end, the leaf's or an intermediate's), ms since the epoch. */
  readonly notAfter: number;
  /** The leaf's SHA-256 fingerprint: tells a reload that changed the certificate from one that did not. */
  readonly fingerprint: string;
  readonly minVersion: TlsSpec['min_version'];
  /** PEM of the CAs client certificates must chain to (client_ca_file), or null: no client certificate is asked for. */
  readonly clientCa: string | null;

  constructor(chain: string, key: Buffer, leaf: X509Certificate, notAfter: number, minVersion: TlsSpec['min_version'], clientCa: string | null = null) {
    this.#chain = chain;
    this.#key = key;
    this.clientCa = clientCa;
    this.subject = leaf.subject.replaceAll('\n', ', ');
    this.names = leaf.subjectAltName ?? '';
    this.notAfter = notAfter;
    this.fingerprint = leaf.fingerprint256;
    this.minVersion = minVersion;
    Object.freeze(this);
  }

  /** What node's TLS server is built from (tls.createServer, server.setSecureContext). */
  contextOptions(): SecureContextOptions {
    // `ca` in a server's context is what a client certificate is verified against (requestCert, set by
    // the server that asks for one).
    return { cert: this.#chain, key: this.#key, minVersion: this.minVersion, ...(this.clientCa === null ? {} : { ca: this.clientCa }) };
  }

  toString(): string {
    return `TlsIdentity(${this.subject}) [REDACTED]`;
  }

  toJSON(): string {
    return this.toString();
  }

  [Symbol.for('nodejs.util.inspect.custom')](): string {
    return this.toString();
  }
}

/**
 * Reads and checks `spec`'s files (paths absolute). `identity` is null when an error keeps them from
 * being served; warnings (a key other users can read, a certificate close to its end) come with one.
 * With `reading.key` false (the CLI's commands that call a running Airlock: they pin the certificate,
 * and the key is Airlock's user's) the key file is neither read nor checked, and no identity is made.
 */
export function readTlsIdentity(spec: TlsSpec, nowMs: number, reading: { readonly key: boolean; readonly clients?: string } = { key: true }): { identity: TlsIdentity | null; problems: TlsProblem[] } {
  // Who would refuse a bad certificate, for the messages: agents on the agent listeners, operators'
  // CLIs, browsers and scrapers on the admin listener.
  const clients = reading.clients ?? 'agents';
  const problems: TlsProblem[] = [];
  const fail = (field: TlsProblem['field'], message: string): { identity: null; problems: TlsProblem[] } => {
    problems.push({ severity: 'error', field, message });
    return { identity: null, problems };
  };

  const chainText = readText(spec.cert_file);
  if (typeof chainText !== 'string') return fail('cert_file', chainText.problem);
  // Every certificate of the chain, the server's own first: each is checked for its validity period
  // (found by the TLS walkthrough: an expired intermediate passed, and every client then refused it).
  const chain: X509Certificate[] = [];
  for (const [index, pem] of (chainText.match(PEM_CERTIFICATE) ?? []).entries()) {
    try {
      chain.push(new X509Certificate(pem));
    } catch {
      if (index === 0) break;
      return fail('cert_file', `certificate ${index + 1} of the chain in ${spec.cert_file} cannot be read (cut short, or not a certificate); give the server's certificate first, then its intermediates`);
    }
  }
  const leaf = chain[0];
  if (leaf === undefined) {
    // Said without the PEM armour's dashes, which the problem's key-shape mask would hide.
    return fail('cert_file', `${spec.cert_file} holds no PEM certificate it can read (a BEGIN CERTIFICATE block); give the server's certificate first, then its intermediates`);
  }

  const keyText = reading.key ? readText(spec.key_file) : null;
  if (keyText !== null && typeof keyText !== 'string') return fail('key_file', keyText.problem);
  let key: KeyObject | null = null;
  if (keyText !== null) {
    try {
      key = createPrivateKey(keyText);
    } catch (error) {
      // node says ERR_MISSING_PASSPHRASE, or OpenSSL 3 that its passphrase prompt was cancelled; the
      // PEM label says it either way.
      const encrypted = (error as NodeJS.ErrnoException).code === 'ERR_MISSING_PASSPHRASE' || /-----BEGIN (?:ENCRYPTED PRIVATE KEY|[A-Z]+ PRIVATE KEY-----\s*Proc-Type: 4,ENCRYPTED)/.test(keyText);
      return fail(
        'key_file',
        encrypted
          ? `${spec.key_file} is encrypted with a passphrase, which Airlock cannot be given; write it out unencrypted (openssl pkey -in KEY -out KEY.plain) and keep that file mode 600`
          : `${spec.key_file} holds no PEM private key it can read (a BEGIN PRIVATE KEY block, or an RSA or EC one)`,
      );
    }
  }
  if (key !== null && !leaf.checkPrivateKey(key)) {
    return fail('key_file', `${spec.key_file} is not the key of the first certificate in ${spec.cert_file} (${leaf.subject.replaceAll('\n', ', ')}); the server's own certificate must come first, then its intermediates`);
  }

  let ending = leaf;
  for (const [index, certificate] of chain.entries()) {
    const which = index === 0 ? `the certificate in ${spec.cert_file}` : `certificate ${index + 1} of the chain in ${spec.cert_file} (${certificate.subject.replaceAll('\n', ', ')})`;
    if (nowMs < Date.parse(certificate.validFrom)) return fail('cert_file', `${which} is not valid before ${certificate.validFrom}; ${clients} would refuse it (is this machine's clock right?)`);
    if (nowMs >= Date.parse(certificate.validTo)) return fail('cert_file', `${which} expired on ${certificate.validTo}; ${clients} would refuse it. Renew it, then reload (SIGHUP)`);
    if (Date.parse(certificate.validTo) < Date.parse(ending.validTo)) ending = certificate;
  }
  const notAfter = Date.parse(ending.validTo);
  if (notAfter - nowMs < EXPIRY_WARNING_DAYS * DAY_MS) {
    const days = Math.floor((notAfter - nowMs) / DAY_MS);
    const which = ending === leaf ? `the certificate in ${spec.cert_file}` : `an intermediate of the chain in ${spec.cert_file} (${ending.subject.replaceAll('\n', ', ')})`;
    problems.push({ severity: 'warning', field: 'cert_file', message: `${which} expires on ${ending.validTo}, in ${days === 0 ? 'less than a day' : `${days} days`}; renew it, and a reload (SIGHUP, or the file watch) serves the new one (fails check --strict)`, strict: true });
  }
  let clientCa: string | null = null;
  if (spec.client_ca_file !== undefined) {
    const caBytes = readBytes(spec.client_ca_file);
    if (!Buffer.isBuffer(caBytes)) return fail('client_ca_file', caBytes.problem);
    const problem = caFileProblem(spec.client_ca_file, caBytes);
    if (problem !== null) return fail('client_ca_file', problem.replace('so the connection would fail at the first request', 'so every client certificate would be refused'));
    clientCa = caBytes.toString('utf8');
  }
  // Without the key nothing is served: what node's TLS would make of the chain is serve's and check's to say.
  if (keyText === null) return { identity: null, problems };
  const identity = new TlsIdentity(chainText, Buffer.from(keyText), leaf, notAfter, spec.min_version, clientCa);
  // node's TLS reads the whole chain, this file only its first certificate: a chain with an intermediate
  // it cannot load passed here and then failed serve, or a reload half-way (found by review).
  try {
    createSecureContext(identity.contextOptions());
  } catch (error) {
    return fail('cert_file', `${spec.cert_file} cannot be served: node's TLS refuses the chain (${(error as Error).message.replace(/^error:[0-9A-F]+:/, '')}); check every certificate in it (openssl crl2pkcs7 -nocrl -certfile FILE | openssl pkcs7 -print_certs -noout)`);
  }
  const mode = statSync(spec.key_file).mode;
  if ((mode & 0o077) !== 0) {
    problems.push({ severity: 'warning', field: 'key_file', message: `${spec.key_file} is readable by other users (mode ${(mode & 0o777).toString(8)}), and it is the key ${clients} trust this listener by; run \`chmod 600 ${shellWord(spec.key_file)}\` (fails check --strict)`, strict: true });
  }
  return { identity, problems };
}

function readText(path: string): string | { problem: string } {
  const bytes = readBytes(path);
  return Buffer.isBuffer(bytes) ? bytes.toString('utf8') : bytes;
}

function readBytes(path: string): Buffer | { problem: string } {
  try {
    return readFileSync(path);
  } catch (error) {
    const code = (error as NodeJS.ErrnoException).code;
    if (code === 'ENOENT') return { problem: `${path} does not exist` };
    if (code === 'EACCES') return { problem: `${path} cannot be read by the user Airlock runs as (permission denied)` };
    if (code === 'EISDIR') return { problem: `${path} is a directory, not a PEM file` };
    return { problem: `${path} cannot be read: ${(error as Error).message}` };
  }
}
