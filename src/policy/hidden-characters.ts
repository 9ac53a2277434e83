/**
 * The characters that can hide or reorder what a reader of agent-sent text sees in a terminal or a chat:
 * C0 and C1 controls but tab and line ends; Arabic letter mark; zero-width spaces and joiners, the
 * left-to-right and right-to-left marks; line and paragraph separators; bidi embeddings, overrides and
 * isolates; the word joiner, the invisible operators and U+2065 (unassigned, ignorable: shown as
 * nothing); the zero-width no-break space (BOM); and, found by review, the soft hyphen, the combining
 * grapheme joiner, the Hangul and Khmer fillers and vowels that render blank (U+115F, U+1160, U+3164,
 * U+FFA0, U+17B4, U+17B5), the Mongolian vowel separator, the interlinear annotation marks, and the
 * tag characters U+E0000-E007F ("ASCII smuggling": invisible, but read by language models), which are
 * two UTF-16 units each (a match may be two units long).
 * One set for every place such text is shown: the approval preview escapes them as \uXXXX
 * (preview-request.ts), the CLI's one-line summary shows them as "?" (approvals-command.ts). Two copies
 * had drifted apart: the CLI's missed U+2060-U+2065.
 * Global, for String.prototype.replace (which starts from 0 whatever lastIndex is); not for test() or exec().
 */
export const HIDDEN_CHARACTERS =
  /[\u0000-\u0008\u000b\u000c\u000e-\u001f\u007f-\u009f\u00ad\u034f\u061c\u115f\u1160\u17b4\u17b5\u180e\u200b-\u200f\u2028-\u202e\u2060-\u2069\u3164\ufeff\uffa0\ufff9-\ufffb]|\udb40[\udc00-\udc7f]/g;
