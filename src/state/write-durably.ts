/**
 * Files whose loss would fail open or lose secrets (the secrets file, the master key, the state file's
 * compaction, the unsaved restrictions) are written so that a crash or a power cut leaves the old
 * contents or the new ones, never an empty or half-written file: the new contents go to a temporary
 * file made here (0600, `wx`: not an older file or a link that was in the way), which is fsynced,
 * then renamed (or linked) into place, and the directory is fsynced so the new name survives too.
 *
 * Why the fsync before the rename: without it, ext4 without `auto_da_alloc`, XFS and others may
 * persist the rename before the data, so after a power cut the file exists with no contents (the
 * failure behind the ext4 "zero-length files" reports of 2009; LWN 322823). Found by review: the
 * secrets file and the state file's compaction were renamed unsynced, and the master key was never
 * synced, so a power cut right after `airlock secrets set` could leave secrets unreadable, or
 * revocations gone.
 */
import { closeSync, fsyncSync, linkSync, openSync, renameSync, unlinkSync, writeSync } from 'node:fs';
import { open, rename, unlink } from 'node:fs/promises';
import { randomBytes } from 'node:crypto';
import { dirname } from 'node:path';

/** A temporary name beside the target, so the rename stays on one file system. */
function temporaryName(path: string): string {
  return `${path}.${randomBytes(6).toString('hex')}.tmp`;
}

/** Replaces path's contents with text, atomically and durably. */
export async function replaceFile(path: string, text: string): Promise<void> {
  const temporary = temporaryName(path);
  const handle = await open(temporary, 'wx', 0o600);
  try {
    try {
      await handle.writeFile(text, 'utf8');
      await handle.sync();
    } finally {
      await handle.close();
    }
    await rename(temporary, path);
  } catch (error) {
    await unlink(temporary).catch(() => undefined);
    throw error;
  }
  await syncDir(dirname(path));
}

/** replaceFile for the CLI's synchronous writes (`airlock secrets set`). */
export function replaceFileSync(path: string, text: string): void {
  const temporary = writeTemporarySync(path, text);
  try {
    renameSync(temporary, path);
  } catch (error) {
    unlinkQuietly(temporary);
    throw error;
  }
  syncDirSync(dirname(path));
}

/**
 * Makes path with text, durably, only if nothing is there: throws EEXIST (as `writeFileSync` with
 * `wx`) when a file is, so two processes making a key at once never replace each other's. A link is
 * atomic and refuses an existing name, which a rename would silently replace.
 */
export function createFileSync(path: string, text: string): void {
  const temporary = writeTemporarySync(path, text);
  try {
    linkSync(temporary, path);
  } catch (error) {
    // A file system without hard links (some SMB and FUSE volumes; found by the owner's review): made in
    // place with `wx` instead, which still never replaces another process's file, then synced.
    if (!['EPERM', 'ENOTSUP', 'EOPNOTSUPP', 'ENOSYS'].includes((error as NodeJS.ErrnoException).code ?? '')) throw error;
    writeInPlaceSync(path, text);
  } finally {
    unlinkQuietly(temporary);
  }
  syncDirSync(dirname(path));
}

function writeInPlaceSync(path: string, text: string): void {
  const fd = openSync(path, 'wx', 0o600);
  try {
    writeAllSync(fd, Buffer.from(text, 'utf8'), path);
    fsyncSync(fd);
  } finally {
    closeSync(fd);
  }
}

/** A rename or removal survives a power cut once its directory is synced (best effort). */
export async function syncDir(dir: string): Promise<void> {
  try {
    const handle = await open(dir, 'r');
    await handle.sync().finally(() => handle.close());
  } catch {
    // Not every file system lets a directory be synced; the rename itself is still atomic.
  }
}

function syncDirSync(dir: string): void {
  let fd: number | null = null;
  try {
    fd = openSync(dir, 'r');
    fsyncSync(fd);
  } catch {
    // As syncDir.
  } finally {
    if (fd !== null) closeSync(fd);
  }
}

function writeTemporarySync(path: string, text: string): string {
  const temporary = temporaryName(path);
  const fd = openSync(temporary, 'wx', 0o600);
  try {
    writeAllSync(fd, Buffer.from(text, 'utf8'), temporary);
    fsyncSync(fd);
  } catch (error) {
    closeSync(fd);
    unlinkQuietly(temporary);
    throw error;
  }
  closeSync(fd);
  return temporary;
}

function writeAllSync(fd: number, bytes: Buffer, path: string): void {
  for (let done = 0; done < bytes.length; ) {
    const written = writeSync(fd, bytes, done, bytes.length - done);
    if (written === 0) throw new Error(`${path}: the disk took none of a write (full?)`);
    done += written;
  }
}

function unlinkQuietly(path: string): void {
  try {
    unlinkSync(path);
  } catch {
    // Already gone, or the directory is read-only now: a stray .tmp file is harmless.
  }
}
