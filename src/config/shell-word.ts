/**
 * A path as one POSIX shell word, for the commands Airlock suggests (`--config F`): a user pastes them,
 * and a path holding a space, a quote or a `$` was split or expanded on the way (found by review).
 */

/**
 * Characters a shell reads as themselves in an argument: none is a quote, an operator, a blank, or
 * starts an expansion or a pattern (POSIX XCU 2.2). `=` and `%` are among those it calls special only in
 * some places (an assignment before a command, a job id), never inside an argument; `=` leading a word
 * is quoted all the same, as zsh expands `=cmd` to a path. `~` (tilde expansion) is always quoted.
 */
const PLAIN_WORD = /^[A-Za-z0-9_./:@%+,-][A-Za-z0-9_./:=@%+,-]*$/;

/** `path` as it is when it is a plain word, else in single quotes (each `'` in it written `'\''`). */
export function shellWord(path: string): string {
  return PLAIN_WORD.test(path) ? path : `'${path.replace(/'/g, `'\\''`)}'`;
}
