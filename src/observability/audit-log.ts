/**
 * The audit log: JSON lines appended to a file opened O_APPEND with mode 0600.
 *
 * Fail closed, as Vault does with its audit devices: when a write fails, the log is marked broken and
 * every request is refused (503 audit_unavailable) until a write succeeds again. Refused requests still
 * try to write their own record, so the log heals itself with the first successful write. Lines that
 * arrive while a write is in flight are batched into the next write (one syscall for many requests).
 * Every line passes through the known-secrets scrubber as a backstop.
 */
import { mkdirSync } from 'node:fs';
import { open, type FileHandle } from 'node:fs/promises';
import { dirname } from 'node:path';
import { AirlockError } from '../errors.js';
import type { SecretCatalog } from '../redaction/secret-catalog.js';
import { serializeAuditRecord, type AuditRecord } from './audit-record.js';

interface Pending {
  line: string;
  resolve: () => void;
  reject: (error: Error) => void;
}

export class AuditLog {
  readonly file: string;
  readonly #secrets: SecretCatalog;
  #handle: FileHandle | null = null;
  #queue: Pending[] = [];
  #writing = false;
  #broken: Error | null = null;
  #closed = false;
  #idle: Array<() => void> = [];
  readonly #listeners = new Set<(record: AuditRecord) => void>();

  constructor(file: string, secrets: SecretCatalog) {
    this.file = file;
    this.#secrets = secrets;
  }

  /** Opens (creating) the file; a log that cannot even be opened stops start-up. */
  async open(): Promise<void> {
    mkdirSync(dirname(this.file), { recursive: true, mode: 0o700 });
    this.#handle = await open(this.file, 'a', 0o600);
  }

  get healthy(): boolean {
    return this.#broken === null;
  }

  /** Throws 503 audit_unavailable while the last write failed: nothing is forwarded unaudited. */
  assertWritable(): void {
    if (this.#broken !== null) {
      throw new AirlockError('audit_unavailable', 'The audit log cannot be written, so Airlock refuses to forward requests until it can. An operator checks the disk and the audit file.');
    }
  }

  /** Hears every record once it is written (the admin API's live audit feed). */
  subscribe(listener: (record: AuditRecord) => void): () => void {
    this.#listeners.add(listener);
    return () => this.#listeners.delete(listener);
  }

  /** Resolves once the line is on disk (in the kernel's page cache), rejects when the write failed. */
  append(record: AuditRecord): Promise<void> {
    if (this.#closed) return Promise.reject(new Error('audit log is closed'));
    const line = `${this.#secrets.scrub(serializeAuditRecord(record))}\n`;
    return new Promise<void>((resolve, reject) => {
      this.#queue.push({ line, resolve, reject });
      if (!this.#writing) void this.#drain();
    }).then(() => {
      for (const listener of this.#listeners) listener(JSON.parse(line) as AuditRecord);
    });
  }

  async #drain(): Promise<void> {
    this.#writing = true;
    while (this.#queue.length > 0) {
      const batch = this.#queue;
      this.#queue = [];
      const data = Buffer.from(batch.map((p) => p.line).join(''), 'utf8');
      try {
        this.#handle ??= await open(this.file, 'a', 0o600);
        let offset = 0;
        while (offset < data.length) {
          const { bytesWritten } = await this.#handle.write(data, offset, data.length - offset);
          offset += bytesWritten;
        }
        this.#broken = null;
        for (const p of batch) p.resolve();
      } catch (error) {
        this.#broken = error as Error;
        // Reopen on the next attempt: the file may have been replaced or the handle invalidated.
        const handle = this.#handle;
        this.#handle = null;
        await handle?.close().catch(() => undefined);
        for (const p of batch) p.reject(error as Error);
      }
    }
    this.#writing = false;
    for (const wake of this.#idle.splice(0)) wake();
  }

  async close(): Promise<void> {
    if (this.#writing) await new Promise<void>((resolve) => this.#idle.push(resolve));
    this.#closed = true;
    await this.#handle?.close().catch(() => undefined);
    this.#handle = null;
  }
}
