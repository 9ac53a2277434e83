/**
 * AES-256-GCM for the secrets Airlock keeps at rest (the embedded secrets file, OAuth2 tokens shared
 * through Redis): a fresh 96-bit IV per message (NIST SP 800-38D 8.2) and associated data that binds
 * the ciphertext to what it is for, so it cannot be moved elsewhere. Fields are base64 for JSON.
 */
import { createCipheriv, createDecipheriv, randomBytes } from 'node:crypto';

export interface SealedText {
  readonly iv: string;
  readonly tag: string;
  readonly ciphertext: string;
}

export function sealText(key: Buffer, associatedData: Buffer, plaintext: string): SealedText {
  const iv = randomBytes(12);
  const cipher = createCipheriv('aes-256-gcm', key, iv);
  cipher.setAAD(associatedData);
  const ciphertext = Buffer.concat([cipher.update(plaintext, 'utf8'), cipher.final()]);
  return { iv: iv.toString('base64'), tag: cipher.getAuthTag().toString('base64'), ciphertext: ciphertext.toString('base64') };
}

/** Throws when the key, the associated data or any field does not match what was sealed. */
export function openText(key: Buffer, associatedData: Buffer, sealed: SealedText): string {
  const decipher = createDecipheriv('aes-256-gcm', key, Buffer.from(sealed.iv, 'base64'));
  decipher.setAAD(associatedData);
  decipher.setAuthTag(Buffer.from(sealed.tag, 'base64'));
  return Buffer.concat([decipher.update(Buffer.from(sealed.ciphertext, 'base64')), decipher.final()]).toString('utf8');
}
