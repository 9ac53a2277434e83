/**
 * AES-256-GCM for the secrets Airlock keeps at rest (the embedded secrets file, OAuth2 tokens shared
 * through Redis): a fresh 96-bit IV per message (NIST SP 800-38D 8.2) and associated data that binds
 * the ciphertext to what it is for, so it cannot be moved elsewhere. Fields are base64 for JSON.
 */
import { createCipheriv, createDecipheriv, randomBytes } from 'node:crypto';

/**
 * The full 128-bit GCM tag, on both sides. Without authTagLength node's decipher accepts any tag
 * length GCM allows (4, 8, 12 to 16 bytes) and checks only the bytes it is given: whoever can edit a
 * record (secrets.json, a Redis value) cuts the tag to 4 bytes and forges with odds of 2^-32 per try
 * (NIST SP 800-38D 5.2.1.2 and appendix C; node's decipher.setAuthTag docs). Airlock seals 16 bytes.
 */
const TAG_BYTES = 16;

export interface SealedText {
  readonly iv: string;
  readonly tag: string;
  readonly ciphertext: string;
}

export function sealText(key: Buffer, associatedData: Buffer, plaintext: string): SealedText {
  const iv = randomBytes(12);
  const cipher = createCipheriv('aes-256-gcm', key, iv, { authTagLength: TAG_BYTES });
  cipher.setAAD(associatedData);
  const ciphertext = Buffer.concat([cipher.update(plaintext, 'utf8'), cipher.final()]);
  return { iv: iv.toString('base64'), tag: cipher.getAuthTag().toString('base64'), ciphertext: ciphertext.toString('base64') };
}

/** Throws when the key, the associated data or any field does not match what was sealed. */
export function openText(key: Buffer, associatedData: Buffer, sealed: SealedText): string {
  const tag = Buffer.from(sealed.tag, 'base64');
  // Checked here too, so the refusal does not rest on one node behaviour alone.
  if (tag.length !== TAG_BYTES) throw new Error(`the sealed record's tag is ${tag.length} bytes, not ${TAG_BYTES}`);
  const decipher = createDecipheriv('aes-256-gcm', key, Buffer.from(sealed.iv, 'base64'), { authTagLength: TAG_BYTES });
  decipher.setAAD(associatedData);
  decipher.setAuthTag(tag);
  return Buffer.concat([decipher.update(Buffer.from(sealed.ciphertext, 'base64')), decipher.final()]).toString('utf8');
}
