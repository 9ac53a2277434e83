/**
 * A file Airlock could not read or write, said for the operator: what file, what went wrong, what to do.
 *
 * node's own text ("EACCES: permission denied, open '/x/y'") says neither what Airlock was doing nor
 * what to do about it, and reached users of the CLI and serve as it was (found by review: the config
 * file, the secrets file, the master key, an audit log). Permission is the usual cause, and its remedy
 * depends on where it was denied: on the file itself (its mode or owner), or on a directory above it
 * that this user may not enter, which `ls -l` of the file does not show.
 */
import { accessSync, constants } from 'node:fs';
import { dirname, join, parse, resolve, sep } from 'node:path';

/** What Airlock was doing: reading a file, writing one, or making a directory (`mkdir -p`). */
export type FileAccess = 'read' | 'write' | 'make';

/** `cannot read /x/y: permission denied; make the user running airlock (uid 1000) its owner (chown; ...)`, and the like. */
export function fileAccessProblem(path: string, error: unknown, doing: FileAccess = 'read'): string {
  return `cannot ${doing} ${path}: ${whyNot(path, error, doing)}`;
}

/** The errno code of a file-system error, or of the one it wraps (`cause`), for callers that decide by it. */
export function fileErrorCode(error: unknown): string | undefined {
  for (let current: unknown = error, depth = 0; current instanceof Error && depth < 4; current = current.cause, depth++) {
    const code = (current as NodeJS.ErrnoException).code;
    if (typeof code === 'string') return code;
  }
  return undefined;
}

function whyNot(path: string, error: unknown, doing: FileAccess): string {
  const code = (error as NodeJS.ErrnoException | undefined)?.code;
  switch (code) {
    case 'EACCES':
    case 'EPERM': {
      const who = runningUser();
      const shut = shutDirectory(path);
      if (shut !== null) return `permission denied: ${who} may not enter ${shut}; give that user search (x) permission on it, or run airlock as a user that may`;
      // chown, not chmod: a file holding a secret (master.key, secrets.json, a TLS key) must stay mode 600,
      // and a chmod that let others read it would be refused next (found by review).
      if (doing === 'read') return `permission denied; make ${who} its owner (chown; a file holding a secret stays mode 600), or run airlock as a user that may read it`;
      if (doing === 'make') return `permission denied; make the directory it goes in writable by ${who}, or run airlock as a user that may write there`;
      return `permission denied; make it (or, for a new file, ${dirname(path)}) writable by ${who}, or run airlock as a user that may write it`;
    }
    case 'EEXIST':
      return doing === 'make' ? 'a file or a broken symbolic link is in the way (it or a part of its path is not a directory)' : 'it exists already';
    case 'ENOENT':
      return 'it does not exist';
    case 'EISDIR':
      return 'it is a directory; name a file';
    case 'ENOTDIR':
      return 'a part of its path is a file, not a directory';
    case 'ELOOP':
      return 'its symbolic links go round in a loop';
    case 'EROFS':
      return 'it is on a read-only file system (in a container, mount a writable volume there)';
    case 'ENOSPC':
    case 'EDQUOT':
      return `the disk is full (${code}); free space there`;
    case 'EMFILE':
    case 'ENFILE':
      return `too many files are open (${code}); raise the open-files limit (ulimit -n, or LimitNOFILE in a systemd unit)`;
    case 'EIO':
      return 'the disk or network file system failed (EIO); check it';
    default:
      // node's message repeats the path and the syscall: the code alone, else the message as it is.
      return typeof code === 'string' ? `it failed (${code})` : error instanceof Error ? error.message : String(error);
  }
}

/**
 * Who is denied: a file's owner may be another user, and the fix names this one. A read of the process's
 * identity, which never changes while it runs (main.ts owns argv, env and signals; nothing here changes
 * what the process does). No uid on Windows.
 */
function runningUser(): string {
  const uid = process.getuid?.();
  return uid === undefined ? 'the user running airlock' : `the user running airlock (uid ${uid})`;
}

/** The outermost directory above `path` that this user may not enter (no search permission), or null. */
function shutDirectory(path: string): string | null {
  const absolute = resolve(path);
  const { root } = parse(absolute);
  const dirs = [root];
  for (const part of dirname(absolute).slice(root.length).split(sep)) if (part !== '') dirs.push(join(dirs[dirs.length - 1] as string, part));
  for (const dir of dirs) {
    try {
      accessSync(dir, constants.X_OK);
    } catch (error) {
      // A directory not there yet (data_dir to be made) is not shut; nothing below it is there either.
      const code = (error as NodeJS.ErrnoException).code;
      return code === 'EACCES' || code === 'EPERM' ? dir : null;
    }
  }
  return null;
}
