/**
 * Text from a running Airlock (a justification, a reason, a preview) as one terminal line: whitespace
 * runs as one space, cut at `limit` characters with "…" (found by review: a justification's line
 * breaks printed a fake "approved" line under it). The admin API escapes control characters; any left
 * (a record from elsewhere in shared state) are shown as "?" (the preview's set,
 * hidden-characters.ts), so a terminal shows only what the text says.
 */
import { HIDDEN_CHARACTERS } from '../policy/hidden-characters.js';

export function oneLine(text: string, limit: number): string {
  const chars = Array.from(text.replace(/\s+/g, ' ').replace(HIDDEN_CHARACTERS, '?').trim());
  return chars.length > limit ? `${chars.slice(0, limit).join('')}…` : chars.join('');
}
