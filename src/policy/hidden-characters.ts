/**
 * The characters that can hide or reorder what a reader of agent-sent text sees in a terminal or a chat:
 * C0 and C1 controls but tab and line ends; Arabic letter mark; zero-width spaces and joiners, the
 * left-to-right and right-to-left marks; line and paragraph separators; bidi embeddings, overrides and
 * isolates; the word joiner, the invisible operators and U+2065 (unassigned, ignorable: shown as
 * nothing); the zero-width no-break space (BOM).
 * One set for every place such text is shown: the approval preview escapes them as \uXXXX
 * (preview-request.ts), the CLI's one-line summary shows them as "?" (approvals-command.ts). Two copies
 * had drifted apart: the CLI's missed U+2060-U+2065.
 * Global, for String.prototype.replace (which starts from 0 whatever lastIndex is); not for test() or exec().
 */
export const HIDDEN_CHARACTERS = /[\u0000-\u0008\u000b\u000c\u000e-\u001f\u007f-\u009f\u061c\u200b-\u200f\u2028-\u202e\u2060-\u2069\ufeff]/g;
