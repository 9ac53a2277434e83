/**
 * Finds a managed secret in a stream the agent sends (its request body), holding back only the bytes
 * of a live partial match so that no byte of a secret is forwarded before it is recognized.
 */
import type { SecretIndex } from './secret-catalog.js';

const EMPTY = Buffer.alloc(0);

export type DetectorStep = { readonly found: null; readonly forward: Buffer } | { readonly found: string; readonly forward: null };

export class SecretDetector {
  readonly #index: SecretIndex;
  #carry: Buffer = EMPTY;

  constructor(index: SecretIndex) {
    this.#index = index;
  }

  push(chunk: Buffer): DetectorStep {
    const data = this.#carry.length === 0 ? chunk : Buffer.concat([this.#carry, chunk]);
    const spans: number[] = [];
    const hold = this.#index.matcher.scan(data, -1, false, spans);
    const found = this.#refAt(data, spans);
    if (found !== null) return { found, forward: null };
    const boundary = data.length - hold;
    this.#carry = hold === 0 ? EMPTY : Buffer.from(data.subarray(boundary));
    return { found: null, forward: boundary === data.length ? data : data.subarray(0, boundary) };
  }

  end(): DetectorStep {
    const data = this.#carry;
    this.#carry = EMPTY;
    const spans: number[] = [];
    this.#index.matcher.scan(data, -1, true, spans, false);
    const found = this.#refAt(data, spans);
    return found === null ? { found: null, forward: data } : { found, forward: null };
  }

  /** Scans one complete value (a header, the request target). */
  static findIn(index: SecretIndex, value: string): string | null {
    // Partial forms at the end do not count here (the value is whole), hence no minimum partial.
    if (index.matcher.textHoldsNoNeedle(value, 'latin1', Infinity)) return null;
    return SecretDetector.findInBytes(index, Buffer.from(value, 'latin1'));
  }

  /** Scans one complete byte string (a whole request body held in memory). */
  static findInBytes(index: SecretIndex, data: Buffer): string | null {
    const spans: number[] = [];
    index.matcher.scan(data, -1, true, spans, false);
    return refAt(index, data, spans);
  }

  #refAt(data: Buffer, spans: readonly number[]): string | null {
    return refAt(this.#index, data, spans);
  }
}

function refAt(index: SecretIndex, data: Buffer, spans: readonly number[]): string | null {
  for (let i = 0; i < spans.length; i += 2) {
    const ref = index.refOfForm.get(data.subarray(spans[i] as number, spans[i + 1] as number).toString('latin1'));
    if (ref !== undefined) return ref;
  }
  return null;
}
